"""Worker functions for the multi-process tests (module-level: spawn pickles them by name)."""

from __future__ import annotations

import os
import random
import signal
import time

import percpu
from percpu.runtime.kthread import kthread_should_stop


def count_under_lock(counter: int, lock_off: int, rounds: int) -> int:
    """Increment a plain counter under the shared lock ``rounds`` times."""
    dom = percpu.current_domain()
    lock = dom.lock_at(lock_off)
    word = dom.mem(counter, 8).cast("Q")
    for _ in range(rounds):
        lock.lock()
        v = word[0]
        word[0] = v + 1  # read-modify-write in two steps: only the lock protects it
        lock.unlock()
    return 0


def hold_lock_forever(lock_off: int, ready_fd: int) -> None:
    """Take the lock, tell the parent, and hang (the parent SIGKILLs us)."""
    dom = percpu.current_domain()
    dom.lock_at(lock_off).lock()
    os.write(ready_fd, b"L")
    while True:
        time.sleep(60)


def wait_for_lock(lock_off: int, result_fd: int) -> None:
    """Block on the lock; report whether we recovered it from a dead owner."""
    dom = percpu.current_domain()
    recovered = dom.lock_at(lock_off).lock()
    os.write(result_fd, b"R" if recovered else b"N")
    os._exit(0)


def read_and_write_back(name: str, off: int, size: int, expect: bytes) -> int:
    """Attach by name (spawned), check the bytes, write their complement."""
    dom = percpu.Domain.attach(name)
    try:
        view = dom.mem(off, size)
        if bytes(view) != expect:
            return 3
        view[:] = bytes(b ^ 0xFF for b in expect)
        view.release()
        return 0
    finally:
        dom.close()


def report_identity(result_off: int) -> int:
    """Write pid, smp_processor_id and the affinity of this worker into the arena."""
    dom = percpu.current_domain()
    words = dom.mem(result_off, 32).cast("Q")
    words[0] = os.getpid()
    words[1] = percpu.smp_processor_id()
    aff = os.sched_getaffinity(0)
    words[2] = sum(1 << c for c in aff)
    words[3] = 1
    return 0


def loop_until_stopped(counter: int) -> int:
    """A well-behaved kthread: count until kthread_should_stop(), then return 7."""
    dom = percpu.current_domain()
    while not kthread_should_stop():
        dom.arena.fetch_add(counter, 1)
        time.sleep(0.001)
    return 7


def exit_with(code: int) -> int:
    return code


def die_by_signal(sig: int) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(10)


def churn_kmalloc(seed: int) -> None:
    """Allocate and free forever, at random sizes, until SIGKILLed mid-operation."""
    dom = percpu.current_domain()
    rng = random.Random(seed)
    live: list[int] = []
    sizes = (8, 24, 64, 100, 200, 512, 2000, 4096, 5000, 9000)
    while True:
        if live and (len(live) > 64 or rng.random() < 0.5):
            dom.kfree(live.pop(rng.randrange(len(live))))
        else:
            p = dom.kmalloc(rng.choice(sizes))
            if p is not None:
                live.append(p)


def ignore_sigterm_and_spin() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(0.01)


# ---- RCU -------------------------------------------------------------------------

MAGIC = 0x5243555f4f424a31  # "1JBO_UCR"
PIPE_LEN = 10


def rcu_reader_hold(ready_fd: int, go_fd: int) -> None:
    """Enter a read-side section, say so, and stay until told (or killed)."""
    from percpu import kernel

    kernel.rcu_read_lock()
    os.write(ready_fd, b"R")
    os.read(go_fd, 1)
    kernel.rcu_read_unlock()
    os.write(ready_fd, b"D")
    os._exit(0)


def rcu_trace_reader_hold(ready_fd: int, go_fd: int) -> None:
    from percpu import kernel

    kernel.rcu_read_lock_trace()
    os.write(ready_fd, b"R")
    os.read(go_fd, 1)
    kernel.rcu_read_unlock_trace()
    os._exit(0)


def torture_reader(ptr: int, results: int, seconds: float) -> int:
    """rcutorture's reader: check the element is live and count its pipe age.

    results: PIPE_LEN + 2 words: the age histogram (buckets 0..PIPE_LEN), then
    the count of corrupted or freed elements seen inside a section.
    """
    from percpu import kernel

    dom = percpu.current_domain()
    a = dom.arena
    hist = [0] * (PIPE_LEN + 1)
    bad = 0
    lock, unlock, load = kernel.rcu_read_lock, kernel.rcu_read_unlock, a.load
    deadline = time.monotonic() + seconds
    n = 0
    while True:
        if (n & 255) == 0 and time.monotonic() > deadline:
            break
        n += 1
        lock()
        p = load(ptr)
        if p:
            if load(p) != MAGIC or load(p + 16):
                bad += 1
            for _ in range(n & 7):  # stay inside a little, at varying lengths
                load(p + 8)
            pc = load(p + 8)
            if load(p) != MAGIC or load(p + 16):
                bad += 1
            unlock()
            hist[min(pc, PIPE_LEN)] += 1
        else:
            unlock()
    for i, v in enumerate(hist):
        a.store(results + 8 * i, v)
    a.store(results + 8 * (PIPE_LEN + 1), bad)
    return 0


# ---- freelist --------------------------------------------------------------------

STAMP_FREE = 0


def freelist_churn(name: str, elem_size: int, rounds: int, tag: int, errors_off: int) -> int:
    """Pop, stamp with our tag, check nobody else stamped it meanwhile, unstamp, push.

    The stamp lives at offset 8 of the element (the first 8 bytes are the
    freelist link while free).  A node handed out twice shows as a foreign tag.
    """
    from percpu.freelist import PcpuFreelist

    dom = percpu.current_domain()
    s = PcpuFreelist.attach(name)
    a = dom.arena
    held: list[int] = []
    bad = 0
    rng = random.Random(tag)
    for _ in range(rounds):
        if held and (len(held) >= 16 or rng.random() < 0.5):
            n = held.pop(rng.randrange(len(held)))
            if a.load(n + 8) != tag:
                bad += 1
            a.store(n + 8, STAMP_FREE)
            s.push(n)
        else:
            if rng.random() < 0.2:
                got = s.pop_bulk(4)
            else:
                one = s.pop()
                got = [] if one is None else [one]
            for n in got:
                if a.cmpxchg(n + 8, STAMP_FREE, tag) != STAMP_FREE:
                    bad += 1
                held.append(n)
    for n in held:
        if a.load(n + 8) != tag:
            bad += 1
        a.store(n + 8, STAMP_FREE)
    s.push_bulk(held)
    a.fetch_add(errors_off, bad)
    return 0


def freelist_churn_forever(name: str, tag: int, held_off: int) -> None:
    """Pop and push forever (until SIGKILLed); publish the node we hold at held_off."""
    from percpu.freelist import PcpuFreelist

    dom = percpu.current_domain()
    s = PcpuFreelist.attach(name)
    a = dom.arena
    while True:
        n = s.pop()
        if n is not None:
            a.store(held_off, n)
            a.store(held_off, 0)
            s.push(n)


# ---- lock holders for the crash tests ---------------------------------------------


def hold_locks(offsets: list[int], ready_fd: int, stop: bool = False) -> None:
    """Take the locks at ``offsets`` (any arena lock, internal ones too), say "L", then
    hang -- or SIGSTOP ourselves with ``stop`` -- until the test kills us."""
    from percpu import _core

    dom = percpu.current_domain()
    for off in offsets:
        _core.Lock(dom.arena, off).lock()
    os.write(ready_fd, b"L")
    if stop:
        os.kill(os.getpid(), signal.SIGSTOP)
    while True:
        time.sleep(60)


def start_holder(offsets: list[int], stop: bool = False):  # type: ignore[no-untyped-def]
    """Fork a :func:`hold_locks` process and return it once it holds every lock."""
    import multiprocessing
    import select

    r, w = os.pipe()
    p = multiprocessing.get_context("fork").Process(target=hold_locks, args=(offsets, w, stop))
    p.start()
    ready, _, _ = select.select([r], [], [], 10)
    assert ready and os.read(r, 1) == b"L", "the lock holder did not start"
    os.close(r)
    os.close(w)
    return p


def hold_lock_until_killed(lock_off: int) -> None:
    """Take the lock and hang (a kthread body: no file descriptors, spawn-safe)."""
    percpu.current_domain().lock_at(lock_off).lock()
    while True:
        time.sleep(60)


# ---- the per-CPU allocator ------------------------------------------------------

def pcpu_counter_add(name: str, n: int) -> int:
    """Attach the named PerCpuCounter and add 1 to this CPU's copy ``n`` times."""
    c = percpu.PerCpuCounter.attach(name)
    add = c.add
    for _ in range(n):
        add()
    return 0


def _pcpu_stamp(dom: percpu.Domain, ptr: int, size: int, tag: int) -> None:
    for cpu in dom.possible:
        dom.arena.store(dom.arena.pcpu_ptr(ptr, cpu), tag) if size >= 8 else None


def _pcpu_stamp_ok(dom: percpu.Domain, ptr: int, size: int, tag: int) -> bool:
    return size < 8 or all(dom.arena.load(dom.arena.pcpu_ptr(ptr, cpu)) == tag for cpu in dom.possible)


def pcpu_churn(rounds: int, tag: int, errors_off: int) -> int:
    """Allocate and free per-CPU areas at random; stamp every CPU's copy and check it before free.

    An area handed out twice, or changed by another process, shows as a wrong
    stamp (counted at errors_off).
    """
    dom = percpu.current_domain()
    a = dom.arena
    rng = random.Random(tag)
    held: list[tuple[int, int]] = []
    bad = 0
    for i in range(rounds):
        if held and (len(held) >= 32 or rng.random() < 0.45):
            p, size = held.pop(rng.randrange(len(held)))
            if not _pcpu_stamp_ok(dom, p, size, tag << 32 | p):
                bad += 1
            a.pcpu_free(p)
        else:
            size = rng.choice((8, 16, 64, 200, 1024, 4096, 9000))
            p = a.pcpu_alloc(size, 8, False, rng.random() < 0.2)
            if p is None:
                continue
            _pcpu_stamp(dom, p, size, tag << 32 | p)
            held.append((p, size))
        if i % 500 == 0:
            a.pcpu_balance()
    for p, size in held:
        if not _pcpu_stamp_ok(dom, p, size, tag << 32 | p):
            bad += 1
        a.pcpu_free(p)
    if bad:
        a.fetch_add(errors_off, bad)
    return 0


def pcpu_churn_forever(tag: int) -> None:
    """Allocate, free and run the balance work until SIGKILLed."""
    dom = percpu.current_domain()
    a = dom.arena
    rng = random.Random(tag)
    held: list[int] = []
    while True:
        r = rng.random()
        if held and (len(held) >= 64 or r < 0.45):
            a.pcpu_free(held.pop(rng.randrange(len(held))))
        elif r < 0.97:
            p = a.pcpu_alloc(rng.choice((4, 8, 64, 1000, 4096, 12000)), 8, False, rng.random() < 0.2)
            if p is not None:
                held.append(p)
        else:
            a.pcpu_balance()


def pcpu_var_write(domain_name: str, var: str, value: int) -> int:
    """Attach the domain and the named PerCpu by name (spawned), write this CPU's copy."""
    dom = percpu.Domain.attach(domain_name)
    try:
        with dom:
            v = percpu.PerCpu.attach(var)
            v.set((value, percpu.smp_processor_id()))
        return 0
    finally:
        dom.close()
