"""Smoke test of ``python -m benchmarks.pcpu --quick --json``.

Checks that the benchmark runs, reports every case (and every row of the
kernel-workload table) with positive figures, and that its correctness
checks passed: the counter's sum exact, nothing left allocated, every
allocation of the kernel workload distinct and freed, ``dom.check()`` clean.
No timing assertion: speed is what the benchmark prints, not what a test
judges.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_pcpu_benchmark_quick_json() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.pcpu", "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)

    from benchmarks.pcpu import CASES, FREE_ORDERS, KERNEL_CASES, NR_CPUS

    assert doc["benchmark"] == "pcpu" and doc["quick"] is True
    cases = {c["case"]: c for c in doc["cases"]}
    assert list(cases) == CASES
    for c in cases.values():
        assert c["ns_per_op"] > 0, c
        assert c["peer_ns_per_op"] > 0, c
        assert c["ratio"] > 0, c

    single = doc["single"]
    assert single["nr_cpus"] == NR_CPUS
    assert single["counter_ok"] is True
    assert single["counter_sum"] > 0
    assert len(single["counter_copies_nonzero"]) >= 1
    assert single["left_allocated"] == 0
    assert single["check"] is None
    assert single["ok"] is True
    for key in ("noop_ns", "add_over_noop", "add1_over_noop", "sum_ns"):
        assert single[key] > 0, key

    w = doc["kernel_workload"]
    assert w["objects"] == 1 << 16 and w["scaled_to"] == 1 << 20 and w["scale"] == 16
    assert w["errors"] == [] and w["ok"] is True
    assert [r["case"] for r in w["rows"]] == KERNEL_CASES
    for r in w["rows"]:
        assert r["ns_per_op"] > 0 and r["peer_ns_per_op"] > 0 and r["ratio"] > 0, r
    ours = w["ours_ms"]
    assert ours["alloc_ms"] > 0 and ours["align8_alloc_ms"] > 0 and ours["align8_free_ms"] > 0
    assert set(ours["free_ms"]) == set(FREE_ORDERS)
    assert all(x > 0 for x in ours["free_ms"].values())
    assert len(w["phases"]) == len(FREE_ORDERS) + 1
    for p in w["phases"].values():
        assert p["alloc_ns"] > 0 and p["free_ns"] > 0 and p["chunks_at_peak"] >= 1, p
    assert doc["ok"] is True

    assert [t["name"] for t in doc["targets"]] == [
        "add() (PerCpuCounter.add, bound) / noop()",
        "add(1) (PerCpuCounter.add, bound) / noop()",
    ]
    for t in doc["targets"]:
        assert t["value"] > 0 and isinstance(t["pass"], bool), t
