"""Several pinned processes push and pop concurrently: no node lost or handed out twice.

Every node is stamped with its holder's tag when popped (a CAS from "free") and
checked before it is pushed back, as DPDK's ring stress test does.
"""

from __future__ import annotations

import os

import mp_helpers
import pytest

from percpu.freelist import PcpuFreelist
from percpu.runtime.kthread import kthread_run_on_cpu

ROUNDS = int(30000 * float(os.environ.get("PERCPU_STRESS_SCALE", "1")))


@pytest.mark.stress
@pytest.mark.timeout(300)
@pytest.mark.parametrize("nr_cpus, nprocs", [(None, 2), (8, 4)], ids=["real-cpus", "8-sim-cpus-4-procs"])
def test_concurrent_push_pop_keeps_every_node(make_domain, nr_cpus, nprocs):
    dom = make_domain(size=16 << 20, nr_cpus=nr_cpus)
    nelems = 256
    s = PcpuFreelist.create(name="stress.fl", robust=True)
    buf = dom.kzalloc(64 * nelems)
    s.populate(buf, 64, nelems)
    errors_off = dom.kzalloc(8)
    cpus = [c for c in dom.possible][:nprocs]
    workers = [
        kthread_run_on_cpu(mp_helpers.freelist_churn, cpu, "fl_stress/%u", "stress.fl", 64, ROUNDS,
                           i + 1, errors_off, method="fork")
        for i, cpu in enumerate(cpus)
    ]
    assert [w.join(240) for w in workers] == [0] * len(workers)
    for w in workers:
        w.stop()
    assert dom.arena.load(errors_off) == 0, "a node was handed out twice or changed hands unstamped"
    assert s.check() == nelems  # every node is back, none twice
    per = s.per_cpu()
    assert sum(per.values()) == nelems
