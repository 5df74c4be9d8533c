"""Per-CPU allocator and counters across pinned processes."""

from __future__ import annotations

import os

import mp_helpers
import pytest

import percpu
from percpu import pcpu
from percpu.runtime import work
from percpu.runtime.kthread import kthread_run_on_cpu

SCALE = float(os.environ.get("PERCPU_STRESS_SCALE", "1"))


@pytest.mark.stress
@pytest.mark.timeout(240)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_counter_summed_across_two_pinned_processes(make_domain, method):
    dom = make_domain(size=16 << 20)  # the machine's real CPUs
    c = percpu.PerCpuCounter("mp.hits")
    cpus = list(dom.possible)[:2]
    n = int(20000 * SCALE)
    workers = [kthread_run_on_cpu(mp_helpers.pcpu_counter_add, cpu, "pcpu_add/%u", "mp.hits", n, method=method)
               for cpu in cpus]
    assert [w.join(200) for w in workers] == [0] * len(workers)
    for w in workers:
        w.stop()
    assert c.sum() == n * len(cpus)
    per = c.per_cpu()
    for cpu in cpus:
        assert per[cpu] == n  # each worker added on its own CPU's copy
    dom.check()


@pytest.mark.stress
@pytest.mark.timeout(300)
@pytest.mark.parametrize("nr_cpus, nprocs", [(None, 2), (8, 4)], ids=["real-cpus", "8-sim-cpus-4-procs"])
def test_concurrent_alloc_free_never_hands_out_an_area_twice(make_domain, nr_cpus, nprocs):
    dom = make_domain(size=128 << 20, nr_cpus=nr_cpus)
    dom.arena.pcpu_setup()
    errors_off = dom.kzalloc(8)
    cpus = list(dom.possible)[:nprocs]
    rounds = int(4000 * SCALE)
    workers = [kthread_run_on_cpu(mp_helpers.pcpu_churn, cpu, "pcpu_churn/%u", rounds, i + 1, errors_off,
                                  method="fork")
               for i, cpu in enumerate(cpus)]
    assert [w.join(280) for w in workers] == [0] * len(workers)
    for w in workers:
        w.stop()
    assert dom.arena.load(errors_off) == 0, "an area was handed out twice or changed by another process"
    dom.check()
    assert pcpu.info()["nr_cur_alloc"] == 0
    work.flush(10)
    # A pass may reintegrate a fully free chunk that still has populated pages
    # (pcpu_balance_free(true) spares it); the next pass frees it.
    pcpu.balance()
    pcpu.balance()
    assert pcpu.info()["nr_chunks"] <= 2
    assert dom.populated_pages() == dom.st_blocks_pages()


@pytest.mark.stress
@pytest.mark.timeout(120)
def test_percpu_variable_attached_by_name_in_pinned_workers(make_domain):
    dom = make_domain(size=16 << 20)
    v = percpu.PerCpu("qq", name="mp.var")
    cpus = list(dom.possible)[:2]
    workers = [kthread_run_on_cpu(mp_helpers.pcpu_var_write, cpu, "pcpu_var/%u", dom.name, "mp.var", 100 + cpu,
                                  method="spawn")
               for cpu in cpus]
    assert [w.join(100) for w in workers] == [0] * len(workers)
    for w in workers:
        w.stop()
    got = dict(v.items())
    for cpu in cpus:
        assert got[cpu] == (100 + cpu, cpu)  # each worker wrote its own CPU's copy
