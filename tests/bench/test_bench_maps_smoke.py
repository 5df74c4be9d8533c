"""Smoke test of ``python -m benchmarks.maps --quick --json --value-size 16``.

Checks that the benchmark runs, reports every case with positive figures
(ns/op, the peer's, the ratio, ops per second), the codec lookups, every
``bench htab-mem`` run with work from every producer and the memory figures
of the maps, and that its correctness checks passed: after every run the
map's ``check()`` found no leaked element and the element count the
operations imply, the no-prealloc allocator has as many objects out as the
map has elements, ``dom.check()`` passes, and the peers end with the same
counts.  ``--value-size`` reaches the maps.  No timing assertion: speed is
what the benchmark prints, not what a test judges.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_maps_benchmark_quick_json() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.maps", "--quick", "--json", "--value-size", "16"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)

    from benchmarks.maps import (
        CODEC_CASES,
        FLAVOURS,
        HTAB_CASES,
        KINDS,
        MAP_TYPES,
        OP_BATCH,
        OPS,
        SCENARIOS,
        SINGLE_CASES,
        max_entries_for,
    )

    assert doc["benchmark"] == "maps" and doc["quick"] is True
    assert doc["key_size"] == 4 and doc["value_size"] == 16
    assert doc["max_entries"] >= max_entries_for(1) == 8192
    single, multi = doc["single"], doc["multi"]
    expected = SINGLE_CASES + ([] if multi.get("skipped") else HTAB_CASES)
    cases = {c["case"]: c for c in doc["cases"]}
    assert sorted(cases) == sorted(expected) and len(cases) == len(doc["cases"])
    for c in cases.values():
        assert c["ns_per_op"] > 0, c
        assert c["peer_ns_per_op"] > 0, c
        assert c["ratio"] > 0, c
        assert c["ops_per_s"] > 0, c

    # 1: one process
    assert single["errors"] == [] and single["ok"] is True
    assert set(single["ratio_vs_manager"]) == {f"{t} {op}" for t in MAP_TYPES for op in OPS}
    assert all(r > 0 for r in single["ratio_vs_manager"].values())
    assert single["lowest_vs_manager"]["ratio"] == min(single["ratio_vs_manager"].values())
    assert set(single["codec_ns"]) == set(CODEC_CASES)
    assert all(x > 0 for x in single["codec_ns"].values())
    assert all(x > 0 for x in single["peer_ns"].values())
    for name in ("HashMap", "HashMap no-prealloc", "PercpuHashMap", "raw8", "struct", "numpy"):
        assert single["counts"][name] == {"elements": OP_BATCH, "leaked": 0}, name
    assert single["counts"]["Manager"] == OP_BATCH
    assert single["counts"]["shm table"] == [OP_BATCH, OP_BATCH]

    # 2: bench htab-mem on pinned processes
    if not multi.get("skipped"):
        assert multi["errors"] == [] and multi["ok"] is True
        nprod = multi["nr_producers"]
        assert nprod >= 2 and nprod % 2 == 0
        for s in SCENARIOS:
            for k in KINDS:
                runs = multi["runs"][s][k]
                assert len(runs) == multi["rounds"], (s, k)
                for r in runs:
                    assert r["errors"] == [], r["errors"]
                    assert len(r["results"]) == len(r["per_producer_ops_per_s"]) == nprod, (s, k)
                    assert all(x["ops"] > 0 and x["t1"] > x["t0"] for x in r["results"]), (s, k)
                    assert r["ops_per_s"] == sum(r["per_producer_ops_per_s"]) > 0, (s, k)
                    assert r["ns_per_op"] > 0 and r["samples"] > 0, (s, k)
                    if r["elements_expected"] is not None:
                        assert r["elements_end"] == r["elements_expected"], (s, k)
                    if s == "add_del_on_diff_cpu":
                        assert r["roles"] == ["add", "del"] * (nprod // 2)
                    else:
                        assert r["roles"] == ["both"] * nprod
                    if k in FLAVOURS:
                        mem = r["memory"]
                        assert 0 < mem["base_pages"] <= mem["before_pages"] <= mem["peak_pages"], (s, k, mem)
                        assert mem["end_pages"] <= mem["peak_pages"], (s, k, mem)
                        assert mem["peak_st_blocks_pages"] > 0, (s, k, mem)
                    if k == "no_prealloc":
                        assert r["memory"]["ma_after"]["outstanding"] == r["elements_end"], (s, r["memory"])
                sm = multi["summary"][s][k]
                assert sm["ops_per_s"] > 0 and sm["ns_per_op"] > 0
                assert len(sm["per_producer_ops_per_s"]) == nprod
                assert sm["memory_mib"], (s, k)
        b = multi["memory_bound"]
        assert b["prealloc_footprint_mib"] > 0 and b["no_prealloc_peak_mib"] > 0
        assert isinstance(b["bounded"], bool) and b["ratio"] > 0
    assert doc["ok"] is True

    names = [t["name"] for t in doc["targets"]]
    assert len(names) == (2 if not multi.get("skipped") else 1), names
    assert names[0].startswith("lookup/update vs Manager().dict()")
    for t in doc["targets"]:
        assert t["value"] > 0 and isinstance(t["pass"], bool), t


def test_maps_benchmark_rejects_bad_value_size() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.maps", "--quick", "--value-size", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout
    assert "value size must be in 1..4096" in proc.stderr
