"""Smoke test of ``python -m benchmarks.cpumap --quick --json`` (and of the text table).

Checks only that the benchmark runs, reports a row per (mechanism, frames per
poll) and, end to end, per (program, producer placement) with positive
figures and the JSON keys the tables are built from, and that its
correctness checks passed (every frame sent was received, less the drops it
reports; the magic in the first 8 bytes arrived).  No timing
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

    from benchmarks.cpumap import E2E_PLACES, E2E_PROGS, KS, MECHS, OURS_ALL

    assert doc["benchmark"] == "cpumap" and doc["quick"] is True
    h = doc["handoff"]
    assert h["errors"] == [] and h["ok"] is True, h["errors"]
    mechs = [m for m in MECHS if not (h.get("peers_missing") and m.startswith("pyzmq"))]
    assert [(r["mechanism"], r["frames_per_poll"]) for r in h["rows"]] == [(m, k) for k in KS for m in mechs]
    for r in h["rows"]:
        for key in ("ns_per_frame", "frames_per_s", "x_mp_queue", "x_best_other_peer"):
            assert r[key] > 0, (key, r)
        assert r["drops"] >= 0 and len(r["ns_per_frame_rounds"]) == h["rounds"], r
        if r["mechanism"] in OURS_ALL:
            assert r["kernel_hop_ns"] == [24.0, 34.0] and all(x > 0 for x in r["x_kernel_hop"]), r
    e = doc["end_to_end"]
    n_targets = 5
    if "skipped" not in e:
        assert e["errors"] == [] and e["ok"] is True, e["errors"]
        assert [(r["program"], r["producer"]) for r in e["rows"]] == [(p, pl) for p in E2E_PROGS for pl in E2E_PLACES]
        for r in e["rows"]:
            for key in ("rx_per_s", "delivered_per_s", "ns_per_frame"):
                assert r[key] > 0, (key, r)
            assert r["drops"] >= 0 and r["delivered"] > 0, r
            assert set(r["delivered_per_cpu"]) == {str(c) for c in e["cpus"]}, r
            assert r["delivered"] + r["drop_detail"]["ring_and_worker"] <= r["rx"], r
        n_targets += 3
    assert doc["ok"] is True
    assert len(doc["targets"]) == n_targets
    for t in doc["targets"]:
        assert t["value"] > 0 and isinstance(t["pass"], bool), t


def test_cpumap_benchmark_quick_text() -> None:
    proc = _run()
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for word in ("percpu cpumap (XdpRxQueue.poll, C program)", "percpu cpumap (XdpEngine.poll)",
                 "multiprocessing.Queue", "multiprocessing.SimpleQueue",
                 "ns/frame", "frames/s", "drops", "kernel cpumap hop 24–34 ns/packet",
                 "2. end to end", "l4-hash batch program (numpy)", "l4-hash C built-in",
                 "per-frame Python program", "delivered/s"):
        assert word in out, word
    assert sum(line.startswith("target ") for line in out.splitlines()) == 8
