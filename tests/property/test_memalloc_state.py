"""The BPF memory allocator against a pure-Python model of its caches.

A hypothesis state machine drives one allocator -- the fixed-size flavour
(``bpf_mem_alloc_init(ma, size, false)``) or the size == 0 flavour with its 11
buckets -- in a domain of 4 simulated CPUs: allocations and frees on random
CPUs (bursts too, to cross the watermarks), ``free_rcu``, explicit refills and
polls, grace periods, and NMI-context operations while a helper thread holds
the cache's lock (the kernel's busy ``active`` counter).

The model keeps, per (CPU, bucket) cache, ``free_llist`` as a stack whose
entries are either a pointer the test freed there (known) or an object a
refill brought (unknown), and ``free_llist_extra``; refill (``alloc_bulk``
below the low watermark, ``free_bulk`` to the midpoint above the high one)
is replayed exactly as ``bpf_mem_refill`` does it (spec section 2.7).  So
every allocation must return exactly the predicted pointer when the top of
the stack is known (LIFO reuse), and otherwise an object that is not held,
not on another model list, and not freed with ``free_rcu`` since the last
grace period.  A helper thread stays inside an RCU read-side section except
while the ``synchronize`` rule runs, so "since the last grace period" is
exact: no grace period can end behind the test's back.

Objects are stamped over their whole usable area when handed out; a held
object must keep its stamp, an object never handed out before must be zeroed,
and a recycled one keeps the bytes of its last holder (or is zeroed when it
went back to kmalloc in between).  After every step: ``ma.check()`` passes,
``created - released == cached + outstanding + in_flight``, ``outstanding``
is the number of objects the test holds, and every cache's ``free_cnt`` and
``free_llist_extra`` length equal the model's.
"""

from __future__ import annotations

import contextlib
import errno
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import percpu
from percpu.memalloc import LLIST_NODE_SZ, BpfMemAlloc, bpf_mem_cache_idx
from percpu.runtime import rcu, work

NR_CPUS = 4
CPUS = st.integers(0, NR_CPUS - 1)
#: Fixed-size flavour: object sizes whose units fall in different watermark rows (spec 2.10).
FIXED_SIZES = (8, 48, 248, 1000, 4088)
#: size == 0 flavour: mostly the big buckets, whose watermarks a few operations cross.
ALLOC_SIZES = st.one_of(
    st.sampled_from([1, 8, 9, 24, 56, 88, 120, 184, 248, 504, 1016, 2040, 3000, 4088]),
    st.integers(1, 4088),
)
TIMEOUT = 10.0


def prefill_count(unit: int) -> int:
    """``prefill_mem_cache()``: 4 objects for small non-percpu units, else 1."""
    return 4 if unit <= 256 else 1


def model_watermarks(unit: int) -> tuple[int, int, int]:
    """``init_refill_work()`` (spec 2.2), written out again rather than asked of the C core."""
    if unit <= 256:
        low, high = 32, 96
    else:
        low, high = max(32 * 256 // unit, 1), max(96 * 256 // unit, 3)
    return low, high, max((high - low) // 4 * 3, 1)


@dataclass
class CacheModel:
    """One (CPU, bucket) cache: ``free_llist`` as a stack (top last) and ``free_llist_extra``."""

    cpu: int
    bucket: int
    unit: int
    low: int
    high: int
    batch: int
    stack: list[int | None] = field(default_factory=list)  # None: an object a refill brought
    extra: list[int] = field(default_factory=list)


class MemAllocModel:
    """What the allocator may hand out, and where each object the test gave back is."""

    def __init__(self, units: dict[tuple[int, int], int]) -> None:
        self.caches: dict[tuple[int, int], CacheModel] = {}
        for (cpu, b), unit in units.items():
            low, high, batch = model_watermarks(unit)
            self.caches[cpu, b] = CacheModel(cpu, b, unit, low, high, batch, [None] * prefill_count(unit))
        self.rcu_pending: set[int] = set()  # freed with free_rcu since the last grace period

    # bpf_mem_refill()
    def refill(self, c: CacheModel) -> None:
        if len(c.stack) < c.low:
            c.stack.extend([None] * c.batch)  # alloc_bulk: reused or new, never short here
        elif len(c.stack) > c.high:
            self.free_bulk(c)

    def free_bulk(self, c: CacheModel) -> None:
        """Trim ``free_llist`` from the top to the midpoint; ``free_llist_extra`` goes too."""
        keep = (c.high + c.low) // 2
        del c.stack[keep:]
        c.extra.clear()  # both to tgt's free_by_rcu_ttrace: reusable by some alloc_bulk

    def alloc(self, c: CacheModel, nmi: bool) -> tuple[bool, int | None]:
        """``unit_alloc()``: (handed out?, the pointer if the model knows it)."""
        tries = 1 if nmi else 2
        while tries:
            tries -= 1
            if c.stack:
                top = c.stack.pop()
                if len(c.stack) < c.low:
                    self.refill(c)
                return True, top
            self.refill(c)  # empty: cnt 0 < low_watermark (queued in NMI context)
        return False, None

    def free(self, c: CacheModel, ptr: int) -> None:
        """``unit_free()`` with the cache free: LIFO, trimmed above the high watermark."""
        c.stack.append(ptr)
        if len(c.stack) > c.high:
            self.refill(c)

    def known(self) -> set[int]:
        """Objects whose place the model knows: on some free_llist or free_llist_extra."""
        out: set[int] = set()
        for c in self.caches.values():
            out.update(p for p in c.stack if p is not None)
            out.update(c.extra)
        return out


@contextlib.contextmanager
def held_by_helper(lock: Any) -> Iterator[None]:
    """Hold a cache lock from another thread for the block (the interrupted owner of 'active')."""
    got, release = threading.Event(), threading.Event()

    def run() -> None:
        lock.lock()
        got.set()
        release.wait(TIMEOUT)
        lock.unlock()

    t = threading.Thread(target=run, name="ma-lock-holder", daemon=True)
    t.start()
    assert got.wait(TIMEOUT), "the helper could not take the cache lock"
    try:
        yield
    finally:
        release.set()
        t.join(TIMEOUT)


class Reader:
    """A thread inside an RCU read-side section: no grace period started now can end."""

    def __init__(self, dom: percpu.Domain) -> None:
        self.dom = dom
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        inside, self.leave = threading.Event(), threading.Event()

        def run() -> None:
            with self.dom, rcu.read_lock():
                inside.set()
                self.leave.wait(60)

        self.thread = threading.Thread(target=run, name="ma-rcu-reader", daemon=True)
        self.thread.start()
        assert inside.wait(TIMEOUT)

    def stop(self) -> None:
        if self.thread is not None:
            self.leave.set()
            self.thread.join(TIMEOUT)
            self.thread = None


class MemAllocMachine(RuleBasedStateMachine):
    """Shared rules; the subclasses make the allocator and say how to allocate."""

    dom: percpu.Domain
    ma: BpfMemAlloc
    model: MemAllocModel

    def __init__(self) -> None:
        super().__init__()
        self.held: dict[int, tuple[int, int]] = {}  # ptr -> (bucket, stamp)
        self.last: dict[int, int] = {}  # ptr -> the stamp of its last holder
        self.serial = 0
        self.reader: Reader | None = None

    def _setup(self, make: Callable[[], BpfMemAlloc]) -> None:
        self.dom = percpu.Domain.create(size=16 << 20, nr_cpus=NR_CPUS)
        self.dom.__enter__()
        self.ma = make()
        info = self.ma.info()
        self.cache_off = {(c["cpu"], c["bucket"]): c["cache"] for c in info["caches"]}
        units = {(c["cpu"], c["bucket"]): c["unit_size"] for c in info["caches"]}
        self.model = MemAllocModel(units)
        for c in info["caches"]:
            m = self.model.caches[c["cpu"], c["bucket"]]
            assert (c["low_watermark"], c["high_watermark"], c["batch"]) == (m.low, m.high, m.batch)
        self.reader = Reader(self.dom)
        self.reader.start()

    def teardown(self) -> None:
        if self.reader is not None:
            self.reader.stop()
        dom = getattr(self, "dom", None)
        if dom is not None:
            # The allocator's grace-period callbacks run before the domain goes (a Tasks
            # Trace callback queues an RCU one: that order).
            rcu.barrier(rcu.TASKS_TRACE)
            rcu.barrier(rcu.RCU)
            work.flush(TIMEOUT)
            dom.__exit__(None, None, None)
            dom.close()
            dom.unlink()

    # ---- helpers --------------------------------------------------------------------

    def _usable(self, bucket: int) -> int:
        return self.model.caches[0, bucket].unit - LLIST_NODE_SZ

    def _pattern(self, bucket: int, stamp: int) -> bytes:
        return stamp.to_bytes(8, "little") * (self._usable(bucket) // 8)

    def _bucket_of_size(self, size: int) -> int:
        raise NotImplementedError

    def _do_alloc(self, size: int) -> int | None:
        raise NotImplementedError

    def _sizes(self) -> st.SearchStrategy[int]:
        raise NotImplementedError

    def _alloc_one(self, cpu: int, size: int, nmi: bool = False) -> int | None:
        bucket = self._bucket_of_size(size)
        c = self.model.caches[cpu, bucket]
        known_before = self.model.known()
        with percpu.on_cpu(cpu), (percpu.nmi() if nmi else contextlib.nullcontext()):
            p = self._do_alloc(size)
        if nmi:
            assert work.flush(TIMEOUT)  # the refill an NMI queued has run
        ok, want = self.model.alloc(c, nmi)
        if not ok:
            assert p is None, f"alloc on CPU {cpu} bucket {bucket}: {p:#x}, the model has nothing"
            return None
        assert p is not None, f"alloc on CPU {cpu} bucket {bucket} failed, free_cnt was {len(c.stack) + 1}"
        if want is not None:
            assert p == want, f"CPU {cpu} bucket {bucket}: LIFO reuse gave {p:#x}, expected {want:#x}"
        else:
            assert p not in known_before, f"{p:#x} handed out while on another list of the model"
        assert p not in self.held, f"{p:#x} handed out twice"
        assert p not in self.model.rcu_pending, f"{p:#x} freed with free_rcu handed out before a grace period"
        assert self.ma.obj_cache(p) == self.cache_off[cpu, bucket], "the header must name the cache that gave it"
        usable = self._usable(bucket)
        got = bytes(self.dom.mem(p, usable))
        if p not in self.last:
            assert got == bytes(usable), f"new object {p:#x} is not zeroed"
        elif want is not None:
            assert got == self._pattern(bucket, self.last[p]), f"recycled {p:#x} lost its old bytes"
        else:
            assert got in (bytes(usable), self._pattern(bucket, self.last[p])), f"recycled {p:#x} changed"
        self.serial += 1
        stamp = (0x5EED << 48) | (cpu << 40) | self.serial
        self.dom.mem(p, usable)[:] = self._pattern(bucket, stamp)
        self.held[p] = (bucket, stamp)
        self.last[p] = stamp
        return p

    def _give_back(self, p: int) -> int:
        bucket, stamp = self.held.pop(p)
        assert bytes(self.dom.mem(p, self._usable(bucket))) == self._pattern(bucket, stamp), f"{p:#x} stamp"
        return bucket

    def _free_one(self, cpu: int, p: int, how: str) -> None:
        """how: "free", "free_rcu", or their NMI forms "nmi_free", "nmi_free_rcu" (cache not busy)."""
        bucket = self._give_back(p)
        c = self.model.caches[cpu, bucket]
        fn = self.ma.cache_free_rcu if how.endswith("rcu") else self.ma.cache_free
        if self.ma.all_buckets:
            fn = self.ma.free_rcu if how.endswith("rcu") else self.ma.free
        with percpu.on_cpu(cpu), (percpu.nmi() if how.startswith("nmi") else contextlib.nullcontext()):
            fn(p)
        if how.startswith("nmi"):
            assert work.flush(TIMEOUT)
        if how.endswith("rcu"):
            self.model.rcu_pending.add(p)
            self._maybe_refilled(c)
        else:
            self.model.free(c, p)

    def _maybe_refilled(self, c: CacheModel) -> None:
        """free_rcu raises the refill unless a grace-period callback is pending and not due:

        that depends on the grace-period machinery, so the model asks which happened.
        Only below the low watermark does a refill change ``free_llist``.
        """
        if len(c.stack) >= c.low:
            return
        real = self._cache_info(c)["free_cnt"]
        assert real in (len(c.stack), len(c.stack) + c.batch), f"free_cnt {real}, model {len(c.stack)}"
        if real != len(c.stack):
            self.model.refill(c)

    def _books(self) -> dict[str, int]:
        """What an operation that must change nothing must leave alone.

        (Grace-period callbacks keep moving objects between the RCU lists meanwhile.)
        """
        chk = self.ma.check()
        return {k: chk[k] for k in ("free_llist", "free_llist_extra", "outstanding", "created")}

    def _cache_info(self, c: CacheModel) -> dict[str, Any]:
        for ci in self.ma.info()["caches"]:
            if ci["cpu"] == c.cpu and ci["bucket"] == c.bucket:
                return ci  # type: ignore[no-any-return]
        raise AssertionError("cache not found")

    # ---- rules ----------------------------------------------------------------------

    @precondition(lambda self: hasattr(self, "model"))
    @rule(cpu=CPUS, data=st.data(), nmi=st.booleans())
    def alloc(self, cpu: int, data: st.DataObject, nmi: bool) -> None:
        self._alloc_one(cpu, data.draw(self._sizes(), label="size"), nmi)

    @precondition(lambda self: hasattr(self, "model") and len(self.held) < 300)
    @rule(cpu=CPUS, data=st.data(), n=st.integers(2, 110))
    def alloc_burst(self, cpu: int, data: st.DataObject, n: int) -> None:
        """Many at once on one CPU and bucket: crosses the low watermark of any unit."""
        size = data.draw(self._sizes(), label="size")
        for _ in range(n):
            self._alloc_one(cpu, size)

    @precondition(lambda self: bool(getattr(self, "held", None)))
    @rule(cpu=CPUS, data=st.data(), how=st.sampled_from(["free", "free", "free_rcu", "nmi_free", "nmi_free_rcu"]))
    def free(self, cpu: int, data: st.DataObject, how: str) -> None:
        p = data.draw(st.sampled_from(sorted(self.held)), label="ptr")
        self._free_one(cpu, p, how)

    @precondition(lambda self: bool(getattr(self, "held", None)))
    @rule(cpu=CPUS, data=st.data(), rcu_share=st.sampled_from([0.0, 0.0, 0.3, 1.0]), everything=st.booleans())
    def free_burst(self, cpu: int, data: st.DataObject, rcu_share: float, everything: bool) -> None:
        """Give back many (or all) held objects on one CPU: crosses the high watermark (free_bulk)."""
        if everything:
            ptrs = data.draw(st.permutations(sorted(self.held)), label="ptrs")
        else:
            ptrs = data.draw(st.lists(st.sampled_from(sorted(self.held)), unique=True, min_size=1), label="ptrs")
        for i, p in enumerate(ptrs):
            self._free_one(cpu, p, "free_rcu" if i < rcu_share * len(ptrs) else "free")

    @precondition(lambda self: bool(getattr(self, "held", None)))
    @rule(cpu=CPUS, data=st.data())
    def alloc_then_free_is_lifo(self, cpu: int, data: st.DataObject) -> None:
        """A plain free followed by an alloc on the same CPU returns that object."""
        p = data.draw(st.sampled_from(sorted(self.held)), label="ptr")
        bucket = self.held[p][0]
        c = self.model.caches[cpu, bucket]
        self._free_one(cpu, p, "free")
        if not c.stack or c.stack[-1] != p:
            return  # the free crossed the high watermark and trimmed it away
        assert self._alloc_one(cpu, c.unit - LLIST_NODE_SZ) == p

    @precondition(lambda self: hasattr(self, "model"))
    @rule(cpu=CPUS)
    def refill(self, cpu: int) -> None:
        self.ma.refill(cpu)
        for (c_cpu, _), c in self.model.caches.items():
            if c_cpu == cpu:
                self.model.refill(c)

    @precondition(lambda self: hasattr(self, "model"))
    @rule()
    def poll(self) -> None:
        self.ma.poll()  # grace-period callbacks only: free_llist does not move

    @precondition(lambda self: hasattr(self, "model"))
    @rule()
    def synchronize(self) -> None:
        assert self.reader is not None
        self.reader.stop()
        rcu.synchronize()
        self.model.rcu_pending.clear()  # every free_rcu so far is past a grace period
        self.reader.start()

    @precondition(lambda self: hasattr(self, "model"))
    @rule(cpu=CPUS, data=st.data())
    def nmi_alloc_on_busy_cache(self, cpu: int, data: st.DataObject) -> None:
        """The cache's lock is held (interrupted owner): an NMI allocation returns NULL."""
        size = data.draw(self._sizes(), label="size")
        bucket = self._bucket_of_size(size)
        c = self.model.caches[cpu, bucket]
        with held_by_helper(self.dom.lock_at(self.cache_off[cpu, bucket])):
            with percpu.on_cpu(cpu), percpu.nmi():
                assert self._do_alloc(size) is None
        assert work.flush(TIMEOUT)  # the refill it raised runs once the lock is free
        self.model.refill(c)

    @precondition(lambda self: bool(getattr(self, "held", None)))
    @rule(cpu=CPUS, data=st.data(), use_rcu=st.booleans())
    def nmi_free_on_busy_cache(self, cpu: int, data: st.DataObject, use_rcu: bool) -> None:
        """The cache's lock is held: an NMI free goes to free_llist_extra(_rcu), nothing is lost."""
        p = data.draw(st.sampled_from(sorted(self.held)), label="ptr")
        bucket = self._give_back(p)
        c = self.model.caches[cpu, bucket]
        if self.ma.all_buckets:
            fn = self.ma.free_rcu if use_rcu else self.ma.free
        else:
            fn = self.ma.cache_free_rcu if use_rcu else self.ma.cache_free
        with held_by_helper(self.dom.lock_at(self.cache_off[cpu, bucket])):
            with percpu.on_cpu(cpu), percpu.nmi():
                fn(p)
        assert work.flush(TIMEOUT)
        if use_rcu:
            self.model.rcu_pending.add(p)
            self._maybe_refilled(c)
        else:
            c.extra.append(p)

    @precondition(lambda self: bool(getattr(self, "held", None)))
    @rule(data=st.data())
    def double_free_is_refused(self, data: st.DataObject) -> None:
        p = data.draw(st.sampled_from(sorted(self.held)), label="ptr")
        cpu = data.draw(CPUS, label="cpu")
        self._free_one(cpu, p, "free")
        before = self._books()
        with percpu.on_cpu(cpu), pytest.raises(OSError) as ei:
            (self.ma.free if self.ma.all_buckets else self.ma.cache_free)(p)
        assert ei.value.errno == errno.EINVAL
        assert self._books() == before

    # ---- invariants -----------------------------------------------------------------

    @invariant()
    def accounting_balances(self) -> None:
        if not hasattr(self, "model"):
            return
        chk = self.ma.check()
        assert chk["in_flight"] == 0
        assert chk["created"] - chk["released"] == chk["cached"] + chk["outstanding"] + chk["in_flight"], chk
        assert chk["outstanding"] == len(self.held), chk

    @invariant()
    def caches_match_model(self) -> None:
        if not hasattr(self, "model"):
            return
        for ci in self.ma.info()["caches"]:
            c = self.model.caches[ci["cpu"], ci["bucket"]]
            assert ci["free_cnt"] == len(c.stack), f"CPU {c.cpu} bucket {c.bucket}: {ci}"
            assert ci["free_llist_extra"] == len(c.extra), f"CPU {c.cpu} bucket {c.bucket}: {ci}"

    @invariant()
    def held_objects_keep_their_stamp(self) -> None:
        if not hasattr(self, "model"):
            return
        for p, (bucket, stamp) in self.held.items():
            assert bytes(self.dom.mem(p, self._usable(bucket))) == self._pattern(bucket, stamp), f"{p:#x}"


class FixedSizeMachine(MemAllocMachine):
    """``bpf_mem_alloc_init(ma, size, false)``: one bucket, ``cache_alloc``/``cache_free(_rcu)``."""

    @initialize(size=st.sampled_from(FIXED_SIZES))
    def setup(self, size: int) -> None:
        self.size = size
        self._setup(lambda: BpfMemAlloc(size))

    def _bucket_of_size(self, size: int) -> int:
        return 0

    def _do_alloc(self, size: int) -> int | None:
        return self.ma.cache_alloc()  # type: ignore[no-any-return]

    def _sizes(self) -> st.SearchStrategy[int]:
        return st.just(self.size)


class BucketsMachine(MemAllocMachine):
    """``bpf_mem_alloc_init(ma, 0, false)``: 11 buckets, ``alloc(size)``/``free(_rcu)``."""

    @initialize()
    def setup(self) -> None:
        self._setup(lambda: BpfMemAlloc(0))

    def _bucket_of_size(self, size: int) -> int:
        return bpf_mem_cache_idx(size + LLIST_NODE_SZ)

    def _do_alloc(self, size: int) -> int | None:
        return self.ma.alloc(size)  # type: ignore[no-any-return]

    def _sizes(self) -> st.SearchStrategy[int]:
        return ALLOC_SIZES

    @precondition(lambda self: hasattr(self, "model"))
    @rule(size=st.sampled_from([0, 4089, 4090, 4096, 5000, 1 << 20]), cpu=CPUS)
    def unservable_sizes_return_null(self, size: int, cpu: int) -> None:
        before = self._books()
        with percpu.on_cpu(cpu):
            assert self.ma.alloc(size) is None
        assert self._books() == before


FixedSizeMachine.TestCase.settings = settings(FixedSizeMachine.TestCase.settings, stateful_step_count=50)
BucketsMachine.TestCase.settings = settings(BucketsMachine.TestCase.settings, stateful_step_count=50)
TestFixedSize = FixedSizeMachine.TestCase
TestBuckets = BucketsMachine.TestCase
