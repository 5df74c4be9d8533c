"""Smoke test of ``python -m benchmarks.pcpu --quick --json``: it runs, reports every case
with positive figures, and its correctness checks (counter sums, nothing left allocated) pass.
No timing assertion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_pcpu_benchmark_quick_json() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.pcpu", "--quick", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert len(doc["cases"]) == 6
    for c in doc["cases"]:
        assert c["ns_per_op"] > 0 and c["peer_ns_per_op"] > 0, c
    assert doc["counter_ok"] is True
    kw = doc["kernel_workload"]
    assert kw["ok"] is True and kw["objects"] == 1 << 16
    for label in ("4B in-order free", "4B reverse free", "4B align 8"):
        assert kw[label]["alloc_ms"] > 0 and kw[label]["free_ms"] > 0
    assert doc["targets"][0]["name"] == "PerCpuCounter.add() / noop()"
