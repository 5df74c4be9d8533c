"""``percpu memalloc ls | show``: per CPU and bucket counts, watermarks, RCU lists, ``-j``."""

from __future__ import annotations

import json

from click.testing import CliRunner

import percpu
from percpu.cli.main import cli
from percpu.memalloc import BpfMemAlloc


def test_memalloc_show_and_ls(make_domain):
    dom = make_domain(size=8 << 20, nr_cpus=2)
    ma = BpfMemAlloc(48, name="cli.ma")
    reader = percpu.rcu.read_lock_trace()
    reader.__enter__()  # a Tasks Trace reader: the free_rcu'd object cannot reach kmalloc yet
    with percpu.on_cpu(1):
        held = [ma.cache_alloc() for _ in range(3)]
        ma.cache_free_rcu(held.pop())
    res = CliRunner().invoke(cli, ["-j", "memalloc", "show", "cli.ma", "-d", dom.name])
    reader.__exit__(None, None, None)
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["check"] == "ok" and data["outstanding"] == 2 and data["flavour"] == "size 48"
    by_cpu = {c["cpu"]: c for c in data["caches"]}
    assert set(by_cpu) == {0, 1}
    c0, c1 = by_cpu[0], by_cpu[1]
    assert (c0["unit_size"], c0["low_watermark"], c0["high_watermark"], c0["batch"]) == (56, 32, 96, 48)
    assert c0["free_cnt"] == 4  # the prefill, untouched
    assert c1["nr_alloc"] == 3 and c1["nr_free"] == 1
    # the free_rcu'd object waits for a grace period on CPU 1's lists
    assert c1["free_by_rcu"] + c1["waiting_for_gp"] + c1["free_by_rcu_ttrace"] + c1["waiting_for_gp_ttrace"] >= 1
    assert data["cached"] == data["created"] - data["released"] - data["outstanding"]
    res = CliRunner().invoke(cli, ["memalloc", "show", "cli.ma", "-d", dom.name, "--cpu", "1"])
    assert res.exit_code == 0, res.output
    assert "2 allocated" in res.output and "WAIT_GP" in res.output and "check ok" in res.output
    assert "\x1b[" not in res.output
    res = CliRunner().invoke(cli, ["-j", "memalloc", "ls", "-d", dom.name])
    assert [r["name"] for r in json.loads(res.output)] == ["cli.ma"]
    res = CliRunner().invoke(cli, ["-j", "memalloc", "show", "nope", "-d", dom.name])
    assert res.exit_code == 1 and json.loads(res.output)["errno"] == "ENOENT"
    for p in held:
        ma.cache_free(p)
    ma.destroy(wait=True)
    res = CliRunner().invoke(cli, ["memalloc", "ls", "-d", dom.name])
    assert res.exit_code == 0 and "no BPF memory allocators" in res.output
