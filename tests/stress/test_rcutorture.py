"""rcutorture: writers replace a shared object, readers in other processes check it.

Modelled on the kernel's rcutorture and liburcu's rcutorture.h.  Each element
carries a pipe count: the writer sets it to 1 when it replaces the element and
increments it once per grace period after that; the element is freed
(poisoned, then kfree'd) when the count reaches PIPE_LEN.  A reader counts the
value it sees at the end of its section: 0 (current) and 1 (replaced while it
read) are normal; 2 or more means a grace period completed while the reader
still held the element: RCU is broken.  Every bucket of the age histogram beyond 1
must stay empty, and no reader may ever see a freed or corrupted element.

Length: PERCPU_STRESS_SECONDS (default 2 s per mode); CI runs the short tier.
"""

from __future__ import annotations

import os

import mp_helpers
import pytest
from mp_helpers import MAGIC, PIPE_LEN

from percpu import kernel, rcu
from percpu.runtime.kthread import kthread_run_on_cpu

SECONDS = float(os.environ.get("PERCPU_STRESS_SECONDS", "2"))


def _new(dom, version: int) -> int:
    p = dom.kzalloc(64)
    a = dom.arena
    a.store(p, MAGIC)
    a.store(p + 24, version)
    return p


def _retire(dom, e: int) -> None:
    a = dom.arena
    a.store(e + 16, 1)  # freed: a reader seeing this inside a section is a failure
    a.store(e, 0)
    dom.kfree(e)


@pytest.mark.stress
@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["synchronize", "call_rcu", "poll"])
def test_rcutorture(make_domain, mode):
    dom = make_domain(size=32 << 20)
    a = dom.arena
    ptr = dom.kzalloc(8)
    nreaders = 2
    results = dom.kzalloc(8 * (PIPE_LEN + 2) * nreaders)
    a.store(ptr, _new(dom, 0))
    inuse0 = sum(c["inuse"] for c in dom.stats()["kmalloc"])
    cpus = sorted(os.sched_getaffinity(0))
    readers = [
        kthread_run_on_cpu(mp_helpers.torture_reader, cpus[i % len(cpus)], "rcu_torture_rd",
                           ptr, results + i * 8 * (PIPE_LEN + 2), SECONDS, method="fork")
        for i in range(nreaders)
    ]
    pipeline: list[int] = []
    version = 0

    def advance_pipeline(batch: list[int]) -> None:
        # Runs after a grace period that followed the replacement of every element of batch.
        for e in batch:
            a.fetch_add(e + 8, 1)
        for e in [e for e in pipeline if a.load(e + 8) >= PIPE_LEN]:
            pipeline.remove(e)
            _retire(dom, e)

    import time

    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline or any(r.alive for r in readers):
        version += 1
        old = a.xchg(ptr, _new(dom, version))
        a.fetch_add(old + 8, 1)  # replaced: age 1 until a grace period has passed
        pipeline.append(old)
        snapshot = list(pipeline)
        if mode == "synchronize":
            kernel.synchronize_rcu()
            advance_pipeline(snapshot)
        elif mode == "call_rcu":
            kernel.call_rcu(lambda s=snapshot: advance_pipeline(s))
            if version % 16 == 0:
                kernel.rcu_barrier()
        else:
            cookie = kernel.start_poll_synchronize_rcu()
            while not kernel.poll_state_synchronize_rcu(cookie):
                time.sleep(0)
            advance_pipeline(snapshot)
        if version > 200000:
            break
    assert [r.join(60) for r in readers] == [0] * nreaders
    for r in readers:
        r.stop()
    kernel.rcu_barrier()
    hist = [0] * (PIPE_LEN + 1)
    bad = 0
    for i in range(nreaders):
        base = results + i * 8 * (PIPE_LEN + 2)
        for b in range(PIPE_LEN + 1):
            hist[b] += a.load(base + 8 * b)
        bad += a.load(base + 8 * (PIPE_LEN + 1))
    print(f"\nrcutorture[{mode}]: {version} updates, histogram {hist}, bad {bad}, "
          f"gp {a.rcu_info()['gp_done'][0]}")
    assert sum(hist) > 100, "the readers did not run"
    assert hist[1] > 0, "no reader ever overlapped an update: the test did not test anything"
    assert version > 10, "the writer did not run"
    assert bad == 0, f"a reader saw a freed or corrupted element {bad} times"
    assert hist[2:] == [0] * (PIPE_LEN - 1), f"an element outlived a grace period under a reader: {hist}"
    # Drain: everything the writer retired is freed, nothing else leaked.
    for _ in range(PIPE_LEN + 1):
        kernel.synchronize_rcu()
        advance_pipeline(list(pipeline))
    dom.kfree(a.xchg(ptr, 0))
    assert sum(c["inuse"] for c in dom.stats()["kmalloc"]) == inuse0 - 1
    dom.check()


@pytest.mark.stress
@pytest.mark.timeout(300)
def test_defer_free_list_torture(make_domain):
    """Readers in other processes; the writer retires through a DeferFreeList in the arena."""
    dom = make_domain(size=32 << 20)
    a = dom.arena
    ptr = dom.kzalloc(8)
    nreaders = 2
    results = dom.kzalloc(8 * (PIPE_LEN + 2) * nreaders)
    a.store(ptr, _new(dom, 0))
    # The rcu_head sits in bytes 32..47, which readers never read.
    dfl = rcu.DeferFreeList.create(name="torture.defer", head_offset=32)
    cpus = sorted(os.sched_getaffinity(0))
    readers = [
        kthread_run_on_cpu(mp_helpers.torture_reader, cpus[i % len(cpus)], "rcu_torture_rd",
                           ptr, results + i * 8 * (PIPE_LEN + 2), SECONDS, method="fork")
        for i in range(nreaders)
    ]
    import time

    updates = freed = 0
    while any(r.alive for r in readers) and updates < 200000:
        updates += 1
        old = a.xchg(ptr, _new(dom, updates))
        dfl.defer(old)
        if updates % 8 == 0:
            freed += dfl.reclaim(free=lambda e: _retire(dom, e))
        time.sleep(0)
    for r in readers:
        assert r.join(60) == 0
        r.stop()
    bad = sum(a.load(results + i * 8 * (PIPE_LEN + 2) + 8 * (PIPE_LEN + 1)) for i in range(nreaders))
    reads = sum(a.load(results + i * 8 * (PIPE_LEN + 2) + 8 * b)
                for i in range(nreaders) for b in range(PIPE_LEN + 1))
    print(f"\ndefer-free torture: {updates} updates, {freed} freed during the run, {reads} reads, bad {bad}")
    assert reads > 100 and updates > 10
    assert freed > 0, "reclaim never freed anything during the run"
    assert bad == 0
    kernel.synchronize_rcu()
    dfl.reclaim(free=lambda e: _retire(dom, e))
    assert dfl.pending() == 0
    dfl.destroy()
    dom.kfree(a.xchg(ptr, 0))
    dom.check()
