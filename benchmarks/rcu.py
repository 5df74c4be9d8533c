"""Benchmark of RCU: the read side, synchronize_rcu() latency, grace periods/s.

Cases and the peers measured beside them in the same run:

==========================================  =========================================
percpu                                      peer
==========================================  =========================================
``k.rcu_read_lock(); k.rcu_read_unlock()``  ``_core.noop()`` (floor);
(``k = percpu.kernel``, attribute calls)    ``threading.Lock``, ``threading.RLock``,
                                            ``multiprocessing.Lock`` acquire+release
``with percpu.rcu.read_lock(): pass``       ``with threading.Lock(): pass``
nested, depth 2 (attribute calls)           ``threading.RLock`` nested, depth 2
``synchronize_rcu()`` median and p99, with  a writer's ``multiprocessing.Lock``
0, 1, 2 other processes, idle or busy       acquire while the same readers take that
readers                                     lock around every read (the reader-writer
                                            lock a user would build instead)
writer: kmalloc(64), ``arena.xchg``,        (reported as GPs/s and updates/s; the
``DeferFreeList.defer`` + ``reclaim``, or   peer is the other deferral, in the same
``call_rcu(kfree)`` + ``rcu_barrier``;      run)
0 and 2 busy readers
==========================================  =========================================

Target (from the issue): the attribute-call pair ``rcu_read_lock()`` +
``rcu_read_unlock()`` within 2x of one ``noop()`` call.

Every case creates its own domain and unlinks it; every other process is
forked (it inherits the domain), pinned by :func:`benchmarks._harness.run_pinned`
and joined (or killed) at the end of its case.  Busy readers loop
``rcu_read_lock(); <load a shared word>; rcu_read_unlock()``; in the writer
cases they load the published object and check its stamp, so an object freed
before a grace period ended is counted as a use-after-free.

Run: ``python -m benchmarks.rcu [--quick] [--json]``.  Exit status 1 if the
leak check fails (``dom.check()``, kmalloc ``inuse`` back to its starting
value, nothing pending) or a reader saw a freed object.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import statistics
import sys
import threading
import time
from itertools import repeat
from typing import Any

import percpu
import percpu.kernel
from benchmarks._harness import (
    Case,
    Row,
    Suite,
    bench_main,
    machine_info,
    median,
    pinned,
    print_table,
    print_targets,
    run_pinned,
)
from percpu import _core
from percpu.runtime.rcu import DeferFreeList

READ_TARGET = 2.0  # rcu_read_lock+unlock (attribute calls) / noop at most
DOMAIN_SIZE = 64 << 20
MAGIC = 0x5243555F4F424A  # "RCU_OBJ": the stamp of a live published object
STAMP = 24  # offset of the stamp in an object (DeferFreeList uses +0 and +8)

READ_CASES = [
    "noop",
    "k.rcu_read_lock()+k.rcu_read_unlock() vs 2 noop",
    "k.rcu_read_lock()+k.rcu_read_unlock()",
    "k.rcu_read_lock()+k.rcu_read_unlock() vs RLock",
    "k.rcu_read_lock()+k.rcu_read_unlock() vs mp",
    "with rcu.read_lock()",
    "nested depth 2",
    "lk()+ul() (bound locals)",
]
SYNC_CONFIGS = [(0, "idle"), (1, "idle"), (1, "busy"), (2, "idle"), (2, "busy")]
GP_CONFIGS = [("defer", 0), ("defer", 2), ("call_rcu", 0), ("call_rcu", 2)]


def _new_domain() -> percpu.Domain:
    return percpu.Domain.create(size=DOMAIN_SIZE)


def _drop_domain(dom: percpu.Domain) -> None:
    try:
        dom.unlink()
    finally:
        dom.close()


def _zalloc(dom: percpu.Domain, size: int) -> int:
    ptr = dom.kzalloc(size)
    if ptr is None:
        raise MemoryError(f"kzalloc({size}) failed in domain {dom.name}")
    return ptr


def _inuse(dom: percpu.Domain) -> list[int]:
    return [int(c["inuse"]) for c in dom.arena.slab_stats()]


def _cpus(nproc: int) -> list[int]:
    """CPU of each process: the writer on the first, readers from the second on, wrapping."""
    cpus = sorted(os.sched_getaffinity(0))
    return [cpus[i % len(cpus)] for i in range(nproc)]


# ---- 1. the read side ---------------------------------------------------------


def _read_side(*, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    dom = _new_domain()
    try:
        k = percpu.kernel
        rcu = percpu.rcu
        tlock = threading.Lock()
        rlock = threading.RLock()
        mlock = multiprocessing.get_context("fork").Lock()
        cases = [
            Case("noop", "noop()", {"noop": _core.noop}),
            Case("2 noop", "noop(); noop()", {"noop": _core.noop}),
            Case("rcu attr", "k.rcu_read_lock(); k.rcu_read_unlock()", {"k": k}),
            Case("rcu with", "with rcu.read_lock():\n    pass", {"rcu": rcu}),
            Case(
                "rcu nested",
                "k.rcu_read_lock(); k.rcu_read_lock(); k.rcu_read_unlock(); k.rcu_read_unlock()",
                {"k": k},
            ),
            Case("rcu bound", "lk(); ul()", {"lk": k.rcu_read_lock, "ul": k.rcu_read_unlock}),
            Case("threading.Lock", "lock.acquire(); lock.release()", {"lock": tlock}),
            Case("threading.RLock", "lock.acquire(); lock.release()", {"lock": rlock}),
            Case("with threading.Lock", "with lock:\n    pass", {"lock": tlock}),
            Case(
                "RLock nested",
                "lock.acquire(); lock.acquire(); lock.release(); lock.release()",
                {"lock": rlock},
            ),
            Case("multiprocessing.Lock", "lock.acquire(); lock.release()", {"lock": mlock}),
        ]
        suite = Suite(
            cases,
            rounds=3 if quick else 15,
            repeat=2 if quick else 3,
            target_ns=2_000_000 if quick else 8_000_000,
        )
        cpu = max(os.sched_getaffinity(0))
        with dom, pinned(cpu):
            k.rcu_read_lock()  # claim this thread's reader slot outside the timing
            k.rcu_read_unlock()
            suite.run()
            nesting = _core.rcu_nesting(0)
        if nesting:
            raise RuntimeError(f"still inside {nesting} read-side sections after the read cases")
    finally:
        _drop_domain(dom)

    m = suite.median

    def row(case: str, mine: str, peer_label: str, peer: str) -> Row:
        return Row(case, m(mine), peer_label, m(peer), suite.ratio(peer, mine))

    rows = [
        row("noop", "noop", "_core.noop() (floor)", "noop"),
        row("k.rcu_read_lock()+k.rcu_read_unlock() vs 2 noop", "rcu attr",
            "noop(); noop() (two-call floor)", "2 noop"),
        row("k.rcu_read_lock()+k.rcu_read_unlock()", "rcu attr",
            "threading.Lock .acquire()+.release()", "threading.Lock"),
        row("k.rcu_read_lock()+k.rcu_read_unlock() vs RLock", "rcu attr",
            "threading.RLock .acquire()+.release()", "threading.RLock"),
        row("k.rcu_read_lock()+k.rcu_read_unlock() vs mp", "rcu attr",
            "multiprocessing.Lock .acquire()+.release()", "multiprocessing.Lock"),
        row("with rcu.read_lock()", "rcu with", "with threading.Lock", "with threading.Lock"),
        row("nested depth 2", "rcu nested", "threading.RLock nested depth 2", "RLock nested"),
        row("lk()+ul() (bound locals)", "rcu bound", "threading.Lock .acquire()+.release()",
            "threading.Lock"),
    ]
    info = {
        "rounds": suite.rounds,
        "loop_overhead_ns": median(suite.loop_ns),
        "attr_over_noop": suite.ratio("rcu attr", "noop"),
        "attr_over_2noop": suite.ratio("rcu attr", "2 noop"),
        "with_over_noop": suite.ratio("rcu with", "noop"),
        "nested_over_noop": suite.ratio("rcu nested", "noop"),
        "bound_over_noop": suite.ratio("rcu bound", "noop"),
    }
    return rows, info


# ---- 2. synchronize_rcu() latency ------------------------------------------------


def _summary(lat: list[int]) -> dict[str, Any]:
    lat.sort()
    n = len(lat)
    return {
        "n": n,
        "median_ns": float(statistics.median(lat)),
        "p99_ns": float(lat[min(n - 1, (99 * n) // 100)]),
        "max_ns": float(lat[-1]),
        "mean_ns": float(sum(lat) / n),
    }


def _sync_reader(rank: int, barrier: Any, dom: percpu.Domain, mech: str, mode: str,
                 stop: int, word: int, mlock: Any) -> dict[str, Any]:
    """An attached process: one read section (registers its slot), then idle or busy."""
    a = dom.arena
    load = a.load
    with dom:
        if mech == "rcu":
            lk, ul = percpu.kernel.rcu_read_lock, percpu.kernel.rcu_read_unlock
        else:
            lk, ul = mlock.acquire, mlock.release
        lk()
        load(word)
        ul()
        barrier.wait(30)
        n = 0
        t0 = time.perf_counter_ns()
        if mode == "idle":
            while not load(stop):
                time.sleep(0.002)
        else:
            while not load(stop):
                for _ in repeat(None, 256):
                    lk()
                    load(word)
                    ul()
                n += 256
        t1 = time.perf_counter_ns()
    return {"reads": n, "ns": t1 - t0}


def _sync_writer(rank: int, barrier: Any, dom: percpu.Domain, mech: str, mode: str,
                 stop: int, word: int, mlock: Any, duration: float, warmup: float) -> dict[str, Any]:
    a = dom.arena
    store, now, clock = a.store, time.monotonic, time.perf_counter_ns
    lat: list[int] = []
    timeouts = 0
    try:
        with dom:
            barrier.wait(30)
            time.sleep(warmup)  # let the readers get going
            deadline = now() + duration
            i = 0
            if mech == "rcu":
                sync = percpu.kernel.synchronize_rcu
                while now() < deadline:
                    i += 1
                    store(word, i)  # the update a grace period would follow
                    t0 = clock()
                    sync()
                    lat.append(clock() - t0)
            else:
                acq, rel = mlock.acquire, mlock.release
                while now() < deadline:
                    i += 1
                    t0 = clock()
                    got = acq(True, 5.0)
                    lat.append(clock() - t0)
                    if not got:
                        timeouts += 1
                        continue
                    store(word, i)
                    rel()
    finally:
        a.store(stop, 1)
    return {**_summary(lat), "timeouts": timeouts}


def _sync_case(mech: str, readers: int, mode: str, *, duration: float, warmup: float) -> dict[str, Any]:
    dom = _new_domain()
    try:
        stop = _zalloc(dom, 64)
        word = _zalloc(dom, 64)
        mlock = multiprocessing.get_context("fork").Lock()
        cpus = _cpus(1 + readers)

        def fn(rank: int, barrier: Any, *args: Any) -> dict[str, Any]:
            if rank == 0:
                return _sync_writer(rank, barrier, dom, mech, mode, stop, word, mlock, duration, warmup)
            return _sync_reader(rank, barrier, dom, mech, mode, stop, word, mlock)

        res = run_pinned(fn, cpus, timeout=60.0 + duration)
        dom.kfree(stop)
        dom.kfree(word)
        dom.check()
    finally:
        _drop_domain(dom)
    w: dict[str, Any] = res[0]
    rd = res[1:]
    w["cpus"] = cpus
    w["reads_per_s"] = [r["reads"] * 1e9 / r["ns"] for r in rd] if mode == "busy" else []
    return w


def _sync(*, quick: bool) -> tuple[list[Row], list[dict[str, Any]]]:
    rounds = 1 if quick else 3
    duration = 0.25 if quick else 0.6
    warmup = 0.02 if quick else 0.05
    results: dict[tuple[int, str], dict[str, list[dict[str, Any]]]] = {
        c: {"rcu": [], "mp": []} for c in SYNC_CONFIGS
    }
    for _ in range(rounds):  # interleaved, so drift hits percpu and the peer alike
        for readers, mode in SYNC_CONFIGS:
            for mech in ("rcu", "mp"):
                results[(readers, mode)][mech].append(
                    _sync_case(mech, readers, mode, duration=duration, warmup=warmup))
    rows: list[Row] = []
    details: list[dict[str, Any]] = []
    for (readers, mode), r in results.items():
        mine, peer = r["rcu"], r["mp"]
        label = "0 other processes" if readers == 0 else f"{readers} {mode} reader{'s' * (readers > 1)}"
        med = median([x["median_ns"] for x in mine])
        pmed = median([x["median_ns"] for x in peer])
        p99 = median([x["p99_ns"] for x in mine])
        pp99 = median([x["p99_ns"] for x in peer])
        rows.append(Row(
            f"synchronize_rcu(), {label}", med,
            f"mp.Lock writer acquire, {label}", pmed,
            median([b["median_ns"] / a["median_ns"] for a, b in zip(mine, peer)]),
            {"p99_ns": p99, "peer_p99_ns": pp99},
        ))
        details.append({
            "readers": readers,
            "mode": mode,
            "cpus": mine[0]["cpus"],
            "median_ns": med,
            "p99_ns": p99,
            "peer_median_ns": pmed,
            "peer_p99_ns": pp99,
            "ratio_median": rows[-1].ratio,
            "ratio_p99": median([b["p99_ns"] / a["p99_ns"] for a, b in zip(mine, peer)]),
            "calls": sum(x["n"] for x in mine),
            "peer_acquires": sum(x["n"] for x in peer),
            "peer_timeouts": sum(x["timeouts"] for x in peer),
            "reader_sections_per_s": median([sum(x["reads_per_s"]) for x in mine]) if mode == "busy" else None,
            "peer_reader_sections_per_s": median([sum(x["reads_per_s"]) for x in peer]) if mode == "busy" else None,
            "rounds": {"rcu": mine, "mp": peer},
        })
    return rows, details


# ---- 3. grace periods per second under a writer -------------------------------------


def _gp_reader(rank: int, barrier: Any, dom: percpu.Domain, ptr: int, stop: int) -> dict[str, Any]:
    a = dom.arena
    load = a.load
    with dom:
        lk, ul = percpu.kernel.rcu_read_lock, percpu.kernel.rcu_read_unlock
        lk()
        load(ptr)
        ul()
        barrier.wait(30)
        n = bad = 0
        seen: list[dict[str, Any]] = []
        t0 = time.perf_counter_ns()
        while not load(stop):
            for _ in repeat(None, 256):
                lk()
                p = load(ptr)
                if p and load(p + STAMP) != MAGIC:
                    bad += 1  # the object was freed inside our read-side section
                    if len(seen) < 4:
                        seen.append(_uaf_detail(a, p, ptr))
                ul()
            n += 256
        t1 = time.perf_counter_ns()
    return {"reads": n, "ns": t1 - t0, "use_after_free": bad, "uaf_details": seen}


def _uaf_detail(a: Any, p: int, ptr: int) -> dict[str, Any]:
    """What a reader saw when it found a freed object (for the error report)."""
    info = a.rcu_info()
    me = [r for r in info["readers"] if r["pid"] == os.getpid()]
    return {
        "obj": p, "stamp": a.load(p + STAMP), "cookie": a.load(p + 8), "published_now": a.load(ptr),
        "gp_seq": info["gp_seq"][0], "gp_done": info["gp_done"][0],
        "my_slot": me[0] if me else None,
    }


def _free_obj(a: Any, obj: int) -> None:
    a.store(obj + STAMP, 0)  # a reader still holding obj sees the stamp gone
    a.kfree(obj)


def _gp_writer(rank: int, barrier: Any, dom: percpu.Domain, variant: str, ptr: int, stop: int,
               dfl_off: int, duration: float, warmup: float) -> dict[str, Any]:
    a = dom.arena
    km, store, xchg, now = a.kmalloc, a.store, a.xchg, time.monotonic
    free = functools.partial(_free_obj, a)
    dfl = DeferFreeList(dom, dfl_off)
    k = percpu.kernel
    reclaims = 0
    max_pending = 0
    try:
        with dom:
            barrier.wait(30)
            time.sleep(warmup)
            info0 = a.rcu_info()
            t0 = time.perf_counter_ns()
            deadline = now() + duration
            n = 0
            while now() < deadline:
                for _ in repeat(None, 64):
                    new = km(64)
                    if new is None:
                        raise MemoryError(f"kmalloc(64) failed after {n} updates "
                                          f"({dfl.pending()} deferred, "
                                          f"{percpu.rcu.pending_callbacks()} callbacks pending)")
                    store(new + STAMP, MAGIC)
                    old = xchg(ptr, new)
                    if old:
                        if variant == "defer":
                            dfl.defer(old)
                        else:
                            k.call_rcu(functools.partial(free, old))
                n += 64
                if variant == "defer":
                    max_pending = max(max_pending, dfl.pending())
                    dfl.reclaim(free)  # every 64 updates
                    reclaims += 1
                else:
                    max_pending = max(max_pending, percpu.rcu.pending_callbacks())
            t1 = time.perf_counter_ns()
            info1 = a.rcu_info()
            # Unpublish the last object and wait until everything is freed.
            d0 = time.perf_counter_ns()
            last = xchg(ptr, 0)
            if variant == "defer":
                if last:
                    dfl.defer(last)
                while dfl.pending():
                    k.synchronize_rcu()
                    dfl.reclaim(free)
            else:
                if last:
                    k.call_rcu(functools.partial(free, last))
                k.rcu_barrier()
            d1 = time.perf_counter_ns()
    finally:
        a.store(stop, 1)
    secs = (t1 - t0) / 1e9
    return {
        "updates": n,
        "seconds": secs,
        "updates_per_s": n / secs,
        "gps_per_s": (info1["gp_done"][0] - info0["gp_done"][0]) / secs,
        "gps_started_per_s": (info1["gp_seq"][0] - info0["gp_seq"][0]) / secs,
        "scans_per_s": (info1["gp_scans"] - info0["gp_scans"]) / secs,
        "reclaims": reclaims,
        "max_pending": max_pending,
        "drain_ms": (d1 - d0) / 1e6,
        "pending_after": dfl.pending() if variant == "defer" else percpu.rcu.pending_callbacks(),
    }


def _gp_case(variant: str, readers: int, *, duration: float, warmup: float) -> dict[str, Any]:
    dom = _new_domain()
    try:
        inuse0 = _inuse(dom)
        ptr = _zalloc(dom, 64)
        stop = _zalloc(dom, 64)
        dfl = DeferFreeList.create(dom)
        cpus = _cpus(1 + readers)

        def fn(rank: int, barrier: Any) -> dict[str, Any]:
            if rank == 0:
                return _gp_writer(rank, barrier, dom, variant, ptr, stop, dfl.offset, duration, warmup)
            return _gp_reader(rank, barrier, dom, ptr, stop)

        res = run_pinned(fn, cpus, timeout=60.0 + duration)
        w, rd = res[0], res[1:]
        pending = dfl.pending()
        dfl.destroy(wait=False)
        dom.kfree(ptr)
        dom.kfree(stop)
        info = dom.arena.rcu_info()
        errors: list[str] = []
        try:
            dom.check()
        except Exception as e:  # noqa: BLE001 - reported, then the run fails
            errors.append(f"dom.check(): {type(e).__name__}: {e}")
        inuse1 = _inuse(dom)
        if inuse1 != inuse0:
            errors.append(f"kmalloc inuse {inuse1} != {inuse0} at the start")
        if pending or w["pending_after"]:
            errors.append(f"{pending or w['pending_after']} objects still pending")
        if info["cbs_queued"][0] != info["cbs_invoked"][0]:
            errors.append(f"call_rcu: {info['cbs_queued'][0]} queued, {info['cbs_invoked'][0]} invoked")
        uaf = sum(r["use_after_free"] for r in rd)
        if uaf:
            errors.append(f"readers saw {uaf} freed objects inside read-side sections: "
                          f"{[d for r in rd for d in r['uaf_details']]}")
    finally:
        _drop_domain(dom)
    return {
        "variant": variant,
        "readers": readers,
        "cpus": cpus,
        **w,
        "reader_sections_per_s": sum(r["reads"] * 1e9 / r["ns"] for r in rd),
        "use_after_free": uaf,
        "kmalloc_inuse_start": sum(inuse0),
        "kmalloc_inuse_end": sum(inuse1),
        "cbs_queued": info["cbs_queued"][0],
        "cbs_invoked": info["cbs_invoked"][0],
        "leak_check_ok": not errors,
        "errors": errors,
    }


def _gps(*, quick: bool) -> list[dict[str, Any]]:
    duration = 0.5 if quick else 2.0
    warmup = 0.02 if quick else 0.05
    return [_gp_case(v, r, duration=duration, warmup=warmup) for v, r in GP_CONFIGS]


# ---- main -------------------------------------------------------------------


def run(*, quick: bool) -> dict[str, Any]:
    t_start = time.monotonic()
    rows, read = _read_side(quick=quick)
    srows, sync = _sync(quick=quick)
    gps = _gps(quick=quick)
    ratio = read["attr_over_noop"]
    targets = [{
        "name": "k.rcu_read_lock()+k.rcu_read_unlock() / noop",
        "ratio": ratio,
        "target": f"<= {READ_TARGET:g}x",
        "pass": ratio <= READ_TARGET,
    }]
    return {
        "benchmark": "rcu",
        "quick": quick,
        "machine": machine_info(),
        "ratio": "peer ns/op / ns/op, per round then median (above 1: percpu faster)",
        "loop_overhead_ns": read["loop_overhead_ns"],
        "rounds": read["rounds"],
        "cases": [r.to_json() for r in rows + srows],
        "read_ratios": {k: v for k, v in read.items() if "_over_" in k},
        "sync_peer": (
            "a reader-writer lock built from one multiprocessing.Lock: every reader "
            "acquires and releases it around each read; the writer's figure is its "
            "acquire latency (5 s timeout, counted) under the same readers"
        ),
        "synchronize": sync,
        "grace_periods": gps,
        "leak_check_ok": all(g["leak_check_ok"] for g in gps),
        "targets": targets,
        "seconds": time.monotonic() - t_start,
    }


def _fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x / 1e3:.1f} k"


def _print_text(doc: dict[str, Any]) -> None:
    m = doc["machine"]
    print(f"percpu RCU benchmark: Python {m['python']}, {m['cpu_count']} CPUs (affinity {m['affinity']})")
    print(f"{doc['rounds']} interleaved rounds, loop overhead {doc['loop_overhead_ns']:.1f} ns "
          f"subtracted; ratio = {doc['ratio']}")
    print()
    rows = [Row(c["case"], c["ns_per_op"], c["peer"], c["peer_ns_per_op"], c["ratio"])
            for c in doc["cases"]]
    print_table(rows[: len(READ_CASES)])
    r = doc["read_ratios"]
    print(f"over noop(): attribute calls {r['attr_over_noop']:.2f}x (over two noop() calls "
          f"{r['attr_over_2noop']:.2f}x), with {r['with_over_noop']:.2f}x, "
          f"nested depth 2 {r['nested_over_noop']:.2f}x, bound locals {r['bound_over_noop']:.2f}x")
    print()
    print("synchronize_rcu() latency, median (p99 beside); peer: " + doc["sync_peer"])
    print_table(rows[len(READ_CASES):])
    for s in doc["synchronize"]:
        line = (f"  {s['readers']} {s['mode']:4}: CPUs {s['cpus']}, p99 {s['p99_ns'] / 1000:.1f} µs "
                f"vs peer p99 {s['peer_p99_ns'] / 1000:.1f} µs; {s['calls']:,} calls")
        if s["reader_sections_per_s"] is not None:
            line += (f"; reader sections/s: RCU {_fmt_rate(s['reader_sections_per_s'])}, "
                     f"mp.Lock {_fmt_rate(s['peer_reader_sections_per_s'])}")
        if s["peer_timeouts"]:
            line += f"; peer acquire timeouts: {s['peer_timeouts']}"
        print(line)
    print()
    print("writer loop: kmalloc(64), publish with arena.xchg, retire the old object")
    print(f"  {'variant':9} {'readers':>7} {'updates/s':>10} {'GPs/s':>10} {'scans/s':>9} "
          f"{'max pend':>8} {'drain':>8} {'reads/s':>9}  leak check")
    for g in doc["grace_periods"]:
        print(f"  {g['variant']:9} {g['readers']:>7} {_fmt_rate(g['updates_per_s']):>10} "
              f"{_fmt_rate(g['gps_per_s']):>10} {_fmt_rate(g['scans_per_s']):>9} "
              f"{g['max_pending']:>8,} {g['drain_ms']:>6.1f}ms "
              f"{_fmt_rate(g['reader_sections_per_s']) if g['readers'] else '-':>9}  "
              f"{'ok' if g['leak_check_ok'] else 'FAILED: ' + '; '.join(g['errors'])}")
    print("  (GPs/s = gp_done delta / s; a cookie names the next grace period without starting it, "
          "so updates taken before it starts share one)")
    print()
    print_targets(doc)


def _failures(doc: dict[str, Any]) -> list[str]:
    if doc["leak_check_ok"]:
        return []
    return [f"{g['variant']} with {g['readers']} readers: " + "; ".join(g["errors"])
            for g in doc["grace_periods"] if g["errors"]]


def main(argv: list[str] | None = None) -> int:
    return bench_main(argv, "rcu", __doc__.split("\n")[0], run, _print_text, _failures)


if __name__ == "__main__":
    sys.exit(main())
