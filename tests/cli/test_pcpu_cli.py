"""``percpu pcpu stats | show``."""

from __future__ import annotations

import json

from click.testing import CliRunner

import percpu
from percpu import kernel as K
from percpu.cli.main import cli


def test_pcpu_stats_is_the_kernel_text_and_json(make_domain):
    dom = make_domain(size=8 << 20, nr_cpus=4)
    ptrs = [K.__alloc_percpu(s, 4) for s in (4, 16, 100)]
    res = CliRunner().invoke(cli, ["pcpu", "stats", "-d", dom.name])
    assert res.exit_code == 0, res.output
    assert res.output == percpu.pcpu.stats_text(dom)
    assert res.output.startswith("Percpu Memory Statistics\nAllocation Info:\n")
    assert "Chunk: <- First Chunk" in res.output and "Chunk: <- Reserved Chunk" in res.output
    res = CliRunner().invoke(cli, ["-j", "pcpu", "stats", "-d", dom.name])
    data = json.loads(res.output)
    assert set(data) == {"alloc_info", "global", "chunks"}
    assert data["global"]["nr_cur_alloc"] == 3 and data["alloc_info"]["unit_size"] == 40960
    for p in ptrs:
        K.free_percpu(p)


def test_pcpu_show_chunks_pages_and_groups(make_domain):
    dom = make_domain(size=8 << 20, nr_cpus=4)
    res = CliRunner().invoke(cli, ["-j", "pcpu", "show", "-d", dom.name])
    assert res.exit_code == 0 and json.loads(res.output)["setup"] is False
    g = percpu.memcg.Group("cli.g", 1 << 20)
    with g:
        p = K.__alloc_percpu(64, 8)
    res = CliRunner().invoke(cli, ["-j", "pcpu", "show", "-d", dom.name])
    data = json.loads(res.output)
    assert data["setup"] is True
    assert [c["label"] for c in data["chunks"]][:2] == ["reserved", "first"]
    first = data["chunks"][1]
    assert first["populated"] == "#" * first["nr_pages"] and first["nr_alloc"] == 1
    assert data["memcg"][0]["name"] == "cli.g" and data["memcg"][0]["usage"] == g.usage > 0
    res = CliRunner().invoke(cli, ["pcpu", "show", "-d", dom.name])
    assert res.exit_code == 0 and "first" in res.output and "cli.g" in res.output
    K.free_percpu(p)
    res = CliRunner().invoke(cli, ["-j", "pcpu", "show", "-d", "no-such-domain"])
    assert res.exit_code == 1 and json.loads(res.output)["errno"] == "ENOENT"
