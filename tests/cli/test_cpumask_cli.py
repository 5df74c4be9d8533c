"""``percpu cpumask show | convert | possible | online | affinity``."""

from __future__ import annotations

import json
import os

from click.testing import CliRunner

from percpu.cli.main import cli


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.output


def test_show_a_list_in_every_format():
    code, out = _run("-j", "cpumask", "show", "0-3,8,N", "-n", "64")
    assert code == 0, out
    d = json.loads(out)
    assert d["list"] == "0-3,8,63" and d["weight"] == 6 and d["nr_cpu_ids"] == 64
    assert d["mask"] == "80000000,0000010f" and d["cpus"] == [0, 1, 2, 3, 8, 63] and d["first"] == 0
    code, out = _run("cpumask", "show", "0-15:2/4", "-n", "16")
    assert code == 0 and "list:       0-1,4-5,8-9,12-13" in out and "weight:     8" in out


def test_convert_both_ways():
    assert _run("cpumask", "convert", "0-3,8", "--to", "mask", "-n", "64") == (0, "00000000,0000010f\n")
    assert _run("cpumask", "convert", "-m", "1,0", "--to", "list", "-n", "64") == (0, "32\n")
    assert _run("cpumask", "convert", "-m", "0x10f", "--to", "list", "-n", "32") == (0, "0-3,8\n")


def test_errors_carry_the_kernel_errno():
    for spec, nr, err in (("10-1", "8", "EINVAL"), ("0-8", "8", "ERANGE"), ("4294967296", "8", "EOVERFLOW")):
        code, out = _run("-j", "cpumask", "show", spec, "-n", nr)
        assert code == 1 and json.loads(out)["errno"] == err, (spec, out)
    code, out = _run("-j", "cpumask", "show", "-m", "00000000ff", "-n", "64")
    assert code == 1 and json.loads(out)["errno"] == "EOVERFLOW"


def test_possible_and_online_match_the_machine():
    code, out = _run("-j", "cpumask", "online")
    assert code == 0
    online = json.loads(out)["cpus"]
    assert set(os.sched_getaffinity(0)) <= set(online)
    code, out = _run("cpumask", "possible")
    assert code == 0 and out.strip()


def test_affinity_shows_and_sets_like_taskset():
    me = os.getpid()
    before = os.sched_getaffinity(0)
    try:
        code, out = _run("cpumask", "affinity", str(me))
        assert code == 0 and out.startswith(f"pid {me}'s current affinity list: ")
        cpu = min(before)
        code, out = _run("-j", "cpumask", "affinity", str(me), "--set", str(cpu))
        assert code == 0, out
        d = json.loads(out)
        assert d["new"]["cpus"] == [cpu] and os.sched_getaffinity(0) == {cpu}
        code, out = _run("cpumask", "affinity", str(me), "-m")
        assert code == 0 and out.strip().endswith(f"mask: {1 << cpu:x}".rstrip())
    finally:
        os.sched_setaffinity(0, before)
    code, out = _run("-j", "cpumask", "affinity", str(me), "--set", "4000", )
    assert code == 1 and json.loads(out)["errno"] in ("ERANGE", "ENODEV")
    assert os.sched_getaffinity(0) == before
