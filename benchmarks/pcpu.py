"""Benchmark of the per-CPU allocator: counters, sums, alloc/free, the kernel's 2017 workload.

Cases and the peers measured beside them in the same run:

=============================================  =============================================
percpu                                         peer
=============================================  =============================================
``c.add()`` / ``c.add(1)`` (``PerCpuCounter``)  ``_core.noop()`` (the floor: target <= 2x);
                                               ``multiprocessing.Value('q')``:
                                               ``with v.get_lock(): v.value += 1``
``c.sum()`` over 64 simulated CPUs             ``sum(a)`` of a ``multiprocessing.Array('q', 64)``
                                               under its lock
``free_percpu(__alloc_percpu(16, 8))``         ``SharedMemory(create=True, size=16*CPUs)``
                                               + close + unlink
=============================================  =============================================

The kernel's own figure (D. Zhou, "percpu: replace area map allocator with
bitmap allocator", 2017): 2^20 four-byte objects allocated then freed took
the bitmap allocator 490 ms to allocate and 70 ms to free (worst order);
2^20 four-byte objects with 8-byte alignment took about 16 s (the old area-map
allocator: 52 minutes).  Ours is printed beside it, for in-order and
reverse-order frees, from Python (one C call per object).  ``--quick`` runs
2^16 objects and scales the times by 16.

Run: ``python -m benchmarks.pcpu [--quick] [--json]``.  Exit status 1 if a
counter sum or the allocator's check is wrong.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from multiprocessing import shared_memory
from typing import Any

import percpu
from benchmarks._harness import Case, Row, Suite, bench_main, machine_info, pinned, print_table, print_targets
from percpu import _core
from percpu import kernel as K

ADD_TARGET = 2.0  # PerCpuCounter.add / noop, at most
KERNEL_ALLOC_MS = 490.0
KERNEL_FREE_MS = 70.0
KERNEL_ALIGN8_S = 16.0

CASES = ["c.add() vs noop", "c.add(1) vs noop", "c.add() vs mp.Value", "c.sum() 64 CPUs vs mp.Array",
         "__alloc_percpu+free_percpu vs SharedMemory"]


def _single(*, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    dom = percpu.Domain.create(size=64 << 20, nr_cpus=64)
    try:
        with dom:
            c = percpu.PerCpuCounter()
            v = multiprocessing.get_context("fork").Value("q", 0)
            arr = multiprocessing.get_context("fork").Array("q", 64)
            shm = shared_memory.SharedMemory

            def mp_sum() -> int:
                with arr.get_lock():
                    return sum(arr.get_obj())

            cases = [
                Case("noop", "noop()", {"noop": _core.noop}),
                Case("add", "add()", {"add": c.add}),
                Case("add1", "add(1)", {"add": c.add}),
                Case("mpvalue", "with lk:\n    v.value += 1", {"lk": v.get_lock(), "v": v}),
                Case("sum", "s()", {"s": c.sum}),
                Case("mpsum", "s()", {"s": mp_sum}),
                Case("alloc", "f(a(16, 8))", {"a": dom.arena.pcpu_alloc, "f": dom.arena.pcpu_free}),
                Case("kalloc", "f(a(16, 8))", {"a": K.__alloc_percpu, "f": K.free_percpu}, ctx=lambda: dom),
                Case("shm", "s = shm(create=True, size=1024)\ns.close()\ns.unlink()", {"shm": shm}),
            ]
            suite = Suite(cases, rounds=3 if quick else 11, repeat=2 if quick else 3,
                          target_ns=2_000_000 if quick else 10_000_000)
            with pinned(sorted(os.sched_getaffinity(0))[-1]):
                suite.run()
            m = suite.median
            rows = [
                Row("c.add()", m("add"), "_core.noop() (floor)", m("noop"), suite.ratio("noop", "add")),
                Row("c.add(1)", m("add1"), "_core.noop() (floor)", m("noop"), suite.ratio("noop", "add1")),
                Row("c.add()", m("add"), "mp.Value: with lock: v.value += 1", m("mpvalue"),
                    suite.ratio("mpvalue", "add")),
                Row("c.sum() over 64 CPUs", m("sum"), "sum(mp.Array('q', 64)) under its lock", m("mpsum"),
                    suite.ratio("mpsum", "sum")),
                Row("free_percpu(__alloc_percpu(16, 8))", m("kalloc"), "SharedMemory(1 KiB) create+unlink",
                    m("shm"), suite.ratio("shm", "kalloc")),
                Row("arena.pcpu_free(pcpu_alloc(16, 8))", m("alloc"), "SharedMemory(1 KiB) create+unlink",
                    m("shm"), suite.ratio("shm", "alloc")),
            ]
            expected = c.sum()  # every add of every timing landed on this CPU's copy
            ok = expected == sum(c.per_cpu().values()) and expected > 0
            dom.check()
            extra = {"add_over_noop": 1 / suite.ratio("noop", "add"), "counter_ok": ok,
                     "loop_ns": suite.loop_ns, "rounds": suite.rounds}
            c.free()
    finally:
        dom.close()
        dom.unlink()
    return rows, extra


def _kernel_workload(*, quick: bool) -> dict[str, Any]:
    """2^20 (quick: 2^16) 4-byte objects: allocate, free in order / in reverse; align 8."""
    n = 1 << (16 if quick else 20)
    scale = (1 << 20) / n
    out: dict[str, Any] = {"objects": n, "scaled_to_2_20_by": scale}
    dom = percpu.Domain.create(size=1 << 30, nr_cpus=2)
    try:
        a, f = dom.arena.pcpu_alloc, dom.arena.pcpu_free
        with pinned(sorted(os.sched_getaffinity(0))[-1]):
            for label, align, order in (("4B in-order free", 4, 1), ("4B reverse free", 4, -1),
                                        ("4B align 8", 8, 1)):
                t0 = time.perf_counter()
                ptrs = [a(4, align) for _ in range(n)]
                t1 = time.perf_counter()
                for p in ptrs[::order]:
                    f(p)
                t2 = time.perf_counter()
                if None in ptrs:
                    raise RuntimeError(f"{label}: an allocation failed")
                dom.arena.pcpu_balance()
                out[label] = {"alloc_ms": (t1 - t0) * 1e3 * scale, "free_ms": (t2 - t1) * 1e3 * scale,
                              "chunks_at_peak": None}
            dom.check()
            out["ok"] = dom.arena.pcpu_info()["nr_cur_alloc"] == 0
    finally:
        dom.close()
        dom.unlink()
    return out


def run(*, quick: bool) -> dict[str, Any]:
    t0 = time.monotonic()
    rows, extra = _single(quick=quick)
    kw = _kernel_workload(quick=quick)
    add_ratio = extra["add_over_noop"]
    return {
        "benchmark": "pcpu",
        "quick": quick,
        "machine": machine_info(),
        "ratio": "peer ns/op / ns/op, per round then median (above 1: percpu faster)",
        "cases": [r.to_json() for r in rows],
        "counter_ok": extra["counter_ok"],
        "kernel_workload": kw,
        "kernel_figures_ms": {"alloc": KERNEL_ALLOC_MS, "free": KERNEL_FREE_MS, "align8_s": KERNEL_ALIGN8_S},
        "targets": [{"name": "PerCpuCounter.add() / noop()", "ratio": add_ratio,
                     "target": f"<= {ADD_TARGET:g}x", "pass": add_ratio <= ADD_TARGET}],
        "seconds": time.monotonic() - t0,
    }


def _text(doc: dict[str, Any]) -> None:
    m = doc["machine"]
    print(f"percpu per-CPU allocator benchmark: Python {m['python']}, {m['cpu_count']} CPUs")
    print(f"ratio = {doc['ratio']}")
    print()
    print_table([Row(c["case"], c["ns_per_op"], c["peer"], c["peer_ns_per_op"], c["ratio"]) for c in doc["cases"]])
    print()
    kw = doc["kernel_workload"]
    print(f"The kernel's 2017 workload, {kw['objects']:,} objects"
          + (f" (times scaled x{kw['scaled_to_2_20_by']:g} to 2^20)" if kw["scaled_to_2_20_by"] != 1 else "")
          + ", from Python, one C call per object:")
    for label in ("4B in-order free", "4B reverse free", "4B align 8"):
        r = kw[label]
        print(f"  {label:<17} alloc {r['alloc_ms']:8.0f} ms  free {r['free_ms']:8.0f} ms")
    print(f"  kernel (bitmap allocator, 2017): alloc {KERNEL_ALLOC_MS:.0f} ms, free {KERNEL_FREE_MS:.0f} ms "
          f"(worst order); align 8: about {KERNEL_ALIGN8_S:.0f} s (area map: 52 minutes)")
    print_targets(doc)


def _failures(doc: dict[str, Any]) -> list[str]:
    errs = []
    if not doc["counter_ok"]:
        errs.append("the per-CPU counter's sum does not match its copies")
    if not doc["kernel_workload"]["ok"]:
        errs.append("objects left allocated after the kernel workload")
    return errs


def main(argv: list[str] | None = None) -> int:
    return bench_main(argv, "pcpu", __doc__.split("\n")[0], run, _text, _failures)


if __name__ == "__main__":
    sys.exit(main())
