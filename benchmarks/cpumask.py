"""Benchmark of CPU masks: parse and format, set algebra, bpf_cpumask kfuncs, the process's affinity.

Cases and the peers measured beside them in the same run:

==========================================  ==========================================
percpu                                      peer
==========================================  ==========================================
``Cpumask.parse_list(t, nr)`` of a 256-     ``topology.parse_cpulist(t)`` (the
and an 8192-CPU mask, sparse and dense      project's plain sysfs helper, a sorted
(``t`` the ``%*pbl`` text)                  tuple); a straightforward pure-Python
                                            parser (split on commas, ranges) building
                                            a ``set[int]``
``Cpumask.parse_mask(t, nr)`` (``t`` the    ``int(t.replace(",", ""), 16)``, the
``%*pb`` text)                              one-liner a user writes
``m.format_list()``                         ``topology.format_cpulist(cpus)`` of the
                                            sorted tuple
``m.format_mask()``                         ``format(bits, "0{w}x")`` cut into groups
                                            of 8 and joined with commas
``a | b``, ``a & b``, ``a - b``, ``a <=     the same on ``frozenset[int]``
c``, ``len(a)``, 8192-CPU masks
``m.test_cpu(5)``, ``m.set_cpu(5)``,        ``_core.noop()`` (the floor of a C
``kernel.bpf_cpumask_test_cpu(5, m)``,      extension call)
``kernel.bpf_cpumask_weight(m)``, ``m =
kernel.bpf_cpumask_create()`` in a 64-CPU
domain
``Cpumask.of_process()``                    ``os.sched_getaffinity(0)``;
                                            ``psutil.Process().cpu_affinity()`` when
                                            psutil is importable
==========================================  ==========================================

The masks: "sparse" is ``0-{nr-1}:2/6`` (a third of the CPUs, in runs of two:
``0-1,6-7,12-13,...``), "dense" is ``0-{nr-1}:15/16`` (one CPU missing in
every 16: ``0-14,16-30,...``).  Every parser is given the same canonical text
(``format_list()`` / ``format_mask()`` of the mask), since the plain peers do
not know the ``used/group`` form.  The algebra uses ``a`` = sparse, ``b`` =
dense and, for the subset test, ``c = a | b`` (so ``a <= c`` is true and the
``frozenset`` walks every element of ``a``; against ``b`` it would stop at the
first miss).

psutil: ``psutil._pslinux`` parses sysfs CPU lists only in private helpers;
psutil has no public CPU-list parser or formatter, so it is no peer of the
parse and format cases.  It is a peer of the affinity case only, when it is
installed (it is not a dependency; nothing is installed for the benchmark).

All cases but the affinity ones are timed in one suite of interleaved rounds
(see :mod:`benchmarks._harness`) in one process pinned to one CPU, inside
``with dom:`` of a 64-CPU simulated domain (``Domain.create(size=16 << 20,
nr_cpus=64)``), unlinked in ``finally``.  The affinity cases are timed in a
suite of their own, unpinned and with no domain current, so that the mask
read is this process's real affinity over the machine's CPUs.

Target (from the issue): a kfunc call on a ``BpfCpumask`` within 2x of a
no-op C-extension call (``_core.noop()``), judged for each of the four calls
on its own line.  The four are C entry points (the methods of the C handle and the facade
functions).

Checks, before timing: every parser gives the same CPUs, ``format_list()`` and
``format_cpulist`` print the parsed text back, ``parse_mask`` and the peer
give the same bits, ``format_mask()`` and the peer the same text; the
algebra agrees with ``frozenset``; after ``m.set_cpu(5)``, ``test_cpu(5)``
and ``bpf_cpumask_test_cpu(5, m)`` are true and the weight is 1; ``of_process()``
equals ``os.sched_getaffinity(0)`` (and psutil's list, if present).

Run: ``python -m benchmarks.cpumask [--quick] [--json]``.  Exit status 1 if
a check fails.
"""

from __future__ import annotations

import os
import sys
import time
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
)
from percpu import Cpumask, _core
from percpu.runtime.topology import format_cpulist, parse_cpulist

try:
    import psutil  # type: ignore[import-untyped]
except ImportError:  # not a dependency
    psutil = None

KFUNC_TARGET = 2.0  # a kfunc call / one noop() call, at most

DOMAIN_SIZE = 16 << 20
DOMAIN_CPUS = 64
NRS = (256, 8192)
SHAPES = {"sparse": "2/6", "dense": "15/16"}  # used/group over 0-{nr-1}
ALGEBRA_NR = 8192
KFUNC_CPU = 5

PARSE_KINDS = [
    # (case label, percpu case key, peer label, peer case key)
    ("parse_list vs parse_cpulist", "parse_list", "topology.parse_cpulist(t)", "parse_cpulist"),
    ("parse_list vs set parser", "parse_list", "pure-Python split/range -> set[int]", "py_parse"),
    ("parse_mask vs int(hex)", "parse_mask", 'int(t.replace(",", ""), 16)', "int_hex"),
    ("format_list vs format_cpulist", "format_list", "topology.format_cpulist(cpus)", "format_cpulist"),
    ("format_mask vs format(hex)", "format_mask", 'format(bits, "0{w}x") + commas', "py_hex"),
]
PARSE_CASES = [f"{k[0].split(' vs ')[0]} {nr} {shape} vs {k[0].split(' vs ')[1]}"
               for nr in NRS for shape in SHAPES for k in PARSE_KINDS]
ALGEBRA_OPS = [("a | b", "a | b"), ("a & b", "a & b"), ("a - b", "a - b"), ("a <= c", "a <= c"),
               ("len(a)", "len(a)")]
ALGEBRA_CASES = [f"{label} ({ALGEBRA_NR} CPUs)" for label, _ in ALGEBRA_OPS]
KFUNC_STMTS = [
    ("m.test_cpu(5)", "m.test_cpu(5)"),
    ("m.set_cpu(5)", "m.set_cpu(5)"),
    ("bpf_cpumask_test_cpu(5, m)", "test_cpu(5, m)"),
    ("bpf_cpumask_weight(m)", "weight(m)"),
]
KFUNC_CASES = [label for label, _ in KFUNC_STMTS]
AFFINITY_CASES = ["Cpumask.of_process() vs os.sched_getaffinity(0)"] + (
    ["Cpumask.of_process() vs psutil cpu_affinity()"] if psutil is not None else []
)


def py_parse(text: str) -> set[int]:
    """The pure-Python peer: what a user writes for ``0-3,8``-style text."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if "-" in part:
            a, b = part.split("-")
            cpus.update(range(int(a), int(b) + 1))
        elif part:
            cpus.add(int(part))
    return cpus


def py_hex(bits: int, w: int) -> str:
    """The pure-Python peer of ``%*pb`` for a width that is a multiple of 32."""
    h = format(bits, f"0{w}x")
    return ",".join([h[i : i + 8] for i in range(0, len(h), 8)])


def _mask(nr: int, shape: str) -> Cpumask:
    return Cpumask.parse_list(f"0-{nr - 1}:{SHAPES[shape]}", nr)


# ---- 1 and 2: parse/format, algebra ----------------------------------------------


def _parse_cases(errors: list[str]) -> list[Case]:
    cases: list[Case] = []
    for nr in NRS:
        for shape in SHAPES:
            m = _mask(nr, shape)
            tl, tm = m.format_list(), m.format_mask()
            cpus = parse_cpulist(tl)
            w = nr // 4
            what = f"{nr} {shape}"
            if set(Cpumask.parse_list(tl, nr)) != set(cpus) or py_parse(tl) != set(cpus) or set(m) != set(cpus):
                errors.append(f"{what}: the list parsers disagree")
            if format_cpulist(cpus) != tl or Cpumask.parse_list(tl, nr).format_list() != tl:
                errors.append(f"{what}: the list formatters do not print the text back")
            if Cpumask.parse_mask(tm, nr) != m or int(tm.replace(",", ""), 16) != m.bits:
                errors.append(f"{what}: the mask parsers disagree")
            if py_hex(m.bits, w) != tm:
                errors.append(f"{what}: format_mask() {tm[:20]!r}... != the peer's")
            env = {"Cpumask": Cpumask, "t": tl, "nr": nr}
            cases += [
                Case(f"parse_list {what}", "Cpumask.parse_list(t, nr)", env),
                Case(f"parse_cpulist {what}", "parse_cpulist(t)", {"parse_cpulist": parse_cpulist, "t": tl}),
                Case(f"py_parse {what}", "py_parse(t)", {"py_parse": py_parse, "t": tl}),
                Case(f"parse_mask {what}", "Cpumask.parse_mask(t, nr)", {"Cpumask": Cpumask, "t": tm, "nr": nr}),
                Case(f"int_hex {what}", 'int(t.replace(",", ""), 16)', {"t": tm}),
                Case(f"format_list {what}", "m.format_list()", {"m": m}),
                Case(f"format_cpulist {what}", "format_cpulist(cpus)", {"format_cpulist": format_cpulist,
                                                                         "cpus": cpus}),
                Case(f"format_mask {what}", "m.format_mask()", {"m": m}),
                Case(f"py_hex {what}", "py_hex(bits, w)", {"py_hex": py_hex, "bits": m.bits, "w": w}),
            ]
    return cases


def _algebra_cases(errors: list[str]) -> list[Case]:
    a, b = _mask(ALGEBRA_NR, "sparse"), _mask(ALGEBRA_NR, "dense")
    c = a | b
    fa, fb, fc = frozenset(a), frozenset(b), frozenset(c)
    if not (set(a | b) == fa | fb and set(a & b) == fa & fb and set(a - b) == fa - fb
            and (a <= c) == (fa <= fc) is True and len(a) == len(fa)):
        errors.append("the mask algebra disagrees with frozenset")
    cases: list[Case] = []
    for label, stmt in ALGEBRA_OPS:
        cases.append(Case(f"mask {label}", f"x = {stmt}", {"a": a, "b": b, "c": c}))
        cases.append(Case(f"frozenset {label}", f"x = {stmt}", {"a": fa, "b": fb, "c": fc}))
    return cases


# ---- 3: kfuncs -------------------------------------------------------------------


def _kfunc_cases(m: percpu.BpfCpumask, errors: list[str]) -> list[Case]:
    k = percpu.kernel
    m.set_cpu(KFUNC_CPU)
    if not (m.test_cpu(KFUNC_CPU) and k.bpf_cpumask_test_cpu(KFUNC_CPU, m) and k.bpf_cpumask_weight(m) == 1):
        errors.append(f"after m.set_cpu({KFUNC_CPU}): test_cpu/bpf_cpumask_test_cpu/weight disagree")
    env = {"m": m, "test_cpu": k.bpf_cpumask_test_cpu, "weight": k.bpf_cpumask_weight}
    return [Case("noop", "noop()", {"noop": _core.noop})] + [
        Case(label, stmt, dict(env)) for label, stmt in KFUNC_STMTS
    ]


def _single(*, quick: bool) -> tuple[list[Row], list[Row], list[Row], dict[str, Any]]:
    errors: list[str] = []
    dom = percpu.Domain.create(size=DOMAIN_SIZE, nr_cpus=DOMAIN_CPUS)
    try:
        with dom:
            m = percpu.kernel.bpf_cpumask_create()
            if m is None:
                raise MemoryError("bpf_cpumask_create() returned None")
            try:
                cpu = max(os.sched_getaffinity(0))
                cases = _parse_cases(errors) + _algebra_cases(errors) + _kfunc_cases(m, errors)
                suite = Suite(
                    cases,
                    rounds=3 if quick else 15,
                    repeat=2 if quick else 3,
                    target_ns=2_000_000 if quick else 8_000_000,
                )
                with pinned(cpu):
                    suite.run()
                if not m.test_cpu(KFUNC_CPU) or len(m) != 1:
                    errors.append(f"after the timings the mask is {m.cpumask().format_list()!r}")
            finally:
                m.release()
    finally:
        try:
            dom.unlink()
        finally:
            dom.close()

    m_ = suite.median

    def row(case: str, mine: str, peer_label: str, peer: str) -> Row:
        return Row(case, m_(mine), peer_label, m_(peer), suite.ratio(peer, mine))

    parse_rows = []
    for nr in NRS:
        for shape in SHAPES:
            what = f"{nr} {shape}"
            for label, mine, peer_label, peer in PARSE_KINDS:
                mine_l, peer_l = label.split(" vs ")
                parse_rows.append(row(f"{mine_l} {what} vs {peer_l}", f"{mine} {what}", peer_label, f"{peer} {what}"))
    algebra_rows = [row(name, f"mask {label}", f"frozenset: {label}", f"frozenset {label}")
                    for name, (label, _) in zip(ALGEBRA_CASES, ALGEBRA_OPS)]
    kfunc_rows = [row(label, label, "_core.noop() (C floor)", "noop") for label in KFUNC_CASES]
    info = {
        "cpu": cpu,
        "rounds": suite.rounds,
        "loop_overhead_ns": median(suite.loop_ns),
        "noop_ns": m_("noop"),
        "kfunc_over_noop": {label: suite.ratio(label, "noop") for label in KFUNC_CASES},
        "errors": errors,
        "ok": not errors,
    }
    return parse_rows, algebra_rows, kfunc_rows, info


# ---- 4: affinity -----------------------------------------------------------------


def _affinity(*, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    errors: list[str] = []
    mine = set(Cpumask.of_process())
    if mine != os.sched_getaffinity(0):
        errors.append(f"of_process() {sorted(mine)} != os.sched_getaffinity(0)")
    cases = [
        Case("of_process", "Cpumask.of_process()", {"Cpumask": Cpumask}),
        Case("sched_getaffinity", "sched_getaffinity(0)", {"sched_getaffinity": os.sched_getaffinity}),
    ]
    if psutil is not None:
        proc = psutil.Process()
        if set(proc.cpu_affinity()) != mine:
            errors.append("of_process() != psutil.Process().cpu_affinity()")
        cases.append(Case("psutil", "p.cpu_affinity()", {"p": proc}))
    suite = Suite(cases, rounds=3 if quick else 15, repeat=2 if quick else 3,
                  target_ns=2_000_000 if quick else 8_000_000)
    suite.run()
    rows = [Row(AFFINITY_CASES[0], suite.median("of_process"), "os.sched_getaffinity(0)",
                suite.median("sched_getaffinity"), suite.ratio("sched_getaffinity", "of_process"))]
    if psutil is not None:
        rows.append(Row(AFFINITY_CASES[1], suite.median("of_process"), "psutil.Process().cpu_affinity()",
                        suite.median("psutil"), suite.ratio("psutil", "of_process")))
    info = {
        "cpus": len(mine),
        "rounds": suite.rounds,
        "psutil": getattr(psutil, "__version__", None),
        "errors": errors,
        "ok": not errors,
    }
    return rows, info


# ---- main -------------------------------------------------------------------


def run(*, quick: bool) -> dict[str, Any]:
    t_start = time.monotonic()
    parse_rows, algebra_rows, kfunc_rows, single = _single(quick=quick)
    aff_rows, affinity = _affinity(quick=quick)
    targets = [
        {
            "name": f"{label} / noop()",
            "value": v,
            "target": f"<= {KFUNC_TARGET:g}x",
            "pass": v <= KFUNC_TARGET,
        }
        for label, v in single["kfunc_over_noop"].items()
    ]
    return {
        "benchmark": "cpumask",
        "quick": quick,
        "machine": machine_info(),
        "masks": {shape: f"0-{{nr-1}}:{SHAPES[shape]}" for shape in SHAPES},
        "ratio": "peer ns/op / ns/op, per round then median (above 1: percpu faster)",
        "cases": [r.to_json() for r in parse_rows + algebra_rows + kfunc_rows + aff_rows],
        "single": single,
        "affinity": affinity,
        "ok": bool(single["ok"] and affinity["ok"]),
        "targets": targets,
        "seconds": time.monotonic() - t_start,
    }


def _print_text(doc: dict[str, Any]) -> None:
    m = doc["machine"]
    s = doc["single"]
    a = doc["affinity"]
    print(
        f"percpu cpumask benchmark: Python {m['python']}, {m['cpu_count']} CPUs "
        f"(affinity {m['affinity']}); masks: sparse {doc['masks']['sparse']}, dense {doc['masks']['dense']}"
    )
    print(
        f"{s['rounds']} interleaved rounds pinned to CPU {s['cpu']}, loop overhead "
        f"{s['loop_overhead_ns']:.1f} ns subtracted; ratio = {doc['ratio']}"
    )

    def rows(names: list[str]) -> list[Row]:
        return [Row(c["case"], c["ns_per_op"], c["peer"], c["peer_ns_per_op"], c["ratio"])
                for c in doc["cases"] if c["case"] in names]

    print("\n1. parse and format (the canonical %*pbl / %*pb text of each mask)")
    print_table(rows(PARSE_CASES))
    print("  psutil: no public CPU-list parser or formatter (only private helpers in psutil._pslinux): no peer")
    print(f"\n2. set algebra, {ALGEBRA_NR}-CPU masks (a sparse, b dense, c = a | b)")
    print_table(rows(ALGEBRA_CASES))
    print(f"\n3. kfuncs on a BpfCpumask, {DOMAIN_CPUS}-CPU domain")
    print_table(rows(KFUNC_CASES))
    print(f"  (noop() = {s['noop_ns']:.1f} ns; methods and facade calls are C entry points)")
    print(f"\n4. this process's affinity ({a['cpus']} CPUs), {a['rounds']} rounds, unpinned, no domain current")
    print_table(rows(AFFINITY_CASES))
    if a["psutil"] is None:
        print("  psutil not installed: no psutil peer")
    print(f"  checks before timing: {'OK' if doc['ok'] else 'WRONG'}")
    print()
    print_targets(doc)


def _failures(doc: dict[str, Any]) -> list[str]:
    return [*doc["single"]["errors"], *doc["affinity"]["errors"]]


def main(argv: list[str] | None = None) -> int:
    return bench_main(argv, "cpumask", __doc__.split("\n")[0], run, _print_text, _failures)


if __name__ == "__main__":
    sys.exit(main())
