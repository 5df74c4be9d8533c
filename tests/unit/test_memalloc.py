"""The BPF memory allocator (kernel/bpf/memalloc.c): buckets, watermarks, reuse rules, RCU paths, tgt, NMI, destroy.

Table-driven where the kernel fixes numbers: ``bpf_mem_cache_idx`` for every size 0..4097 against a
pure-Python copy of the kernel formula and against the range table of the reference (§2.3), the
watermark table (§2.10), the prefill counts, the burst sizes of ``test_bpf_ma`` (§4.1).  The object
life cycle of §2.8 is followed list by list through ``info()``: an object freed with ``free_rcu`` is
never handed out while an RCU reader that predates the free is inside its section, then moves
waiting_for_gp -> free_by_rcu_ttrace -> waiting_for_gp_ttrace -> kmalloc; objects freed on another CPU
go back to the allocating cache (tgt).  Every test ends with ``ma.check()``: the lists are sound and
``created - released == cached + outstanding + in_flight``.
"""

from __future__ import annotations

import errno
import threading
import time

import pytest

import percpu
from percpu import errors, kernel, memalloc, memcg, rcu
from percpu.memalloc import LISTS, BpfMemAlloc, bpf_mem_cache_idx, check_size, watermarks
from percpu.runtime import work

# ---- the kernel's numbers, written out here (not imported) ---------------------------------------

SIZES = (96, 192, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
SIZE_INDEX = (3, 3, 4, 4, 5, 5, 5, 5, 1, 1, 1, 1, 6, 6, 6, 6, 2, 2, 2, 2, 2, 2, 2, 2)

#: (first size, last size, bucket) from the reference's range table (§2.3).
RANGES = [
    (1, 16, 2), (17, 32, 3), (33, 64, 4), (65, 96, 0), (97, 128, 5), (129, 192, 1),
    (193, 256, 6), (257, 512, 7), (513, 1024, 8), (1025, 2048, 9), (2049, 4096, 10),
]

#: (unit_size, low, high, batch, free_bulk stop point) of §2.10.
WATERMARKS = [
    (16, 32, 96, 48, 64), (24, 32, 96, 48, 64), (96, 32, 96, 48, 64), (192, 32, 96, 48, 64),
    (256, 32, 96, 48, 64), (264, 31, 93, 45, 62), (512, 16, 48, 24, 32), (520, 15, 47, 24, 31),
    (1024, 8, 24, 12, 16), (1032, 7, 23, 12, 15), (2048, 4, 12, 6, 8), (4096, 2, 6, 3, 4),
    (4104, 1, 5, 3, 3), (8200, 1, 3, 1, 2),
]

#: test_bpf_ma: objects per burst for each bucket size.
BURSTS = {16: 128, 32: 128, 64: 128, 96: 128, 128: 128, 192: 128, 256: 128, 512: 64, 1024: 32, 2048: 16, 4096: 8}


def model_idx(size: int) -> int:
    """``bpf_mem_cache_idx()`` as the kernel writes it."""
    if not size or size > 4096:
        return -1
    if size <= 192:
        return SIZE_INDEX[(size - 1) // 8] - 1
    return (size - 1).bit_length() - 2  # fls(size - 1) - 2


def table_idx(size: int) -> int:
    for lo, hi, idx in RANGES:
        if lo <= size <= hi:
            return idx
    return -1


# ---- helpers -------------------------------------------------------------------------------------


def consistent(ma: BpfMemAlloc) -> dict:
    """``ma.check()`` plus the accounting invariant of a quiescent allocator."""
    st = ma.check()
    assert st["created"] - st["released"] == st["cached"] + st["outstanding"] + st["in_flight"], st
    assert st["cached"] == sum(st[k] for k in LISTS)
    return st


def cache(ma: BpfMemAlloc, cpu: int, bucket: int = 0) -> dict:
    (c,) = [c for c in ma.info()["caches"] if c["cpu"] == cpu and c["bucket"] == bucket]
    return c


def unit_by_cache(ma: BpfMemAlloc) -> dict[int, int]:
    return {c["cache"]: c["unit_size"] for c in ma.info()["caches"]}


def on_lists(c: dict) -> dict[str, int]:
    return {k: c[k] for k in LISTS}


class Reader:
    """A thread inside an RCU (or Tasks Trace) read-side section until :meth:`leave`."""

    def __init__(self, section) -> None:
        self._inside = threading.Event()
        self._go = threading.Event()
        self._t = threading.Thread(target=self._run, args=(section,), daemon=True)
        self._t.start()
        assert self._inside.wait(10), "reader did not start"

    def _run(self, section) -> None:
        with section():
            self._inside.set()
            self._go.wait(30)

    def leave(self) -> None:
        self._go.set()
        self._t.join(10)
        assert not self._t.is_alive()


class IrqWorkGate:
    """Holds this process's irq_work thread so that queued refills wait until :meth:`open`."""

    def __init__(self) -> None:
        self._gate = threading.Event()
        self._running = threading.Event()

        def block() -> None:
            self._running.set()
            self._gate.wait(30)

        work.irq_work_queue(block)
        assert self._running.wait(10)

    def open(self) -> None:
        self._gate.set()
        assert work.flush(10)


def settle(ma: BpfMemAlloc, *, until, timeout: float = 10.0) -> None:
    """Run grace periods and the allocator's callbacks until ``until()`` holds."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "the allocator did not settle"
        rcu.synchronize(rcu.TASKS_TRACE)
        rcu.synchronize()
        ma.refill()
        ma.poll()
        work.flush(1)


# ---- 1. bpf_mem_cache_idx ------------------------------------------------------------------------


def test_constants_are_the_kernels():
    assert memalloc.sizes == SIZES
    assert memalloc.size_index == SIZE_INDEX
    assert (memalloc.LLIST_NODE_SZ, memalloc.BPF_MEM_ALLOC_SIZE_MAX, memalloc.NUM_CACHES) == (8, 4096, 11)


@pytest.mark.parametrize("idx_fn", [bpf_mem_cache_idx, kernel.bpf_mem_cache_idx], ids=["memalloc", "kernel"])
def test_cache_idx_matches_the_kernel_formula_and_the_range_table_for_every_size(idx_fn):
    for s in range(0, 4098):
        got = idx_fn(s)
        assert got == model_idx(s) == table_idx(s), s
        if got >= 0:
            fitting = [u for u in SIZES if u >= s]
            assert SIZES[got] >= s and SIZES[got] == min(fitting), s
    assert idx_fn(0) == idx_fn(4097) == idx_fn(1 << 40) == idx_fn(-1) == -1


# ---- 2. bpf_mem_alloc (size == 0 flavour) and check_size -----------------------------------------


def test_alloc_accepts_up_to_4088_bytes_in_the_right_bucket_and_the_bytes_are_usable(domain):
    a0 = BpfMemAlloc(0)
    units = unit_by_cache(a0)
    with percpu.on_cpu(1):
        for s in sorted(set(range(1, 4089, 7)) | set(range(4080, 4089))):
            p = a0.alloc(s)
            assert p is not None, s
            assert units[a0.obj_cache(p)] == SIZES[model_idx(s + 8)], s  # the 8-byte header counts
            assert a0.unit_size(p) >= s
            pattern = bytes((s + i) & 0xFF for i in range(s))
            domain.mem(p, s)[:] = pattern
            assert bytes(domain.mem(p, s)) == pattern
            assert a0.obj_cache(p) is not None  # the header survived the write
            a0.free(p)
        for s in (0, 4089, 4096, 5000, -1):
            assert a0.alloc(s) is None, s
    assert consistent(a0)["outstanding"] == 0


def test_check_size_boundaries():
    for fn in (check_size, kernel.bpf_mem_alloc_check_size):
        assert fn(False, 4088) == 0 and fn(False, 4089) == -errno.E2BIG
        assert fn(True, 4096) == 0 and fn(True, 4097) == -errno.E2BIG
        assert fn(False, 1) == fn(True, 1) == 0


# ---- 3. watermarks, batch, prefill ---------------------------------------------------------------


@pytest.mark.parametrize("unit, low, high, batch, mid", WATERMARKS)
def test_watermark_table_and_the_caches_of_a_real_allocator(domain, unit, low, high, batch, mid):
    assert watermarks(unit) == (low, high, batch)
    assert (high + low) // 2 == mid
    ma = BpfMemAlloc(unit - 8)
    caches = ma.info()["caches"]
    assert sorted(c["cpu"] for c in caches) == list(domain.possible)
    prefill = 4 if unit <= 256 else 1
    for c in caches:
        assert (c["unit_size"], c["low_watermark"], c["high_watermark"], c["batch"]) == (unit, low, high, batch)
        assert c["free_cnt"] == c["free_llist"] == prefill
    assert consistent(ma)["created"] == prefill * len(domain.possible)


@pytest.mark.parametrize("unit", [56, 520, 4104, 8200])
def test_free_bulk_trims_to_the_midpoint_when_free_cnt_passes_high(domain, unit):
    low, high, _batch = watermarks(unit)
    mid = (high + low) // 2
    ma = BpfMemAlloc(unit - 8)
    with percpu.on_cpu(0):
        objs = [ma.cache_alloc() for _ in range(2 * high + 8)]
        assert None not in objs
        trims = 0
        for p in objs:
            before = cache(ma, 0)
            ma.cache_free(p)
            after = cache(ma, 0)
            assert after["free_cnt"] <= high
            if after["nr_free_bulk"] != before["nr_free_bulk"]:
                trims += 1
                assert before["free_cnt"] == high  # this free made it high + 1
                assert after["free_cnt"] == mid
                assert after["nr_free_bulk"] - before["nr_free_bulk"] == high + 1 - mid
    assert trims >= 1
    consistent(ma)


def test_percpu_caches_use_1_3_1_and_prefill_one(domain):
    assert watermarks(64, percpu=True) == watermarks(4096, percpu=True) == (1, 3, 1)
    pc = BpfMemAlloc(64, percpu=True)
    caches = pc.info()["caches"]
    assert len(caches) == len(domain.possible)
    for c in caches:
        assert (c["low_watermark"], c["high_watermark"], c["batch"], c["free_cnt"]) == (1, 3, 1, 1)
        assert (c["unit_size"], c["percpu_size"]) == (64, 16)  # no +8 for per-CPU units
    consistent(pc)


def test_size0_allocator_prefills_4_small_and_1_large_per_bucket(domain):
    a0 = BpfMemAlloc(0)
    caches = a0.info()["caches"]
    assert len(caches) == 11 * len(domain.possible)
    for c in caches:
        assert c["unit_size"] == SIZES[c["bucket"]]
        assert c["free_cnt"] == (4 if c["unit_size"] <= 256 else 1)
    # "~ 11 Kbyte per cpu": 4*(16+...+256) + 512 + 1024 + 2048 + 4096
    assert sum(c["free_cnt"] * c["unit_size"] for c in caches if c["cpu"] == 0) == 10816
    consistent(a0)


# ---- 4. LIFO -------------------------------------------------------------------------------------


def test_free_then_alloc_on_the_same_cpu_returns_the_same_object(domain):
    ma = BpfMemAlloc(48)
    with percpu.on_cpu(1):
        p = ma.cache_alloc()
        ma.cache_free(p)
        assert ma.cache_alloc() == p
        a, b, c = (ma.cache_alloc() for _ in range(3))
        for x in (a, b, c):
            ma.cache_free(x)
        assert [ma.cache_alloc() for _ in range(3)] == [c, b, a]
    # A free goes to the freeing CPU's list: CPU 2 hands out CPU 1's object next.
    with percpu.on_cpu(2):
        ma.cache_free(p)
        assert ma.cache_alloc() == p
    a0 = BpfMemAlloc(0)
    with percpu.on_cpu(3):
        q = a0.alloc(100)
        a0.free(q)
        assert a0.alloc(120) == q  # same bucket (128)
    consistent(ma)
    consistent(a0)


# ---- 5. free_rcu ---------------------------------------------------------------------------------


def test_free_rcu_object_is_not_reused_while_an_older_reader_is_inside(domain):
    ma = BpfMemAlloc(48)
    with percpu.on_cpu(0):
        victims = [ma.cache_alloc() for _ in range(8)]
        r = Reader(rcu.read_lock)
        try:
            for v in victims:
                ma.cache_free_rcu(v)
            c = cache(ma, 0)
            assert c["waiting_for_gp"] + c["free_by_rcu"] == 8 and c["call_rcu_in_progress"]
            # Churn: bursts that cross both watermarks (refill, trim to tgt, reuse by alloc_bulk).
            for _ in range(4):
                objs = [ma.cache_alloc() for _ in range(300)]
                assert None not in objs
                assert not set(objs) & set(victims)
                for o in objs:
                    ma.cache_free(o)
                ma.poll()
            c = cache(ma, 0)
            assert c["waiting_for_gp"] + c["free_by_rcu"] == 8
            consistent(ma)
        finally:
            r.leave()
        # After the reader left and a grace period passed, the victims leave the RCU lists.
        settle(ma, until=lambda: cache(ma, 0)["waiting_for_gp"] + cache(ma, 0)["free_by_rcu"] == 0)
    consistent(ma)


def _ttrace_state(ma: BpfMemAlloc):
    """p on waiting_for_gp_ttrace, q on free_by_rcu_ttrace of CPU 0; returns (p, q, trace reader)."""
    p, q = ma.cache_alloc(), ma.cache_alloc()
    released = ma.info()["released"]
    r = Reader(rcu.read_lock)
    t = None
    try:
        ma.cache_free_rcu(p)  # free_by_rcu -> waiting_for_gp at once (check_free_by_rcu)
        assert on_lists(cache(ma, 0)) | {"free_llist": 0} == dict.fromkeys(LISTS, 0) | {"waiting_for_gp": 1}
        assert cache(ma, 0)["call_rcu_in_progress"]
        ma.cache_free_rcu(q)  # a callback is in flight: q waits on free_by_rcu for the next one
        assert cache(ma, 0)["free_by_rcu"] == 1 and cache(ma, 0)["waiting_for_gp"] == 1
        ma.refill(0)
        ma.poll()
        assert cache(ma, 0)["free_by_rcu"] == 1 and cache(ma, 0)["waiting_for_gp"] == 1  # GP cannot end
        t = Reader(rcu.read_lock_trace)
    finally:
        r.leave()
    rcu.synchronize()
    ma.poll()  # __free_by_rcu: p -> tgt free_by_rcu_ttrace -> waiting_for_gp_ttrace (Tasks Trace GP)
    c = cache(ma, 0)
    assert (c["waiting_for_gp"], c["free_by_rcu"], c["free_by_rcu_ttrace"], c["waiting_for_gp_ttrace"]) == (0, 1, 0, 1)
    ma.refill(0)  # check_free_by_rcu: q -> waiting_for_gp
    c = cache(ma, 0)
    assert (c["waiting_for_gp"], c["free_by_rcu"]) == (1, 0)
    rcu.synchronize()  # a Tasks Trace reader does not hold back a normal grace period
    ma.poll()  # q -> free_by_rcu_ttrace: waiting_for_gp_ttrace is busy with p's batch
    c = cache(ma, 0)
    assert (c["waiting_for_gp"], c["free_by_rcu"], c["free_by_rcu_ttrace"], c["waiting_for_gp_ttrace"]) == (0, 0, 1, 1)
    assert ma.info()["released"] == released
    consistent(ma)
    return p, q, t


def test_free_rcu_object_moves_through_the_lists_then_back_to_kmalloc(domain):
    ma = BpfMemAlloc(48)
    with percpu.on_cpu(0):
        released = ma.info()["released"]
        _p, _q, t = _ttrace_state(ma)
        t.leave()
        settle(ma, until=lambda: ma.info()["released"] == released + 2)
        c = cache(ma, 0)
        assert on_lists(c) == dict.fromkeys(LISTS, 0) | {"free_llist": c["free_cnt"]}
        assert c["nr_released"] == 2
    consistent(ma)


def test_objects_waiting_for_tasks_trace_are_reused_by_alloc_bulk(domain):
    ma = BpfMemAlloc(48)
    with percpu.on_cpu(0):
        p, q, t = _ttrace_state(ma)
        try:
            new_before = cache(ma, 0)["nr_new"]
            objs = [ma.cache_alloc() for _ in range(100)]
            assert p in objs and q in objs  # alloc_bulk takes free_by_rcu_ttrace, waiting_for_gp_ttrace first
            c = cache(ma, 0)
            assert c["free_by_rcu_ttrace"] == c["waiting_for_gp_ttrace"] == 0
            assert ma.info()["released"] == 0
            assert c["nr_new"] - new_before <= 98
            for o in objs:
                ma.cache_free(o)
        finally:
            t.leave()
    consistent(ma)


# ---- 6. tgt: alloc on CPU 0, free on CPU 1 -------------------------------------------------------


def test_objects_freed_on_another_cpu_go_back_to_the_allocating_cache(domain):
    ma = BpfMemAlloc(48)
    t = Reader(rcu.read_lock_trace)  # nothing goes back to kmalloc: reuse must bound the memory
    try:
        peak, nr_new, cpu0_ttrace = 0, [], 0
        for _ in range(200):
            with percpu.on_cpu(0):
                objs = [ma.cache_alloc() for _ in range(100)]
            assert None not in objs
            with percpu.on_cpu(1):
                for p in objs:
                    ma.cache_free(p)
            info = ma.info()
            peak = max(peak, info["created"] - info["released"])
            c0, c1 = cache(ma, 0), cache(ma, 1)
            nr_new.append(c0["nr_new"])
            cpu0_ttrace = max(cpu0_ttrace, c0["free_by_rcu_ttrace"] + c0["waiting_for_gp_ttrace"])
            assert c1["free_by_rcu_ttrace"] == c1["waiting_for_gp_ttrace"] == 0
            assert c1["free_cnt"] <= c1["high_watermark"]
            assert c1["tgt"] == c0["cache"]
        assert peak < 400, peak  # 20000 objects went through; a few hundred exist
        assert cpu0_ttrace > 0  # the trimmed objects arrived in CPU 0's lists
        # CPU 0 stops calling kmalloc (it reuses what CPU 1 trimmed): only a few refills ever did.
        assert nr_new[-1] - nr_new[100] <= 48 and len(set(nr_new[-50:])) == 1
        c0, c1 = cache(ma, 0), cache(ma, 1)
        assert c0["nr_alloc_bulk"] > 10 * c0["nr_new"]
        assert c1["nr_new"] == 4 and c1["nr_alloc_bulk"] == 4  # CPU 1 never refilled
        assert c1["nr_free_bulk"] > 19000
        assert ma.info()["released"] == 0
        consistent(ma)
    finally:
        t.leave()
    settle(ma, until=lambda: cache(ma, 0)["waiting_for_gp_ttrace"] + cache(ma, 0)["free_by_rcu_ttrace"] == 0)
    assert ma.info()["released"] > 0
    assert cache(ma, 1)["nr_released"] == 0  # every object went back through CPU 0's cache
    consistent(ma)


def test_free_rcu_on_another_cpu_lands_in_the_allocating_cache(domain):
    ma = BpfMemAlloc(48)
    with percpu.on_cpu(0):
        p = ma.cache_alloc()
    t = Reader(rcu.read_lock_trace)
    try:
        with percpu.on_cpu(1):
            ma.cache_free_rcu(p)
            assert cache(ma, 1)["waiting_for_gp"] == 1
        rcu.synchronize()
        ma.poll()
        c0, c1 = cache(ma, 0), cache(ma, 1)
        assert c1["waiting_for_gp"] == c1["free_by_rcu_ttrace"] == c1["waiting_for_gp_ttrace"] == 0
        assert c0["free_by_rcu_ttrace"] + c0["waiting_for_gp_ttrace"] == 1
    finally:
        t.leave()
    consistent(ma)


# ---- 7. test_bpf_ma bursts -----------------------------------------------------------------------


def test_bpf_ma_bursts_succeed_with_only_the_prefill(domain):
    for size, n in BURSTS.items():
        ma = BpfMemAlloc(size - 8)  # bin_data_<size>: the unit equals the bucket size
        with percpu.on_cpu(2):
            assert cache(ma, 2)["free_cnt"] == (4 if size <= 256 else 1)
            objs = [ma.cache_alloc() for _ in range(n)]
            assert None not in objs, size
            assert len(set(objs)) == n
            for p in objs:
                ma.cache_free(p)
        assert consistent(ma)["outstanding"] == 0
        assert ma.destroy(wait=True).clean
    a0 = BpfMemAlloc(0)
    with percpu.on_cpu(2):
        for size, n in BURSTS.items():
            objs = [a0.alloc(size - 8) for _ in range(n)]
            assert None not in objs, size
            assert {cache_unit for cache_unit in (a0.unit_size(p) + 8 for p in objs)} == {size}
            for p in objs:
                a0.free(p)
    assert consistent(a0)["outstanding"] == 0


# ---- 8. zeroing ----------------------------------------------------------------------------------


def test_new_objects_are_zeroed_and_recycled_ones_are_not(domain):
    dirty = [domain.kmalloc(64) for _ in range(64)]  # leave garbage in the 64-byte slab slots
    for d in dirty:
        domain.mem(d, 64)[:] = b"\xa5" * 64
        domain.kfree(d)
    ma = BpfMemAlloc(48)  # unit 56: the same kmalloc class
    with percpu.on_cpu(0):
        objs = [ma.cache_alloc() for _ in range(100)]  # prefill and refills
        for p in objs:
            assert bytes(domain.mem(p, 48)) == bytes(48)
        p = objs[-1]
        domain.mem(p, 48)[:] = b"\x5a" * 48
        ma.cache_free(p)
        assert ma.cache_alloc() == p
        assert bytes(domain.mem(p, 48)) == b"\x5a" * 48
        objs[-1] = p
        for o in objs:
            ma.cache_free(o)
    consistent(ma)


# ---- 9. the per-CPU flavour ----------------------------------------------------------------------


def test_percpu_object_has_zeroed_independent_copies_on_every_cpu(domain):
    pc = BpfMemAlloc(64, percpu=True)
    with percpu.on_cpu(2):
        p = pc.cache_alloc()
    pp = pc.pptr(p)
    assert domain.arena.load(p) == pp  # *(void **)ptr is the per-CPU pointer
    copies = [domain.arena.pcpu_ptr(pp, cpu) for cpu in domain.possible]
    assert len(set(copies)) == len(copies)
    for a in copies:
        assert bytes(domain.mem(a, 64)) == bytes(64)
    for cpu, a in zip(domain.possible, copies):
        domain.mem(a, 64)[:] = bytes([cpu + 1]) * 64
    for cpu, a in zip(domain.possible, copies):
        assert bytes(domain.mem(a, 64)) == bytes([cpu + 1]) * 64
    assert pc.unit_size(p) == 64
    with pytest.raises(errors.InvalidArgument):
        BpfMemAlloc(48).pptr(123)
    with percpu.on_cpu(2):
        pc.cache_free(p)
    consistent(pc)


def test_percpu_needs_a_size_or_percpu_init(domain):
    for make in (lambda: BpfMemAlloc(0, percpu=True), lambda: kernel.bpf_mem_alloc_init(0, True),
                 lambda: domain.arena.ma_create(0, 1, 1)):
        with pytest.raises(errors.InvalidArgument) as ei:
            make()
        assert ei.value.errno == errno.EINVAL


def test_percpu_init_sets_up_buckets_on_demand(domain):
    pa = BpfMemAlloc.percpu_init()
    assert pa.percpu and pa.all_buckets and pa.info()["caches"] == []
    with percpu.on_cpu(1):
        assert pa.alloc(64) is None  # no bucket yet
        pa.percpu_unit_init(64)
        caches = pa.info()["caches"]
        assert sorted(c["cpu"] for c in caches) == list(domain.possible)
        assert {(c["bucket"], c["unit_size"], c["free_cnt"], c["low_watermark"], c["high_watermark"]) for c in caches} \
            == {(4, 64, 1, 1, 3)}
        created = pa.info()["created"]
        pa.percpu_unit_init(64)  # idempotent
        pa.percpu_unit_init(33)  # same bucket
        assert pa.info()["caches"] == caches and pa.info()["created"] == created
        p = pa.alloc(64)
        q = pa.alloc(40)
        assert p is not None and q is not None
        assert bytes(domain.mem(domain.arena.pcpu_ptr(pa.pptr(p), 3), 64)) == bytes(64)
        assert pa.alloc(65) is None and pa.alloc(4096) is None  # buckets 0 and 10 are not set up
        pa.percpu_unit_init(4096)
        r = pa.alloc(4096)  # per-CPU: no header added to the size
        assert r is not None and pa.unit_size(r) == 4096
        for bad in (0, 4097):
            with pytest.raises(errors.InvalidArgument) as ei:
                pa.percpu_unit_init(bad)
            assert ei.value.errno == errno.EINVAL
        for x in (p, q, r):
            pa.free(x)
    with pytest.raises(errors.InvalidArgument):
        BpfMemAlloc(0).percpu_unit_init(64)  # not a percpu_init allocator
    consistent(pa)


# ---- 10. memcg -----------------------------------------------------------------------------------


def test_allocator_is_charged_to_the_group_active_at_init(domain):
    g = memcg.Group("g", limit=1 << 20)
    other = BpfMemAlloc(48)  # created outside any group
    with g:
        ma = BpfMemAlloc(48)
    assert ma.info()["memcg"] == g.id and other.info()["memcg"] == 0
    with percpu.on_cpu(0):
        p = ma.cache_alloc()
        per_obj = domain.ksize(p - 8)
        ma.cache_free(p)

        def live() -> int:
            i = ma.info()
            return i["created"] - i["released"]

        assert g.usage == live() * per_obj > 0
        objs = [ma.cache_alloc() for _ in range(300)]  # charged outside the with-block too
        assert None not in objs
        assert g.usage == live() * per_obj >= 300 * per_obj
        usage = g.usage
        oth = [other.cache_alloc() for _ in range(300)]
        assert None not in oth and g.usage == usage  # the other allocator charges nothing
        for o in objs:
            ma.cache_free(o)
        for o in oth:
            other.cache_free(o)
    consistent(ma)
    assert ma.destroy(wait=True).clean
    assert g.usage == 0
    g.remove()


def test_allocations_fail_at_the_group_limit_instead_of_exceeding_it(domain):
    g = memcg.Group("tiny", limit=1000)
    with g:
        ma = BpfMemAlloc(48)  # the prefill already hits the limit: init still works
    with percpu.on_cpu(0):
        objs = [ma.cache_alloc() for _ in range(40)]
        assert None in objs
        assert g.usage <= 1000 and g.failcnt > 0
        got = [o for o in objs if o is not None]
        assert got and len(set(got)) == len(got)
        consistent(ma)
        for o in got:
            ma.cache_free(o)
    assert ma.destroy(wait=True).clean
    assert g.usage == 0


def test_percpu_allocator_charges_holder_and_per_cpu_area_and_returns_both(domain):
    g = memcg.Group("pc", limit=1 << 22)
    with g:
        pc = BpfMemAlloc(256, percpu=True)
    assert g.info()["usage_pcpu"] > 0 and g.info()["usage_other"] > 0
    with percpu.on_cpu(1):
        objs = [pc.cache_alloc() for _ in range(50)]
    assert None not in objs
    assert g.info()["usage_pcpu"] >= 50 * 256 * len(domain.possible)
    pc.raw_free(objs.pop())
    with percpu.on_cpu(2):
        for o in objs:
            pc.cache_free(o)
    consistent(pc)
    assert pc.destroy(wait=True).clean
    assert g.usage == 0


# ---- 11. destroy ---------------------------------------------------------------------------------


def _kmalloc_in_use(dom: percpu.Domain) -> int:
    """kmalloc objects in use (empty slabs stay cached, as the kernel's do)."""
    return sum(k["inuse"] for k in dom.stats()["kmalloc"])


def test_destroy_of_an_empty_allocator_is_clean_and_returns_the_memory(domain):
    before = _kmalloc_in_use(domain)
    ma = BpfMemAlloc(48, name="clean")
    with percpu.on_cpu(1):
        objs = [ma.cache_alloc() for _ in range(200)]
        ma.cache_free_rcu(objs.pop())
        for o in objs:
            ma.cache_free(o)
    rep = ma.destroy(wait=True)
    assert rep.clean and rep.outstanding == 0 and rep.leaked == [] and rep.warnings == []
    assert rep.created == rep.released + rep.deferred
    assert _kmalloc_in_use(domain) == before
    domain.check()


def test_destroy_reports_outstanding_objects_and_retires_every_handle(domain):
    ma = BpfMemAlloc(48, name="leaky")
    other = BpfMemAlloc.attach("leaky")
    with percpu.on_cpu(0):
        objs = [ma.cache_alloc() for _ in range(10)]
        for o in objs[3:]:
            other.cache_free(o)
    keep = objs[:3]
    rep = ma.destroy(wait=True)
    assert rep.outstanding == 3 and not rep.clean
    assert sorted(rep.leaked) == sorted(keep)
    assert all(v == 0 for v in rep.lists.values())
    assert any("3 objects still allocated" in w for w in rep.warnings)
    for h in (ma, other):
        assert h.destroyed
        calls = [(h.cache_alloc,), (h.info,), (h.check,), (h.destroy,), (h.cache_free, keep[0]),
                 (h.cache_free_rcu, keep[1]), (h.cache_alloc_flags, True), (h.obj_cache, keep[2])]
        for fn, *args in calls:
            with pytest.raises(ValueError):
                fn(*args)
    with pytest.raises(errors.NoEntry):
        BpfMemAlloc.attach("leaky")
    with pytest.raises(errors.NoEntry):
        domain.lookup("leaky")
    domain.check()


def test_a_pointer_leaked_by_a_destroyed_allocator_is_not_taken_by_a_later_one(domain):
    a = BpfMemAlloc(48)
    with percpu.on_cpu(0):
        stale = a.cache_alloc()
    a.destroy(wait=True)  # reports the leak; the object keeps a header naming a's (now freed) cache
    b = BpfMemAlloc(48)  # its caches block lands where a's was
    with percpu.on_cpu(0):
        mine = b.cache_alloc()
        with pytest.raises(errors.InvalidArgument):
            b.cache_free(stale)
    rep = b.destroy(wait=True)
    assert rep.outstanding == 1 and rep.leaked == [mine]


# ---- 12. bad input -------------------------------------------------------------------------------


def test_bad_frees_raise_and_change_nothing(domain):
    ma = BpfMemAlloc(48)
    ma2 = BpfMemAlloc(48)
    a0 = BpfMemAlloc(0)
    with percpu.on_cpu(0):
        p = ma.cache_alloc()
        freed = ma.cache_alloc()
        ma.cache_free(freed)
        foreign = ma2.cache_alloc()
        plain = domain.kzalloc(64) + 8
        s0, s2 = consistent(ma), consistent(ma2)
        for op in (lambda: ma.cache_free(plain), lambda: ma.cache_free(p + 8), lambda: ma.cache_free(p + 1),
                   lambda: ma.cache_free(freed), lambda: ma.cache_free_rcu(freed), lambda: ma.cache_free(foreign),
                   lambda: ma.raw_free(foreign), lambda: ma.cache_free(domain.size + 64)):
            with pytest.raises(errors.InvalidArgument) as ei:
                op()
            assert ei.value.errno == errno.EINVAL
            assert consistent(ma) == s0
        for op in (lambda: ma.free(p), lambda: ma.free_rcu(p), lambda: ma.alloc(16), lambda: a0.cache_alloc(),
                   lambda: a0.cache_free(a0.alloc(16))):
            with pytest.raises(ValueError):
                op()
            assert consistent(ma) == s0
        assert consistent(ma2) == s2
        ma.cache_free(None)
        ma.cache_free(0)
        ma.cache_free_rcu(None)
        kernel.bpf_mem_cache_free(ma, None)
        assert consistent(ma) == s0
        ma.cache_free(p)  # the real object is still accepted
        ma2.cache_free(foreign)
    assert consistent(ma)["outstanding"] == 0
    consistent(a0)


# ---- 13. NMI context -----------------------------------------------------------------------------


def test_nmi_with_the_cache_busy_fails_allocs_and_parks_frees_on_the_extra_lists(domain):
    ma = BpfMemAlloc(48)
    with percpu.on_cpu(0):
        p, q = ma.cache_alloc(), ma.cache_alloc()
        c0 = cache(ma, 0)
        gate = IrqWorkGate()  # the refills NMI context queues wait until we have looked
        try:
            lock = domain.lock_at(c0["cache"])
            lock.lock()
            try:
                with percpu.nmi():
                    assert ma.cache_alloc() is None  # nested: the kernel's active != 1
                    ma.cache_free(p)
                    ma.cache_free_rcu(q)
            finally:
                lock.unlock()
            c = cache(ma, 0)
            assert (c["free_llist_extra"], c["free_llist_extra_rcu"]) == (1, 1)
            assert c["nr_busy"] - c0["nr_busy"] == 2
            assert c["nr_empty"] - c0["nr_empty"] == 1
            assert c["free_cnt"] == c0["free_cnt"]
            st = consistent(ma)
            assert st["outstanding"] == 0
        finally:
            gate.open()
        c = cache(ma, 0)
        assert c["free_llist_extra_rcu"] == 0  # the queued refill ran check_free_by_rcu
        assert c["free_llist_extra"] == 1  # only free_bulk empties free_llist_extra
        consistent(ma)
        # Normal-context frees past the high watermark: free_bulk takes free_llist_extra along.
        objs = [ma.cache_alloc() for _ in range(c["high_watermark"] + 1)]
        for o in objs:
            ma.cache_free(o)
        c = cache(ma, 0)
        assert c["free_llist_extra"] == 0 and c["nr_free_bulk"] > 0
    consistent(ma)
    settle(ma, until=lambda: consistent(ma)["cached"] == sum(cc["free_cnt"] for cc in ma.info()["caches"]))


def test_nmi_allocates_when_the_cache_is_free_but_refills_only_from_irq_work(domain):
    ma = BpfMemAlloc(48)
    with percpu.on_cpu(3):
        assert cache(ma, 3)["free_cnt"] == 4
        gate = IrqWorkGate()
        try:
            with percpu.nmi():
                got = [ma.cache_alloc() for _ in range(6)]
            assert got[4:] == [None, None] and None not in got[:4]  # no inline refill in NMI context
            assert cache(ma, 3)["free_cnt"] == 0 and cache(ma, 3)["nr_refill"] == 0
        finally:
            gate.open()
        c = cache(ma, 3)
        assert c["nr_refill"] >= 1 and c["free_cnt"] >= c["low_watermark"]  # the irq_work refill ran
        for o in got[:4]:
            ma.cache_free(o)
    consistent(ma)


def test_normal_context_waits_for_a_busy_cache_instead_of_failing(domain):
    ma = BpfMemAlloc(48)
    off = cache(ma, 0)["cache"]
    held, released = threading.Event(), threading.Event()

    def holder() -> None:
        lk = domain.lock_at(off)
        lk.lock()
        held.set()
        time.sleep(0.2)
        released.set()
        lk.unlock()

    th = threading.Thread(target=holder, daemon=True)
    th.start()
    assert held.wait(10)
    with percpu.on_cpu(0):
        p = ma.cache_alloc()
        assert p is not None and released.is_set()  # it could only succeed after the unlock
        ma.cache_free(p)
    th.join(10)
    assert cache(ma, 0)["nr_busy"] == 0
    consistent(ma)


# ---- 14. the kernel facade -----------------------------------------------------------------------


def test_kernel_facade_names_work(domain):
    ma = kernel.bpf_mem_alloc_init(48, False)
    assert isinstance(ma, BpfMemAlloc) and ma.size == 48 and not ma.percpu
    with percpu.on_cpu(0):
        p = kernel.bpf_mem_cache_alloc(ma)
        kernel.bpf_mem_cache_free(ma, p)
        assert kernel.bpf_mem_cache_alloc(ma) == p
        kernel.bpf_mem_cache_free_rcu(ma, p)
        assert cache(ma, 0)["waiting_for_gp"] == 1
        q = kernel.bpf_mem_cache_alloc_flags(ma, kernel.GFP_KERNEL)
        r = kernel.bpf_mem_cache_alloc_flags(ma, kernel.GFP_ATOMIC)
        assert q is not None and r is not None and q != r
        info = ma.info()
        kernel.bpf_mem_cache_raw_free(q)  # straight back to kmalloc
        assert ma.info()["released"] == info["released"] + 1 and ma.info()["raw_freed"] == 1
        assert ma.obj_cache(q) is None
        with pytest.raises(errors.InvalidArgument):
            kernel.bpf_mem_cache_raw_free(q)
        kernel.bpf_mem_cache_raw_free(None)
        kernel.bpf_mem_cache_free(ma, r)
        a0 = kernel.bpf_mem_alloc_init(0, False)
        x = kernel.bpf_mem_alloc(a0, 100)
        assert a0.unit_size(x) == 120
        kernel.bpf_mem_free(a0, x)
        kernel.bpf_mem_free_rcu(a0, kernel.bpf_mem_alloc(a0, 100))
        pa = kernel.bpf_mem_alloc_percpu_init()
        assert kernel.bpf_mem_alloc_percpu_unit_init(pa, 256) == 0
        y = kernel.bpf_mem_alloc(pa, 256)
        assert y is not None
        kernel.bpf_mem_free(pa, y)
    for m in (ma, a0, pa):
        consistent(m)
        kernel.bpf_mem_alloc_destroy(m)
        assert m.destroyed
    rcu.barrier(rcu.TASKS_TRACE)
    rcu.barrier()


def test_alloc_flags_gfp_kernel_falls_back_to_kmalloc_when_the_cache_is_empty(domain):
    # A per-CPU unit of 4 KiB: the refill's atomic pcpu_alloc cannot populate pages, GFP_KERNEL can.
    pc = BpfMemAlloc(4096, percpu=True)
    got = []
    with percpu.on_cpu(0):
        for _ in range(20):
            while len(got) < 500 and (p := pc.cache_alloc()) is not None:
                got.append(p)
            q = kernel.bpf_mem_cache_alloc_flags(pc, kernel.GFP_KERNEL)
            assert q is not None
            got.append(q)
            if pc.info()["direct"]:
                break
        assert pc.info()["direct"] >= 1
        assert pc.obj_cache(q) == cache(pc, 0)["cache"]  # the hint names this CPU's cache
        assert bytes(domain.mem(domain.arena.pcpu_ptr(pc.pptr(q), 1), 4096)) == bytes(4096)
        assert consistent(pc)["outstanding"] == len(got)
        for o in got:
            pc.cache_free(o)
    assert consistent(pc)["outstanding"] == 0


# ---- 15. 64 simulated CPUs -----------------------------------------------------------------------


def test_64_cpus_every_cache_prefilled_and_cross_cpu_free(domain64):
    a0 = BpfMemAlloc(0)
    caches = a0.info()["caches"]
    assert len(caches) == 64 * 11
    assert {(c["cpu"], c["bucket"]) for c in caches} == {(cpu, b) for cpu in range(64) for b in range(11)}
    for c in caches:
        assert c["free_cnt"] == (4 if c["unit_size"] <= 256 else 1)
    with percpu.on_cpu(63):
        objs = [a0.alloc(s) for s in (8, 100, 1000, 4000) for _ in range(20)]
        assert None not in objs
    units = {c["cache"]: (c["cpu"], c["unit_size"]) for c in caches}
    assert {units[a0.obj_cache(p)][0] for p in objs} == {63}
    with percpu.on_cpu(5):
        for p in objs:
            a0.free(p)
    c5 = [c for c in a0.info()["caches"] if c["cpu"] == 5]
    assert sum(c["nr_free"] for c in c5) == len(objs)
    assert {units[c["tgt"]][0] for c in c5 if c["nr_free"]} == {63}
    assert consistent(a0)["outstanding"] == 0
    ma = BpfMemAlloc(48)
    with percpu.on_cpu(63):
        p = ma.cache_alloc()
    with percpu.on_cpu(5):
        ma.cache_free(p)
        assert ma.cache_alloc() == p
        ma.cache_free(p)
    consistent(ma)
