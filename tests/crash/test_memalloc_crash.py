"""A process SIGKILLed anywhere in the BPF memory allocator loses at most what it held.

A pinned worker churns on a named allocator -- allocations, frees on its CPU
and on the other one, ``free_rcu``, bursts that cross both watermarks (so
refills, ``free_bulk`` moves between caches through the staging record, and
grace-period callbacks are under way) -- and is SIGKILLed at a random moment.
The worker records every pointer it holds in a shared array (right after the
allocation returns it, cleared right before the free).  After each kill the
survivor:

* allocates and frees on every cache without blocking (a cache lock or the
  move lock held by the dead process is taken over, its half-done move
  finished or forgotten);
* passes ``ma.check()`` (no object on two lists, ``free_cnt`` right) and
  ``dom.check()``;
* finds exactly the dead worker's objects missing: the objects out of the
  allocator, ``created - released - cached - in_flight``, are the recorded
  ones plus a slack of at most 2 per killed process (see SLACK_PER_KILL), and
  the allocator's own count (``outstanding``, from its alloc/free counters)
  agrees with that to within one per kill (see
  ``test_sigkill_in_the_release_loop_keeps_the_books`` for why not exactly).

At the end the survivor frees every recorded pointer (each must still be an
allocated object) and exactly those go back.  Other tests kill a worker in the
middle of an NMI-context free of thousands of objects while a second process
acts as the same CPU (so some NMI frees find the cache busy), in the loop that
gives a pile of objects back to kmalloc after their grace periods, and in a
refill (``alloc_bulk``), where kmalloc memory must not leak.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import mp_memalloc
import pytest

import percpu
from percpu.memalloc import LLIST_NODE_SZ, BpfMemAlloc
from percpu.runtime import rcu, work
from percpu.runtime.kthread import kthread_run_on_cpu

SCALE = float(os.environ.get("PERCPU_STRESS_SCALE", "1"))

# Under ASan (tests/sanitize) a worker forked from the long-lived pytest process,
# whose RCU-callback and irq_work threads are busy, twice hung before it started
# (60 s, in this file's first test, never when the file runs alone).  Not
# understood yet (an ASan allocator lock held across fork is the suspect); the
# unit, property and repair tests still run the allocator under the sanitizers.
pytestmark = pytest.mark.skipif(
    bool(os.environ.get("PERCPU_UNDER_ASAN")),
    reason="fork of the busy pytest process can hang under ASan (see the comment above)",
)
SEED = int(os.environ.get("PERCPU_SEED", "7"))
NREC = 256
#: Per killed process, the objects out of the allocator that no record names.
#: The worker's main thread may be stopped between an allocation and its record
#: (or between clearing a record and the free): one object.  Its irq_work thread
#: (grace-period callbacks, NMI-raised refills) may at the same instant be inside
#: the allocator releasing objects to kmalloc, and a kill between unlinking an
#: object and counting it released leaves that one neither listed nor counted:
#: one more.  Nothing else may go missing.
SLACK_PER_KILL = 2
OPS_TIMEOUT = 5.0


def _every_cache_op(ma: BpfMemAlloc, dom: percpu.Domain) -> float:
    """Allocate and free once on every (CPU, bucket) cache from a thread; the seconds it took."""
    done = threading.Event()
    err: list[BaseException] = []

    def run() -> None:
        try:
            with dom:
                for ci in ma.info()["caches"]:
                    with percpu.on_cpu(ci["cpu"]):
                        if ma.all_buckets:
                            p = ma.alloc(ci["unit_size"] - LLIST_NODE_SZ)
                        else:
                            p = ma.cache_alloc()
                        assert p is not None, f"allocation on CPU {ci['cpu']} bucket {ci['bucket']} failed"
                        (ma.free if ma.all_buckets else ma.cache_free)(p)
        except BaseException as e:  # noqa: BLE001 - reported below
            err.append(e)
        finally:
            done.set()

    t0 = time.monotonic()
    threading.Thread(target=run, name="every-cache", daemon=True).start()
    assert done.wait(OPS_TIMEOUT), "an operation blocked on a lock held by the dead process"
    if err:
        raise err[0]
    return time.monotonic() - t0


def _recorded(dom: percpu.Domain, recs: list[int]) -> list[int]:
    a = dom.arena
    return [p for rec in recs for p in (a.load(rec + 8 * i) for i in range(NREC)) if p]


class Ledger:
    """What the survivor expects: the objects out of the allocator after each kill."""

    def __init__(self, ma: BpfMemAlloc) -> None:
        self.ma = ma
        self.slack = 0  # out of the allocator, recorded nowhere
        self.drift = 0  # outstanding (counters) - out of the allocator (lists)
        self.drifts = 0

    def account(self, recorded: int, what: str, killed: int = 1) -> dict[str, int]:
        """Check the books after ``killed`` processes died (0: after the survivor's own frees)."""
        chk = self.ma.check()
        assert chk["in_flight"] == 0, f"{what}: the check's lock takeover left a move half done: {chk}"
        out = chk["created"] - chk["released"] - chk["cached"] - chk["in_flight"]
        slack = out - recorded
        assert 0 <= slack - self.slack <= SLACK_PER_KILL * killed, (
            f"{what}: {out} objects out of the allocator, {recorded} recorded by the dead workers, "
            f"slack {self.slack} before this kill: {chk}"
        )
        # An object cut off in a release (SLACK_PER_KILL) is out by the lists but was
        # never allocated by the counters; a kill between a list update and its
        # counter in unit_alloc/unit_free does the same, the other way round.
        drift = chk["outstanding"] - out
        assert abs(drift - self.drift) <= killed, f"{what}: outstanding {chk['outstanding']} but {out} out: {chk}"
        self.drifts += drift != self.drift
        self.slack, self.drift = slack, drift
        return chk  # type: ignore[no-any-return]


def _quiesce(ma: BpfMemAlloc) -> None:
    for _ in range(2):
        rcu.synchronize()
        rcu.synchronize(rcu.TASKS_TRACE)
        ma.poll()
    work.flush(10)


def _free_recorded(dom: percpu.Domain, ma: BpfMemAlloc, recs: list[int]) -> int:
    ptrs = _recorded(dom, recs)
    with percpu.on_cpu(0):
        for p in ptrs:
            assert ma.obj_cache(p) is not None, f"recorded {p:#x} is not an allocated object"
            (ma.free if ma.all_buckets else ma.cache_free)(p)
    return len(ptrs)


@pytest.mark.crash
@pytest.mark.timeout(120)
@pytest.mark.parametrize("size", [48, 0], ids=["fixed", "buckets"])
def test_sigkill_anywhere_loses_only_what_the_dead_held(make_domain, size):
    dom = make_domain(size=64 << 20, nr_cpus=2)
    ma = BpfMemAlloc(size, name="crash.ma")
    rng = random.Random(SEED + size)
    ledger = Ledger(ma)
    recs: list[int] = []
    kills = int(15 * SCALE)
    slow = 0.0
    for k in range(kills):
        rec = dom.kzalloc(8 * NREC)
        recs.append(rec)
        cpu = k % 2
        kt = kthread_run_on_cpu(mp_memalloc.ma_churn_forever, cpu, "ma_crash/%u", "crash.ma", cpu, 1 - cpu, rec,
                                NREC, SEED * 1000 + k, method="fork" if k % 3 else "spawn")
        time.sleep(rng.uniform(0.005, 0.06))
        os.kill(kt.pid, signal.SIGKILL)
        assert kt.stop() == -signal.SIGKILL
        slow = max(slow, _every_cache_op(ma, dom))
        ledger.account(len(_recorded(dom, recs)), f"kill {k}")
        dom.check()
        if k % 4 == 3:
            ma.poll()  # the dead workers' grace-period callbacks died with them: any process finishes them
    freed = _free_recorded(dom, ma, recs)
    _quiesce(ma)
    ledger.account(0, "after freeing the recorded objects", killed=0)  # exactly those went back
    dom.check()
    info = ma.info()
    takeovers = info["nr_recovered"] + sum(c["nr_recovered"] for c in info["caches"])
    print(f"{kills} kills: {freed} recorded objects freed by the survivor, {ledger.slack} lost in flight, "
          f"{ledger.drifts} kills left the counters off by one, {takeovers} locks taken over "
          f"(slowest {slow:.3f} s)")


@pytest.mark.crash
@pytest.mark.timeout(120)
def test_sigkill_during_nmi_free_of_many_objects(make_domain):
    """The victim frees 6000 objects in NMI context on CPU 0 while a companion churns as CPU 0 too.

    The companion holds CPU 0's cache lock now and then (the interrupted owner),
    so some NMI frees find it busy and go to free_llist_extra(_rcu); both are
    killed, the victim as soon as its progress counter reaches a random target
    (rounds go on until three kills landed inside the loop).
    """
    dom = make_domain(size=64 << 20, nr_cpus=2)
    a = dom.arena
    ma = BpfMemAlloc(48, name="nmi.ma")
    rng = random.Random(SEED)
    ledger = Ledger(ma)
    n = 6144
    recs: list[tuple[int, int]] = []
    recorded = 0
    stopped_at: list[int] = []
    for k in range(10):
        rec, rec_c, progress = dom.kzalloc(8 * n), dom.kzalloc(8 * NREC), dom.kzalloc(16)
        recs += [(rec, n), (rec_c, NREC)]
        companion = kthread_run_on_cpu(mp_memalloc.ma_churn_forever, 1, "ma_comp/%u", "nmi.ma", 0, 1, rec_c, NREC,
                                       SEED + k, method="fork")
        victim = kthread_run_on_cpu(mp_memalloc.ma_nmi_free_many, 0, "ma_nmi/%u", "nmi.ma", 0, rec, n, progress,
                                    method="fork")
        target = rng.randrange(1, n // 2)  # kill after this many NMI frees (and however many more run meanwhile)
        deadline = time.monotonic() + 30
        while a.load(progress + 8) < target:
            assert time.monotonic() < deadline, "the worker never got that far in its NMI loop"
        os.kill(victim.pid, signal.SIGKILL)
        os.kill(companion.pid, signal.SIGKILL)
        assert victim.stop() == -signal.SIGKILL and companion.stop() == -signal.SIGKILL
        stopped_at.append(a.load(progress + 8))
        _every_cache_op(ma, dom)
        recorded += sum(1 for r, m in recs[-2:] for i in range(m) if a.load(r + 8 * i))
        ledger.account(recorded, f"kill {k} after {stopped_at[-1]} NMI frees", killed=2)
        dom.check()
        if sum(0 < s < n for s in stopped_at) == 3:
            break
    assert sum(0 < s < n for s in stopped_at) == 3, f"kills did not land inside the NMI loop: {stopped_at} of {n}"
    busy = ma.stats()["nr_busy"]
    with percpu.on_cpu(0):
        for r, m in recs:
            for i in range(m):
                p = a.load(r + 8 * i)
                if p:
                    ma.cache_free(p)
    _quiesce(ma)
    ledger.account(0, "after freeing the recorded objects", killed=0)
    dom.check()
    print(f"NMI loop killed after {stopped_at} of {n} frees, {busy} NMI frees found the cache busy; "
          f"{ledger.slack} lost in flight")


@pytest.mark.crash
@pytest.mark.timeout(120)
def test_sigkill_in_the_release_loop_keeps_the_books(make_domain):
    """Kill a process while it gives a pile of 50000 objects back to kmalloc after their grace periods.

    The victim holds no object, so after the kill every object is on a list,
    released, or -- at most one, the object whose release the kill cut between
    unlinking it and counting it (two adjacent stores; docs/design/memalloc.md)
    -- leaked: ``outstanding == 0`` and ``created - released - cached - in_flight``
    is 0 or 1.  Nothing is freed twice (``dom.check()``).
    """
    dom = make_domain(size=64 << 20, nr_cpus=2)
    a = dom.arena
    ma = BpfMemAlloc(48, name="rel.ma")
    rng = random.Random(SEED)
    loop = 0.0  # the loop's duration, measured by the first run (not killed inside)
    landed = 0
    for attempt in range(12):
        flag = dom.kzalloc(8)
        kt = kthread_run_on_cpu(mp_memalloc.ma_kill_in_release_loop, 0, "ma_rel/%u", "rel.ma", 50000, flag,
                                method="fork")
        deadline = time.monotonic() + 30
        while a.load(flag) == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the worker never got to its release loop")
            time.sleep(0.0002)
        t0 = time.monotonic()
        if attempt == 0:
            while a.load(flag) == 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("the release loop did not end")
                time.sleep(0.0002)
            loop = time.monotonic() - t0
        else:
            time.sleep(rng.uniform(0.05, 0.5) * loop)
        os.kill(kt.pid, signal.SIGKILL)
        if kt.stop() != -signal.SIGKILL:
            raise RuntimeError("the worker was not killed")
        landed += a.load(flag) == 1
        _quiesce(ma)
        chk = ma.check()
        assert chk["outstanding"] == 0, chk
        assert 0 <= chk["created"] - chk["released"] - chk["cached"] - chk["in_flight"] <= landed, chk
        dom.check()
        if landed == 3:
            return
    pytest.skip(f"only {landed} kills landed inside the release loop ({loop * 1000:.1f} ms)")


@pytest.mark.crash
@pytest.mark.timeout(120)
def test_sigkill_in_a_refill_leaks_no_kmalloc_memory(make_domain):
    """Kill a process that spends its time refilling (allocate, raw_free, repeat), up to 60 times.

    After each kill the kmalloc objects of the allocator's size class that are in
    use must be the allocator's (``created - released``), give or take the one
    object the dead process may have been taking out of kmalloc itself.
    """
    dom = make_domain(size=64 << 20, nr_cpus=2)
    ma = BpfMemAlloc(48, name="refill.ma")
    with percpu.on_cpu(1):
        p = ma.cache_alloc()
        cls = dom.ksize(p - LLIST_NODE_SZ)  # the kmalloc class of the objects
        ma.cache_free(p)

    def unaccounted() -> int:
        chk = ma.check()
        inuse = next(c["inuse"] for c in dom.arena.slab_stats() if c["size"] == cls)
        return int(inuse) - (chk["created"] - chk["released"])

    rng = random.Random(SEED)
    for k in range(60):
        before = unaccounted()
        kt = kthread_run_on_cpu(mp_memalloc.ma_refill_forever, 0, "ma_refill/%u", "refill.ma", 0, method="fork")
        time.sleep(rng.uniform(0.005, 0.03))
        os.kill(kt.pid, signal.SIGKILL)
        if kt.stop() != -signal.SIGKILL:
            raise RuntimeError("the worker was not killed")
        leaked = unaccounted() - before
        assert leaked <= 1, f"kill {k}: {leaked} kmalloc objects in use that the allocator does not account for"
