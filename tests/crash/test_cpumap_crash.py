"""A producer SIGKILLed in the middle of redirecting into a CPU map loses only what it held.

A producer process, pinned as CPU 0, runs the engine's C receive path
(``round-robin`` over entries 0 and 1: frames from the pool, bulk queues of
8, the flushes into the rings under their producer locks, the wake-ups) on
batches of packets numbered by a sequence in their first 4 bytes, and is
SIGKILLed at a random moment -- often inside a bulk queue's lock or a ring's
producer lock.  The workers' stack counts every sequence it receives in a
shared array.  After each kill:

* another process acting as the same CPU 0 (same bulk queues) redirects into
  both entries and finishes in bounded time (the dead holder's locks are
  taken over; its bulk-queue leftovers are flushed by this poll), and
  the workers keep delivering;
* no sequence is delivered twice (a frame is never in a ring twice);
* every frame of a poll the producer finished (its progress word) is
  delivered exactly once: the rings never overflow (the producer waits for
  the workers to keep up), so nothing is dropped.

At the end the map is freed, the frames out of the pool's allocator and not
on its freelist are at most what the dead producers held in hand (one batch
each), and every frame on the freelist is a distinct offset (popping them all
gives no offset twice).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import random
import signal
import struct
import time

import numpy as np
import pytest

import percpu
from percpu import _core
from percpu.cpumap import QSIZE_MAX, CpuMap, frame_pool
from percpu.runtime.kthread import Kthread, kthread_should_stop
from percpu.xdp import RxBatch, XdpEngine

pytestmark = [
    pytest.mark.crash,
    pytest.mark.timeout(120),
    pytest.mark.skipif(bool(os.environ.get("PERCPU_UNDER_ASAN")), reason="fork of the pytest process under ASan"),
]

SEED = int(os.environ.get("PERCPU_SEED", "7"))
ROUNDS = int(os.environ.get("PERCPU_CPUMAP_KILLS", "12"))
SPAN = 1 << 16  # sequences per round (the producer stops short of it)
BATCH = 256  # packets per producer poll
SURV = 256  # packets the survivor sends per round
NSEQ = ROUNDS * SPAN + ROUNDS * SURV
LAG = 4096  # frames the producer lets the workers fall behind (<< qsize: no ring drop)
WAIT = 30.0


# ---- worker functions (module level) ---------------------------------------------------------


def seq_stack(slots: int, nseq: int, counter: int, pkts) -> None:
    """Count each packet's sequence in ``slots`` (u64 per sequence) and the packets in ``counter``."""
    dom = percpu.current_domain()
    seqs = np.frombuffer(pkts.gather(0, 4), dtype=np.uint32).astype(np.int64)
    arr = np.frombuffer(dom.mem(slots, nseq * 8), dtype=np.uint64)
    bad = seqs >= nseq
    # a sequence lands in one entry's ring: only one worker ever writes a slot,
    # unless a frame is duplicated -- and its copies go to the same entry
    np.add.at(arr, seqs[~bad], 1)
    if bad.any():
        dom.arena.fetch_add(counter + 16, int(bad.sum()))
    dom.arena.fetch_add(counter, len(pkts))


def _batch(base: int, n: int) -> RxBatch:
    rows = np.zeros((n, 64), dtype=np.uint8)
    rows[:, 12:14] = (0x08, 0x00)
    rows[:, :4] = np.arange(base, base + n, dtype=np.uint32).view(np.uint8).reshape(n, 4)
    return RxBatch(rows.tobytes(), np.arange(n, dtype=np.uint32) * 64, np.full(n, 64, np.uint32))


def producer(map_name: str, counter: int, progress: int, base: int) -> int:
    """Redirect batches round-robin into entries 0 and 1 until stopped (or killed)."""
    dom = percpu.current_domain()
    m = CpuMap.attach(map_name, method="fork")
    eng = XdpEngine(m, "round-robin", cpus=[0, 1])
    a = dom.arena
    seq = 0
    while not kthread_should_stop():
        if seq + BATCH > SPAN - BATCH:
            time.sleep(0.001)  # this round's sequences are used up: wait for the kill
            continue
        sent = base + seq
        deadline = time.monotonic() + WAIT
        while a.load(counter) + LAG < a.load(progress + 8) and time.monotonic() < deadline:
            time.sleep(0.0002)  # let the workers keep up: the rings never fill
        r = eng.poll(_batch(sent, BATCH))
        assert r.redirected == BATCH
        seq += BATCH
        a.store(progress, seq)  # every frame below base + seq is in a ring
        a.fetch_add(progress + 8, BATCH)  # frames sent, over all rounds
    return 0


def survivor(map_name: str, base: int, out: int) -> int:
    """Act as CPU 0 (the dead producer's bulk queues) and redirect SURV packets."""
    dom = percpu.current_domain()
    m = CpuMap.attach(map_name, method="fork")
    r = XdpEngine(m, "round-robin", cpus=[0, 1]).poll(_batch(base, SURV))
    dom.arena.store(out, r.redirected)
    return 0


# ---- the test --------------------------------------------------------------------------------


def _wait(pred, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def test_sigkill_producer_mid_redirect(make_domain):
    rng = random.Random(SEED)
    dom = make_domain(size=96 << 20, nr_cpus=2)
    a = dom.arena
    slots = dom.alloc_pages((NSEQ * 8 + 4095) // 4096)
    counter = dom.kzalloc(64)  # [0] delivered, [2] bad sequences
    progress = dom.kzalloc(64)  # [0] this round's progress, [1] frames sent by producers and survivors
    out = dom.kzalloc(8)
    assert slots and counter and progress and out
    arr = np.frombuffer(dom.mem(slots, NSEQ * 8), dtype=np.uint64)
    m = CpuMap(2, name="crash_map", method="fork", stack=functools.partial(seq_stack, slots, NSEQ, counter))
    pool = frame_pool(dom)
    done: list[tuple[int, int]] = []  # (base, progress) of every killed producer
    try:
        m.update(0, QSIZE_MAX)
        m.update(1, QSIZE_MAX)
        for rnd in range(ROUNDS):
            base = rnd * SPAN
            a.store(progress, 0)
            kt = Kthread(producer, 0, f"producer/{rnd}", ("crash_map", counter, progress, base), method="fork")
            kt.start()
            try:
                target = BATCH * rng.randint(1, 8)
                _wait(lambda target=target: a.load(progress) >= target, "the producer's first polls")
                time.sleep(rng.random() * 0.01)
                os.kill(kt.pid, signal.SIGKILL)
                assert kt.join(WAIT) is not None, "the killed producer did not die"
            finally:
                if kt.alive:
                    os.kill(kt.pid, signal.SIGKILL)
                kt.stop()
            done.append((base, int(a.load(progress))))
            # another CPU-0 producer: takes over the dead one's locks, flushes its leftovers
            a.store(out, 0)
            sbase = ROUNDS * SPAN + rnd * SURV
            sv = Kthread(survivor, 0, f"survivor/{rnd}", ("crash_map", sbase, out), method="fork")
            sv.start()
            try:
                assert sv.join(WAIT) == 0, "a survivor on the dead producer's CPU hung or failed"
            finally:
                if sv.alive:
                    os.kill(sv.pid, signal.SIGKILL)
                sv.stop()
            assert a.load(out) == SURV
            a.fetch_add(progress + 8, SURV)
            _wait(lambda sbase=sbase: int(arr[sbase : sbase + SURV].min()) >= 1, "the survivor's frames delivered")
        assert m.entries()[0].state == "running" and m.entries()[1].state == "running"
        st = m.stats()
        assert sum(st[k].total("enq_drops") for k in (0, 1)) == 0
        assert sum(st[k].total("died_drops") for k in (0, 1)) == 0
    finally:
        m.close()
        m.free()
    # no frame delivered twice, every finished poll delivered exactly once
    dup = np.nonzero(arr > 1)[0]
    assert len(dup) == 0, f"{len(dup)} sequences delivered more than once, e.g. {dup[:10].tolist()}"
    assert a.load(counter + 16) == 0, "packets with a sequence never sent"
    for base, prog in done:
        missing = np.nonzero(arr[base : base + prog] == 0)[0]
        assert len(missing) == 0, f"round at {base}: {len(missing)} finished frames lost, e.g. {missing[:10].tolist()}"
        assert int(arr[base + prog : base + SPAN].sum()) <= BATCH  # at most the poll under way
    for r in range(ROUNDS):
        s = ROUNDS * SPAN + r * SURV
        assert (arr[s : s + SURV] == 1).all()
    # the pool: what is out and not on the freelist is what the dead held in hand
    c = pool.ma.check()
    held = c["created"] - c["released"] - c["cached"] - c["in_flight"] - pool.free_frames()
    assert 0 <= held <= ROUNDS * BATCH, held
    # every frame on the freelist is a distinct frame
    nfree = pool.free_frames()
    with percpu.on_cpu(0):
        fr = _core.xdp_frames_alloc(pool, bytes(64), np.zeros(nfree, np.uint32), np.full(nfree, 64, np.uint32))
        offs = struct.unpack(f"<{len(fr) // 8}Q", fr)
        assert len(offs) == nfree and len(set(offs)) == nfree
        _core.xdp_frames_free(pool, fr)


def _count_seq_stack(counter: int, pkts) -> None:
    a = percpu.current_domain().arena
    for s in np.frombuffer(pkts.gather(0, 4), dtype=np.uint32):
        a.fetch_add(counter + 8 * int(s), 1)


def test_kill_inside_the_flush_loop_does_not_duplicate(make_domain):
    """The exact state of a producer SIGKILLed between two ``__ptr_ring_produce`` of one flush.

    A random SIGKILL rarely lands in that loop of 8 stores, so the state is
    written by hand: the bulk queue of (entry 1, CPU 0) holds 8 frames with
    its lock owned by a dead task, the ring holds the first 3 of them
    (published, ``producer == 3``) with its producer lock owned by the same
    dead task.  The next producer on CPU 0 takes both locks over; each frame
    must reach the stack once.
    """
    dom = make_domain(size=64 << 20, nr_cpus=2)
    a = dom.arena
    counter = dom.kzalloc(8 * 16)
    m = CpuMap(2, method="fork", stack=functools.partial(_count_seq_stack, counter))
    try:
        m.update(1, 64)
        e = m.entries()[0]
        os.kill(e.worker_pid, signal.SIGSTOP)  # the ring keeps what it gets until we look
        try:
            pool = frame_pool(dom)
            data = b"".join(struct.pack("<I", i) + bytes(60) for i in range(9))
            with percpu.on_cpu(0):
                fr = _core.xdp_frames_alloc(pool, data, np.arange(9, dtype=np.uint32) * 64, np.full(9, 64, np.uint32))
            frames = struct.unpack("<9Q", fr)
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)  # a task id that is dead
            ring = int(a.load(e.entry + 24))
            bq = int(a.pcpu_ptr(int(a.load(e.entry + 32)), 0))
            # struct pk_xdp_bulk_queue { pk_lock {word, recoveries}; count; done; q[8] }: ``done`` (the crash
            # record of a fixed flush; a pad word before) says the first 3 frames left the queue
            dom.mem(bq, 16)[:] = struct.pack("<IIII", pid, 0, 8, 3)
            dom.mem(bq + 16, 64)[:] = struct.pack("<8Q", *frames[:8])
            # struct pk_ptr_ring { pk_lock producer_lock; producer; prod_pending; ... } + queue[] after the header
            hdr = _core.cpumap_layout()["ring_hdr"]
            # a slot carries the frame's offset (40 bits), length and data offset (12 bits each)
            hdrs = [struct.unpack("<II", bytes(dom.mem(f, 8))) for f in frames[:3]]  # data_off, len
            slot = [f | (ln << 40) | (doff << 52) for f, (doff, ln) in zip(frames[:3], hdrs)]
            dom.mem(ring + hdr, 24)[:] = struct.pack("<3Q", *slot)
            dom.mem(ring, 16)[:] = struct.pack("<IIII", pid, 0, 3, 0)
            from percpu.cpumap import bpf_redirect_map, xdp_do_flush, xdp_do_redirect
            from percpu.runtime import rcu

            with percpu.on_cpu(0), rcu.read_lock():
                assert bpf_redirect_map(m, 1) == 4
                xdp_do_redirect(frames[8])
                xdp_do_flush()
            q = [f & ((1 << 40) - 1) for f in struct.unpack("<64Q", bytes(dom.mem(ring + hdr, 64 * 8))) if f]
        finally:
            os.kill(e.worker_pid, signal.SIGCONT)
        _wait(lambda: sum(int(a.load(counter + 8 * i)) for i in range(9)) >= 9, "the frames delivered")
        time.sleep(0.2)
        assert len(q) == len(set(q)) == 9, f"the ring holds {len(q)} frames, {len(set(q))} distinct"
        assert [int(a.load(counter + 8 * i)) for i in range(9)] == [1] * 9
    finally:
        m.close()
        m.free()


def owner(map_name: str, out: int) -> None:
    """Populate entry 1 (this process owns its worker), publish the worker's pid, wait to be killed."""
    dom = percpu.current_domain()
    m = CpuMap.attach(map_name, method="fork")
    m.update(1, 64)
    dom.arena.store(out, m.entries()[0].worker_pid)
    time.sleep(3600)


def test_owner_killed_its_worker_exits_and_the_entry_is_replaceable(make_domain):
    dom = make_domain(size=64 << 20, nr_cpus=2)
    a = dom.arena
    counter = dom.kzalloc(64)
    out = dom.kzalloc(8)
    m = CpuMap(2, name="owned_map", method="fork", stack=functools.partial(seq_stack, counter + 32, 1, counter))
    try:
        proc = multiprocessing.get_context("fork").Process(target=owner, args=("owned_map", out))  # not daemonic
        proc.start()
        try:
            _wait(lambda: a.load(out) != 0 or not proc.is_alive(), "the owner's entry")
            wpid = int(a.load(out))
            assert wpid and m.entries()[0].worker_pid == wpid
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGKILL)
            proc.join(WAIT)
        # nobody can stop that worker any more: it notices and exits by itself
        _wait(lambda: not _core.task_alive(wpid), "the orphaned worker to exit")
        # this process replaces the entry (the old one is reaped without its owner) and traffic flows
        m.update(1, 64)
        assert m.entries()[0].worker_pid != wpid
        m.sync()
        r = XdpEngine(m, "round-robin", cpus=[1])
        with percpu.on_cpu(0):
            assert r.poll(_batch(0, 40)).redirected == 40
        _wait(lambda: a.load(counter) == 40, "40 frames")
    finally:
        m.close()
        m.free()
    c = frame_pool(dom).ma.check()
    assert c["created"] - c["released"] - c["cached"] - c["in_flight"] == frame_pool(dom).free_frames()


def opposite_producer(map_name: str, order: list[int], cnt: int) -> int:
    """A producer acting as CPU 0 (both run on real CPUs 0 and 1): round-robin over ``order``."""
    os.sched_setaffinity(0, set(os.sched_getaffinity(0)) | {0, 1} & set(range(os.cpu_count() or 1)))
    dom = percpu.current_domain()
    m = CpuMap.attach(map_name, method="fork")
    eng = XdpEngine(m, "round-robin", cpus=order)
    b = _batch(0, 2)
    while not kthread_should_stop():
        eng.poll(b)
        dom.arena.fetch_add(cnt, 1)
    return 0


def test_two_producers_as_one_cpu_in_opposite_orders_keep_going(make_domain):
    """Two processes acting as CPU 0 flush bulk queues of two entries in opposite orders.

    A flush never holds two bulk-queue locks at once (the review found an ABBA
    deadlock when the poll's last queue stayed locked into the flush).
    """
    dom = make_domain(size=64 << 20, nr_cpus=2)
    a = dom.arena
    counter = dom.kzalloc(64)
    cnt = dom.kzalloc(64)
    m = CpuMap(2, name="abba", method="fork", stack=functools.partial(seq_stack, counter + 32, 1, counter))
    ks = []
    try:
        m.update(0, 256)
        m.update(1, 256)
        ks = [Kthread(opposite_producer, 0, f"abba{i}", ("abba", order, cnt + 8 * i), method="fork").start()
              for i, order in enumerate(([0, 1], [1, 0]))]
        for _ in range(4):  # progress in each of 4 windows of 0.5 s
            before = [int(a.load(cnt)), int(a.load(cnt + 8))]
            time.sleep(0.5)
            after = [int(a.load(cnt)), int(a.load(cnt + 8))]
            assert after[0] > before[0] and after[1] > before[1], f"no progress: {before} -> {after}"
    finally:
        for k in ks:
            k.stop()
        m.close()
        m.free()


def _sleepy_stack(pkts) -> None:
    time.sleep(3600)


def test_dead_entry_twice_frees_the_held_frames_once(make_domain):
    """Two reapers of one dead entry (its owner's supervisor, and a free) free its frames once."""
    dom = make_domain(size=64 << 20, nr_cpus=2)
    a = dom.arena
    m = CpuMap(1, method="fork", stack=_sleepy_stack)
    try:
        m.update(0, 64)
        entry = m._slot(0)
        kt = m._workers[entry]
        kt.on_death = None  # the test plays both reapers
        with percpu.on_cpu(0):
            XdpEngine(m, "round-robin", cpus=[0]).poll(_batch(0, 5))
        _wait(lambda: a.load(entry + _core.cpumap_layout()["off_nheld"]) == 5, "the worker to hold 5 frames")
        os.kill(kt.pid, signal.SIGKILL)
        kt.join(WAIT)
        got = [m._core.dead_entry(entry), m._core.dead_entry(entry)]
        assert sorted(got) == [0, 5]
        pool = frame_pool(dom)
        nfree = pool.free_frames()
        with percpu.on_cpu(0):
            fr = _core.xdp_frames_alloc(pool, bytes(64), np.zeros(nfree, np.uint32), np.full(nfree, 64, np.uint32))
        offs = struct.unpack(f"<{len(fr) // 8}Q", fr)
        assert len(offs) == len(set(offs)), "a frame is in the pool twice"
        _core.xdp_frames_free(pool, fr)
    finally:
        m.close()
        m.free()
