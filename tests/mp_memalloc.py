"""Worker functions for the BPF memory allocator's multi-process tests.

Module-level functions with picklable arguments, so both start methods can run
them (``tests/`` is on ``sys.path`` of spawned children as of the parent).

Objects are stamped in their first two words (the 8-byte header before the
user pointer belongs to the allocator)::

    p + 0   owner tag: 0 while the allocator has the object; taken with
            cmpxchg(p, 0, tag), given back with cmpxchg(p, tag, 0), so an
            object handed to two holders at once fails one of the exchanges
    p + 8   (tag << 32) | serial: checked before the object leaves its holder

A ring is a single-producer single-consumer queue of pointers in the arena::

    +0 head  +8 tail  +16 producer done  +24 pad  +32 slots[n]
"""

from __future__ import annotations

import random
import time

import percpu
from percpu.memalloc import BpfMemAlloc

RING_HDR = 32
#: Sizes for the size == 0 flavour (the stamp needs 16 bytes).
BUCKET_SIZES = (16, 24, 48, 96, 100, 180, 256, 500, 1000, 2040, 4088)


# ---- rings -------------------------------------------------------------------------------


def ring_bytes(n: int) -> int:
    return RING_HDR + 8 * n


def ring_push(a, ring: int, n: int, ptr: int) -> bool:  # type: ignore[no-untyped-def]
    head, tail = a.load(ring), a.load(ring + 8)
    if head - tail >= n:
        return False
    a.store(ring + RING_HDR + 8 * (head % n), ptr)
    a.store(ring, head + 1)  # publishes the slot (seq_cst stores)
    return True


def ring_pop(a, ring: int, n: int) -> int | None:  # type: ignore[no-untyped-def]
    tail = a.load(ring + 8)
    if tail == a.load(ring):
        return None
    ptr = a.load(ring + RING_HDR + 8 * (tail % n))
    a.store(ring + 8, tail + 1)
    return int(ptr)


# ---- stamps ------------------------------------------------------------------------------


class Holder:
    """The objects one worker holds, stamped; counts every stamp that is not as it left it."""

    def __init__(self, a, tag: int) -> None:  # type: ignore[no-untyped-def]
        self.a = a
        self.tag = tag
        self.serial = 0
        self.held: dict[int, int] = {}  # ptr -> word 1
        self.bad = 0

    def take(self, p: int, prev_owner: int = 0) -> None:
        """Claim ``p`` (from the allocator: prev_owner 0; from a ring: the sender's tag)."""
        if self.a.cmpxchg(p, prev_owner, self.tag) != prev_owner:
            self.bad += 1  # somebody else holds it too
        self.serial += 1
        w1 = (self.tag << 32) | (self.serial & 0xFFFF_FFFF)
        self.a.store(p + 8, w1)
        self.held[p] = w1

    def check(self, p: int) -> None:
        if self.a.load(p) != self.tag or self.a.load(p + 8) != self.held[p]:
            self.bad += 1

    def release(self, p: int) -> None:
        """Check the stamp and clear word 0: the object may go back to the allocator."""
        self.check(p)
        del self.held[p]
        if self.a.cmpxchg(p, self.tag, 0) != self.tag:
            self.bad += 1

    def hand_over(self, p: int) -> None:
        """Check the stamp and forget ``p``; word 0 keeps our tag for the receiver's cmpxchg."""
        self.check(p)
        del self.held[p]

    def receive(self, p: int) -> None:
        w0, w1 = self.a.load(p), self.a.load(p + 8)
        if w0 == 0 or w1 >> 32 != w0:
            self.bad += 1
        self.take(p, w0)


def _alloc(ma: BpfMemAlloc, rng: random.Random) -> int | None:
    if ma.all_buckets:
        return ma.alloc(rng.choice(BUCKET_SIZES))  # type: ignore[no-any-return]
    return ma.cache_alloc()  # type: ignore[no-any-return]


def _free(ma: BpfMemAlloc, p: int, rcu: bool) -> None:
    if ma.all_buckets:
        (ma.free_rcu if rcu else ma.free)(p)
    else:
        (ma.cache_free_rcu if rcu else ma.cache_free)(p)


# ---- stress ------------------------------------------------------------------------------


def ma_churn(name: str, cpu: int, rounds: int, tag: int, ring_out: int, ring_in: int, ring_n: int,
             counters: int, seed: int) -> int:
    """Allocate, stamp, free (own CPU, free_rcu) and pass objects on through ``ring_out``.

    Acts as ``cpu`` (``on_cpu``: two workers may be the same CPU).  Receives
    from ``ring_in`` and frees what it receives.  At the end it drains
    ``ring_in`` until its producer is done.  ``counters``: +0 errors (bad
    stamps, a lost ring), +8 allocations that returned NULL, +16 objects
    passed on.
    """
    dom = percpu.current_domain()
    a = dom.arena
    ma = BpfMemAlloc.attach(name)
    rng = random.Random(seed)
    h = Holder(a, tag)
    nulls = passed = 0
    with percpu.on_cpu(cpu):
        for _ in range(rounds):
            r = rng.random()
            if (r < 0.40 and len(h.held) < 300) or not h.held:
                k = rng.randint(60, 130) if rng.random() < 0.04 else rng.randint(1, 8)
                for _ in range(k):
                    p = _alloc(ma, rng)
                    if p is None:
                        nulls += 1
                    else:
                        h.take(p)
            elif r < 0.80:
                for p in rng.sample(list(h.held), min(len(h.held), rng.randint(1, 12))):
                    how = rng.random()
                    if how < 0.35:
                        h.hand_over(p)
                        if ring_push(a, ring_out, ring_n, p):
                            passed += 1
                            continue
                        h.receive(p)  # the ring is full: keep it, free it below
                        h.release(p)
                        _free(ma, p, False)
                    else:
                        h.release(p)
                        _free(ma, p, how < 0.55)
            else:
                for _ in range(rng.randint(1, 16)):
                    p = ring_pop(a, ring_in, ring_n)
                    if p is None:
                        break
                    h.receive(p)
        a.store(ring_out + 16, 1)  # producer done
        deadline = time.monotonic() + 60
        while True:
            done = a.load(ring_in + 16)
            p = ring_pop(a, ring_in, ring_n)
            if p is not None:
                h.receive(p)
                h.release(p)
                _free(ma, p, False)
                continue
            if done:
                break
            if time.monotonic() > deadline:
                h.bad += 1000  # the other worker never finished
                break
            time.sleep(0.0005)
        for p in list(h.held):
            h.release(p)
            _free(ma, p, rng.random() < 0.3)
    a.fetch_add(counters, h.bad)
    a.fetch_add(counters + 8, nulls)
    a.fetch_add(counters + 16, passed)
    return 0


def ma_producer(name: str, cpu: int, count: int, ring: int, ring_n: int, counters: int) -> int:
    """Allocate ``count`` objects on ``cpu``, stamp each, and push it to the consumer's ring."""
    dom = percpu.current_domain()
    a = dom.arena
    ma = BpfMemAlloc.attach(name)
    h = Holder(a, 0xA0)
    nulls = 0
    with percpu.on_cpu(cpu):
        for _ in range(count):
            p = ma.cache_alloc()
            if p is None:
                nulls += 1
                continue
            h.take(p)
            h.hand_over(p)
            deadline = time.monotonic() + 30
            while not ring_push(a, ring, ring_n, p):
                if time.monotonic() > deadline:
                    h.bad += 1000
                    break
                time.sleep(0)
    a.store(ring + 16, 1)
    a.fetch_add(counters, h.bad)
    a.fetch_add(counters + 8, nulls)
    return 0


def ma_consumer(name: str, cpu: int, ring: int, ring_n: int, counters: int) -> int:
    """Pop objects from the ring until the producer is done, check each stamp, free it on ``cpu``."""
    dom = percpu.current_domain()
    a = dom.arena
    ma = BpfMemAlloc.attach(name)
    h = Holder(a, 0xB0)
    got = 0
    deadline = time.monotonic() + 60
    with percpu.on_cpu(cpu):
        while True:
            done = a.load(ring + 16)
            p = ring_pop(a, ring, ring_n)
            if p is None:
                if done or time.monotonic() > deadline:
                    break
                time.sleep(0)
                continue
            h.receive(p)
            h.release(p)
            ma.cache_free(p)
            got += 1
    a.fetch_add(counters, h.bad)
    a.fetch_add(counters + 16, got)
    return 0


# ---- crash -------------------------------------------------------------------------------


def ma_churn_forever(name: str, cpu: int, other: int, rec: int, nrec: int, seed: int) -> None:
    """Allocate and free until SIGKILLed, recording every held pointer in ``rec[nrec]``.

    A pointer is recorded right after the allocation returns it and its record
    cleared right before it is freed, so at any instant the records name every
    object this process holds, except at most the one between an allocation
    and its record or between a record's clearing and its free.
    Frees go to this CPU, to ``other`` (a cross-CPU free), or through free_rcu;
    bursts of 100 allocations then frees cross both watermarks (refill, free_bulk).
    """
    a = percpu.current_domain().arena
    ma = BpfMemAlloc.attach(name)
    rng = random.Random(seed)
    free_slots = list(range(nrec))
    held: dict[int, int] = {}  # slot -> ptr

    def alloc_one() -> None:
        p = _alloc(ma, rng)
        if p is not None:
            i = free_slots.pop()
            a.store(rec + 8 * i, p)
            held[i] = p

    def free_one(i: int, mode: float) -> None:
        p = held.pop(i)
        a.store(rec + 8 * i, 0)
        free_slots.append(i)
        if mode < 0.25:
            with percpu.on_cpu(other):
                _free(ma, p, False)
        else:
            _free(ma, p, mode > 0.8)

    with percpu.on_cpu(cpu):
        while True:
            r = rng.random()
            if r < 0.03 and len(free_slots) > 120:
                for _ in range(100):
                    alloc_one()
                mode = rng.random()
                for i in list(held):
                    free_one(i, mode)
            elif (r < 0.55 and free_slots) or not held:
                alloc_one()
            else:
                free_one(rng.choice(list(held)), rng.random())


def ma_nmi_free_many(name: str, cpu: int, rec: int, n: int, progress: int) -> None:
    """Allocate ``n`` recorded objects, then free them all in NMI context (until SIGKILLed).

    ``progress``: +0 is 1 once the NMI loop starts, +8 counts the objects freed in it.
    Refills and trims raised in NMI context run on this process's irq_work
    thread meanwhile, so the NMI frees race with them for the cache lock.
    """
    a = percpu.current_domain().arena
    ma = BpfMemAlloc.attach(name)
    rng = random.Random(n)
    with percpu.on_cpu(cpu):
        ptrs = []
        for i in range(n):
            p = _alloc(ma, rng)
            if p is not None:
                a.store(rec + 8 * i, p)
                ptrs.append((i, p))
        a.store(progress, 1)
        with percpu.nmi():
            for k, (i, p) in enumerate(ptrs):
                a.store(rec + 8 * i, 0)
                _free(ma, p, k % 3 == 0)
                a.store(progress + 8, k + 1)
    a.store(progress, 2)
    while True:
        time.sleep(60)


def ma_kill_in_release_loop(name: str, n: int, flag: int) -> None:
    """Pile ``n`` objects on CPU 0's waiting_for_gp_ttrace, then release them (until SIGKILLed).

    This process drops the allocator's events (no irq_work, no grace-period
    callbacks of its own), so the grace periods end only when it polls: with a
    reader held, every trim of the frees below piles onto CPU 0's
    free_by_rcu_ttrace; one poll moves the pile to waiting_for_gp_ttrace, and
    the next one, after its grace periods, kfrees it in one loop.
    ``flag``: 1 just before that last poll, 2 after it.
    """
    import threading

    from percpu import _core
    from percpu.runtime import rcu

    dom = percpu.current_domain()
    ma = BpfMemAlloc.attach(name)
    _core.ma_set_hook(lambda kind, ma, cache: None)
    inside, leave = threading.Event(), threading.Event()

    def reader() -> None:
        with dom, rcu.read_lock():
            inside.set()
            leave.wait()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    inside.wait()
    with percpu.on_cpu(0):
        ptrs = [ma.cache_alloc() for _ in range(n)]
        for p in ptrs:
            ma.cache_free(p)
    leave.set()
    t.join()
    ma.poll()  # the first trim's batch goes back; the pile starts waiting
    dom.arena.store(flag, 1)
    ma.poll()  # no reader: its grace periods end at once, and the loop kfrees the pile
    dom.arena.store(flag, 2)
    while True:
        time.sleep(60)


def ma_refill_forever(name: str, cpu: int) -> None:
    """Allocate on ``cpu`` and give each object straight back to kmalloc (raw_free), until SIGKILLed.

    CPU ``cpu``'s cache drains by one per round, so every ``batch`` rounds a
    refill kmallocs a whole batch: much of the time is spent inside alloc_bulk.
    """
    ma = BpfMemAlloc.attach(name)
    alloc, raw_free = ma.cache_alloc, ma.raw_free
    with percpu.on_cpu(cpu):
        while True:
            raw_free(alloc())
