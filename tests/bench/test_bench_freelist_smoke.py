"""Smoke test of ``python -m benchmarks.freelist --quick --json``.

Checks that the benchmark runs, reports every case with positive figures and
that the node-count checks passed (``s.check()`` equal to the number of
elements after the single-process cases and after every multi-process run,
the shared-memory peer stack holding exactly its offsets).  No timing
assertion: speed is what the benchmark prints, not what a test judges.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_freelist_benchmark_quick_json() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.freelist", "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)

    from benchmarks.freelist import BULK_CASES, MP_CASES, NR_ELEMS, PAIR_CASES

    single, multi = doc["single"], doc["multi"]
    expected = PAIR_CASES + BULK_CASES + ([] if multi.get("skipped") else MP_CASES)
    cases = {c["case"]: c for c in doc["cases"]}
    assert list(cases) == expected
    for c in cases.values():
        assert c["ns_per_op"] > 0, c
        assert c["peer_ns_per_op"] > 0, c
        assert c["ratio"] > 0, c

    assert single["check"] == single["expected"] == NR_ELEMS
    assert single["peer_ok"] is True
    assert single["nodes_ok"] is True
    for key in ("method_pair_over_2noop", "bound_pair_over_2noop", "bulk_buf_ns_per_node",
                "bulk_list_ns_per_node"):
        assert single[key] > 0, key

    if not multi.get("skipped"):
        assert multi["errors"] == []
        assert multi["nodes_ok"] is True
        for kind in ("own", "steal", "peer", "floor"):
            for k in ("1", "2"):
                runs = multi[kind][k]
                assert len(runs) == multi["rounds"], (kind, k)
                for r in runs:
                    assert r["processes"] == int(k)
                    assert r["pairs_per_s"] > 0 and all(p > 0 for p in r["pairs"]), (kind, r)
            assert multi[f"{kind}_scaling"] > 0
    assert doc["nodes_ok"] is True

    names = [t["name"] for t in doc["targets"]]
    assert len(names) == (4 if not multi.get("skipped") else 3), names
    for t in doc["targets"]:
        assert t["value"] > 0 and isinstance(t["pass"], bool), t
