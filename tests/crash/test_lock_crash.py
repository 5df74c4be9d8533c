"""A holder SIGKILLed inside the critical section does not wedge the others."""

from __future__ import annotations

import multiprocessing
import os
import random
import select
import signal
import time

import mp_helpers  # tests/ is on sys.path (rootdir conftest)
import pytest

import percpu


@pytest.fixture
def dom(make_domain):
    return make_domain(size=16 << 20)


def _read1(fd: int, timeout: float) -> bytes:
    r, _, _ = select.select([fd], [], [], timeout)
    assert r, "no answer from the child in time"
    return os.read(fd, 1)


@pytest.mark.crash
@pytest.mark.timeout(60)
@pytest.mark.parametrize("reap", [True, False], ids=["reaped", "zombie"])
def test_parent_recovers_lock_of_killed_child(dom, reap):
    lock_off = dom.kzalloc(8)
    lock = dom.lock_at(lock_off)
    r, w = os.pipe()
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=mp_helpers.hold_lock_forever, args=(lock_off, w))
    p.start()
    assert _read1(r, 10) == b"L"
    assert lock.owner == p.pid and lock.locked
    assert lock.trylock() is False  # held by a live task
    os.kill(p.pid, signal.SIGKILL)
    if reap:
        p.join()
    # Unreaped, the child is a zombie: kill(pid, 0) still succeeds, the lock must see through it.
    t0 = time.monotonic()
    assert lock.lock() is True  # taken over from a dead owner
    assert time.monotonic() - t0 < 5
    assert lock.owner == os.getpid() or lock.owner == percpu._core.gettid()
    assert lock.recoveries == 1
    lock.unlock()
    assert lock.lock() is False  # an ordinary acquisition afterwards
    lock.unlock()
    p.join()


@pytest.mark.crash
@pytest.mark.timeout(60)
def test_waiting_process_gets_lock_when_holder_killed(dom):
    lock_off = dom.kzalloc(8)
    ctx = multiprocessing.get_context("fork")
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    holder = ctx.Process(target=mp_helpers.hold_lock_forever, args=(lock_off, w1))
    holder.start()
    assert _read1(r1, 10) == b"L"
    waiter = ctx.Process(target=mp_helpers.wait_for_lock, args=(lock_off, w2))
    waiter.start()
    time.sleep(0.2)
    assert not select.select([r2], [], [], 0)[0], "the waiter must block while the holder lives"
    os.kill(holder.pid, signal.SIGKILL)
    assert _read1(r2, 10) == b"R"
    waiter.join(10)
    holder.join(10)
    assert waiter.exitcode == 0


@pytest.mark.crash
@pytest.mark.timeout(240)
def test_kmalloc_survives_sigkill_at_random_points(dom):
    """Kill a kmalloc/kfree churner at random instants; the survivor's objects stay intact."""
    rng = random.Random(int(os.environ.get("PERCPU_SEED", "1234")))
    mine = {}
    for i in range(200):
        p = dom.kmalloc(rng.choice((16, 64, 192, 1000, 6000)))
        dom.mem(p, 8)[:] = i.to_bytes(8, "little")
        mine[p] = i
    ctx = multiprocessing.get_context("fork")
    kills = int(12 * float(os.environ.get("PERCPU_STRESS_SCALE", "1")))
    for k in range(kills):
        p = ctx.Process(target=mp_helpers.churn_kmalloc, args=(k,))
        p.start()
        time.sleep(rng.uniform(0.005, 0.06))
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        # The survivor allocates and frees in every class (this takes over any lock the
        # victim held and rebuilds that class), then the whole arena must check out.
        for size in (8, 16, 64, 96, 192, 512, 2048, 4096, 5000):
            q = dom.kmalloc(size)
            assert q is not None
            assert q not in mine
            dom.kfree(q)
        dom.check()
        for q, i in mine.items():
            assert int.from_bytes(dom.mem(q, 8), "little") == i
    # Free everything we own; whatever the victims held is theirs (lost with them).
    for q in mine:
        dom.kfree(q)
    dom.check()
    assert dom.populated_pages() == dom.st_blocks_pages()


@pytest.mark.crash
@pytest.mark.timeout(60)
def test_allocator_locks_of_a_killed_process_are_recovered(dom):
    """A process dies holding a kmalloc class lock and the page lock; kmalloc goes on."""
    from percpu import _core

    live = [dom.kmalloc(64) for _ in range(100)]
    for i, p in enumerate(live):
        dom.mem(p, 8)[:] = i.to_bytes(8, "little")
    cls64 = list(__import__("percpu.runtime.domain", fromlist=["KMALLOC_CLASSES"]).KMALLOC_CLASSES).index(64)
    offsets = [_core.CLASSES_OFF + cls64 * _core.CLASS_STRIDE, _core.PAGE_LOCK_OFF]
    gen0 = dom.arena.header()["generation"]
    p = mp_helpers.start_holder(offsets)  # the allocator's own locks, in the header
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    q = dom.kmalloc(64)  # takes over the class lock, then (new slab) the page lock
    more = [dom.kmalloc(64) for _ in range(200)]
    assert q is not None and None not in more
    assert dom.arena.header()["generation"] >= gen0 + 1
    dom.check()
    for i, p_ in enumerate(live):
        assert int.from_bytes(dom.mem(p_, 8), "little") == i
    for x in [q, *more, *live]:
        dom.kfree(x)
    dom.check()


@pytest.mark.crash
@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pinned_worker_killed_holding_the_lock_does_not_wedge_the_survivor(dom, method):
    """The issue's wording: a real pinned worker (a kthread) SIGKILLed while it holds the lock."""
    from percpu.runtime.kthread import kthread_run_on_cpu

    lock_off = dom.kzalloc(8)
    lock = dom.lock_at(lock_off)
    kt = kthread_run_on_cpu(mp_helpers.hold_lock_until_killed, 1 % len(dom.possible), "holder/%u", lock_off,
                            method=method)
    deadline = time.monotonic() + 30
    while lock.owner != kt.pid and time.monotonic() < deadline:
        time.sleep(0.005)
    assert lock.owner == kt.pid
    assert os.sched_getaffinity(kt.pid) == {kt.real_cpu}
    os.kill(kt.pid, signal.SIGKILL)
    t0 = time.monotonic()
    assert lock.lock() is True  # taken over from the dead worker
    assert time.monotonic() - t0 < 5
    lock.unlock()
    assert kt.stop() == -signal.SIGKILL
