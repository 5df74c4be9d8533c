"""Smoke test of ``python -m benchmarks.runtime --quick --json``.

Checks that the benchmark runs, reports every case with a positive ns/op and
that the contended run's counter came out exact.  No timing assertion: speed
is what the benchmark prints, not what a test judges.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_runtime_benchmark_quick_json() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.runtime", "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)

    from benchmarks.runtime import CASES

    contended = doc["contended"]
    skipped = bool(contended.get("skipped"))
    expected = [c for c in CASES if not (skipped and c.startswith("contended"))]
    cases = {c["case"]: c for c in doc["cases"]}
    assert sorted(cases) == sorted(expected)
    for c in cases.values():
        assert c["ns_per_op"] > 0, c
        assert c["peer_ns_per_op"] > 0, c
        assert c["ratio"] > 0, c
    if not skipped:
        assert contended["counter_ok"] is True
        for r in contended["percpu_rounds"] + contended["peer_rounds"]:
            assert r["counter"] == r["expected"] == 2 * contended["iterations_per_process"]
    assert {t["name"] for t in doc["targets"]} == {
        "uncontended lock.lock()+lock.unlock() / noop",
        "SharedMemory(64) / kmalloc(64)+kfree",
    }
    assert all(isinstance(t["pass"], bool) for t in doc["targets"])
