"""``percpu freelist ls | show``."""

from __future__ import annotations

import json

from click.testing import CliRunner

import percpu
from percpu.cli.main import cli
from percpu.freelist import PcpuFreelist


def test_freelist_show_and_ls(make_domain):
    dom = make_domain(size=4 << 20, nr_cpus=4)
    s = PcpuFreelist.create(name="cli.fl")
    buf = dom.kzalloc(64 * 10)
    s.populate(buf, 64, 10)
    with percpu.on_cpu(0):
        s.pop()
    res = CliRunner().invoke(cli, ["-j", "freelist", "show", "cli.fl", "-d", dom.name])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["free"] == 9 and data["check"] == "ok" and data["checked_free"] == 9
    assert data["per_cpu"] == [{"cpu": 0, "free": 2}, {"cpu": 1, "free": 3}, {"cpu": 2, "free": 2},
                               {"cpu": 3, "free": 2}]
    assert data["area"] == {"base": buf, "elem_size": 64, "nr_elems": 10}
    res = CliRunner().invoke(cli, ["freelist", "show", "cli.fl", "-d", dom.name])
    assert res.exit_code == 0 and "9 free of 10" in res.output and "\x1b[" not in res.output
    res = CliRunner().invoke(cli, ["-j", "freelist", "ls", "-d", dom.name])
    assert [r["name"] for r in json.loads(res.output)] == ["cli.fl"]
    res = CliRunner().invoke(cli, ["-j", "freelist", "show", "nope", "-d", dom.name])
    assert res.exit_code == 1 and json.loads(res.output)["errno"] == "ENOENT"
