"""Benchmark of the BPF memory allocator: alloc+free pairs, mixed sizes, free_rcu under a reader, htab-mem.

Cases and the peers measured beside them in the same run:

===============================================  ==============================================
percpu (``ma = BpfMemAlloc(48)``, fixed size)    peer
===============================================  ==============================================
``p = bpf_mem_cache_alloc(ma)``;                 ``_core.noop()`` twice (the floor);
``bpf_mem_cache_free(ma, p)`` (the facade        ``percpu.kernel.kmalloc(48)`` + ``kfree(p)``
``percpu.kernel``, C functions)                  (the facade's kmalloc, also C);
                                                 ``SharedMemory(create=True, size=48)`` +
                                                 ``close()`` + ``unlink()``
``p = alloc(); free(p)`` (``alloc =              the same floor; ``dom.arena.kmalloc(48)`` +
ma.cache_alloc``, ``free = ma.cache_free``)      ``kfree(p)`` (bound); the same SharedMemory
``alloc(s)`` + ``free(p)`` of the size==0        ``dom.arena.kmalloc(s)`` + ``kfree(p)`` of the
flavour (``BpfMemAlloc(0)``), and the facade     same sizes (bound; for the facade row
``bpf_mem_alloc(ma, s)`` + ``bpf_mem_free``;     ``percpu.kernel.kmalloc``/``kfree``)
``s`` from a fixed list of 256 sizes drawn
log-uniformly from 1..4088
a writer process: ``alloc()``, stamp, publish   the same writer with ``kmalloc(48)`` and
with ``xchg``, ``cache_free_rcu(old)``; a       ``DeferFreeList.defer(old)`` + ``reclaim()``
reader process on the other CPU runs short      every 64 (the project's ``kfree_rcu``); the
``rcu_read_lock()`` sections on the published   same writer doing a SharedMemory(48)
object                                          create+close+unlink per op
htab-mem ``overwrite``: 64 live objects, each   the same loops with ``dom.arena.kmalloc(48)``
replaced (alloc new, free old), one process;    / ``kfree``
``batch_add_batch_del``: 64 allocs then 64
frees, one process; ``add_del_on_diff_cpu``:
process A allocates on its CPU and passes the
pointers through a ring in the arena to
process B on the other CPU, which frees them
===============================================  ==============================================

The pair and mixed-size cases are timed in one process pinned to one CPU, in
interleaved rounds (see :mod:`benchmarks._harness`).  A mixed-size statement
runs over the 256 sizes (``for s in sz:``); the ``for s in sz: pass`` loop of
the same round is subtracted and the rest divided by 256, so its figures are
per pair like the fixed-size ones.  The sizes are precomputed with a fixed
seed, so the RNG is not measured; they are log-uniform (``2 ** uniform(0,
log2(4088))``, rounded) so that all 11 buckets get a share, small ones the
most (a uniform draw would put half of them in the 4096-byte bucket).

The process cases run in fresh domains (one per run) whose CPUs are the
machine's; every process is a ``kthread_run_on_cpu`` worker (fork), pinned,
and works through a common window of wall time (the parent sets the start a
little in the future in a control block in the arena; all spin to it).  While
they run the parent samples, every 2 ms, ``dom.populated_pages()``, the
objects the domain's kmalloc has in use (the sum of ``inuse`` over its size
classes) and, for the allocator, ``created - released`` (two loads of its
counters, not ``ma.check()``, which takes every lock and walks every list;
objects it holds from kmalloc: handed out, cached, or waiting for a grace
period).  The kmalloc and populated peaks are given above the figures
taken just before the start, ``created - released`` as it is.
``ns/op`` there is 1e9 / (objects per second): one op is one object
allocated and freed (the htab-mem figures of the kernel count a batch of 64
as one op; ours count objects).

* free_rcu: the writer (CPU A) repeats ``p = alloc(); store(p + 24, seq);
  old = xchg(pub, p); cache_free_rcu(old)``; the reader (CPU B) repeats
  ``rcu_read_lock(); p = load(pub); s = load(p + 24); load(pub); t = load(p +
  24); rcu_read_unlock()`` and counts ``s != t`` (the object reused inside the
  section, i.e. freed before the grace period ended: must be 0).  Memory stays
  bounded only if grace periods keep completing while the writer runs:
  compare the peak ``created - released`` with the objects replaced.
* add_del_on_diff_cpu: ``bench htab-mem``'s scenario of the same name.  The
  ring holds 4096 u64 slots (``memoryview.cast('Q')`` of ``dom.mem``), head
  and tail indices on their own cache lines (``arena.store``/``load``),
  published once per batch of 64; the producer waits while the ring is full,
  so at most 4096 objects are in flight.  B frees into its own CPU's cache;
  above the high watermark the excess goes back to A's cache (``tgt``) after
  an RCU Tasks Trace grace period, and A's refill reuses it: created -
  released shows whether that keeps memory bounded.

Target (from the issue): a ``bpf_mem_cache_alloc`` + ``bpf_mem_cache_free``
pair within 3x of two ``noop()`` calls, judged for the facade and for the
bound-method form, each on its own line.

Checks: after the pair and mixed-size timings, and after every process run
(once both grace-period flavours have passed and the allocator has polled its
callbacks), ``ma.check()`` must show 0 objects outstanding and ``created -
released == cached + in_flight``; ``ma.destroy(wait=True)`` must report
nothing left; the kmalloc peers must bring kmalloc's ``inuse`` back to its
starting value; every object the ring producer passed must have been freed
by the consumer; the reader must have seen no reused object; every worker
must exit 0; ``dom.check()`` must pass.

Run: ``python -m benchmarks.memalloc [--quick] [--json]``.  Exit status 1 if
a check fails.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from array import array
from collections.abc import Callable
from itertools import repeat
from multiprocessing import shared_memory
from typing import Any

import percpu
import percpu.kernel
from benchmarks._harness import (
    Case,
    Row,
    Suite,
    bench_main,
    domain_check,
    drop_domain,
    machine_info,
    median,
    pinned,
    print_table,
    print_targets,
    rows_named,
)
from percpu import _core, memalloc
from percpu.errors import Corrupted
from percpu.memalloc import BpfMemAlloc
from percpu.runtime import rcu
from percpu.runtime.kthread import Kthread, kthread_run_on_cpu, kthread_stop
from percpu.runtime.rcu import DeferFreeList

PAIR_TARGET = 3.0  # bpf_mem_cache_alloc + bpf_mem_cache_free / two noop() calls, at most

DOMAIN_SIZE = 64 << 20  # the pair and mixed-size cases
MP_DOMAIN_SIZE = 256 << 20  # each process run (reserved, populated on use)
OBJ_SIZE = 48  # fixed-size allocator: unit 56 with the 8-byte header
NR_SIZES = 256
SIZE_SEED = 4088
_rng = random.Random(SIZE_SEED)
#: the mixed sizes: log-uniform in 1..4088 (every bucket gets its share), drawn once with a fixed seed
SIZES = [min(4088, max(1, round(2 ** _rng.uniform(0, math.log2(4088))))) for _ in range(NR_SIZES)]
del _rng
BATCH = 64  # bench htab-mem's OP_BATCH
RING = 4096  # slots of the add_del_on_diff_cpu ring (a multiple of BATCH)
STAMP = 24  # offset of the writer's sequence stamp in an object (DeferFreeList uses +0 and +8)
CHUNK = 1024  # objects between clock reads in the workers (a multiple of BATCH)
LEAD_NS = 20_000_000  # start of the window, after the parent has set it
SAMPLE_S = 0.002  # the parent's sampling period
QUIESCE_TRIES = 20

PAIR_CASES = [
    "bpf_mem_cache_alloc+free vs 2 noop",
    "alloc()+free(p) (bound) vs 2 noop",
    "bpf_mem_cache_alloc+free vs kmalloc",
    "alloc()+free(p) (bound) vs kmalloc",
    "bpf_mem_cache_alloc+free vs SharedMemory",
    "alloc()+free(p) (bound) vs SharedMemory",
]
MIXED_CASES = [
    "alloc(s)+free(p) (bound), s in 1..4088",
    "bpf_mem_alloc(ma, s)+bpf_mem_free, s in 1..4088",
]
RCU_CASES = [
    "alloc+free_rcu, 1 reader vs kfree_rcu",
    "alloc+free_rcu, 1 reader vs SharedMemory",
]
HTAB_USE_CASES = ["overwrite", "batch_add_batch_del", "add_del_on_diff_cpu"]
HTAB_CASES = [
    "htab-mem overwrite, 1 CPU",
    "htab-mem batch_add_batch_del, 1 CPU",
    "htab-mem add_del_on_diff_cpu, 2 CPUs",
]
CASES = PAIR_CASES + MIXED_CASES + RCU_CASES + HTAB_CASES
RCU_KINDS = ["ma", "kfree_rcu", "shm"]
HTAB_KINDS = ["ma", "kmalloc"]


# ---- shared set-up -------------------------------------------------------------




def _inuse(dom: percpu.Domain) -> int:
    """Objects the domain's kmalloc has handed out, over all size classes."""
    return sum(int(c["inuse"]) for c in dom.arena.slab_stats())


def _ma_errors(what: str, st: dict[str, Any]) -> list[str]:
    """The quiescent invariants of ``ma.check()``: nothing outstanding, every object accounted."""
    errs = []
    if st["outstanding"]:
        errs.append(f"{what}: {st['outstanding']} objects outstanding")
    if st["created"] - st["released"] != st["cached"] + st["in_flight"]:
        errs.append(f"{what}: created {st['created']} - released {st['released']} != cached "
                    f"{st['cached']} + in flight {st['in_flight']}")
    return errs


def _destroy(what: str, ma: BpfMemAlloc) -> list[str]:
    rep = ma.destroy(wait=True)
    errs = [f"{what}: destroy: {w}" for w in rep.warnings]
    if not rep.clean:
        errs.append(f"{what}: destroy: {rep.outstanding} outstanding, lists {rep.lists}")
    if rep.created != rep.released:
        errs.append(f"{what}: destroy: created {rep.created} != released {rep.released}")
    return errs


def _per_bucket(sizes: list[int]) -> dict[int, int]:
    """How many of ``sizes`` fall in each bucket, by unit size (header included)."""
    units = [memalloc.sizes[memalloc.bpf_mem_cache_idx(s + memalloc.LLIST_NODE_SZ)] for s in sizes]
    return {u: units.count(u) for u in sorted(set(units))}


# ---- 1 and 2. one process: pairs and mixed sizes -------------------------------------


def _single(*, quick: bool) -> tuple[list[Row], list[Row], dict[str, Any]]:
    dom = percpu.Domain.create(size=DOMAIN_SIZE)
    errors: list[str] = []
    try:
        with dom:
            inuse0 = _inuse(dom)
            ma = BpfMemAlloc(OBJ_SIZE)
            a0 = BpfMemAlloc(0)
            k = percpu.kernel
            cpu = max(os.sched_getaffinity(0))
            noop = _core.noop
            fac = {"bpf_mem_cache_alloc": k.bpf_mem_cache_alloc, "bpf_mem_cache_free": k.bpf_mem_cache_free,
                   "ma": ma}
            cases = [
                Case("2 noop", "noop(); noop()", {"noop": noop}),
                # 1. fixed size: the facade (C functions) and the bound methods
                Case("facade pair", "p = bpf_mem_cache_alloc(ma)\nbpf_mem_cache_free(ma, p)", fac),
                Case("bound pair", "p = alloc()\nfree(p)", {"alloc": ma.cache_alloc, "free": ma.cache_free}),
                Case("kernel kmalloc", "p = kmalloc(n)\nkfree(p)", {"kmalloc": k.kmalloc, "kfree": k.kfree,
                                                                      "n": OBJ_SIZE}),
                Case("arena kmalloc", "p = kmalloc(n)\nkfree(p)",
                     {"kmalloc": dom.arena.kmalloc, "kfree": dom.arena.kfree, "n": OBJ_SIZE}),
                Case("SharedMemory", "s = shm(create=True, size=n)\ns.close()\ns.unlink()",
                     {"shm": shared_memory.SharedMemory, "n": OBJ_SIZE}),
                # 2. mixed sizes, per statement the 256 sizes (the bare loop is subtracted below)
                Case("sz loop", "for s in sz:\n    pass", {"sz": SIZES}),
                Case("mixed bound", "for s in sz:\n    p = alloc(s)\n    free(p)",
                     {"alloc": a0.alloc, "free": a0.free, "sz": SIZES}),
                Case("mixed facade", "for s in sz:\n    p = bpf_mem_alloc(ma, s)\n    bpf_mem_free(ma, p)",
                     {"bpf_mem_alloc": k.bpf_mem_alloc, "bpf_mem_free": k.bpf_mem_free, "ma": a0, "sz": SIZES}),
                Case("mixed arena kmalloc", "for s in sz:\n    p = kmalloc(s)\n    kfree(p)",
                     {"kmalloc": dom.arena.kmalloc, "kfree": dom.arena.kfree, "sz": SIZES}),
                Case("mixed kernel kmalloc", "for s in sz:\n    p = kmalloc(s)\n    kfree(p)",
                     {"kmalloc": k.kmalloc, "kfree": k.kfree, "sz": SIZES}),
            ]
            suite = Suite(
                cases,
                rounds=3 if quick else 15,
                repeat=2 if quick else 3,
                target_ns=2_000_000 if quick else 8_000_000,
            )
            with pinned(cpu):
                suite.run()
            pages = dom.populated_pages()
            st_fixed, st_mixed = ma.check(), a0.check()
            errors += _ma_errors("fixed-size allocator after the pairs", st_fixed)
            errors += _ma_errors("size==0 allocator after the mixed sizes", st_mixed)
            errors += _destroy("fixed-size allocator", ma)
            errors += _destroy("size==0 allocator", a0)
            inuse1 = _inuse(dom)
            if inuse1 != inuse0:
                errors.append(f"kmalloc inuse {inuse1} after destroy, {inuse0} at the start")
            broken = domain_check(dom)
            if broken is not None:
                errors.append(f"dom.check(): {broken}")
    finally:
        drop_domain(dom)

    for name in ("mixed bound", "mixed facade", "mixed arena kmalloc", "mixed kernel kmalloc"):
        suite.net[name] = [(x - b) / NR_SIZES for x, b in zip(suite.net[name], suite.net["sz loop"])]
    m = suite.median

    def row(case: str, mine: str, peer_label: str, peer: str) -> Row:
        ns = m(mine)
        return Row(case, ns, peer_label, m(peer), suite.ratio(peer, mine), {"ops_per_s": 1e9 / ns})

    shm = f"SharedMemory({OBJ_SIZE} B) create+close+unlink"
    pair_rows = [
        row(PAIR_CASES[0], "facade pair", "noop(); noop() (two-call floor)", "2 noop"),
        row(PAIR_CASES[1], "bound pair", "noop(); noop() (two-call floor)", "2 noop"),
        row(PAIR_CASES[2], "facade pair", f"percpu.kernel.kmalloc({OBJ_SIZE})+kfree", "kernel kmalloc"),
        row(PAIR_CASES[3], "bound pair", f"arena.kmalloc({OBJ_SIZE})+kfree (bound)", "arena kmalloc"),
        row(PAIR_CASES[4], "facade pair", shm, "SharedMemory"),
        row(PAIR_CASES[5], "bound pair", shm, "SharedMemory"),
    ]
    mixed_rows = [
        row(MIXED_CASES[0], "mixed bound", "arena.kmalloc(s)+kfree (bound)", "mixed arena kmalloc"),
        row(MIXED_CASES[1], "mixed facade", "percpu.kernel.kmalloc(s)+kfree", "mixed kernel kmalloc"),
    ]

    def held(st: dict[str, Any]) -> dict[str, int]:
        return {k: int(st[k]) for k in ("created", "released", "cached", "outstanding", "in_flight")}

    single = {
        "cpu": cpu,
        "rounds": suite.rounds,
        "loop_overhead_ns": median(suite.loop_ns),
        "sz_loop_ns": m("sz loop") / NR_SIZES,
        "two_noop_ns": m("2 noop"),
        "facade_pair_over_2noop": suite.ratio("facade pair", "2 noop"),
        "bound_pair_over_2noop": suite.ratio("bound pair", "2 noop"),
        "sizes": {"n": NR_SIZES, "seed": SIZE_SEED, "min": min(SIZES), "max": max(SIZES),
                  "mean": sum(SIZES) / NR_SIZES, "per_bucket_unit": _per_bucket(SIZES)},
        "fixed_after": held(st_fixed),
        "mixed_after": held(st_mixed),
        "populated_pages_after": pages,
        "errors": errors,
        "ok": not errors,
    }
    return pair_rows, mixed_rows, single


# ---- 3 and 4. pinned worker processes ------------------------------------------------
#
# One control block per run, kzalloc'd in the run's domain; every word the two
# sides write often sits on its own cache line.

C_START = 0  # window start (perf_counter_ns); 0 until the parent sets it
C_END = 8  # window end
C_STOP = 64  # the writer tells the reader to stop
C_DONE = 128  # the producer has published its last batch
C_HEAD = 192  # ring: next slot the producer fills
C_TAIL = 256  # ring: next slot the consumer frees
C_PUB = 320  # the published object of the free_rcu case
C_RES = 384  # results: 64 bytes per rank (t0, t1, ops, x, y)
CTL_SIZE = C_RES + 64 * 2


def _window(a: Any, ctl: int) -> tuple[int, int]:
    """Wait for the parent to set the window, spin to its start; returns (t0, end)."""
    load, clock = a.load, time.perf_counter_ns
    while not load(ctl + C_START):
        time.sleep(0.0005)
    start, end = load(ctl + C_START), load(ctl + C_END)
    while clock() < start:
        pass
    return max(start, clock()), end


def _put(a: Any, ctl: int, rank: int, *vals: int) -> None:
    for i, v in enumerate(vals):
        a.store(ctl + C_RES + 64 * rank + 8 * i, int(v))


def _get(a: Any, ctl: int, rank: int, n: int) -> list[int]:
    return [int(a.load(ctl + C_RES + 64 * rank + 8 * i)) for i in range(n)]


# -- 3. free_rcu under a reader


def _rcu_writer(dom: percpu.Domain, ctl: int, kind: str, ma: BpfMemAlloc | None, dfl_off: int) -> int:
    a = dom.arena
    store, xchg, clock = a.store, a.xchg, time.perf_counter_ns
    pub, r = ctl + C_PUB, range(BATCH)
    n = seq = 0
    try:
        t0, end = _window(a, ctl)
        if kind == "ma":
            assert ma is not None
            alloc, free_rcu = ma.cache_alloc, ma.cache_free_rcu
            while clock() < end:
                for _ in repeat(None, CHUNK):
                    p = alloc()
                    seq += 1
                    store(p + STAMP, seq)  # type: ignore[operator]  # None (out of memory) raises: the run fails
                    free_rcu(xchg(pub, p))  # type: ignore[arg-type]  # free_rcu(0) does nothing (the first time)
                n += CHUNK
            t1 = clock()
            free_rcu(xchg(pub, 0))
        elif kind == "kfree_rcu":
            dfl = DeferFreeList(dom, dfl_off)
            km, defer, reclaim = a.kmalloc, dfl.defer, dfl.reclaim
            while clock() < end:
                for _ in repeat(None, CHUNK // BATCH):
                    for _ in r:
                        p = km(OBJ_SIZE)
                        seq += 1
                        store(p + STAMP, seq)  # type: ignore[operator]
                        old = xchg(pub, p)  # type: ignore[arg-type]
                        if old:
                            defer(old)
                    reclaim()  # every 64 updates
                n += CHUNK
            t1 = clock()
            last = xchg(pub, 0)
            if last:
                defer(last)
            while dfl.pending():
                rcu.synchronize()
                reclaim()
        else:
            shm = shared_memory.SharedMemory
            while clock() < end:
                for _ in repeat(None, 16):
                    s = shm(create=True, size=OBJ_SIZE)
                    s.close()
                    s.unlink()
                n += 16
            t1 = clock()
        _put(a, ctl, 0, t0, t1, n)
    finally:
        a.store(ctl + C_STOP, 1)
    return 0


def _rcu_reader(dom: percpu.Domain, ctl: int) -> int:
    a = dom.arena
    load, clock = a.load, time.perf_counter_ns
    lk, ul = percpu.kernel.rcu_read_lock, percpu.kernel.rcu_read_unlock
    pub, stop = ctl + C_PUB, ctl + C_STOP
    lk()  # claim this thread's reader slot outside the window
    ul()
    t0, _ = _window(a, ctl)
    n = bad = 0
    while not load(stop):
        for _ in repeat(None, 256):
            lk()
            p = load(pub)
            if p:
                s = load(p + STAMP)
                load(pub)
                if load(p + STAMP) != s:
                    bad += 1  # reused inside our section: freed before the grace period ended
            ul()
        n += 256
    _put(a, ctl, 1, t0, clock(), n, bad)
    return 0


# -- 4. htab-mem


def _one_cpu_worker(dom: percpu.Domain, ctl: int, case: str, kind: str, ma: BpfMemAlloc | None) -> int:
    a = dom.arena
    clock, r, size = time.perf_counter_ns, range(BATCH), OBJ_SIZE
    alloc: Any  # ma.cache_alloc() or kmalloc(size): the loops call each with its own arguments
    free: Any
    if kind == "ma":
        assert ma is not None
        alloc, free = ma.cache_alloc, ma.cache_free
        live = [alloc() for _ in r]
    else:
        alloc, free = a.kmalloc, a.kfree
        live = [alloc(size) for _ in r]
    n = 0
    t0, end = _window(a, ctl)
    while clock() < end:
        for _ in repeat(None, CHUNK // BATCH):
            if case == "overwrite":  # 64 updates of existing keys: new element in, old one freed
                if kind == "ma":
                    for i in r:
                        p = alloc()
                        free(live[i])
                        live[i] = p
                else:
                    for i in r:
                        p = alloc(size)
                        free(live[i])
                        live[i] = p
            else:  # batch_add_batch_del: 64 adds, then 64 deletes
                ps = [alloc() for _ in r] if kind == "ma" else [alloc(size) for _ in r]
                for p in ps:
                    free(p)
        n += CHUNK
    t1 = clock()
    for p in live:
        free(p)
    _put(a, ctl, 0, t0, t1, n)
    return 0


def _producer(dom: percpu.Domain, ctl: int, ring: int, kind: str, ma: BpfMemAlloc | None) -> int:
    a = dom.arena
    load, store, clock = a.load, a.store, time.perf_counter_ns
    slots = dom.mem(ring, 8 * RING).cast("Q")
    head_off, tail_off, r, size = ctl + C_HEAD, ctl + C_TAIL, range(BATCH), OBJ_SIZE
    alloc: Any = ma.cache_alloc if ma is not None else a.kmalloc  # () or (size), see the batch
    head = tail = n = 0
    try:
        t0, end = _window(a, ctl)
        while clock() < end:
            for _ in repeat(None, CHUNK // BATCH):
                while head - tail > RING - BATCH:  # full: wait for the consumer
                    tail = load(tail_off)
                ps = [alloc() for _ in r] if kind == "ma" else [alloc(size) for _ in r]
                i = head % RING
                slots[i : i + BATCH] = array("Q", ps)  # a None (out of memory) raises: the run fails
                head += BATCH
                store(head_off, head)  # publish the batch (release: after the slots)
            n += CHUNK
        t1 = clock()
        _put(a, ctl, 0, t0, t1, n)
    finally:
        store(ctl + C_DONE, 1)
        slots.release()
    return 0


def _consumer(dom: percpu.Domain, ctl: int, ring: int, kind: str, ma: BpfMemAlloc | None) -> int:
    a = dom.arena
    load, store = a.load, a.store
    slots = dom.mem(ring, 8 * RING).cast("Q")
    head_off, tail_off, done_off = ctl + C_HEAD, ctl + C_TAIL, ctl + C_DONE
    free = ma.cache_free if ma is not None else a.kfree
    tail = freed = 0
    try:
        _window(a, ctl)
        while True:
            head = load(head_off)
            if head == tail:
                if load(done_off) and load(head_off) == tail:
                    break
                continue
            while tail < head:
                i = tail % RING
                for p in slots[i : i + BATCH]:
                    free(p)
                tail += BATCH
                freed += BATCH
                store(tail_off, tail)
        _put(a, ctl, 1, 0, 0, freed)
    finally:
        slots.release()
    return 0


# -- the runner


def _counters(ma: BpfMemAlloc) -> tuple[Callable[[], int], str]:
    """A function returning ``created - released`` of ``ma`` without a lock (``ma.held``), and how it reads.

    Not ``ma.check()``, which takes every lock and walks every list (tens of
    thousands of nodes in the free_rcu case, enough to stall the writer).
    """
    return (lambda: int(ma.held)), "ma.held (two loads)"


def _sample(dom: percpu.Domain, held: Callable[[], int] | None) -> tuple[int, int, int]:
    return dom.populated_pages(), _inuse(dom), 0 if held is None else held()


def _quiesce(ma: BpfMemAlloc) -> dict[str, Any]:
    """Let both grace-period flavours pass and run what is due, until nothing waits for one."""
    waiting = ("free_by_rcu", "free_llist_extra_rcu", "waiting_for_gp", "waiting_for_gp_ttrace", "in_flight")
    st = ma.check()
    for _ in range(QUIESCE_TRIES):
        if not any(st[k] for k in waiting):
            break
        rcu.synchronize(rcu.RCU)
        rcu.synchronize(rcu.TASKS_TRACE)
        ma.refill()
        ma.poll()
        st = ma.check()
    return st




Workers = list[tuple[Callable[..., int], int, tuple[Any, ...]]]
Setup = Callable[[percpu.Domain, int], tuple["BpfMemAlloc | None", Workers, Callable[[list[list[int]]], list[str]]]]


def _run(label: str, kind: str, setup: Setup, window_ns: int) -> dict[str, Any]:
    """One timed run in a fresh domain: start the workers, sample while they run, check.

    ``setup(dom, ctl)`` returns ``(ma or None, workers, cleanup)``: each
    worker ``(fn, cpu, args)`` runs as ``fn(dom, ctl, *args)`` in a kthread on
    ``cpu`` (rank = its index); ``cleanup(results)`` frees what setup
    allocated besides ``ma`` and returns the errors it found.
    """
    what = f"{label} [{kind}]"
    dom = percpu.Domain.create(size=MP_DOMAIN_SIZE)
    errors: list[str] = []
    kts: list[Kthread] = []
    try:
        with dom:
            a = dom.arena
            base = _inuse(dom)
            ctl = dom.kzalloc(CTL_SIZE)
            if ctl is None:
                raise MemoryError(f"kzalloc({CTL_SIZE}) failed in domain {dom.name}")
            ma, workers, cleanup = setup(dom, ctl)
            for fn, cpu, args in workers:
                kts.append(kthread_run_on_cpu(fn, cpu, "ma-bench/%u", dom, ctl, *args, method="fork"))
            held, how = (None, "") if ma is None else _counters(ma)
            before = _sample(dom, held)
            peak = list(before)
            start = time.perf_counter_ns() + LEAD_NS
            a.store(ctl + C_END, start + window_ns)
            a.store(ctl + C_START, start)
            deadline = time.monotonic() + window_ns / 1e9 + 60.0
            samples = late = 0  # late: peak held over the second half of the window
            half, end = start + window_ns // 2, start + window_ns
            while any(kt.alive for kt in kts):
                if time.monotonic() > deadline:
                    errors.append(f"{what}: the workers did not finish")
                    break
                s = _sample(dom, held)
                samples += 1
                if half <= time.perf_counter_ns() <= end:
                    late = max(late, s[2])
                peak = [max(x, y) for x, y in zip(peak, s)]
                time.sleep(SAMPLE_S)
            for kt in kts:
                rc = kthread_stop(kt)
                if rc != 0:
                    errors.append(f"{what}: the worker on CPU {kt.cpu} exited with {rc}")
            kts = []
            vals = [_get(a, ctl, rank, 4) for rank in range(len(workers))]
            t0, t1, ops = vals[0][:3]
            if not errors and (t1 <= t0 or ops <= 0):
                errors.append(f"{what}: no work recorded")
            after: dict[str, int] = {}
            if ma is not None:
                try:
                    st = _quiesce(ma)
                except Corrupted as e:
                    raise RuntimeError(f"{what}: ma.check(): {e}") from e
                errors += _ma_errors(what, st)
                after = {k: int(st[k]) for k in ("created", "released", "cached", "outstanding", "in_flight")}
                tot = ma.stats()
                after.update({k: int(tot[k]) for k in ("nr_alloc", "nr_new", "nr_released", "nr_refill")})
            pages1 = dom.populated_pages()
            errors += cleanup(vals)
            if ma is not None:
                errors += _destroy(what, ma)
            dom.kfree(ctl)
            inuse1 = _inuse(dom)
            if inuse1 != base:
                errors.append(f"{what}: kmalloc inuse {inuse1} at the end, {base} at the start")
            broken = domain_check(dom)
            if broken is not None:
                errors.append(f"{what}: dom.check(): {broken}")
    finally:
        for kt in kts:
            try:
                kthread_stop(kt)
            except Exception:  # noqa: BLE001 - the run has failed already
                pass
        drop_domain(dom)
    secs = max(t1 - t0, 1) / 1e9
    return {
        "case": label,
        "kind": kind,
        "cpus": [cpu for _, cpu, _ in workers],
        "ops": ops,
        "seconds": secs,
        "ops_per_s": ops / secs,
        "ns_per_op": secs * 1e9 / max(ops, 1),
        "results": vals,
        "samples": samples,
        "held_sampled_by": how,
        "populated_pages": {"before": before[0], "peak": peak[0], "after": pages1},
        "peak_populated_kib": (peak[0] - before[0]) * 4,
        "peak_kmalloc_inuse": peak[1] - before[1],
        "held": {"before": before[2], "peak": peak[2], "peak_2nd_half": late,
                 "after": after.get("created", 0) - after.get("released", 0)},
        "after": after,
        "errors": errors,
    }


def _rcu_run(kind: str, cpus: list[int], window_ns: int) -> dict[str, Any]:
    def setup(dom: percpu.Domain, ctl: int) -> tuple[BpfMemAlloc | None, Workers, Any]:
        ma = BpfMemAlloc(OBJ_SIZE) if kind == "ma" else None
        dfl = DeferFreeList.create(dom) if kind == "kfree_rcu" else None
        workers: Workers = [
            (_rcu_writer, cpus[0], (kind, ma, 0 if dfl is None else dfl.offset)),
            (_rcu_reader, cpus[1], ()),
        ]

        def cleanup(vals: list[list[int]]) -> list[str]:
            errs = []
            if vals[1][3]:
                errs.append(f"free_rcu [{kind}]: the reader saw {vals[1][3]} objects reused inside its sections")
            if dfl is not None:
                if dfl.pending():
                    errs.append(f"free_rcu [{kind}]: {dfl.pending()} objects still deferred")
                dfl.destroy(wait=True)
            return errs

        return ma, workers, cleanup

    res = _run("free_rcu", kind, setup, window_ns)
    t0, t1, n, bad = res["results"][1]
    res["reader_sections_per_s"] = n * 1e9 / max(t1 - t0, 1)
    res["reader_saw_reused"] = bad
    return res


def _htab_run(case: str, kind: str, cpus: list[int], window_ns: int) -> dict[str, Any]:
    def setup(dom: percpu.Domain, ctl: int) -> tuple[BpfMemAlloc | None, Workers, Any]:
        ma = BpfMemAlloc(OBJ_SIZE) if kind == "ma" else None
        if case != "add_del_on_diff_cpu":
            return ma, [(_one_cpu_worker, cpus[0], (case, kind, ma))], lambda vals: []
        ring = dom.kzalloc(8 * RING)
        if ring is None:
            raise MemoryError(f"kzalloc({8 * RING}) failed in domain {dom.name}")
        workers: Workers = [(_producer, cpus[0], (ring, kind, ma)), (_consumer, cpus[1], (ring, kind, ma))]

        def cleanup(vals: list[list[int]]) -> list[str]:
            a, errs = dom.arena, []
            head, tail = a.load(ctl + C_HEAD), a.load(ctl + C_TAIL)
            produced, freed = vals[0][2], vals[1][2]
            if not head == tail == produced == freed:
                errs.append(f"{case} [{kind}]: produced {produced}, freed {freed}, ring head {head}, tail {tail}")
            dom.kfree(ring)
            return errs

        return ma, workers, cleanup

    return _run(case, kind, setup, window_ns)


def _multi(*, quick: bool) -> tuple[list[Row], list[Row], dict[str, Any]]:
    cpus = sorted(os.sched_getaffinity(0))[:2]
    if len(cpus) < 2:
        return [], [], {"skipped": f"only {len(cpus)} CPU available to this process", "ok": True}
    rounds = 3 if quick else 5
    rcu_window = 200_000_000 if quick else 1_000_000_000
    htab_window = 100_000_000 if quick else 500_000_000
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        "free_rcu": {k: [] for k in RCU_KINDS},
        **{c: {k: [] for k in HTAB_KINDS} for c in HTAB_USE_CASES},
    }
    for _ in range(rounds):  # interleaved, as the single-process rounds
        for kind in RCU_KINDS:
            runs["free_rcu"][kind].append(_rcu_run(kind, cpus, rcu_window))
        for case in HTAB_USE_CASES:
            for kind in HTAB_KINDS:
                runs[case][kind].append(_htab_run(case, kind, cpus, htab_window))
    errors = [e for per in runs.values() for rs in per.values() for r in rs for e in r["errors"]]

    def ns(rs: list[dict[str, Any]]) -> float:
        return 1e9 / median([r["ops_per_s"] for r in rs])

    def ratio(mine: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> float:
        return median([a["ops_per_s"] / b["ops_per_s"] for a, b in zip(mine, theirs)])

    def memory(rs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "ops_per_s": median([r["ops_per_s"] for r in rs]),
            "peak_held": max(r["held"]["peak"] for r in rs),
            "peak_held_2nd_half": max(r["held"]["peak_2nd_half"] for r in rs),
            "held_before": max(r["held"]["before"] for r in rs),
            "held_after": max(r["held"]["after"] for r in rs),
            "peak_kmalloc_inuse": max(r["peak_kmalloc_inuse"] for r in rs),
            "peak_populated_kib": max(r["peak_populated_kib"] for r in rs),
            "populated_pages": {k: max(r["populated_pages"][k] for r in rs) for k in ("before", "peak", "after")},
            # objects taken new from kmalloc per object handed out (0 if every one was recycled)
            "new_per_alloc": median([r["after"].get("nr_new", 0) / max(r["after"].get("nr_alloc", 1), 1)
                                     for r in rs]),
        }

    def row(case: str, mine: list[dict[str, Any]], label: str, peer: list[dict[str, Any]]) -> Row:
        extra = {"ops_per_s": median([r["ops_per_s"] for r in mine]), "memory": memory(mine),
                 "peer_memory": memory(peer)}
        return Row(case, ns(mine), label, ns(peer), ratio(mine, peer), extra)

    fr = runs["free_rcu"]
    rcu_rows = [
        row(RCU_CASES[0], fr["ma"], f"kmalloc({OBJ_SIZE}) + DeferFreeList.defer, reclaim per 64", fr["kfree_rcu"]),
        row(RCU_CASES[1], fr["ma"], f"SharedMemory({OBJ_SIZE} B) create+close+unlink", fr["shm"]),
    ]
    htab_rows = [
        row(label, runs[case]["ma"], f"arena.kmalloc({OBJ_SIZE})+kfree, same loop", runs[case]["kmalloc"])
        for label, case in zip(HTAB_CASES, HTAB_USE_CASES)
    ]
    info = {
        "cpus": cpus,
        "rounds": rounds,
        "rcu_window_ms": rcu_window / 1e6,
        "htab_window_ms": htab_window / 1e6,
        "sample_ms": SAMPLE_S * 1e3,
        "ring_slots": RING,
        "batch": BATCH,
        "ns_per_op": "1e9 / (objects allocated and freed per second, median over rounds)",
        "memory": "largest over rounds; created-released of the allocator (objects it holds from kmalloc), "
                  "kmalloc objects in use and populated KiB above the figures taken just before the window",
        "reader_sections_per_s": {k: median([r["reader_sections_per_s"] for r in fr[k]]) for k in RCU_KINDS},
        "reader_saw_reused": sum(r["reader_saw_reused"] for k in RCU_KINDS for r in fr[k]),
        "runs": runs,
        "errors": errors,
        "ok": not errors,
    }
    return rcu_rows, htab_rows, info


# ---- main -------------------------------------------------------------------


def run(*, quick: bool) -> dict[str, Any]:
    t_start = time.monotonic()
    pair_rows, mixed_rows, single = _single(quick=quick)
    rcu_rows, htab_rows, multi = _multi(quick=quick)
    fac, bound = single["facade_pair_over_2noop"], single["bound_pair_over_2noop"]
    targets = [
        {
            "name": "bpf_mem_cache_alloc(ma)+bpf_mem_cache_free(ma, p) / noop(); noop()",
            "value": fac,
            "target": f"<= {PAIR_TARGET:g}x",
            "pass": fac <= PAIR_TARGET,
        },
        {
            "name": "alloc()+free(p) (bound ma.cache_alloc/cache_free) / noop(); noop()",
            "value": bound,
            "target": f"<= {PAIR_TARGET:g}x",
            "pass": bound <= PAIR_TARGET,
        },
    ]
    return {
        "benchmark": "memalloc",
        "quick": quick,
        "machine": machine_info(),
        "obj_size": OBJ_SIZE,
        "ratio": "peer ns/op / ns/op, per round then median (above 1: percpu faster)",
        "cases": [r.to_json() for r in pair_rows + mixed_rows + rcu_rows + htab_rows],
        "single": single,
        "multi": multi,
        "ok": bool(single["ok"] and multi["ok"]),
        "targets": targets,
        "seconds": time.monotonic() - t_start,
    }



def _mem_line(who: str, m: dict[str, Any], held: bool) -> str:
    line = f"  {who:<10} {m['ops_per_s'] / 1e6:6.2f} M objects/s; "
    if held:
        line += (f"created-released {m['held_before']:,} before, peak {m['peak_held']:,} "
                 f"({m['peak_held_2nd_half']:,} in the window's 2nd half), {m['held_after']:,} after; ")
    line += (f"kmalloc objects in use: peak +{m['peak_kmalloc_inuse']:,}; "
             f"populated: peak +{m['peak_populated_kib']:,} KiB")
    return line + (f"; new from kmalloc per alloc {m['new_per_alloc']:.2f}" if held else "")


def _print_text(doc: dict[str, Any]) -> None:
    m = doc["machine"]
    s = doc["single"]
    print(
        f"percpu BPF memory allocator benchmark: Python {m['python']}, {m['cpu_count']} CPUs "
        f"(affinity {m['affinity']}), fixed-size objects of {doc['obj_size']} bytes (unit {doc['obj_size'] + 8})"
    )
    print(
        f"{s['rounds']} interleaved rounds pinned to CPU {s['cpu']}, loop overhead "
        f"{s['loop_overhead_ns']:.1f} ns subtracted; ratio = {doc['ratio']}"
    )
    print("\n1. alloc+free pair, fixed size, one process")
    print_table(rows_named(doc["cases"], PAIR_CASES))
    print(f"facade pair / two noop(): {s['facade_pair_over_2noop']:.2f}x; bound pair / two noop(): "
          f"{s['bound_pair_over_2noop']:.2f}x (target <= {PAIR_TARGET:g}x; two noop() = {s['two_noop_ns']:.1f} ns)")
    z = s["sizes"]
    print(f"\n2. mixed sizes, size==0 flavour, one process ({z['n']} sizes log-uniform in {z['min']}..{z['max']}, "
          f"mean {z['mean']:.0f} B, {len(z['per_bucket_unit'])} buckets; per pair, the bare 'for s in sz' "
          f"loop of {s['sz_loop_ns']:.1f} ns subtracted)")
    print_table(rows_named(doc["cases"], MIXED_CASES))
    f, x = s["fixed_after"], s["mixed_after"]
    print(f"held from kmalloc after the timings (created - released): fixed size {f['created'] - f['released']}, "
          f"size==0 {x['created'] - x['released']}; outstanding {f['outstanding']} / {x['outstanding']}; "
          f"checks {'OK' if s['ok'] else 'FAILED'}")
    c = doc["multi"]
    if c.get("skipped"):
        print(f"\n3-4. pinned processes: skipped ({c['skipped']})")
    else:
        cases = {r["case"]: r for r in doc["cases"]}
        print(f"\n3. free_rcu under a reader: writer on CPU {c['cpus'][0]}, reader on CPU {c['cpus'][1]}, "
              f"{c['rcu_window_ms']:.0f} ms windows, {c['rounds']} round(s); ns/op = 1e9 / objects per second")
        print_table(rows_named(doc["cases"], RCU_CASES))
        r0 = cases[RCU_CASES[0]]
        print(_mem_line("free_rcu", r0["memory"], True))
        print(_mem_line("kfree_rcu", r0["peer_memory"], False))
        print(_mem_line("shm", cases[RCU_CASES[1]]["peer_memory"], False))
        rs = c["reader_sections_per_s"]
        print(f"  reader sections/s beside free_rcu {rs['ma'] / 1e6:.2f} M, kfree_rcu {rs['kfree_rcu'] / 1e6:.2f} M, "
              f"SharedMemory {rs['shm'] / 1e6:.2f} M; objects reused inside a section: {c['reader_saw_reused']}")
        print(f"\n4. bench htab-mem use cases, batches of {c['batch']}; {c['htab_window_ms']:.0f} ms windows, "
              f"{c['rounds']} round(s); add_del_on_diff_cpu: CPU {c['cpus'][0]} allocates, CPU {c['cpus'][1]} "
              f"frees, {c['ring_slots']}-slot ring")
        print_table(rows_named(doc["cases"], HTAB_CASES))
        for name, use in zip(HTAB_CASES, HTAB_USE_CASES):
            r = cases[name]
            print(f" {use}:")
            print(_mem_line("bpf_ma", r["memory"], True))
            print(_mem_line("kmalloc", r["peer_memory"], False))
        print(f"(memory: {c['memory']}; sampled every {c['sample_ms']:.0f} ms)")
        print(f"checks after every run: {'OK' if c['ok'] else 'FAILED'}")
    print()
    print_targets(doc)


def _failures(doc: dict[str, Any]) -> list[str]:
    return list(doc["single"]["errors"]) + list(doc["multi"].get("errors", []))


def main(argv: list[str] | None = None) -> int:
    return bench_main(argv, "memalloc", __doc__.split("\n")[0], run, _print_text, _failures)


if __name__ == "__main__":
    sys.exit(main())
