"""Shared helpers of the benchmarks: timing, tables, JSON, pinned processes.

Timing follows the method of /work/shared/reference/peers.md: a case is a
statement compiled into a ``for`` loop whose names are fast locals (so a
bound method costs what it costs in a user's hot loop, not a global lookup),
timed with ``time.perf_counter_ns``.  One *round* times every case once
(best of ``repeat`` back-to-back timings of about ``target_ns`` each) and an
empty loop; the empty loop's per-iteration time is subtracted from every case
of the same round.  Rounds are interleaved, so slow drift of the host hits all
cases alike; a figure is the median over rounds, and a ratio is computed per
round and then the median taken (far more stable than a ratio of medians).

:func:`run_pinned` runs one function in N processes, each pinned to one CPU
with ``os.sched_setaffinity``, started from an explicit multiprocessing
context ("fork" by default: children inherit mappings and handles).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

__all__ = [
    "Case",
    "Row",
    "Suite",
    "dump_json",
    "machine_info",
    "median",
    "pinned",
    "print_table",
    "run_pinned",
]

_TEMPLATE = """\
def _inner(_n, _clock, _repeat{params}):
    _it = _repeat(None, _n)
    _t0 = _clock()
    for _ in _it:
{body}
    return _clock() - _t0
"""


def _compile_loop(stmt: str, names: Sequence[str]) -> Callable[..., int]:
    body = "\n".join("        " + line for line in stmt.strip("\n").splitlines())
    params = "".join(", " + n for n in names)
    ns: dict[str, Any] = {}
    exec(compile(_TEMPLATE.format(params=params, body=body), "<bench>", "exec"), ns)
    return ns["_inner"]  # type: ignore[no-any-return]


@dataclass
class Case:
    """One timed statement.

    ``stmt`` may span several lines (``"with lk:\\n    pass"``); every name it
    uses comes from ``env`` and becomes a fast local.  ``ctx``, if given, is
    entered around each timing (``with dom:`` for :mod:`percpu.kernel`).
    """

    name: str
    stmt: str
    env: dict[str, Any] = field(default_factory=dict)
    ctx: Callable[[], AbstractContextManager[Any]] | None = None
    number: int = 0  # iterations per timing, calibrated when 0

    def __post_init__(self) -> None:
        self._loop = _compile_loop(self.stmt, list(self.env))

    def time_ns(self, n: int) -> int:
        """Raw nanoseconds for ``n`` iterations (loop included)."""
        with self.ctx() if self.ctx is not None else nullcontext():
            return self._loop(n, time.perf_counter_ns, repeat, **self.env)

    def calibrate(self, target_ns: int) -> int:
        """Choose the iteration count so that one timing lasts about ``target_ns``."""
        n = 1
        while True:
            t = self.time_ns(n)
            if t >= target_ns or n >= 1 << 30:
                break
            n = min(n * 10, max(n * 2, int(n * target_ns / max(t, 1) * 1.2)))
        self.number = n
        return n


class Suite:
    """Interleaved rounds over a list of cases, with an empty loop per round."""

    EMPTY = "__empty__"

    def __init__(self, cases: Sequence[Case], *, rounds: int, repeat: int, target_ns: int):
        self.cases = list(cases)
        self.rounds = rounds
        self.repeat = repeat
        self.target_ns = target_ns
        self.empty = Case(self.EMPTY, "pass")
        #: per case name: net ns/op of each round
        self.net: dict[str, list[float]] = {c.name: [] for c in self.cases}
        self.loop_ns: list[float] = []

    def run(self) -> None:
        for c in [self.empty, *self.cases]:
            c.calibrate(self.target_ns)
        for _ in range(self.rounds):
            loop = min(self.empty.time_ns(self.empty.number) for _ in range(self.repeat))
            per_loop = loop / self.empty.number
            self.loop_ns.append(per_loop)
            for c in self.cases:
                best = min(c.time_ns(c.number) for _ in range(self.repeat))
                self.net[c.name].append(best / c.number - per_loop)

    def median(self, name: str) -> float:
        return statistics.median(self.net[name])

    def ratio(self, num: str, den: str) -> float:
        """Median over rounds of ``num / den`` taken within each round."""
        return statistics.median(a / b for a, b in zip(self.net[num], self.net[den]))


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


# ---- output -----------------------------------------------------------------


@dataclass
class Row:
    """One line of the table: a percpu case beside its peer.

    ``ratio`` is peer ns/op divided by ns/op, per round then median: above 1
    means percpu is faster.
    """

    case: str
    ns: float
    peer: str
    peer_ns: float
    ratio: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "ns_per_op": self.ns,
            "peer": self.peer,
            "peer_ns_per_op": self.peer_ns,
            "ratio": self.ratio,
            **self.extra,
        }


def _fmt_ns(ns: float) -> str:
    if ns >= 100_000:
        return f"{ns / 1000:,.0f} µs"
    if ns >= 10_000:
        return f"{ns / 1000:.1f} µs"
    if ns >= 100:
        return f"{ns:,.0f}"
    return f"{ns:.1f}"


def _fmt_ratio(r: float) -> str:
    return f"{r:,.0f}x" if r >= 100 else f"{r:.2f}x"


def print_table(rows: Sequence[Row], *, file: Any = None) -> None:
    """Print ``case | ns/op | peer | peer ns/op | ratio`` as an aligned text table."""
    out = file or sys.stdout
    head = ("case", "ns/op", "peer", "peer ns/op", "ratio")
    cells = [head] + [
        (r.case, _fmt_ns(r.ns), r.peer, _fmt_ns(r.peer_ns), _fmt_ratio(r.ratio)) for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    right = {1, 3, 4}

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)
        ).rstrip()

    print(line(head), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells[1:]:
        print(line(row), file=out)


def machine_info() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "cpu_count": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "machine": platform.machine(),
        "kernel": platform.release(),
    }


def dump_json(doc: dict[str, Any], *, file: Any = None) -> None:
    json.dump(doc, file or sys.stdout, indent=2, sort_keys=False)
    print(file=file or sys.stdout)


# ---- processes and CPUs ------------------------------------------------------


@contextmanager
def pinned(cpu: int) -> Iterator[None]:
    """Pin the calling process to ``cpu`` for the block, then restore its affinity."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


def _child(fn: Callable[..., Any], rank: int, cpu: int, barrier: Any, conn: Any, args: tuple[Any, ...]) -> None:
    try:
        os.sched_setaffinity(0, {cpu})
        result: tuple[str, Any] = ("ok", fn(rank, barrier, *args))
    except BaseException as e:  # report everything, including a broken barrier
        result = ("error", f"{type(e).__name__}: {e}")
        try:
            barrier.abort()
        except Exception:
            pass
    conn.send(result)
    conn.close()


def run_pinned(
    fn: Callable[..., Any],
    cpus: Sequence[int],
    *args: Any,
    start_method: str = "fork",
    timeout: float = 60.0,
) -> list[Any]:
    """Run ``fn(rank, barrier, *args)`` in one process per CPU of ``cpus``.

    Process ``rank`` is pinned to ``cpus[rank]`` before ``fn`` runs;
    ``barrier`` is a ``Barrier(len(cpus))`` of the same context for ``fn`` to
    line the processes up before timing.  With "fork" the arguments are
    inherited, not pickled.  Returns the results in rank order.

    Errors: :class:`RuntimeError` if a process raised, died, or did not finish
    within ``timeout`` seconds (it is killed then).
    """
    import multiprocessing

    ctx: Any = multiprocessing.get_context(start_method)
    barrier = ctx.Barrier(len(cpus))
    procs, conns = [], []
    for rank, cpu in enumerate(cpus):
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_child, args=(fn, rank, cpu, barrier, send, args), daemon=True)
        p.start()
        send.close()
        procs.append(p)
        conns.append(recv)
    deadline = time.monotonic() + timeout
    results: list[Any] = []
    errors: list[str] = []
    try:
        for rank, (_p, conn) in enumerate(zip(procs, conns)):
            left = max(0.0, deadline - time.monotonic())
            if not conn.poll(left):
                errors.append(f"process {rank} (CPU {cpus[rank]}) gave no result within {timeout} s")
                results.append(None)
                continue
            try:
                status, value = conn.recv()
            except EOFError:
                errors.append(f"process {rank} (CPU {cpus[rank]}) died")
                results.append(None)
                continue
            if status != "ok":
                errors.append(f"process {rank} (CPU {cpus[rank]}): {value}")
            results.append(value)
    finally:
        for p in procs:
            p.join(max(0.1, deadline - time.monotonic()) if not errors else 0.5)
            if p.is_alive():
                p.kill()
                p.join()
        for conn in conns:
            conn.close()
    if errors:
        raise RuntimeError("; ".join(errors))
    return results


def print_targets(doc: dict[str, Any]) -> None:
    """Print one ``target NAME: VALUE (target T): PASS|MISS`` line per target, then the run time."""
    for t in doc["targets"]:
        if "value" in t:
            unit = " ns" if "ns" in t["target"] else "x"
            shown = f"{t['value']:.2f}{unit}"
        else:
            shown = f"{t['ratio']:.2f}x"
        print(f"target {t['name']}: {shown} (target {t['target']}): {'PASS' if t['pass'] else 'MISS'}")
    print(f"({doc['seconds']:.1f} s)")


def bench_main(
    argv: list[str] | None,
    name: str,
    description: str,
    run: Callable[..., dict[str, Any]],
    print_text: Callable[[dict[str, Any]], None],
    failures: Callable[[dict[str, Any]], list[str]],
) -> int:
    """The command line every benchmark module shares: ``--json``, ``--quick``, exit 1 on a failed check.

    ``failures(doc)`` lists the correctness checks that failed (lost nodes, a
    wrong counter, a leak); they go to stderr and make the exit code 1.
    Missed speed targets never do: speed is reported, not asserted.
    """
    import argparse

    ap = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=description)
    ap.add_argument("--json", action="store_true", help="print a JSON document instead of the tables")
    ap.add_argument("--quick", action="store_true", help="few short rounds (CI smoke)")
    args = ap.parse_args(argv)
    doc = run(quick=args.quick)
    if args.json:
        dump_json(doc)
    else:
        print_text(doc)
    errors = failures(doc)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


# ---- domains of a benchmark ----------------------------------------------------------


def drop_domain(dom: Any) -> None:
    """Unlink and close a benchmark's domain (the close even if the unlink fails)."""
    try:
        dom.unlink()
    finally:
        dom.close()


def domain_check(dom: Any) -> str | None:
    """``dom.check()``: None if the domain is sound, else what is broken."""
    from percpu.errors import Corrupted

    try:
        dom.check()
    except Corrupted as e:
        return str(e)
    return None


def rows_named(cases: list[dict[str, Any]], names: list[str]) -> list[Row]:
    """The table rows of a JSON document's ``cases`` whose names are in ``names``."""
    return [Row(c["case"], c["ns_per_op"], c["peer"], c["peer_ns_per_op"], c["ratio"])
            for c in cases if c["case"] in names]

