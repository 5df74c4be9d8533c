"""A process SIGKILLed in the middle of a push or pop leaves the freelist consistent."""

from __future__ import annotations

import os
import random
import signal
import time

import mp_helpers
import pytest

import percpu
from percpu import _core
from percpu.freelist import PcpuFreelist


@pytest.mark.crash
@pytest.mark.timeout(240)
def test_sigkill_during_push_pop(make_domain):
    dom = make_domain(size=16 << 20, nr_cpus=2)
    nelems = 64
    s = PcpuFreelist.create(name="crash.fl")
    buf = dom.kzalloc(64 * nelems)
    s.populate(buf, 64, nelems)
    held_off = dom.kzalloc(8)
    rng = random.Random(int(os.environ.get("PERCPU_SEED", "7")))
    from percpu.runtime.kthread import kthread_run_on_cpu

    kills = int(20 * float(os.environ.get("PERCPU_STRESS_SCALE", "1")))
    lost_total = 0
    for k in range(kills):
        before = s.check()
        # A real pinned worker, alternating between the two CPUs (its pushes go to its own head).
        kt = kthread_run_on_cpu(mp_helpers.freelist_churn_forever, k % 2, "fl_churn/%u", "crash.fl", k,
                                held_off, method="fork")
        time.sleep(rng.uniform(0.002, 0.03))
        os.kill(kt.pid, signal.SIGKILL)
        assert kt.stop() == -signal.SIGKILL
        # The survivor is not blocked by the dead process's lock, and the lists check out.
        t0 = time.monotonic()
        n = s.pop()
        assert n is not None and time.monotonic() - t0 < 5
        s.push(n)
        total = s.check()
        lost = before - total
        assert lost in (0, 1), f"the dead process held at most one node, {lost} are missing"
        if lost:
            # The node it held (published at held_off, or the one between pop and push).
            lost_total += 1
    # Everything not lost with a dead process is still reachable, exactly once.
    assert s.check() == nelems - lost_total
    counts = s.per_cpu()
    assert sum(counts.values()) == nelems - lost_total


@pytest.mark.crash
@pytest.mark.timeout(60)
def test_head_lock_of_a_killed_holder_is_recovered(make_domain):
    dom = make_domain(size=8 << 20, nr_cpus=2)
    s = PcpuFreelist.create()
    buf = dom.kzalloc(64 * 8)
    s.populate(buf, 64, 8)
    head0 = s.offset + 64 * 2
    p = mp_helpers.start_holder([head0])
    os.kill(p.pid, signal.SIGKILL)
    with percpu.on_cpu(0):
        n = s.pop()  # waits for CPU 0's head, takes it over from the dead holder, recounts
    assert n == buf + 3 * 64
    assert _core.Lock(dom.arena, head0).recoveries == 1
    s.push(n)
    assert s.check() == 8
    p.join()


@pytest.mark.crash
@pytest.mark.timeout(60)
def test_nmi_push_completes_when_every_list_is_held_by_a_dead_process(make_domain):
    """The kernel's NMI push never fails; here every lock is held by a SIGKILLed process.

    Trylocks alone would spin forever; after many rounds the push falls back to
    a short waiting acquire, which takes a dead owner's lock over.
    """
    dom = make_domain(size=8 << 20, nr_cpus=2)
    s = PcpuFreelist.create()
    buf = dom.kzalloc(64 * 4)
    s.populate(buf, 64, 4)
    with percpu.on_cpu(0):
        n = s.pop()
    offsets = [s.offset + 64 * (2 + c) for c in range(2)] + [s.offset + 64]  # heads, extra list
    p = mp_helpers.start_holder(offsets)
    os.kill(p.pid, signal.SIGKILL)
    t0 = time.monotonic()
    with percpu.on_cpu(0), percpu.nmi():
        s.push(n)
    assert time.monotonic() - t0 < 10
    assert s.check() == 4
    p.join()
