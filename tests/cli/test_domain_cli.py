"""``percpu domain``: ls, show, check, rm, tour; JSON contract and plain output."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import percpu
from percpu.cli.main import cli


@pytest.fixture
def dom(make_domain):
    return make_domain(size=2 << 20, nr_cpus=8, current=False)


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.output


def test_ls_json_lists_our_domain(dom):
    code, out = run("-j", "domain", "ls")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    r = rows[dom.name]
    assert r["owner_pid"] == os.getpid() and r["owner_alive"] and not r["stale"]
    assert r["bytes"] == 2 << 20 and r["nr_cpu_ids"] == 8 and r["possible"] == "0-7"
    assert r["simulated"] is True
    assert r["populated_pages"] == dom.st_blocks_pages()


def test_ls_plain_has_no_escape_codes(dom):
    code, out = run("domain", "ls")
    assert code == 0
    assert "\x1b[" not in out
    assert out.splitlines()[0].split()[:2] == ["NAME", "SIZE"]
    assert any(line.startswith(dom.name) and "live" in line for line in out.splitlines())


def test_show_json_and_plain(dom):
    p = dom.kmalloc(100)
    dom.register("demo", "test", p, 100)
    code, out = run("-p", "domain", "show", dom.name)
    assert code == 0 and out.startswith("{\n")
    data = json.loads(out)
    assert data["name"] == dom.name and data["possible"] == "0-7"
    assert data["objects"] == [{"name": "demo", "kind": "test", "offset": p, "bytes": 100, "owner_pid": os.getpid()}]
    k128 = next(c for c in data["kmalloc"] if c["size"] == 128)
    assert k128["inuse"] == 1
    assert data["populated_pages"] == data["st_blocks_pages"]
    code, out = run("domain", "show", dom.name)
    assert code == 0 and "kmalloc-128" in out and "demo" in out


def test_show_unknown_is_json_error():
    code, out = run("-j", "domain", "show", "nope-" + os.urandom(3).hex())
    assert code == 1
    err = json.loads(out)
    assert err["errno"] == "ENOENT" and "no domain" in err["error"]


def test_check(dom):
    code, out = run("-j", "domain", "check", dom.name)
    assert code == 0 and json.loads(out)["ok"] is True


def _make_orphan(fd: int) -> None:
    d = percpu.Domain.create(size=1 << 20)
    os.write(fd, d.name.encode())
    os._exit(0)  # the creator dies without unlinking


def test_rm_stale_removes_only_orphans(dom):
    ctx = multiprocessing.get_context("fork")
    r, w = os.pipe()
    p = ctx.Process(target=_make_orphan, args=(w,))
    p.start()
    p.join(30)
    os.close(w)
    orphan = os.read(r, 200).decode()
    os.close(r)
    assert os.path.exists(f"/dev/shm/percpu.{orphan}")
    code, out = run("-j", "domain", "ls")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows[orphan]["stale"] is True and rows[dom.name]["stale"] is False
    code, out = run("-j", "domain", "rm", "--stale")
    assert code == 0
    assert orphan in json.loads(out)["removed"]
    assert not os.path.exists(f"/dev/shm/percpu.{orphan}")
    assert os.path.exists(dom.path)  # a live domain survives --stale


def test_rm_refuses_live_domain_without_force(dom):
    code, out = run("-j", "domain", "rm", dom.name)
    assert code == 1 and json.loads(out)["errno"] == "EBUSY"
    assert os.path.exists(dom.path)
    code, out = run("-j", "domain", "rm", "--force", dom.name)
    assert code == 0 and json.loads(out) == {"removed": [dom.name]}
    assert not os.path.exists(dom.path)


def test_rm_needs_an_argument():
    code, _ = run("domain", "rm")
    assert code == 2


@pytest.mark.timeout(120)
def test_tour_runs_real_workers_and_cleans_up():
    out = subprocess.run(
        [sys.executable, "-m", "percpu", "-j", "domain", "tour", "--rounds", "2000", "--method", "fork"],
        capture_output=True, text=True, timeout=100,
    )
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert rep["ok"] and rep["locked_counter"] == rep["expected"] == rep["sum"]
    assert len(rep["workers"]) >= 2 or len(os.sched_getaffinity(0)) == 1
    assert rep["populated_pages"] == rep["st_blocks_pages"]
    assert not os.path.exists(f"/dev/shm/percpu.{rep['domain']}")


def test_json_flags_are_accepted_after_the_command(dom):
    """bpftool takes -j/-p anywhere: `percpu domain show NAME -j` works like `percpu -j domain show NAME`."""
    code, out = run("domain", "show", dom.name, "-j")
    assert code == 0 and json.loads(out)["name"] == dom.name
    code, out = run("domain", "show", dom.name, "-p")
    assert code == 0 and out.startswith("{\n") and json.loads(out)["name"] == dom.name
    code, out = run("topology", "-j")
    assert code == 0 and "cpus" in json.loads(out)


def test_show_without_a_name_lists_all(dom):
    code, out = run("-j", "domain", "show")
    assert code == 0 and dom.name in {r["name"] for r in json.loads(out)}
