"""Smoke test of ``python -m benchmarks.rcu --quick --json``.

Checks that the benchmark runs, reports every case with positive figures and
that the writer cases' leak check passed (``dom.check()``, kmalloc ``inuse``
back to its start, nothing pending, no reader saw a freed object).  No timing
assertion: speed is what the benchmark prints, not what a test judges.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_rcu_benchmark_quick_json() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.rcu", "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)

    from benchmarks.rcu import GP_CONFIGS, READ_CASES, SYNC_CONFIGS

    cases = {c["case"]: c for c in doc["cases"]}
    assert len(cases) == len(READ_CASES) + len(SYNC_CONFIGS)
    assert set(READ_CASES) <= set(cases)
    for c in cases.values():
        assert c["ns_per_op"] > 0, c
        assert c["peer_ns_per_op"] > 0, c
        assert c["ratio"] > 0, c
    for r in doc["read_ratios"].values():
        assert r > 0

    sync = doc["synchronize"]
    assert [(s["readers"], s["mode"]) for s in sync] == SYNC_CONFIGS
    for s in sync:
        assert s["calls"] > 0 and s["peer_acquires"] > 0, s
        for key in ("median_ns", "p99_ns", "peer_median_ns", "peer_p99_ns"):
            assert s[key] > 0, (key, s)
        if s["mode"] == "busy":
            assert s["reader_sections_per_s"] > 0 and s["peer_reader_sections_per_s"] > 0, s

    gps = doc["grace_periods"]
    assert [(g["variant"], g["readers"]) for g in gps] == GP_CONFIGS
    for g in gps:
        assert g["updates"] > 0 and g["updates_per_s"] > 0 and g["gps_per_s"] > 0, g
        if g["readers"]:
            assert g["reader_sections_per_s"] > 0, g
        assert g["leak_check_ok"] is True, g["errors"]
        assert g["kmalloc_inuse_end"] == g["kmalloc_inuse_start"], g
        assert g["use_after_free"] == 0, g
    assert doc["leak_check_ok"] is True

    (target,) = doc["targets"]
    assert target["name"] == "k.rcu_read_lock()+k.rcu_read_unlock() / noop"
    assert isinstance(target["pass"], bool)
