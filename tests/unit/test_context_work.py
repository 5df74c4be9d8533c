"""NMI context, signal handlers in NMI context, and irq_work."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import percpu
from percpu import kernel
from percpu.runtime import work


def test_nmi_context_nests_and_is_per_thread():
    assert not percpu.in_nmi() and kernel.in_task()
    with percpu.nmi():
        assert percpu.in_nmi() and kernel.in_nmi() and not kernel.in_task()
        with percpu.nmi():
            assert percpu.in_nmi()
        assert percpu.in_nmi()
        other = []
        t = threading.Thread(target=lambda: other.append(percpu.in_nmi()))
        t.start()
        t.join()
        assert other == [False]
    assert not percpu.in_nmi()


def test_nmi_exits_on_exception():
    with pytest.raises(RuntimeError):
        with percpu.nmi():
            raise RuntimeError("boom")
    assert not percpu.in_nmi()


def test_signal_handler_runs_in_nmi_context():
    seen = []
    old = percpu.signal(signal.SIGUSR1, lambda signo, frame: seen.append((signo, percpu.in_nmi())))
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        for _ in range(100):
            if seen:
                break
            time.sleep(0.01)
        assert seen == [(signal.SIGUSR1, True)]
        assert not percpu.in_nmi()
    finally:
        signal.signal(signal.SIGUSR1, old)
    with pytest.raises(TypeError):
        percpu.signal(signal.SIGUSR1, "not callable")


def test_trylock_in_nmi_against_a_held_lock():
    d = percpu.Domain.create(size=1 << 20)
    try:
        lk = d.lock_at(d.kzalloc(8))
        lk.lock()
        with percpu.nmi():
            # The NMI interrupted the holder: a spin would deadlock, trylock says EDEADLK.
            with pytest.raises(percpu.errors.Deadlock):
                lk.trylock()
        lk.unlock()
        assert lk.trylock() is True
        lk.unlock()
        with pytest.raises(percpu.errors.NotPermitted):
            lk.unlock()
    finally:
        d.close()
        d.unlink()


def test_irq_work_runs_soon_in_the_work_thread():
    ran = []
    done = threading.Event()

    def fn():
        ran.append(threading.current_thread().name)
        done.set()

    w = kernel.IrqWork(fn)
    assert kernel.irq_work_queue(w) is True
    assert done.wait(5)
    assert ran == ["percpu-irq_work"]
    assert w.sync(5)
    assert not w.pending


def test_irq_work_queued_once_while_pending():
    gate = threading.Event()
    started = threading.Event()
    count = []

    def blocker():
        started.set()
        gate.wait(5)

    work.irq_work_queue(blocker)
    assert started.wait(5)
    w = work.IrqWork(lambda: count.append(1))
    assert w.queue() is True
    assert w.queue() is False  # already pending: the kernel's irq_work_queue() returns false
    assert w.pending
    gate.set()
    assert w.sync(5)
    assert count == [1]
    assert work.flush(5)


def test_irq_work_failure_is_logged_and_the_thread_survives(caplog):
    before = work.stats()["errors"]

    def bad():
        raise ValueError("work failed")

    work.irq_work_queue(bad)
    assert work.flush(5)
    assert work.stats()["errors"] == before + 1
    ok = threading.Event()
    work.irq_work_queue(ok.set)
    assert ok.wait(5)


def test_irq_work_requeues_itself():
    n = []

    def again():
        n.append(1)
        if len(n) < 5:
            w.queue()

    w = work.IrqWork(again)
    w.queue()
    deadline = time.monotonic() + 5
    while len(n) < 5 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert work.flush(5)
    assert len(n) == 5


def test_irq_work_in_forked_child():
    pid = os.fork()
    if pid == 0:
        ev = threading.Event()
        work.irq_work_queue(ev.set)
        os._exit(0 if ev.wait(5) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
