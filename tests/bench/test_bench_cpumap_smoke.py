"""Smoke test of ``python -m benchmarks.cpumap --quick --json`` (and of the text table).

Checks only that the benchmark runs, reports a row per (mechanism, frames per
poll) with positive figures and the JSON keys the table is built from, and
that its correctness checks passed (every frame sent was received, less the
drops it reports; the magic in the first 8 bytes arrived).  No timing
assertion: speed is what the benchmark prints, not what a test judges.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the hand-off needs 2 CPUs")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.cpumap", "--quick", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_cpumap_benchmark_quick_json() -> None:
    proc = _run("--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)

    from benchmarks.cpumap import KS, MECHS

    assert doc["benchmark"] == "cpumap" and doc["quick"] is True
    h = doc["handoff"]
    assert h["errors"] == [] and h["ok"] is True, h["errors"]
    mechs = [m for m in MECHS if not (h.get("peers_missing") and m.startswith("pyzmq"))]
    assert [(r["mechanism"], r["frames_per_poll"]) for r in h["rows"]] == [(m, k) for k in KS for m in mechs]
    for r in h["rows"]:
        for key in ("ns_per_frame", "frames_per_s", "x_mp_queue", "x_best_other_peer"):
            assert r[key] > 0, (key, r)
        assert r["drops"] >= 0 and len(r["ns_per_frame_rounds"]) == h["rounds"], r
        if r["mechanism"] == MECHS[0]:
            assert r["kernel_hop_ns"] == [24.0, 34.0] and all(x > 0 for x in r["x_kernel_hop"]), r
    assert "skipped" in doc["end_to_end"] or doc["end_to_end"]["ok"] is True
    assert doc["ok"] is True
    assert len(doc["targets"]) == 5
    for t in doc["targets"]:
        assert t["value"] > 0 and isinstance(t["pass"], bool), t


def test_cpumap_benchmark_quick_text() -> None:
    proc = _run()
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for word in ("percpu cpumap", "multiprocessing.Queue", "multiprocessing.SimpleQueue",
                 "ns/frame", "frames/s", "drops", "kernel cpumap hop 24–34 ns/packet"):
        assert word in out, word
    assert sum(line.startswith("target ") for line in out.splitlines()) == 5
