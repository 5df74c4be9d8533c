"""Smoke test of ``python -m benchmarks.cpumask --quick --json``.

Checks that the benchmark runs, reports every case with positive figures
(parse and format of the 256- and 8192-CPU masks, the set algebra beside
``frozenset``, the kfuncs beside ``_core.noop()``, the affinity read beside
``os.sched_getaffinity``) and that its checks before timing passed (every
parser gives the same CPUs, the formatters print the text back, the algebra
agrees with ``frozenset``, the kfuncs see the CPU set, ``of_process()`` is the
process's affinity).  No timing assertion: speed is what the benchmark
prints, not what a test judges.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cpumask_benchmark_quick_json() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.cpumask", "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)

    from benchmarks.cpumask import AFFINITY_CASES, ALGEBRA_CASES, KFUNC_CASES, PARSE_CASES

    assert doc["benchmark"] == "cpumask" and doc["quick"] is True
    assert len(PARSE_CASES) == 20 and len(ALGEBRA_CASES) == 5 and len(KFUNC_CASES) == 4
    cases = {c["case"]: c for c in doc["cases"]}
    assert list(cases) == PARSE_CASES + ALGEBRA_CASES + KFUNC_CASES + AFFINITY_CASES
    for c in cases.values():
        assert c["ns_per_op"] > 0, c
        assert c["peer_ns_per_op"] > 0, c
        assert c["ratio"] > 0, c

    single, affinity = doc["single"], doc["affinity"]
    assert single["errors"] == [] and single["ok"] is True
    assert affinity["errors"] == [] and affinity["ok"] is True
    assert affinity["cpus"] > 0
    assert single["noop_ns"] > 0
    assert doc["ok"] is True

    assert [t["name"] for t in doc["targets"]] == [f"{name} / noop()" for name in KFUNC_CASES]
    for t in doc["targets"]:
        assert t["value"] > 0 and isinstance(t["pass"], bool), t
    assert doc["seconds"] > 0
