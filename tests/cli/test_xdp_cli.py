"""``percpu xdp redirect-cpu``: rows, ``-e``, ``-r``, ``-j``, program modes, ``-c``, ``-x``, pcap, errors.

The command installs signal handlers and forks a worker per CPU-map entry, so
every run is a ``python -m percpu`` subprocess in a session of its own, with a
timeout (the whole group is killed if it hangs).  Piped, the output is plain
lines.  Each run must leave no ``/dev/shm/percpu.<pid>-*`` domain behind (the
command creates and unlinks a private one).  Rates are never asserted, only
that traffic flowed and the counts add up.
"""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from percpu.cli.main import cli
from percpu.cli.xdp import MODES

pytestmark = pytest.mark.timeout(120)

TIMEOUT = 60.0
SUMMARY = (
    "Duration",
    "Packets received",
    "Average packets/s",
    "Rx dropped",
    "Enqueue dropped",
    "Kthread processed",
    "Errors recorded",
)
INTERVAL_KEYS = {"interval", "time", "rx", "enqueue", "kthread", "xdp_stats", "redirect_err", "xdp_exception"}


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    def json_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.lines]


def run(*args: str, timeout: float = TIMEOUT) -> Run:
    """``python -m percpu ARGS`` piped; checks it leaves no domain file behind."""
    env = dict(os.environ, NO_COLOR="1")
    env.pop("FORCE_COLOR", None)
    env.pop("TTY_COMPATIBLE", None)
    p = subprocess.Popen(
        [sys.executable, "-m", "percpu", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise AssertionError(
            f"percpu {' '.join(args)} did not end in {timeout}s\n{out[-2000:]}\n{err[-2000:]}"
        ) from None
    left = glob.glob(f"/dev/shm/percpu.{p.pid}-*")
    assert not left, f"the run left its domain behind: {left}"
    assert "Traceback" not in err, err
    return Run(p.returncode, out, err)


def summary_of(r: Run) -> dict[str, str]:
    """The block at the end of a plain run: ``{"Duration": "1.0s", "Packets received": "12,345", ...}``."""
    tail = r.lines[-len(SUMMARY) - 1 :]
    assert tail[0] == "", r.out[-1000:]
    out = {}
    for want, line in zip(SUMMARY, tail[1:], strict=True):
        key, sep, value = line.partition(":")
        assert sep and key.strip() == want, line
        out[want] = value.strip()
    return out


def num(text: str) -> float:
    return float(text.replace(",", "").rstrip("s"))


def columns(line: str) -> dict[str, float]:
    """``"  enqueue to cpu 1   1,234 pkt/s   0 drop/s   7.85 bulk-avg"`` -> ``{"pkt/s": 1234, ...}``."""
    return {unit: float(v.replace(",", "")) for v, unit in re.findall(r"([\d,]+(?:\.\d+)?) (\S+)", line[23:])}


def rows(r: Run, label: str) -> list[str]:
    return [line for line in r.lines if line[:23].strip() == label]


# ---- plain output ------------------------------------------------------------------------------


def test_plain_short_run_rows_and_summary():
    r = run("xdp", "redirect-cpu", "--duration", "1", "-i", "0.3")
    assert r.code == 0, r.err
    assert "\x1b[" not in r.out and r.err == ""
    heads = [line for line in r.lines if line.startswith("gen->?")]
    assert 2 <= len(heads) <= 5  # 1 s in 0.3 s intervals: 4
    for h in heads:
        c = columns(h)
        assert set(c) == {"rx/s", "err,drop/s"}
    assert columns(heads[0])["rx/s"] > 0
    assert r.lines[0].startswith("gen->?")
    s = summary_of(r)
    assert 0.9 <= num(s["Duration"]) <= 5
    received = int(num(s["Packets received"]))
    assert received > 0 and num(s["Average packets/s"]) > 0
    assert int(num(s["Rx dropped"])) == 0 and int(num(s["Errors recorded"])) == 0
    accounted = int(num(s["Enqueue dropped"])) + int(num(s["Kthread processed"]))
    assert 0 < accounted <= received
    # terse: the extended-only rows stay hidden
    assert not rows(r, "receive total") and not rows(r, "kthread total") and not rows(r, "xdp_stats")


def test_extended_rows():
    r = run("xdp", "redirect-cpu", "--duration", "0.6", "-i", "0.3", "-e")
    assert r.code == 0, r.err
    assert rows(r, "receive total") and set(columns(rows(r, "receive total")[0])) == {"pkt/s", "drop/s", "error/s"}
    for cpu in (0, 1):
        enq = rows(r, f"enqueue to cpu {cpu}")
        assert enq, r.out
        c = columns(enq[0])
        assert set(c) == {"pkt/s", "drop/s", "bulk-avg"}
        assert 0 < c["bulk-avg"] <= 8  # CPU_MAP_BULK_SIZE
    kt = rows(r, "kthread total")
    assert kt and set(columns(kt[0])) == {"pkt/s", "drop/s", "sched"}
    assert any(columns(k)["pkt/s"] > 0 for k in kt)
    assert not rows(r, "xdp_stats")  # no entry program without -r
    assert summary_of(r)["Packets received"] != "0"


@pytest.mark.parametrize(("action", "column"), [("drop", "drop/s"), ("pass", "pass/s"), ("redirect", "redir/s")])
def test_remote_action_shows_xdp_stats(action, column):
    r = run("xdp", "redirect-cpu", "--duration", "0.6", "-i", "0.3", "-e", "-r", action)
    assert r.code == 0, r.err
    xs = rows(r, "xdp_stats")
    assert xs, r.out
    cols = [columns(x) for x in xs]
    assert all(set(c) == {"pass/s", "drop/s", "redir/s"} for c in cols)
    assert any(c[column] > 0 for c in cols)
    for other in {"pass/s", "drop/s", "redir/s"} - {column}:
        assert all(c[other] == 0 for c in cols), (other, xs)
    # the per-CPU rows under it
    assert rows(r, "cpu:0") or rows(r, "cpu:1")


# ---- JSON ----------------------------------------------------------------------------------------


def test_json_intervals_and_summary():
    qsize = 64
    r = run("-j", "xdp", "redirect-cpu", "--duration", "0.6", "-i", "0.2", "-q", str(qsize))
    assert r.code == 0, r.err
    objs = r.json_lines()
    *intervals, last = objs
    assert 1 <= len(intervals) <= 5  # 0.6 s in 0.2 s intervals: 3
    for o in intervals:
        assert set(o) == INTERVAL_KEYS, set(o)
        assert set(o["enqueue"]) == {"0", "1"}
        assert {"pps", "drop", "error", "cpu"} <= set(o["rx"])
        assert {"pps", "drop", "sched", "cpu"} <= set(o["kthread"])
        assert {"pass", "drop", "redir", "cpu"} <= set(o["xdp_stats"])
        for e in o["enqueue"].values():
            assert {"pps", "drop", "bulk_avg", "from"} <= set(e)
    assert set(last) == {"summary"}
    s = last["summary"]
    assert set(s) == {
        "duration",
        "packets_received",
        "average_pps",
        "rx_dropped",
        "enqueue_dropped",
        "kthread_processed",
        "errors",
    }
    n = s["packets_received"]
    assert n > 0 and s["rx_dropped"] == 0 and s["errors"] == 0
    # every received packet (all redirected: l4-hash over UDP) was dropped at enqueue or run by a
    # kthread: the summary waits until the rings are drained
    in_flight = n - s["kthread_processed"] - s["enqueue_dropped"]
    assert in_flight == 0, s
    # the intervals add up to the summary
    rx_sum = sum(o["rx"]["pps"] * o["interval"] for o in intervals)
    assert abs(rx_sum - n) <= 0.02 * n + 1000, (rx_sum, n)
    enq_sum = sum(e["pps"] * o["interval"] for o in intervals for e in o["enqueue"].values())
    assert abs(enq_sum - n) <= 0.02 * n + 1000, (enq_sum, n)


@pytest.mark.parametrize("mode", MODES)
def test_every_program_mode_runs(mode):
    r = run("-j", "xdp", "redirect-cpu", "--program-mode", mode, "--duration", "0.2", "-i", "0.2")
    assert r.code == 0, r.err
    s = r.json_lines()[-1]["summary"]
    assert s["packets_received"] > 0 and s["errors"] == 0
    assert s["kthread_processed"] + s["enqueue_dropped"] > 0  # the generator's UDP frames are redirected
    assert s["rx_dropped"] == 0  # the default UDP port is not l4-filter's 9


def test_l4_filter_drops_udp_port_9():
    r = run(
        "-j",
        "xdp",
        "redirect-cpu",
        "--program-mode",
        "l4-filter",
        "--source",
        "gen:udp_dport=9",
        "--duration",
        "0.2",
        "-i",
        "0.2",
    )
    assert r.code == 0, r.err
    s = r.json_lines()[-1]["summary"]
    assert s["packets_received"] > 0 and s["rx_dropped"] == s["packets_received"]
    assert s["kthread_processed"] == 0 and s["enqueue_dropped"] == 0


def test_one_cpu_only_uses_it():
    r = run("-j", "xdp", "redirect-cpu", "-c", "1", "--duration", "0.4", "-i", "0.2")
    assert r.code == 0, r.err
    *intervals, last = r.json_lines()
    assert intervals
    for o in intervals:
        assert set(o["enqueue"]) == {"1"}
        assert set(o["kthread"]["cpu"]) <= {"1"}
    assert sum(o["kthread"]["cpu"].get("1", {}).get("pps", 0) for o in intervals) > 0
    assert last["summary"]["kthread_processed"] > 0
    r = run("xdp", "redirect-cpu", "-c", "1", "-e", "--duration", "0.3", "-i", "0.3")
    assert r.code == 0, r.err
    enq = [line for line in r.lines if line.strip().startswith("enqueue to cpu")]
    assert enq and all(line.split()[3] == "1" for line in enq)
    assert all(line.strip().endswith("bulk-avg") for line in enq)
    arrows = [line.split()[0] for line in r.lines if "->" in line[:23] and not line.startswith("gen")]
    assert arrows and all(a.endswith("->1") for a in arrows)


def test_stress_mode_recreates_and_still_delivers():
    r = run("-j", "xdp", "redirect-cpu", "-x", "--duration", "1", "-i", "0.15")
    assert r.code == 0, r.err
    assert r.err == ""
    *intervals, last = r.json_lines()
    assert len(intervals) >= 3  # qsize 1024, 8, 16000, 1024 ...: every one re-created CPU 1's entry
    s = last["summary"]
    assert s["packets_received"] > 0 and s["errors"] == 0 and s["rx_dropped"] == 0
    # both entries keep delivering after the re-creations
    late = intervals[len(intervals) // 2 :]
    for cpu in ("0", "1"):
        assert sum(o["kthread"]["cpu"].get(cpu, {}).get("pps", 0) for o in late) > 0, cpu
    assert s["kthread_processed"] + s["enqueue_dropped"] <= s["packets_received"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_the_run_with_a_summary(sig):
    p = subprocess.Popen(
        [sys.executable, "-m", "percpu", "-j", "xdp", "redirect-cpu", "-i", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert p.stdout is not None
        first = json.loads(p.stdout.readline())  # the first interval: the loop is running
        assert set(first) == INTERVAL_KEYS
        p.send_signal(sig)
        out, err = p.communicate(timeout=TIMEOUT)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
    assert p.returncode == 0, err
    assert "Traceback" not in err
    s = json.loads(out.splitlines()[-1])["summary"]
    assert s["packets_received"] > 0
    assert not glob.glob(f"/dev/shm/percpu.{p.pid}-*")


# ---- a pcap source ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pcap_file(tmp_path_factory) -> tuple[Path, int]:
    from percpu.xdp import Generator
    from percpu.xdp.pcap import write_pcap

    n = 777
    g = Generator(flows=16, count=n, seed=5, sizes="64/128/1500")
    batches = []
    while (b := g.read(100)) is not None:
        batches.append(b)
    path = tmp_path_factory.mktemp("xdp") / "gen.pcap"
    assert write_pcap(path, batches) == n
    return path, n


def test_pcap_source_ends_by_itself_and_counts_the_file(pcap_file):
    path, n = pcap_file
    r = run("-j", "xdp", "redirect-cpu", "--source", f"pcap:{path}", "-i", "5", timeout=30)
    assert r.code == 0, r.err
    *intervals, last = r.json_lines()
    assert len(intervals) == 1  # the file ended long before the first interval
    s = last["summary"]
    assert s["packets_received"] == n
    assert s["rx_dropped"] == 0 and s["errors"] == 0 and s["enqueue_dropped"] == 0  # 777 < 2 rings of 2048
    assert s["kthread_processed"] == n  # the summary waits until the rings are drained
    r = run("xdp", "redirect-cpu", "--source", f"pcap:{path}", "-i", "5", "-e", timeout=30)
    assert r.code == 0, r.err
    assert r.lines[0].startswith(f"pcap:{path}->?")
    assert summary_of(r)["Packets received"] == f"{n:,}"
    enq = sum(columns(line)["pkt/s"] for line in r.lines if line.strip().startswith("enqueue to cpu"))
    assert enq > 0


# ---- errors ------------------------------------------------------------------------------------------


def test_impossible_cpu_is_refused():
    r = run("xdp", "redirect-cpu", "-c", "99", "--duration", "0.2")
    assert r.code == 1 and r.out == ""
    assert r.err.startswith("Error: CPU 99 is not possible"), r.err
    r = run("-j", "xdp", "redirect-cpu", "-c", "0", "-c", "99", "--duration", "0.2")
    assert r.code == 1 and r.err == ""
    d = json.loads(r.out)
    assert set(d) == {"error", "errno"} and "CPU 99" in d["error"] and d["errno"] == "ENODEV"


def test_bad_source_is_refused(tmp_path):
    r = run("xdp", "redirect-cpu", "--source", "bogus:x", "--duration", "0.2")
    assert r.code == 1 and r.out == ""
    assert r.err.startswith("Error: --source 'bogus:x'") and "unknown packet source" in r.err, r.err
    r = run("-j", "xdp", "redirect-cpu", "--source", "bogus:x", "--duration", "0.2")
    assert r.code == 1
    d = json.loads(r.out)
    assert d["errno"] == "EINVAL" and "unknown packet source" in d["error"]
    r = run("-j", "xdp", "redirect-cpu", "--source", f"pcap:{tmp_path / 'missing.pcap'}", "--duration", "0.2")
    assert r.code == 1 and json.loads(r.out)["errno"] == "ENOENT"


@pytest.mark.parametrize(
    "args",
    [("--qsize", "0"), ("-q", "16385"), ("--program-mode", "bogus"), ("-r", "tx"), ("-i", "0"), ("--duration", "-1")],
)
def test_bad_options_are_usage_errors(args):
    res = CliRunner().invoke(cli, ["xdp", "redirect-cpu", *args])
    assert res.exit_code == 2, res.output
    assert "Invalid value" in res.output
