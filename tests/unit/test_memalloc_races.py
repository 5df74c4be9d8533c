"""Races and misuse found in review: each was a real bug (double handout, double free, stall, deadlock).

* two threads freeing the same pointer at once: one wins, the other gets EINVAL,
  and the lists stay acyclic (the free claims the header with a CAS);
* two handles destroying one allocator at once: one report, then ENOENT/ValueError,
  and the arena stays consistent (no double kfree of the caches);
* a grace-period callback that finds a cache busy does not hold RCU grace periods
  of the whole domain up while it waits (it trylocks and comes back);
* a Python signal handler in NMI context that queues a refill while the main
  program is queueing one does not deadlock;
* a size near 2**64 is refused, not wrapped into a small bucket;
* the properties of a handle whose domain was closed do not touch unmapped memory.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

import percpu
from percpu import errors, rcu
from percpu.memalloc import BpfMemAlloc


def _cache(ma: BpfMemAlloc, cpu: int) -> int:
    return next(c["cache"] for c in ma.info()["caches"] if c["cpu"] == cpu)


def test_two_racing_frees_of_one_pointer_one_wins(domain):
    ma = BpfMemAlloc(48)
    c0 = _cache(ma, 0)
    for _ in range(5):
        with percpu.on_cpu(0):
            p = ma.cache_alloc()
        holder = domain.lock_at(c0)
        holder.lock()  # both frees pass their checks and wait on the cache lock
        res: list[str] = []

        def free(p: int = p, res: list[str] = res) -> None:
            with domain, percpu.on_cpu(0):
                try:
                    ma.cache_free(p)
                    res.append("ok")
                except errors.InvalidArgument as e:
                    assert e.errno == 22
                    res.append("EINVAL")

        ts = [threading.Thread(target=free) for _ in range(2)]
        for t in ts:
            t.start()
        time.sleep(0.05)
        holder.unlock()
        for t in ts:
            t.join()
        assert sorted(res) == ["EINVAL", "ok"]
        chk = ma.check()  # no cycle, no object twice
        assert chk["outstanding"] == 0 and chk["created"] - chk["released"] == chk["cached"]
    with percpu.on_cpu(0):
        got = [ma.cache_alloc() for _ in range(200)]
    assert len(set(got)) == 200
    for q in got:
        ma.cache_free(q)
    ma.destroy(wait=True)


def test_two_racing_destroys_free_the_allocator_once(domain):
    ma = BpfMemAlloc(48, name="dd")
    other = BpfMemAlloc.attach("dd")
    c0 = _cache(ma, 0)
    holder = domain.lock_at(c0)
    holder.lock()
    res: list[object] = []

    def destroy(h: BpfMemAlloc) -> None:
        with domain:
            try:
                res.append(h.destroy(wait=True))
            except (errors.NoEntry, ValueError) as e:
                res.append(type(e).__name__)

    ts = [threading.Thread(target=destroy, args=(h,)) for h in (ma, other)]
    for t in ts:
        t.start()
    time.sleep(0.05)
    holder.unlock()
    for t in ts:
        t.join()
    reports = [r for r in res if not isinstance(r, str)]
    assert len(reports) == 1, res
    domain.check()  # a second destroy_finish would have broken a slab's free chain


def test_a_callback_never_holds_grace_periods_up_behind_a_busy_cache(domain):
    ma = BpfMemAlloc(48)
    c0 = _cache(ma, 0)
    holder = domain.lock_at(c0)
    inside, freed, held, done = (threading.Event() for _ in range(4))

    def hold() -> None:
        with domain:
            with rcu.read_lock():  # keeps the free_rcu batch's grace period open until we hold the cache
                inside.set()
                freed.wait()
                holder.lock()
            held.set()
            done.wait(5)
            holder.unlock()

    th = threading.Thread(target=hold)
    th.start()
    inside.wait()
    with percpu.on_cpu(0):
        p = ma.cache_alloc()
        ma.cache_free_rcu(p)  # the RCU wait starts; its callback will poll c0
    freed.set()
    held.wait()
    time.sleep(0.2)  # the callback runs while c0 is held
    t0 = time.monotonic()
    rcu.synchronize()
    took = time.monotonic() - t0
    done.set()
    th.join()
    assert took < 1.0, f"synchronize_rcu took {took:.2f} s behind a busy cache"
    rcu.synchronize()
    ma.poll()
    ma.destroy(wait=True)


def test_nmi_handler_queueing_a_refill_does_not_deadlock(domain):
    ma = BpfMemAlloc(48)
    ran = [0]

    def handler(signum: int, frame: object) -> None:
        ran[0] += 1
        with percpu.on_cpu(0), percpu.nmi():
            q = ma.cache_alloc()  # below the low watermark: queues the refill irq_work
            if q:
                ma.cache_free(q)

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
    try:
        t0 = time.monotonic()
        with percpu.on_cpu(0):
            while time.monotonic() - t0 < 1.0:
                with percpu.nmi():
                    p = ma.cache_alloc()
                if p:
                    with percpu.nmi():
                        ma.cache_free(p)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert ran[0] > 10
    ma.refill()
    ma.check()
    ma.destroy(wait=True)


@pytest.mark.parametrize("size", [2**64 - 1, 2**64 - 8, 4097, 1 << 40])
def test_huge_sizes_are_refused_not_wrapped(domain, size):
    ma = BpfMemAlloc(0)
    assert ma.alloc(size) is None
    ma.destroy(wait=True)


def test_properties_after_the_domain_closed(make_domain):
    dom = make_domain(size=8 << 20, nr_cpus=2)
    ma = BpfMemAlloc(48, name="closed")
    dom.close()
    assert ma.destroyed is True
    assert ma.percpu is None and ma.size is None
    assert "closed" in repr(ma)
    with pytest.raises(ValueError):
        ma.cache_alloc()
