"""Smoke test of ``python -m benchmarks.memalloc --quick --json``.

Checks that the benchmark runs, reports every case with positive figures
(ns/op, the peer's, the ratio, objects per second; peak memory for the
process cases) and that its correctness checks passed: after the pair and
mixed-size timings and after every process run ``ma.check()`` shows nothing
outstanding and ``created - released`` equal to what the caches hold,
``destroy()`` finds nothing left, kmalloc is back where it started, the ring
consumer freed every object the producer passed, and the reader never saw
an object reused inside its read-side section.  No timing assertion: speed
is what the benchmark prints, not what a test judges.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_memalloc_benchmark_quick_json() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.memalloc", "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)

    from benchmarks.memalloc import (
        HTAB_CASES,
        HTAB_KINDS,
        HTAB_USE_CASES,
        MIXED_CASES,
        NR_SIZES,
        PAIR_CASES,
        RCU_CASES,
        RCU_KINDS,
    )

    assert doc["benchmark"] == "memalloc" and doc["quick"] is True
    single, multi = doc["single"], doc["multi"]
    expected = PAIR_CASES + MIXED_CASES + ([] if multi.get("skipped") else RCU_CASES + HTAB_CASES)
    cases = {c["case"]: c for c in doc["cases"]}
    assert list(cases) == expected
    for c in cases.values():
        assert c["ns_per_op"] > 0, c
        assert c["peer_ns_per_op"] > 0, c
        assert c["ratio"] > 0, c
        assert c["ops_per_s"] > 0, c

    # 1 and 2: one process
    assert single["errors"] == [] and single["ok"] is True
    for key in ("fixed_after", "mixed_after"):
        st = single[key]
        assert st["outstanding"] == 0 and st["in_flight"] == 0, (key, st)
        assert st["created"] - st["released"] == st["cached"] > 0, (key, st)
    assert single["sizes"]["n"] == NR_SIZES
    assert len(single["sizes"]["per_bucket_unit"]) == 11  # every bucket of the size==0 flavour is used
    for key in ("two_noop_ns", "facade_pair_over_2noop", "bound_pair_over_2noop"):
        assert single[key] > 0, key

    # 3 and 4: pinned processes
    if not multi.get("skipped"):
        assert multi["errors"] == [] and multi["ok"] is True
        assert multi["reader_saw_reused"] == 0
        for kind in RCU_KINDS:
            assert multi["reader_sections_per_s"][kind] > 0, kind
        plan = [("free_rcu", RCU_KINDS)] + [(use, HTAB_KINDS) for use in HTAB_USE_CASES]
        for use, kinds in plan:
            for kind in kinds:
                runs = multi["runs"][use][kind]
                assert len(runs) == multi["rounds"], (use, kind)
                for r in runs:
                    assert r["errors"] == [], r["errors"]
                    assert r["ops"] > 0 and r["ops_per_s"] > 0 and r["samples"] > 0, (use, kind)
                    pages = r["populated_pages"]
                    assert 0 < pages["before"] <= pages["peak"], (use, kind, pages)
                    if kind == "ma":
                        assert r["after"]["outstanding"] == 0 and r["after"]["in_flight"] == 0, r["after"]
                        assert 0 < r["held"]["before"] <= r["held"]["peak"], r["held"]
                        assert r["held"]["after"] == r["after"]["cached"], r
                    if use == "add_del_on_diff_cpu":
                        produced, freed = r["results"][0][2], r["results"][1][2]
                        assert produced == freed > 0, (kind, produced, freed)
        for name in RCU_CASES + HTAB_CASES:
            mem = cases[name]["memory"]
            assert mem["peak_held"] > 0 and mem["peak_populated_kib"] >= 0, (name, mem)
            assert cases[name]["peer_memory"]["ops_per_s"] > 0, name
    assert doc["ok"] is True

    assert [t["name"] for t in doc["targets"]] == [
        "bpf_mem_cache_alloc(ma)+bpf_mem_cache_free(ma, p) / noop(); noop()",
        "alloc()+free(p) (bound ma.cache_alloc/cache_free) / noop(); noop()",
    ]
    for t in doc["targets"]:
        assert t["value"] > 0 and isinstance(t["pass"], bool), t
