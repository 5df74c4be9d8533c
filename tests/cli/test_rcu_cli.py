"""``percpu rcu show``: JSON keys, readers by CPU and pid, pending callbacks."""

from __future__ import annotations

import json
import os

from click.testing import CliRunner

from percpu import kernel
from percpu.cli.main import cli


def test_rcu_show_json_and_plain(make_domain):
    dom = make_domain(size=4 << 20)
    kernel.rcu_read_lock()
    try:
        kernel.call_rcu(lambda: None)
        kernel.start_poll_synchronize_rcu()  # a grace period in flight, held back by us
        res = CliRunner().invoke(cli, ["-j", "rcu", "show", dom.name])
        assert res.exit_code == 0, res.output
        data = json.loads(res.output)
        rcu = data["flavours"]["rcu"]
        assert rcu["gp_seq"] > rcu["gp_done"] and rcu["in_flight"] >= 1
        assert rcu["cbs_pending"] >= 1
        me = [r for r in data["readers"] if r["pid"] == os.getpid()]
        assert me and me[0]["inside"]["rcu"] and me[0]["alive"] and me[0]["nest"]["rcu"] == 1
        assert me[0]["cpu"] in os.sched_getaffinity(0)
        res = CliRunner().invoke(cli, ["rcu", "show", dom.name])
        assert res.exit_code == 0
        assert "inside rcu" in res.output and str(os.getpid()) in res.output and "\x1b[" not in res.output
    finally:
        kernel.rcu_read_unlock()
    kernel.rcu_barrier()
    data = json.loads(CliRunner().invoke(cli, ["-j", "rcu", "show", dom.name]).output)
    assert data["flavours"]["rcu"]["cbs_pending"] == 0


def test_rcu_show_unknown_domain():
    res = CliRunner().invoke(cli, ["-j", "rcu", "show", "nope-" + os.urandom(3).hex()])
    assert res.exit_code == 1 and json.loads(res.output)["errno"] == "ENOENT"
