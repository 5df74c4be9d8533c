"""RCU: nesting, flavours, cookies, callbacks, barrier, NMI readers, dead and stalled readers."""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import select
import signal
import threading
import time

import mp_helpers
import pytest

import percpu
from percpu import _core, errors, kernel, rcu

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def dom(make_domain):
    return make_domain(size=8 << 20)


def _read1(fd: int, timeout: float = 10) -> bytes:
    r, _, _ = select.select([fd], [], [], timeout)
    assert r, "no answer from the child in time"
    return os.read(fd, 1)


class Reader:
    """A reader in another process that holds a section until released (or killed)."""

    def __init__(self, target=mp_helpers.rcu_reader_hold) -> None:
        self.r, self.w_ready = os.pipe()
        self.go_r, self.go_w = os.pipe()
        self.proc = multiprocessing.get_context("fork").Process(target=target, args=(self.w_ready, self.go_r))
        self.proc.start()
        assert _read1(self.r) == b"R"

    def release(self) -> None:
        os.write(self.go_w, b"G")
        self.proc.join(10)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)


def test_nesting_and_unbalanced_unlock(dom):
    assert not rcu.read_lock_held()
    kernel.rcu_read_lock()
    with rcu.read_lock():
        assert _core.rcu_nesting(0) == 2
    assert kernel.rcu_read_lock_held()
    kernel.rcu_read_unlock()
    assert not kernel.rcu_read_lock_held()
    with pytest.raises(errors.InvalidArgument) as ei:
        kernel.rcu_read_unlock()
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(errors.InvalidArgument):
        kernel.rcu_read_unlock_trace()
    assert _core.rcu_nesting(0) == 0  # nothing changed


def test_with_block_exits_on_exception(dom):
    with pytest.raises(KeyError):
        with rcu.read_lock():
            raise KeyError("x")
    assert not rcu.read_lock_held()


def test_synchronize_inside_a_section_is_refused(dom):
    with rcu.read_lock():
        with pytest.raises(errors.Deadlock):
            kernel.synchronize_rcu()
    kernel.synchronize_rcu()  # fine outside


def test_synchronize_waits_for_a_reader_in_another_process(dom):
    rd = Reader()
    done = threading.Event()
    t = threading.Thread(target=lambda: (kernel.synchronize_rcu(), done.set()))
    t.start()
    assert not done.wait(0.3), "synchronize_rcu returned while a pre-existing reader was inside"
    rd.release()
    assert done.wait(10)
    t.join()


def test_cookies_expire_only_after_pre_existing_readers(dom):
    rd = Reader()
    c = kernel.get_state_synchronize_rcu()
    c2 = kernel.start_poll_synchronize_rcu()
    assert c2 == c  # get_state names the next grace period; start_poll starts that same one
    time.sleep(0.05)
    assert not kernel.poll_state_synchronize_rcu(c)
    assert not kernel.poll_state_synchronize_rcu(c2)
    rd.release()
    assert kernel.poll_state_synchronize_rcu(c) and kernel.poll_state_synchronize_rcu(c2)
    # A reader that starts after the grace period started does not hold it back.
    c3 = kernel.start_poll_synchronize_rcu()
    rd2 = Reader()
    assert kernel.poll_state_synchronize_rcu(c3)
    c4 = kernel.get_state_synchronize_rcu()
    assert not kernel.poll_state_synchronize_rcu(c4)
    rd2.release()
    kernel.cond_synchronize_rcu(c4)
    assert kernel.poll_state_synchronize_rcu(c4)
    for bad in (0, -1, "1", True, c4 + 100):
        with pytest.raises(errors.InvalidArgument):
            kernel.poll_state_synchronize_rcu(bad)


def test_own_section_holds_a_cookie(dom):
    kernel.rcu_read_lock()
    c = kernel.start_poll_synchronize_rcu()
    assert not kernel.poll_state_synchronize_rcu(c)
    kernel.rcu_read_unlock()
    assert kernel.poll_state_synchronize_rcu(c)


def test_flavours_are_independent(dom):
    rd = Reader(mp_helpers.rcu_trace_reader_hold)
    kernel.synchronize_rcu()  # a Tasks Trace reader does not hold a normal grace period
    c = rcu.start_poll(rcu.TASKS_TRACE)
    assert not rcu.poll_state(c, rcu.TASKS_TRACE)
    done = threading.Event()
    t = threading.Thread(target=lambda: (kernel.synchronize_rcu_tasks_trace(), done.set()))
    t.start()
    assert not done.wait(0.2)
    rd.release()
    assert done.wait(10)
    t.join()
    assert kernel.rcu_trace_implies_rcu_gp() is False
    with pytest.raises(errors.InvalidArgument):
        rcu.synchronize(flavour=2)


def test_call_rcu_runs_in_order_in_the_irq_work_thread_after_a_gp(dom):
    ran = []
    rd = Reader()
    for i in range(20):
        kernel.call_rcu(lambda i=i: ran.append((i, threading.current_thread().name)))
    time.sleep(0.2)
    assert ran == [], "a callback ran while a pre-existing reader was inside"
    assert rcu.pending_callbacks() == 20
    rd.release()
    kernel.rcu_barrier()
    assert [i for i, _ in ran] == list(range(20))
    assert {name for _, name in ran} == {"percpu-irq_work"}
    info = dom.arena.rcu_info()
    assert info["cbs_invoked"][0] >= 20 and info["cbs_queued"][0] >= 20
    assert rcu.pending_callbacks() == 0


def test_call_rcu_tasks_trace_and_barrier(dom):
    ran = []
    for i in range(5):
        kernel.call_rcu_tasks_trace(lambda i=i: ran.append(i))
    kernel.rcu_barrier_tasks_trace()
    assert ran == list(range(5))


def test_failing_callback_does_not_stop_others(dom, caplog):
    ran = []
    with caplog.at_level(logging.ERROR, logger="percpu.rcu"):
        kernel.call_rcu(lambda: 1 / 0)
        kernel.call_rcu(lambda: ran.append(1))
        kernel.rcu_barrier()
    assert ran == [1]
    assert any("ZeroDivisionError" in r.getMessage() or r.exc_info for r in caplog.records)


def test_barrier_from_a_callback_is_refused(dom):
    seen = []

    def cb():
        try:
            kernel.rcu_barrier()
        except errors.Deadlock as e:
            seen.append(e.errno)

    kernel.call_rcu(cb)
    kernel.rcu_barrier()
    assert seen == [errno.EDEADLK]


def test_nmi_context_readers(dom):
    inside = []
    old = percpu.signal(signal.SIGUSR1, lambda s, f: _nmi_reader(inside))
    try:
        with rcu.read_lock():
            os.kill(os.getpid(), signal.SIGUSR1)
            for _ in range(100):
                if inside:
                    break
                time.sleep(0.001)
            assert _core.rcu_nesting(0) == 1  # the handler's section nested and left
        assert inside == [(True, 2)]
        with percpu.nmi():
            with rcu.read_lock():
                assert percpu.in_nmi() and rcu.read_lock_held()
        assert not rcu.read_lock_held()
    finally:
        signal.signal(signal.SIGUSR1, old)


def _nmi_reader(out: list) -> None:
    kernel.rcu_read_lock()
    out.append((percpu.in_nmi(), _core.rcu_nesting(0)))
    kernel.rcu_read_unlock()


@pytest.mark.crash
@pytest.mark.parametrize("reap", [True, False], ids=["reaped", "zombie"])
def test_reader_killed_inside_a_section_does_not_block_grace_periods(dom, reap):
    rd = Reader()
    c = kernel.start_poll_synchronize_rcu()
    assert not kernel.poll_state_synchronize_rcu(c)
    rd.kill()
    if reap:
        rd.proc.join()
    t0 = time.monotonic()
    kernel.synchronize_rcu()  # probes the blocking slot's owner, finds it dead, reclaims it
    assert time.monotonic() - t0 < 5
    assert kernel.poll_state_synchronize_rcu(c)
    assert dom.arena.rcu_info()["dead_readers"] >= 1
    rd.proc.join()


def test_stall_warning_names_the_reader(dom, caplog):
    stalls = []
    remove = rcu.on_stall(stalls.append)
    old = rcu.stall_timeout()
    rcu.set_stall_timeout(0.2)
    rd = Reader()
    try:
        with caplog.at_level(logging.WARNING, logger="percpu.rcu"):
            t = threading.Thread(target=kernel.synchronize_rcu)
            t.start()
            deadline = time.monotonic() + 10
            while not stalls and time.monotonic() < deadline:
                time.sleep(0.02)
            assert t.is_alive()  # still waiting: the reader is alive
            rd.release()
            t.join(10)
        assert len(stalls) == 1
        s = stalls[0]
        assert s.pid == rd.proc.pid and s.flavour == "rcu" and s.seconds >= 0.2
        assert s.cpu is None or s.cpu in os.sched_getaffinity(0) | {0, 1}
        assert any(f"pid {rd.proc.pid}" in r.getMessage() and "stall" in r.getMessage()
                   for r in caplog.records)
        assert dom.arena.rcu_info()["stalls"] >= 1
    finally:
        remove()
        rcu.set_stall_timeout(old)
    with pytest.raises(errors.InvalidArgument):
        rcu.set_stall_timeout(0)


def test_forked_child_gets_its_own_reader_slot(dom):
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    kernel.rcu_read_lock()  # the parent's section must not leak into the child
    pid = os.fork()
    if pid == 0:
        try:
            ok = _core.rcu_nesting(0) == 0
            kernel.rcu_read_lock()
            os.write(w, b"R" if ok else b"X")
            os.read(go_r, 1)
            kernel.rcu_read_unlock()
        finally:
            os._exit(0)
    kernel.rcu_read_unlock()
    assert _read1(r) == b"R"
    c = kernel.start_poll_synchronize_rcu()
    assert not kernel.poll_state_synchronize_rcu(c)  # the child's section counts
    os.write(go_w, b"G")
    os.waitpid(pid, 0)
    assert kernel.poll_state_synchronize_rcu(c)
    readers = dom.arena.rcu_info()["readers"]
    assert any(x["pid"] == pid for x in readers)
    assert dom.arena.rcu_reclaim_dead() >= 1  # the child's slot is freed once it is gone
    assert not any(x["pid"] == pid for x in dom.arena.rcu_info()["readers"])


def test_reader_slot_per_thread_and_reclaim_of_exited_threads(dom):
    def body():
        with rcu.read_lock():
            pass

    ts = [threading.Thread(target=body) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    readers = dom.arena.rcu_info()["readers"]
    assert len({x["tid"] for x in readers if x["pid"] == os.getpid()}) >= 3
    # join() returns before the OS thread is fully gone: give the last ones a moment.
    reclaimed, deadline = 0, time.monotonic() + 5
    while reclaimed < 3 and time.monotonic() < deadline:
        reclaimed += dom.arena.rcu_reclaim_dead()
        time.sleep(0.01)
    assert reclaimed >= 3


def test_defer_free_list(dom):
    p = [dom.kmalloc(64) for _ in range(10)]
    dfl = rcu.DeferFreeList.create(name="dfl", head_offset=48)
    other = rcu.DeferFreeList.attach("dfl")
    assert other.head_offset == 48
    inuse = sum(c["inuse"] for c in dom.stats()["kmalloc"])
    rd = Reader()
    for x in p[:5]:
        dfl.defer(x)
    rd.release()
    for x in p[5:]:
        other.defer(x)  # from a second handle: same list
    assert dfl.pending() == 10
    with rcu.read_lock():
        cookie_blocked = other.reclaim()
    kernel.synchronize_rcu()
    freed = cookie_blocked + dfl.reclaim()
    assert freed == 10 and dfl.pending() == 0
    assert sum(c["inuse"] for c in dom.stats()["kmalloc"]) == inuse - 10
    with pytest.raises(errors.InvalidArgument):
        dfl.defer(0)
    with pytest.raises(errors.InvalidArgument):
        rcu.DeferFreeList.create(head_offset=3)
    dfl.destroy()
    with pytest.raises(errors.NoEntry):
        rcu.DeferFreeList.attach("dfl")
    dom.check()


def test_defer_free_list_not_freed_under_a_reader(dom):
    dfl = rcu.DeferFreeList.create()

    def inuse32() -> int:
        return next(c["inuse"] for c in dom.stats()["kmalloc"] if c["size"] == 32)

    x = dom.kmalloc(32)
    rd = Reader()
    dfl.defer(x)
    assert dfl.reclaim() == 0  # the reader in the other process may still hold x
    assert inuse32() == 1  # still allocated
    rd.release()
    assert dfl.reclaim() == 1
    assert inuse32() == 0
    with pytest.raises(errors.InvalidArgument):
        dom.kfree(x)  # it really was freed: a second free is refused
    dfl.destroy()
