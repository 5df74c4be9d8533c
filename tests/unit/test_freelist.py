"""The per-CPU freelist: populate split, push/pop order, NMI paths, bulk, robust mode, bad input."""

from __future__ import annotations

import errno
import os
import signal
import time
from array import array

import pytest

import percpu
from percpu import errors, kernel
from percpu.freelist import PcpuFreelist


@pytest.fixture
def dom4(make_domain):
    return make_domain(size=8 << 20, nr_cpus=4)


def _populated(dom, n, elem=64, robust=False):
    s = PcpuFreelist.create(robust=robust)
    buf = dom.kzalloc(elem * n)
    s.populate(buf, elem, n)
    return s, buf


@pytest.mark.parametrize(
    "nr_elems, nr_cpus, split",
    [
        (256, 32, [8] * 32),
        (10, 4, [3, 3, 2, 2]),
        (3, 4, [1, 1, 1, 0]),
        (7, 3, [3, 2, 2]),
        (64, 64, [1] * 64),
        (5, 1, [5]),
    ],
)
def test_populate_split_matches_the_kernel(make_domain, nr_elems, nr_cpus, split):
    dom = make_domain(size=8 << 20, nr_cpus=nr_cpus)
    s, buf = _populated(dom, nr_elems, 32)
    counts = s.per_cpu()
    assert [counts[c] for c in range(nr_cpus)] == split and counts["extra"] == 0
    # Each CPU got a contiguous run in address order; pops return it descending.
    start = 0
    for cpu, n in enumerate(split):
        with percpu.on_cpu(cpu):
            got = s.pop_bulk(n)
        assert got == [buf + 32 * i for i in range(start + n - 1, start - 1, -1)]
        start += n
    assert s.check() == 0


def test_push_goes_to_this_cpu_and_pop_walks_in_wrap_order(dom4):
    s, buf = _populated(dom4, 8)  # 2 per CPU: cpu0 {0,1} cpu1 {2,3} cpu2 {4,5} cpu3 {6,7}
    idx = lambda n: (n - buf) // 64  # noqa: E731
    with percpu.on_cpu(2):
        order = [idx(s.pop()) for _ in range(8)]
        assert s.pop() is None
    assert order == [5, 4, 7, 6, 1, 0, 3, 2]  # cpu2, cpu3, wrap to cpu0, cpu1
    with percpu.on_cpu(3):
        s.push(buf + 64 * 2)
    assert s.per_cpu() == {0: 0, 1: 0, 2: 0, 3: 1, "extra": 0}
    with percpu.on_cpu(1):
        assert idx(s.pop()) == 2  # found on cpu3 after skipping empty cpu1, cpu2


def test_facade_names(dom4):
    s = kernel.pcpu_freelist_init()
    buf = dom4.kzalloc(64 * 4)
    kernel.pcpu_freelist_populate(s, buf, 64, 4)
    with percpu.on_cpu(0):
        n = kernel.pcpu_freelist_pop(s)
        assert n == buf
        kernel.pcpu_freelist_push(s, n)
        m = getattr(kernel, "__pcpu_freelist_pop")(s)
        getattr(kernel, "__pcpu_freelist_push")(s, m)
    assert s.check() == 4
    kernel.pcpu_freelist_destroy(s)


def test_attach_by_name_and_registry(dom4):
    s = PcpuFreelist.create(name="fl.a")
    buf = dom4.kzalloc(64 * 8)
    s.populate(buf, 64, 8)
    other = PcpuFreelist.attach("fl.a")
    with percpu.on_cpu(0):
        assert other.pop() == buf + 64  # the same heads
    assert s.check() == 7 and len(other) == 7
    with pytest.raises(errors.NoEntry):
        PcpuFreelist.attach("nope")
    dom4.register("not-a-freelist", "thing", buf, 8)
    with pytest.raises(errors.InvalidArgument):
        PcpuFreelist.attach("not-a-freelist")
    s.destroy()
    with pytest.raises(errors.NoEntry):
        PcpuFreelist.attach("fl.a")


def test_bulk_is_n_single_operations(dom4):
    s, buf = _populated(dom4, 40)
    with percpu.on_cpu(1):
        got = s.pop_bulk(25)
        assert len(got) == 25 and len(set(got)) == 25
        s.push_bulk(got[:5])
        assert s.pop() == got[4]  # the last pushed is on top, as with single pushes
        out = array("Q", bytes(8 * 64))
        n = s.pop_bulk(out)
        assert n == 40 - 25 + 4 and len(set(out[:n])) == n
        s.push_bulk(out[:n])
        s.push_bulk(got[5:])  # got[:4] came back with out; got[4] is the one we hold
        s.push(got[4])
    assert s.check() == 40
    assert s.pop_bulk(0) == []
    with pytest.raises(errors.InvalidArgument):
        s.pop_bulk(-1)
    with pytest.raises(errors.InvalidArgument):
        s.push_bulk(array("I", [1, 2]))


@pytest.mark.parametrize("robust", [False, True])
def test_bad_input_is_refused_and_changes_nothing(dom4, robust):
    s, buf = _populated(dom4, 8, robust=robust)
    before = (s.per_cpu(), s.check())
    for bad in (buf + 3, buf + 64 * 8, buf - 64, 0, buf + 32, dom4.size + 8, -8):
        with pytest.raises(errors.InvalidArgument) as ei:
            s.push(bad)
        assert ei.value.errno == errno.EINVAL
    with pytest.raises(errors.InvalidArgument):
        s.push_bulk([buf, buf + 3])
    assert (s.per_cpu(), s.check()) == before
    # populate that does not fit the arena or the area: refused, nothing changes
    for args in ((buf, 64, 1 << 40), (buf, 12, 4), (dom4.size - 64, 64, 4), (buf, 0, 4),
                 (buf + 64 * 100, 64, 4), (buf, 32, 4)):
        with pytest.raises(errors.InvalidArgument):
            s.populate(*args)
    assert (s.per_cpu(), s.check()) == before


def test_robust_mode_refuses_a_double_push(dom4):
    s, buf = _populated(dom4, 8, robust=True)
    with percpu.on_cpu(0):
        n = s.pop()
        s.push(n)
        with pytest.raises(errors.InvalidArgument) as ei:
            s.push(n)  # already free
        assert "double push" in str(ei.value)
        m = s.pop()
        with pytest.raises(errors.InvalidArgument):
            s.push_bulk([m, m])
        s.push(m)  # the refused batch left nothing behind
    assert s.check() == 8


def test_nmi_pop_and_push_without_contention(dom4):
    s, buf = _populated(dom4, 4)
    with percpu.on_cpu(3), percpu.nmi():
        n = s.pop()
        assert n == buf + 3 * 64
        s.push(n)
    assert s.per_cpu()[3] == 1 and s.check() == 4


def _hold_head_and_signal(s, cpu, handler_result, extra):
    # Take cpu's head lock the way a push in progress would hold it, then be interrupted.
    from percpu import _core

    lock = _core.Lock(s.domain.arena, s.offset + 64 * (2 + cpu))
    lock.lock()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while not handler_result and time.monotonic() < deadline:
            time.sleep(0.001)
    finally:
        lock.unlock()


def test_nmi_paths_with_a_real_signal_while_this_process_holds_the_head_lock(dom4):
    """A signal handler (NMI context) runs while its own thread holds CPU 1's head lock.

    The kernel's NMI rules: the push cannot take CPU 1's lock and must not spin
    on it; it goes to the next CPU in wrap order.  The pop skips the locked head.
    """
    s, buf = _populated(dom4, 8)  # cpu1 holds nodes 2, 3
    with percpu.on_cpu(1):
        spare = [s.pop(), s.pop()]  # take cpu1's nodes: 3, 2
    assert spare == [buf + 3 * 64, buf + 2 * 64]
    with percpu.on_cpu(1):
        s.push(spare[0])  # cpu1 holds node 3 again
    result = []

    def handler(signo, frame):
        assert percpu.in_nmi()
        with percpu.on_cpu(1):
            s.push(spare[1])  # cpu1's head is locked by the interrupted code: goes to cpu2
            got = s.pop()  # skips locked cpu1, takes cpu2's top = the node just pushed
            result.append(got)

    old = percpu.signal(signal.SIGUSR1, handler)
    try:
        _hold_head_and_signal(s, 1, result, None)
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert result == [spare[1]]
    assert s.per_cpu()[1] == 1  # node 3 is still on cpu1, untouched
    with percpu.on_cpu(1):
        s.push(spare[1])
    assert s.check() == 8


def test_nmi_pop_returns_none_when_only_locked_heads_have_nodes(dom4):
    """The kernel's NMI pop returns NULL when every non-empty list is locked."""
    s, buf = _populated(dom4, 1)  # the single node sits on cpu0
    result = []

    def handler(signo, frame):
        with percpu.on_cpu(2):
            result.append(s.pop())

    old = percpu.signal(signal.SIGUSR1, handler)
    try:
        _hold_head_and_signal(s, 0, result, None)
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert result == [None]
    with percpu.on_cpu(2):
        assert s.pop() == buf  # outside NMI the same pop waits for the lock and succeeds


def test_nmi_push_falls_back_to_the_extra_list(dom4):
    """Every per-CPU head locked: an NMI push goes to the extra list; pops find it last."""
    from percpu import _core

    s, buf = _populated(dom4, 4)
    with percpu.on_cpu(0):
        n = s.pop()
    locks = [_core.Lock(dom4.arena, s.offset + 64 * (2 + c)) for c in range(4)]
    for lk in locks:
        lk.lock()
    try:
        with percpu.on_cpu(0), percpu.nmi():
            s.push(n)
            assert s.per_cpu()["extra"] == 1
            assert s.pop() == n  # all heads locked: the NMI pop gets it from the extra list
            s.push(n)
    finally:
        for lk in locks:
            lk.unlock()
    assert s.per_cpu()["extra"] == 1
    with percpu.on_cpu(1):
        got = s.pop_bulk(10)
    assert got[-1] == n and s.per_cpu()["extra"] == 0  # extra list is drained last
    s.push_bulk(got)
    assert s.check() == 4


def test_check_reports_corruption(dom4):
    s, buf = _populated(dom4, 4)
    a = dom4.arena
    with percpu.on_cpu(0):
        n = s.pop()
    a.store(n, n)  # a self-loop, then put it on cpu0's head by hand
    head0 = s.offset + 64 * 2
    a.store(head0 + 8, n)
    with pytest.raises(errors.Corrupted):
        s.check()


def test_repr_and_counts(dom4):
    s, _ = _populated(dom4, 10)
    assert len(s) == 10 == s.count()
    assert "free=10" in repr(s)


def test_cpu_override_of_another_domain_is_folded_not_trusted(make_domain):
    """on_cpu(7) was checked against the current domain, not the freelist's 2-CPU one."""
    big = make_domain(size=1 << 20, nr_cpus=8, current=False)
    small = make_domain(size=2 << 20, nr_cpus=2)
    s, buf = _populated(small, 4)
    with percpu.on_cpu(0):
        n = s.pop()
    with big, percpu.on_cpu(7):
        s.push(n)  # CPU 7 does not exist in small's domain: folded into 0-1, no stray head
    assert s.check() == 4 and sum(s.per_cpu().values()) == 4


def test_pop_bulk_refuses_a_buffer_of_the_wrong_type(dom4):
    s, buf = _populated(dom4, 4)
    with pytest.raises(errors.InvalidArgument):
        s.pop_bulk(array("d", [0.0] * 4))
    with pytest.raises(errors.InvalidArgument):
        s.pop_bulk(bytearray(32))
    assert s.check() == 4


def test_robust_populate_twice_is_refused(dom4):
    s, buf = _populated(dom4, 10, robust=True)
    with pytest.raises(errors.InvalidArgument) as ei:
        s.populate(buf, 64, 10)  # the same elements again: they are already free
    assert "already free" in str(ei.value)
    assert s.check() == 10 and len(s) == 10


def test_nodes_in_the_meta_pages_are_refused(dom4):
    s = PcpuFreelist.create()
    for node in (8, 64, 4096):  # the header, the registry
        with pytest.raises(errors.InvalidArgument):
            s.push(node)
    with pytest.raises(errors.InvalidArgument):
        s.populate(8, 8, 2)
    assert s.check() == 0
    other = percpu.Domain.attach(dom4.name)  # the header is intact
    other.close()


def test_destroyed_freelist_refuses_every_handle(dom4):
    s, buf = _populated(dom4, 4)
    s2 = PcpuFreelist(dom4, s.offset)
    s.destroy()
    for fl in (s, s2):
        with pytest.raises(ValueError, match="destroyed"):
            fl.pop()
        with pytest.raises(ValueError, match="destroyed"):
            fl.push(buf)
    with pytest.raises(ValueError):
        s.destroy()
