"""Two pinned processes increment a shared counter under the lock: no lost update."""

from __future__ import annotations

import os

import mp_helpers  # tests/ is on sys.path (rootdir conftest)
import pytest

from percpu.runtime.kthread import kthread_run_on_cpu

ROUNDS = int(20000 * float(os.environ.get("PERCPU_STRESS_SCALE", "1")))


@pytest.fixture
def dom(make_domain):
    return make_domain(size=8 << 20)


@pytest.mark.stress
@pytest.mark.timeout(180)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_no_lost_update_across_pinned_workers(dom, method):
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")  # the CI machine has two
    counter, lock_off = dom.kzalloc(8), dom.kzalloc(8)
    workers = [
        kthread_run_on_cpu(mp_helpers.count_under_lock, cpu, "cnt/%u", counter, lock_off, ROUNDS, method=method)
        for cpu in cpus[:2]
    ]
    assert workers[0].real_cpu != workers[1].real_cpu  # pinning itself: tests/unit/test_kthread.py
    codes = [w.join(150) for w in workers]
    assert codes == [0, 0]
    assert [w.stop() for w in workers] == [0, 0]
    assert dom.mem(counter, 8).cast("Q")[0] == 2 * ROUNDS
    assert not dom.lock_at(lock_off).locked
    dom.check()


@pytest.mark.stress
@pytest.mark.timeout(120)
def test_lock_contention_with_parent_threads(dom):
    """Threads of this process and a pinned worker all contend (GIL released while waiting)."""
    import threading

    counter, lock_off = dom.kzalloc(8), dom.kzalloc(8)
    w = kthread_run_on_cpu(mp_helpers.count_under_lock, 0, "cnt/%u", counter, lock_off, ROUNDS, method="fork")
    threads = [threading.Thread(target=mp_helpers.count_under_lock, args=(counter, lock_off, ROUNDS // 4))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    assert w.join(100) == 0
    w.stop()
    assert dom.mem(counter, 8).cast("Q")[0] == ROUNDS + 2 * (ROUNDS // 4)
