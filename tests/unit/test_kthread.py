"""kthreads: pinned, named worker processes, fork and spawn, stop and supervision."""

from __future__ import annotations

import logging
import os
import signal
import time

import mp_helpers  # tests/ is on sys.path (rootdir conftest)
import pytest

from percpu import errors, kernel
from percpu.runtime.kthread import Kthread, kthread_run_on_cpu

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def dom(make_domain):
    return make_domain(size=4 << 20, nr_cpus=8)


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_worker_is_pinned_named_and_is_its_cpu(dom, method):
    real = sorted(os.sched_getaffinity(0))
    for cpu in (1, 6):  # 6 is simulated: it runs on a real CPU, but acts as 6
        res = dom.kzalloc(32)
        counter = dom.kzalloc(8)
        kt = kthread_run_on_cpu(mp_helpers.loop_until_stopped, cpu, "cpumap/%u/map:1", counter, method=method)
        try:
            assert kt.name == f"cpumap/{cpu}/map:1"
            assert _comm(kt.pid) == f"cpumap/{cpu}/map:1"[:15]
            assert os.sched_getaffinity(kt.pid) == {kt.real_cpu}
            assert kt.real_cpu in real
            deadline = time.monotonic() + 30  # a loaded machine (ASan, spawn) may not have run the loop yet
            while dom.arena.load(counter) == 0 and time.monotonic() < deadline:
                time.sleep(0.001)
        finally:
            assert kt.stop() == 7  # the function's return value is the exit code
        assert dom.arena.load(counter) > 0
        kt2 = kthread_run_on_cpu(mp_helpers.report_identity, cpu, "id/%u", res, method=method)
        assert kt2.join(60) == 0
        kt2.stop()
        words = dom.mem(res, 32).cast("Q")
        assert words[3] == 1 and words[0] == kt2.pid
        assert words[1] == cpu  # smp_processor_id() in the worker is its domain CPU
        assert words[2] == 1 << kt2.real_cpu


def test_facade_kthread_run_on_cpu_and_stop(dom):
    counter = dom.kzalloc(8)
    kt = kernel.kthread_run_on_cpu(mp_helpers.loop_until_stopped, 0, "worker/%u", counter)
    assert kt.alive
    assert kernel.kthread_stop(kt) == 7
    assert not kt.alive
    with pytest.raises(errors.InvalidArgument):
        kt.stop()


@pytest.mark.parametrize("code", [0, 3])
def test_exit_codes_are_reported(dom, code):
    kt = kthread_run_on_cpu(mp_helpers.exit_with, 0, "exit/%u", code, method="fork")
    assert kt.join(30) == code
    assert kt.stop() == code


def test_not_possible_cpu_is_refused(dom):
    with pytest.raises(errors.NoDevice):
        kthread_run_on_cpu(mp_helpers.exit_with, 8, "x/%u", 0)
    with pytest.raises(errors.InvalidArgument):
        kthread_run_on_cpu(mp_helpers.exit_with, 0, "x/%u", 0, method="thread")


def test_death_is_reported(dom, caplog):
    deaths = []
    kt = Kthread(mp_helpers.die_by_signal, 0, "doomed", (signal.SIGKILL,), method="fork",
                 on_death=lambda k: deaths.append(k.exitcode))
    with caplog.at_level(logging.WARNING, logger="percpu.kthread"):
        kt.start()
        deadline = time.monotonic() + 20
        while not deaths and time.monotonic() < deadline:
            time.sleep(0.01)
    assert deaths == [-signal.SIGKILL]
    assert kt.deaths == [-signal.SIGKILL]
    assert any("doomed" in r.message and "signal 9" in r.message for r in caplog.records)
    assert kt.stop() == -signal.SIGKILL


def test_dead_worker_is_restarted(dom):
    counter = dom.kzalloc(8)
    kt = Kthread(mp_helpers.loop_until_stopped, 1, "phoenix/1", (counter,), method="fork", restart=True,
                 max_restarts=2).start()
    first = kt.pid
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while (kt.restarts < 1 or not kt.alive) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert kt.restarts == 1 and kt.alive and kt.pid != first
    assert kt.deaths == [-signal.SIGKILL]
    assert kt.stop() == 7


def test_stop_escalates_for_a_worker_that_ignores_it(dom):
    kt = kthread_run_on_cpu(mp_helpers.ignore_sigterm_and_spin, 0, "stubborn", method="fork")
    t0 = time.monotonic()
    code = kt.stop(timeout=0.3)
    assert code == -signal.SIGKILL
    assert time.monotonic() - t0 < 10


def test_spawn_needs_a_picklable_function(dom):
    before = sum(c["inuse"] for c in dom.stats()["kmalloc"])
    with pytest.raises(TypeError, match="picklable"):
        kthread_run_on_cpu(lambda: 0, 0, "lambda/%u", method="spawn")
    assert sum(c["inuse"] for c in dom.stats()["kmalloc"]) == before  # nothing leaked
