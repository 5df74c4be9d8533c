"""The BPF CPU map (``percpu.cpumap``): the kernel's errno order, bulk queues, rings and workers.

Every test runs in a simulated 2-CPU domain; entry ``k`` of a map has a worker
process pinned to (simulated) CPU ``k``.  The producer is the test's own
thread acting as CPU 0 (``percpu.on_cpu(0)``) inside an RCU read-side
section, as a NAPI poll runs.  The workers' "stack" is a module-level
function (picklable, so the spawn start method works too) that adds the
packets it receives to a per-CPU counter in the domain.  No timing is
asserted: every wait is bounded and waits for a count.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import math
import os
import signal
import struct
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from xdp_helpers import count_stack, delivered, frames_in_flight, wait_until  # tests/ is on sys.path

import percpu
from percpu import _core, errors, kernel
from percpu.cpumap import (
    BPF_ANY,
    BPF_EXIST,
    BPF_F_NUMA_NODE,
    BPF_NOEXIST,
    CPU_MAP_BULK_SIZE,
    NR_CPUS,
    QSIZE_MAX,
    XDP_ABORTED,
    XDP_DROP,
    XDP_PASS,
    XDP_REDIRECT,
    XDP_TX,
    BpfCpumapVal,
    CpuMap,
    bpf_redirect_map,
    frame_pool,
    xdp_do_flush,
    xdp_do_redirect,
)
from percpu.runtime import rcu

pytestmark = pytest.mark.timeout(120)

WAIT = 30.0  # seconds: the bound of every wait for a worker


# ---- module-level worker functions (spawn pickles them by name) ------------------------------



def sum_stack(counter: int, pkts) -> None:
    """The stack: count packets in ``counter[cpu]`` and add the u32 at byte 0 of each to ``counter[2+cpu]``."""
    a = percpu.current_domain().arena
    seqs = np.frombuffer(pkts.gather(0, 4), dtype=np.uint32)
    a.fetch_add(counter + 16 + 8 * pkts.cpu, int(seqs.astype(np.uint64).sum()))
    a.fetch_add(counter + 8 * pkts.cpu, len(pkts))


def raising_stack(counter: int, pkts) -> None:
    count_stack(counter, pkts)
    raise RuntimeError("the stack refuses")


def drop_odd_len(ctx) -> int:
    return XDP_DROP if ctx.len % 2 else XDP_PASS


def always(action: int, ctx) -> int:
    return action


def raising_prog(ctx) -> int:
    raise ValueError("a program that raises")


_attached: dict[str, CpuMap] = {}


def redirect_prog(name: str, key: int, ctx) -> int:
    """An entry program that redirects every frame to ``key`` of the map registered as ``name``."""
    m = _attached.get(name)
    if m is None:
        m = _attached[name] = CpuMap.attach(name)
    return kernel.bpf_redirect_map(m, key, 0)


# ---- helpers ---------------------------------------------------------------------------------



def alloc_frames(pool, payloads: list[bytes]) -> list[int]:
    data = b"".join(payloads)
    lens = np.array([len(p) for p in payloads], dtype=np.uint32)
    offs = np.zeros(len(payloads), dtype=np.uint32)
    if len(payloads) > 1:
        offs[1:] = np.cumsum(lens[:-1])
    fr = _core.xdp_frames_alloc(pool, data, offs, lens, 1, 0)
    got = struct.unpack(f"<{len(fr) // 8}Q", fr)
    assert len(got) == len(payloads), "the frame pool ran dry"
    return list(got)


def payload(seq: int, size: int = 64) -> bytes:
    return struct.pack("<I", seq) + bytes(size - 4)


def send(m: CpuMap, key: int, payloads: list[bytes], *, flush: bool = True, cpu: int = 0) -> int:
    """One poll on ``cpu``: a frame per payload, ``bpf_redirect_map(m, key)``; the frames redirected.

    A frame whose redirect finds the slot empty (the helper's fallback action)
    goes back to the pool and is not counted.
    """
    pool = frame_pool(m.domain)
    sent = 0
    with percpu.on_cpu(cpu), rcu.read_lock():
        for f in alloc_frames(pool, payloads):
            act = bpf_redirect_map(m, key, 0)
            if act == XDP_REDIRECT:
                xdp_do_redirect(f)
                sent += 1
            else:
                assert act == XDP_ABORTED
                _core.xdp_frames_free(pool, struct.pack("<Q", f))
        if flush:
            xdp_do_flush()
    return sent



def total(m: CpuMap, key: int, field: str) -> int:
    s = m.stats().get(key)
    return 0 if s is None else s.total(field)


def on(m: CpuMap, key: int, cpu: int, field: str) -> int:
    s = m.stats().get(key)
    return 0 if s is None else s.per_cpu.get(cpu, {}).get(field, 0)


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def dom(make_domain) -> percpu.Domain:
    return make_domain(size=64 << 20, nr_cpus=2)


@pytest.fixture
def counter(dom) -> int:
    p = dom.kzalloc(64)
    assert p
    return p


@pytest.fixture
def maps(dom) -> Iterator[Callable[..., CpuMap]]:
    """make(max_entries, ..., method="fork"): maps closed and freed after the test, pool checked."""
    made: list[CpuMap] = []

    def make(*args, **kw) -> CpuMap:
        kw.setdefault("method", "fork")
        m = CpuMap(*args, **kw)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()
        m.free()
    if made:
        # every frame went back: the ring, bulk queues and batches are all empty
        assert frames_in_flight(frame_pool(dom)) == 0



# ---- 1. the errno order of the map operations -----------------------------------------------


def _errno_of(exc_info) -> int:
    return exc_info.value.errno


@pytest.mark.parametrize(
    ("args", "kw", "exc", "code"),
    [
        ((0,), {}, errors.InvalidArgument, errno.EINVAL),
        ((2,), {"value_size": 0}, errors.InvalidArgument, errno.EINVAL),
        ((2,), {"value_size": 3}, errors.InvalidArgument, errno.EINVAL),
        ((2,), {"value_size": 16}, errors.InvalidArgument, errno.EINVAL),
        ((2,), {"map_flags": 1}, errors.InvalidArgument, errno.EINVAL),
        ((2,), {"map_flags": BPF_F_NUMA_NODE | 8}, errors.InvalidArgument, errno.EINVAL),
        ((NR_CPUS + 1,), {}, errors.TooBig, errno.E2BIG),
        # EINVAL is checked before E2BIG
        ((NR_CPUS + 1,), {"value_size": 5}, errors.InvalidArgument, errno.EINVAL),
        ((NR_CPUS + 1,), {"map_flags": 2}, errors.InvalidArgument, errno.EINVAL),
    ],
)
def test_alloc_errno_order(dom, args, kw, exc, code):
    with pytest.raises(exc) as ei:
        kernel.cpu_map_alloc(*args, **kw)
    assert _errno_of(ei) == code


def test_alloc_accepts_numa_flag_value_size_4_and_nr_cpus(maps):
    m = maps(NR_CPUS, map_flags=BPF_F_NUMA_NODE)
    assert m.max_entries == NR_CPUS and m.map_flags == BPF_F_NUMA_NODE
    m4 = maps(1, value_size=4)
    assert m4.value_size == 4
    assert m.id != m4.id


def _snapshot(m: CpuMap) -> list[tuple[int, int, int, int]]:
    return [(e.key, e.qsize, e.entry, e.worker_pid) for e in m.entries()]


@pytest.mark.parametrize(
    ("key", "value", "flags", "exc", "code"),
    [
        # flags > BPF_EXIST: EINVAL before anything else
        (1, 64, 3, errors.InvalidArgument, errno.EINVAL),
        (99, QSIZE_MAX + 1, 3, errors.InvalidArgument, errno.EINVAL),
        (3, 0, 4, errors.InvalidArgument, errno.EINVAL),
        # key >= max_entries: E2BIG (before NOEXIST / qsize / possible)
        (4, 64, BPF_ANY, errors.TooBig, errno.E2BIG),
        (4, QSIZE_MAX + 1, BPF_NOEXIST, errors.TooBig, errno.E2BIG),
        # BPF_NOEXIST: always EEXIST, on a populated or an empty slot, before EOVERFLOW
        (1, 64, BPF_NOEXIST, errors.Exists, errno.EEXIST),
        (0, 64, BPF_NOEXIST, errors.Exists, errno.EEXIST),
        (3, QSIZE_MAX + 1, BPF_NOEXIST, errors.Exists, errno.EEXIST),
        # qsize > 16384: EOVERFLOW, before ENODEV
        (1, QSIZE_MAX + 1, BPF_ANY, errors.Overflow, errno.EOVERFLOW),
        (3, QSIZE_MAX + 1, BPF_EXIST, errors.Overflow, errno.EOVERFLOW),
        # a CPU that is not possible (the domain has CPUs 0 and 1): ENODEV, even to delete
        (2, 64, BPF_ANY, errors.NoDevice, errno.ENODEV),
        (3, 0, BPF_ANY, errors.NoDevice, errno.ENODEV),
    ],
)
def test_update_errno_order_changes_nothing(maps, key, value, flags, exc, code):
    m = maps(4)
    m.update(1, 64)
    before = _snapshot(m)
    with pytest.raises(exc) as ei:
        kernel.cpu_map_update_elem(m, key, value, flags)
    assert _errno_of(ei) == code
    assert isinstance(ei.value, OSError)
    assert _snapshot(m) == before
    assert m.lookup(1) == BpfCpumapVal(64, None, 0)
    assert m.lookup(0) is None
    wait_until(lambda: m.entries()[0].state == "running", "the worker running")  # "new" until its loop starts


def test_update_qsize_0_deletes_and_exist_creates(maps):
    m = maps(4)
    m.update(0, QSIZE_MAX)  # the largest queue is accepted
    assert m.lookup(0) == BpfCpumapVal(QSIZE_MAX)
    m.update(0, 0)
    assert m.lookup(0) is None
    m.update(0, 0)  # deleting an empty slot through update is fine too
    # BPF_EXIST on an empty slot creates (no ENOENT path)
    m.update(1, BpfCpumapVal(32), BPF_EXIST)
    assert m.lookup(1) == BpfCpumapVal(32)
    # every update builds a new entry and worker, even with the same value
    e1 = m.entries()[0]
    m.update(1, 32, BPF_EXIST)
    e2 = m.entries()[0]
    assert e2.qsize == 32 and e2.entry != e1.entry and e2.worker_pid != e1.worker_pid
    m.sync()
    assert not _core.task_alive(e1.worker_pid) or _wait_gone(e1.worker_pid)


def _wait_gone(pid: int) -> bool:
    wait_until(lambda: not _core.task_alive(pid), f"pid {pid} to exit")
    return True


def test_update_bad_program_changes_nothing(maps):
    m = maps(2)
    m.update(1, BpfCpumapVal(16, "pass"))
    before = _snapshot(m)
    with pytest.raises(errors.InvalidArgument) as ei:
        m.update(1, BpfCpumapVal(16, "bogus"))
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(errors.PercpuError) as ei:
        m.update(1, BpfCpumapVal(16, 42))  # not a program: EBADF
    assert ei.value.errno == errno.EBADF
    assert _snapshot(m) == before
    for bad in ("x", 1.5, True, -1, 1 << 32):
        with pytest.raises(errors.InvalidArgument):
            m.update(bad, 16)  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgument):
        m.update(1, "16")  # type: ignore[arg-type]
    assert _snapshot(m) == before


def test_delete_lookup_get_next_key(maps):
    m = maps(4)
    with pytest.raises(errors.InvalidArgument) as ei:
        kernel.cpu_map_delete_elem(m, 4)  # delete uses EINVAL where update says E2BIG
    assert ei.value.errno == errno.EINVAL
    kernel.cpu_map_delete_elem(m, 0)  # an empty slot: fine
    kernel.cpu_map_delete_elem(m, 3)  # an empty, impossible CPU: fine
    m.update(1, 128)
    assert kernel.cpu_map_lookup_elem(m, 1) == BpfCpumapVal(128, None, 0)
    for k in (0, 2, 3, 4, 1 << 31, -1):
        assert kernel.cpu_map_lookup_elem(m, k) is None
    kernel.cpu_map_delete_elem(m, 1)
    assert m.lookup(1) is None
    # get_next_key: array semantics, populated or not
    assert kernel.cpu_map_get_next_key(m, None) == 0
    assert [m.get_next_key(k) for k in (0, 1, 2)] == [1, 2, 3]
    assert m.get_next_key(4) == 0 and m.get_next_key(0xFFFFFFFF) == 0
    with pytest.raises(errors.NoEntry) as ei:
        m.get_next_key(3)
    assert ei.value.errno == errno.ENOENT
    assert list(m.keys()) == [0, 1, 2, 3]


def test_lookup_prog_id_value_size_8_vs_4(maps):
    m8 = maps(2)
    m8.update(0, BpfCpumapVal(16, "drop"))
    m8.update(1, BpfCpumapVal(16, drop_odd_len))
    assert m8.lookup(0).prog_id != 0 and m8.lookup(1).prog_id != 0
    assert m8.lookup(0).prog_id != m8.lookup(1).prog_id
    m4 = maps(2, value_size=4)
    m4.update(1, BpfCpumapVal(16, "drop"))  # memcpy of 4 bytes: no program
    assert m4.lookup(1) == BpfCpumapVal(16, None, 0)
    assert [e.prog_id for e in m4.entries()] == [0]


def test_attach_by_name_and_redirect_fallback(dom, maps, counter):
    m = maps(2, name="cpu_map", stack=functools.partial(count_stack, counter))
    m2 = CpuMap.attach("cpu_map", method="fork")
    assert (m2.id, m2.max_entries, m2.value_size) == (m.id, 2, 8)
    with pytest.raises(errors.NoEntry):
        CpuMap.attach("no_such_map")
    # empty slot: the helper returns the low 2 bits of flags
    with percpu.on_cpu(0), rcu.read_lock():
        assert [m.redirect(1, f) for f in (0, 1, 2, 3)] == [XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX]
        assert m.redirect(7, XDP_PASS) == XDP_PASS  # out of range: the fallback too
        assert m.redirect(0, 4) == XDP_ABORTED  # any other flag: refused
    # xdp_do_redirect without a pending target: EINVAL
    pool = frame_pool(dom)
    (f,) = alloc_frames(pool, [payload(0)])
    with percpu.on_cpu(0), pytest.raises(errors.InvalidArgument):
        xdp_do_redirect(f)
    _core.xdp_frames_free(pool, struct.pack("<Q", f))
    m.update(1, 64)
    assert send(m2, 1, [payload(i) for i in range(5)]) == 5  # through the attached handle
    wait_until(lambda: delivered(dom, counter, 1) == 5, "5 frames")


# ---- 2. bulk queues: 8 per enqueue event, the 9th frame flushes ------------------------------


def test_ninth_frame_flushes_the_bulk_queue(dom, maps, counter):
    m = maps(2, stack=functools.partial(count_stack, counter))
    m.update(1, 256)
    pool = frame_pool(dom)
    with percpu.on_cpu(0), rcu.read_lock():
        frames = alloc_frames(pool, [payload(i) for i in range(9)])
        for f in frames[:8]:
            assert kernel.bpf_redirect_map(m, 1, 0) == XDP_REDIRECT
            kernel.xdp_do_redirect(f)
        assert total(m, 1, "enq_events") == 0  # 8 frames wait in the bulk queue
        assert kernel.bpf_redirect_map(m, 1, 0) == XDP_REDIRECT
        kernel.xdp_do_redirect(frames[8])  # the 9th: the first 8 go to the ring
        assert on(m, 1, 0, "enq_events") == 1
        assert on(m, 1, 0, "enq_processed") == 8
        kernel.xdp_do_flush()
        assert on(m, 1, 0, "enq_events") == 2
        assert on(m, 1, 0, "enq_processed") == 9
        assert on(m, 1, 0, "enq_drops") == 0
        kernel.xdp_do_flush()  # nothing left: no event
        assert on(m, 1, 0, "enq_events") == 2
    wait_until(lambda: delivered(dom, counter, 1) == 9, "9 frames delivered")
    wait_until(lambda: on(m, 1, 1, "kt_processed") == 9, "kthread counters")
    assert on(m, 1, 1, "enq_events") == 0  # the enqueue counts are the producer CPU's


@pytest.mark.parametrize("n", [1, 7, 8, 9, 16, 17, 64, 100, 257])
def test_n_frames_one_poll_ceil_n_over_8_events(dom, maps, counter, n):
    m = maps(2, stack=functools.partial(count_stack, counter))
    m.update(1, 512)
    assert send(m, 1, [payload(i) for i in range(n)]) == n
    assert on(m, 1, 0, "enq_events") == math.ceil(n / CPU_MAP_BULK_SIZE)
    assert on(m, 1, 0, "enq_processed") == n
    wait_until(lambda: delivered(dom, counter, 1) == n, f"{n} frames delivered")
    wait_until(lambda: total(m, 1, "kt_processed") == n, "kt_processed")
    assert total(m, 1, "kt_pass") == 0  # no entry program: nothing counted as its verdicts
    assert total(m, 1, "kt_drops") == 0


def test_two_entries_in_one_poll_each_get_their_bulk(dom, maps, counter):
    m = maps(2, stack=functools.partial(count_stack, counter))
    m.update(0, 64)
    m.update(1, 64)
    pool = frame_pool(dom)
    with percpu.on_cpu(0), rcu.read_lock():
        for i, f in enumerate(alloc_frames(pool, [payload(i) for i in range(20)])):
            assert m.redirect(i % 2) == XDP_REDIRECT
            xdp_do_redirect(f)
        xdp_do_flush()
    assert on(m, 0, 0, "enq_processed") == 10 and on(m, 1, 0, "enq_processed") == 10
    assert on(m, 0, 0, "enq_events") == 2 and on(m, 1, 0, "enq_events") == 2
    wait_until(lambda: delivered(dom, counter, 0) == 10 and delivered(dom, counter, 1) == 10, "both workers")


def test_payload_reaches_the_stack_intact(dom, maps, counter):
    m = maps(2, stack=functools.partial(sum_stack, counter))
    m.update(1, 1024)
    n = 500
    for lo in range(0, n, 64):
        send(m, 1, [payload(i, 60 + i % 7) for i in range(lo, min(n, lo + 64))])
    wait_until(lambda: delivered(dom, counter, 1) == n, "500 frames")
    assert dom.arena.load(counter + 16 + 8) == sum(range(n))


# ---- 3. a full ring drops exactly the overflow ------------------------------------------------


@pytest.mark.parametrize("qsize", [8, 16, 37])
def test_full_ring_drops_exactly_the_overflow(dom, maps, counter, qsize):
    m = maps(2, stack=functools.partial(count_stack, counter))
    m.update(1, qsize)
    pid = m.entries()[0].worker_pid
    k = 11
    os.kill(pid, signal.SIGSTOP)
    try:
        # every redirect succeeds: there is no back-pressure, the flush drops
        assert send(m, 1, [payload(i) for i in range(qsize + k)]) == qsize + k
        assert on(m, 1, 0, "enq_drops") == k
        assert on(m, 1, 0, "enq_processed") == qsize + k  # processed counts the drops too
        assert on(m, 1, 0, "enq_events") == math.ceil((qsize + k) / 8)
        assert m.entries()[0].queued == qsize
        # a full ring stays full: one more poll drops all it brings
        assert send(m, 1, [payload(0)] * 3) == 3
        assert on(m, 1, 0, "enq_drops") == k + 3
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: delivered(dom, counter, 1) == qsize, f"{qsize} frames delivered")
    wait_until(lambda: m.entries()[0].queued == 0, "ring drained")
    # the ring has room again
    assert send(m, 1, [payload(0)] * 5) == 5
    wait_until(lambda: delivered(dom, counter, 1) == qsize + 5, "5 more")
    assert on(m, 1, 0, "enq_drops") == k + 3


# ---- 4. the entry's program ---------------------------------------------------------------


def _kt_books(m: CpuMap, key: int) -> tuple[int, int, int, int, int]:
    s = m.stats()[key]
    return tuple(s.total(f) for f in ("kt_processed", "kt_pass", "kt_drop", "kt_redirect", "kt_exceptions"))


@pytest.mark.parametrize(
    ("prog", "want_pass", "want_drop", "want_redir"),
    [
        ("drop", 0, 1, 0),
        ("pass", 1, 0, 0),
        ("redirect", 0, 0, 1),
    ],
)
def test_builtin_entry_programs(dom, maps, counter, prog, want_pass, want_drop, want_redir):
    m = maps(2, stack=functools.partial(count_stack, counter))
    m.update(1, BpfCpumapVal(256, prog))
    n = 77
    send(m, 1, [payload(i) for i in range(n)])
    wait_until(lambda: total(m, 1, "kt_processed") == n, "the worker's batch")
    wait_until(lambda: sum(_kt_books(m, 1)[1:4]) == n, "the verdicts")
    processed, p, d, r, exc = _kt_books(m, 1)
    assert (p, d, r, exc) == (n * want_pass, n * want_drop, n * want_redir, 0)
    assert p + d + r == processed
    # the counters are the worker CPU's
    assert on(m, 1, 1, "kt_processed") == n and on(m, 1, 0, "kt_processed") == 0
    wait_until(lambda: delivered(dom, counter, 1) == n * want_pass, "the passed frames")


def test_python_entry_program_drops_odd_lengths(dom, maps, counter):
    m = maps(2, stack=functools.partial(count_stack, counter))
    m.update(1, BpfCpumapVal(512, drop_odd_len))
    sizes = [60 + (i % 5) for i in range(300)]
    for lo in range(0, 300, 64):
        send(m, 1, [payload(i, sizes[i]) for i in range(lo, min(300, lo + 64))])
    odd = sum(s % 2 for s in sizes)
    wait_until(lambda: delivered(dom, counter, 1) == 300 - odd, "the even frames")
    wait_until(lambda: sum(_kt_books(m, 1)[1:4]) == 300, "the verdicts")
    processed, p, d, r, exc = _kt_books(m, 1)
    assert (processed, p, d, r, exc) == (300, 300 - odd, odd, 0, 0)


@pytest.mark.parametrize(
    "prog",
    [
        functools.partial(always, XDP_TX),
        functools.partial(always, XDP_ABORTED),
        functools.partial(always, 17),
        raising_prog,
    ],
)
def test_python_entry_program_tx_aborted_raise_are_drops_and_exceptions(dom, maps, counter, prog):
    m = maps(2, stack=functools.partial(count_stack, counter))
    m.update(1, BpfCpumapVal(128, prog))
    n = 20
    send(m, 1, [payload(i) for i in range(n)])
    wait_until(lambda: _kt_books(m, 1)[2] == n, "the drops")
    processed, p, d, r, exc = _kt_books(m, 1)
    assert (processed, p, d, r, exc) == (n, 0, n, 0, n)
    assert delivered(dom, counter) == 0


def test_python_entry_program_redirects_to_another_entry(dom, maps, counter):
    m = maps(2, name="cm_redir", stack=functools.partial(count_stack, counter))
    m.update(0, 256)
    m.update(1, BpfCpumapVal(256, functools.partial(redirect_prog, "cm_redir", 0)))
    n = 50
    send(m, 1, [payload(i) for i in range(n)])
    wait_until(lambda: delivered(dom, counter, 0) == n, "the frames at entry 0")
    assert delivered(dom, counter, 1) == 0
    processed, p, d, r, exc = _kt_books(m, 1)
    assert (processed, p, d, r) == (n, 0, 0, n)
    # the hop from worker 1 into entry 0's bulk queue is an enqueue on CPU 1
    assert on(m, 0, 1, "enq_processed") == n


def test_entry_program_redirect_to_empty_slot_is_a_drop(dom, maps, counter):
    m = maps(2, name="cm_redir2", stack=functools.partial(count_stack, counter))
    m.update(1, BpfCpumapVal(256, functools.partial(redirect_prog, "cm_redir2", 0)))  # slot 0 empty
    send(m, 1, [payload(i) for i in range(10)])
    wait_until(lambda: _kt_books(m, 1)[2] == 10, "the drops")
    processed, p, d, r, exc = _kt_books(m, 1)
    assert (processed, p, d, r) == (10, 0, 10, 0)


def test_stack_that_raises_counts_drops_and_keeps_running(dom, maps, counter):
    m = maps(2, stack=functools.partial(raising_stack, counter))
    m.update(1, 64)
    send(m, 1, [payload(i) for i in range(10)])
    wait_until(lambda: delivered(dom, counter, 1) == 10, "the stack calls")
    wait_until(lambda: total(m, 1, "kt_drops") == 10, "kt_drops")
    assert total(m, 1, "stack_errors") >= 1
    send(m, 1, [payload(i) for i in range(5)])
    wait_until(lambda: delivered(dom, counter, 1) == 15, "the worker still runs")
    assert m.entries()[0].state == "running"


# ---- 5. delete and replace lose nothing ---------------------------------------------------


def test_replace_and_delete_mid_stream_lose_nothing(dom, maps, counter):
    m = maps(2, stack=functools.partial(count_stack, counter))
    m.update(1, QSIZE_MAX)  # bigger than everything sent: no ring drop is possible
    sent = tried = 0
    for poll in range(60):
        if poll in (5, 10, 11, 20, 33):
            m.update(1, QSIZE_MAX)  # replace: the old worker drains its ring first
        elif poll == 40:
            m.delete(1)
        elif poll == 45:
            m.update(1, QSIZE_MAX, BPF_EXIST)
        tried += 64
        sent += send(m, 1, [payload(i) for i in range(64)])
    assert sent == tried - 5 * 64  # polls 40..44 found the slot empty
    m.sync()
    wait_until(lambda: delivered(dom, counter, 1) == sent, f"{sent} frames")
    assert total(m, 1, "enq_drops") == 0 and total(m, 1, "died_drops") == 0
    assert total(m, 1, "enq_processed") == sent
    assert total(m, 1, "kt_processed") == sent


def test_replace_from_another_thread_while_sending(dom, maps, counter):
    import threading

    m = maps(2, stack=functools.partial(count_stack, counter))
    m.update(1, QSIZE_MAX)
    stop = threading.Event()
    errs: list[BaseException] = []
    changes = [0]

    def updater() -> None:
        try:
            with dom:
                while not stop.is_set():
                    m.update(1, QSIZE_MAX)
                    changes[0] += 1
                    if changes[0] % 4 == 0:
                        m.delete(1)
                        time.sleep(0.002)
                        m.update(1, QSIZE_MAX)
        except BaseException as e:  # noqa: BLE001
            errs.append(e)

    t = threading.Thread(target=updater)
    t.start()
    sent = 0
    try:
        deadline = time.monotonic() + 1.5
        polls = 0
        while polls < 400 and (time.monotonic() < deadline or changes[0] < 3):
            sent += send(m, 1, [payload(i) for i in range(32)])
            polls += 1
            if time.monotonic() > deadline + 20:
                break
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive() and not errs, errs
    assert changes[0] >= 1
    m.sync()
    wait_until(lambda: delivered(dom, counter, 1) == sent, f"{sent} frames")
    assert total(m, 1, "enq_drops") == 0 and total(m, 1, "died_drops") == 0


# ---- 6. a killed worker is reported and recoverable ------------------------------------------


def test_killed_worker_is_dead_counted_and_recoverable(dom, maps, counter, caplog):
    m = maps(2, stack=functools.partial(count_stack, counter))
    m.update(1, 64)
    send(m, 1, [payload(i) for i in range(5)])
    wait_until(lambda: delivered(dom, counter, 1) == 5, "the first frames")
    pid = m.entries()[0].worker_pid
    os.kill(pid, signal.SIGSTOP)  # so that the next frames stay in its ring
    assert send(m, 1, [payload(i) for i in range(12)]) == 12
    assert m.entries()[0].queued == 12
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: m.entries()[0].state == "dead", "the entry marked dead")
    wait_until(lambda: total(m, 1, "died_drops") == 12, "died_drops")
    assert delivered(dom, counter, 1) == 5
    assert m.entries()[0].queued == 0
    # producers keep enqueuing into the dead entry: the redirect succeeds
    assert send(m, 1, [payload(i) for i in range(3)]) == 3
    # updating the entry again starts a worker; what the dead ring held is freed and counted
    m.update(1, 64)
    e = m.entries()[0]
    assert e.state in ("new", "running") and e.worker_pid != pid
    wait_until(lambda: m.entries()[0].state == "running", "the new worker running")
    m.sync()
    assert total(m, 1, "died_drops") == 15
    assert send(m, 1, [payload(i) for i in range(20)]) == 20
    wait_until(lambda: delivered(dom, counter, 1) == 25, "traffic flows again")
    assert frames_in_flight(frame_pool(dom)) == 0


def test_delete_of_a_dead_entry(dom, maps, counter):
    m = maps(2, stack=functools.partial(count_stack, counter))
    m.update(1, 64)
    pid = m.entries()[0].worker_pid
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: m.entries()[0].state == "dead", "the entry marked dead")
    m.delete(1)
    m.sync()
    assert m.entries() == []
    assert frames_in_flight(frame_pool(dom)) == 0


# ---- 7. both start methods --------------------------------------------------------------------


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_start_methods_deliver(dom, maps, counter, method):
    m = maps(2, stack=functools.partial(count_stack, counter), method=method)
    m.update(0, BpfCpumapVal(128, drop_odd_len))
    m.update(1, BpfCpumapVal(128, "pass"))
    for e in m.entries():
        with open(f"/proc/{e.worker_pid}/comm") as f:
            assert f.read().strip() == f"cpumap/{e.key}/map:{m.id}"[:15]
    send(m, 0, [payload(i, 60 + i % 2) for i in range(40)])
    send(m, 1, [payload(i) for i in range(40)])
    wait_until(lambda: delivered(dom, counter, 0) == 20 and delivered(dom, counter, 1) == 40, "both workers")


def test_spawn_needs_picklable_stack(dom, counter):
    m = CpuMap(2, method="spawn", stack=lambda pkts: None)
    try:
        with pytest.raises(TypeError):
            m.update(1, 16)
        assert m.lookup(1) is None
    finally:
        m.close()
        m.free()


# ---- the map's end --------------------------------------------------------------------------


def test_free_stops_every_worker_and_frees(dom, counter):
    m = CpuMap(2, name="to_free", method="fork", stack=functools.partial(count_stack, counter))
    m.update(0, 64)
    m.update(1, 64)
    pids = [e.worker_pid for e in m.entries()]
    send(m, 0, [payload(i) for i in range(10)])
    m.free()
    for pid in pids:
        wait_until(lambda pid=pid: not _core.task_alive(pid), "workers gone")
    with pytest.raises(errors.NoEntry):
        dom.lookup("to_free")
    assert delivered(dom, counter, 0) == 10  # the ring was drained before the worker stopped
    assert frames_in_flight(frame_pool(dom)) == 0


def test_close_deletes_only_this_process_entries(dom, maps, counter):
    m = maps(2, name="shared_map", stack=functools.partial(count_stack, counter))
    m.update(1, 64)
    other = CpuMap.attach("shared_map", method="fork")
    other.close()  # populated nothing itself
    assert m.lookup(1) is not None
    with contextlib.suppress(Exception):
        assert "populated=1" in repr(m)


_kept_items: list = []


def keep_item_stack(res: int, pkts) -> None:
    """First call: keep pkts[0].  Later calls: report whether the kept frame still answers (it must not)."""
    a = percpu.current_domain().arena
    if not _kept_items:
        _kept_items.append(pkts[0])
        a.store(res, 1)
        return
    try:
        a.store(res, 1000 + _kept_items[0].len)  # the frame was released after the first call
    except errors.InvalidArgument:
        a.store(res, 2)


def test_packet_list_item_is_dead_after_release(dom, maps):
    res = dom.kzalloc(8)
    m = maps(2, stack=functools.partial(keep_item_stack, res))
    m.update(1, 64)
    send(m, 1, [payload(0)])
    wait_until(lambda: dom.arena.load(res) == 1, "the first batch")
    send(m, 1, [payload(1)])
    wait_until(lambda: dom.arena.load(res) != 1, "the second batch")
    assert dom.arena.load(res) == 2
