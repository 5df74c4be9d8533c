"""``percpu xdp``: the XDP engine from the command line.

    percpu xdp redirect-cpu [-c CPU]... [-q QSIZE] [--program-mode MODE]
                            [-r ACTION] [-i SECONDS] [-e] [-x] [--source SPEC]
                            [--duration SECONDS]

mirrors ``xdp-bench redirect-cpu``: a CPU map with one entry (and one worker
pinned to it) per ``-c``, a receive loop running one of xdp-bench's programs
on the packets of a source (the built-in generator by default, ``pcap:FILE``
or ``iface:NAME``), and a statistics line every interval named as xdp-bench
names them: ``receive total``, ``enqueue to cpu N`` with ``bulk-avg``,
``kthread total`` with ``sched``, ``xdp_stats`` of the entry program,
``redirect_err`` by errno and ``xdp_exception`` by action.  Terse output
shows the summary and the rows with errors; ``-e`` (or Ctrl-\\ while running)
shows every row.  On a terminal the view is live (rich); piped, it prints
plain lines; ``-j`` prints one JSON object per interval and a final
``summary`` object.

Differences from xdp-bench: ``--program-mode`` has no short form (``-p`` is
the global ``--pretty``); ``-m/--xdp-mode`` and ``-D`` do not exist (there is
no driver to attach to and no egress device: ``-r redirect`` transmits into a
null device, counted as ``redir``); ``--source``, ``--duration``, ``--batch``
and ``--rx-cpu`` are ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from typing import Any

import click

from percpu.cli.render import Options, fail

__all__ = ["xdp"]

MODES = ("no-touch", "touch", "round-robin", "l4-proto", "l4-filter", "l4-hash", "l4-sport", "l4-dport")
REMOTE = ("disabled", "drop", "pass", "redirect")
STRESS_QSIZES = (1024, 8, 16000)


@click.group()
def xdp() -> None:
    """The XDP engine: programs, a CPU map and pinned workers."""


def _fmt(v: float, unit: str, width: int = 10, fmt: str = ",.0f") -> str:
    """xdp_sample.c's column: ``%'10<fmt> %-13s``."""
    return f"{format(v, fmt):>{width}} {unit:<13}"


class _Snap:
    """Cumulative counters at one instant, read from the per-CPU counters."""

    def __init__(self, m: Any, rx: Any) -> None:
        self.t = time.monotonic()
        self.rx = rx.read()
        self.map = {k: s.per_cpu for k, s in m.stats().items()}


def _delta(a: dict[str, Any], b: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in a.items():
        if isinstance(v, dict):
            out[k] = _delta(v, (b or {}).get(k))
        else:
            out[k] = v - ((b or {}).get(k, 0) or 0)
    return out


def _rates(cur: _Snap, prev: _Snap) -> dict[str, Any]:
    """One interval as xdp-bench reports it: per-second rates, per CPU and totals."""
    dt = max(cur.t - prev.t, 1e-9)
    rx = {cpu: _delta(v, prev.rx.get(cpu)) for cpu, v in cur.rx.items()}

    def ps(n: float) -> float:
        return n / dt

    out: dict[str, Any] = {"interval": round(dt, 3)}
    rx_cpu = {
        cpu: {"pps": ps(d["rx"]), "drop": ps(d["drop"] + d["alloc_fail"]), "error": ps(d["issue"])}
        for cpu, d in rx.items()
        if d["rx"] or d["drop"] or d["issue"] or d["alloc_fail"]
    }
    out["rx"] = {
        "pps": sum(c["pps"] for c in rx_cpu.values()),
        "drop": sum(c["drop"] for c in rx_cpu.values()),
        "error": sum(c["error"] for c in rx_cpu.values()),
        "cpu": rx_cpu,
    }
    enq: dict[str, Any] = {}
    kth: dict[str, Any] = {}
    xs: dict[str, Any] = {}
    for key, per_cpu in cur.map.items():
        prevk = prev.map.get(key, {})
        d = {cpu: _delta(v, prevk.get(cpu)) for cpu, v in per_cpu.items()}
        frm = {
            cpu: {
                "pps": ps(v["enq_processed"]),
                "drop": ps(v["enq_drops"]),
                "bulk_avg": v["enq_processed"] / v["enq_events"] if v["enq_events"] else 0.0,
            }
            for cpu, v in d.items()
            if v["enq_processed"]
        }
        ev = sum(v["enq_events"] for v in d.values())
        pr = sum(v["enq_processed"] for v in d.values())
        enq[str(key)] = {
            "pps": ps(pr),
            "drop": ps(sum(v["enq_drops"] for v in d.values())),
            "bulk_avg": pr / ev if ev else 0.0,
            "from": frm,
        }
        kt = {
            cpu: {
                "pps": ps(v["kt_processed"]),
                "drop": ps(v["kt_drops"] + v["died_drops"]),
                "sched": v["kt_sched"],
                "pass": ps(v["kt_pass"]),
                "xdp_drop": ps(v["kt_drop"]),
                "redir": ps(v["kt_redirect"]),
            }
            for cpu, v in d.items()
            if v["kt_processed"] or v["kt_iters"] or v["died_drops"]
        }
        for cpu, v in kt.items():
            agg = kth.setdefault(str(cpu), {"pps": 0.0, "drop": 0.0, "sched": 0})
            agg["pps"] += v["pps"]
            agg["drop"] += v["drop"]
            agg["sched"] += v["sched"]
            x = xs.setdefault(str(cpu), {"pass": 0.0, "drop": 0.0, "redir": 0.0})
            x["pass"] += v["pass"]
            x["drop"] += v["xdp_drop"]
            x["redir"] += v["redir"]
    out["enqueue"] = enq
    out["kthread"] = {
        "pps": sum(v["pps"] for v in kth.values()),
        "drop": sum(v["drop"] for v in kth.values()),
        "sched": sum(v["sched"] for v in kth.values()),
        "cpu": kth,
    }
    out["xdp_stats"] = {
        "pass": sum(v["pass"] for v in xs.values()),
        "drop": sum(v["drop"] for v in xs.values()),
        "redir": sum(v["redir"] for v in xs.values()),
        "cpu": xs,
    }
    errs: dict[str, float] = {}
    exc: dict[str, float] = {}
    for d in rx.values():
        for k, v in d["redirect_err"].items():
            if v:
                errs[k] = errs.get(k, 0.0) + ps(v)
        for k, v in d["exception"].items():
            if v:
                exc[k] = exc.get(k, 0.0) + ps(v)
    out["redirect_err"] = errs
    out["xdp_exception"] = exc
    return out


def _lines(name: str, r: dict[str, Any], extended: bool, remote: str) -> list[str]:
    """The rows of one interval, named and laid out as xdp-bench prints them."""
    L: list[str] = []
    errdrop = r["rx"]["drop"] + r["rx"]["error"] + sum(e["drop"] for e in r["enqueue"].values())
    errdrop += sum(r["redirect_err"].values()) + sum(r["xdp_exception"].values())
    L.append(f"{name + '->?':<23}" + _fmt(r["rx"]["pps"], "rx/s") + _fmt(errdrop, "err,drop/s"))
    if extended or r["rx"]["drop"] or r["rx"]["error"]:
        rx = r["rx"]
        L.append(f"{'  receive total':<23}" + _fmt(rx["pps"], "pkt/s") + _fmt(rx["drop"], "drop/s")
                 + _fmt(rx["error"], "error/s"))
        for cpu, c in sorted(rx["cpu"].items()):
            L.append(f"{'    cpu:' + str(cpu):<23}" + _fmt(c["pps"], "pkt/s") + _fmt(c["drop"], "drop/s")
                     + _fmt(c["error"], "error/s"))
    for to, e in sorted(r["enqueue"].items(), key=lambda kv: int(kv[0])):
        if extended or e["drop"]:
            L.append(f"{'  enqueue to cpu ' + to:<23}" + _fmt(e["pps"], "pkt/s") + _fmt(e["drop"], "drop/s")
                     + _fmt(e["bulk_avg"], "bulk-avg", fmt=".2f"))
            for frm, c in sorted(e["from"].items()):
                L.append(f"{'    cpu:' + str(frm) + '->' + to:<23}" + _fmt(c["pps"], "pkt/s")
                         + _fmt(c["drop"], "drop/s") + _fmt(c["bulk_avg"], "bulk-avg", fmt=".2f"))
    kt = r["kthread"]
    if extended or kt["drop"]:
        label = "  kthread total" if kt["pps"] else "  kthread"
        L.append(f"{label:<23}" + _fmt(kt["pps"], "pkt/s") + _fmt(kt["drop"], "drop/s")
                 + _fmt(kt["sched"], "sched", fmt=",d"))
        for cpu, c in sorted(kt["cpu"].items(), key=lambda kv: int(kv[0])):
            L.append(f"{'    cpu:' + cpu:<23}" + _fmt(c["pps"], "pkt/s") + _fmt(c["drop"], "drop/s")
                     + _fmt(c["sched"], "sched", fmt=",d"))
        if remote != "disabled":
            x = r["xdp_stats"]
            L.append(f"{'    xdp_stats':<23}" + _fmt(x["pass"], "pass/s") + _fmt(x["drop"], "drop/s")
                     + _fmt(x["redir"], "redir/s"))
            for cpu, c in sorted(x["cpu"].items(), key=lambda kv: int(kv[0])):
                L.append(f"{'      cpu:' + cpu:<23}" + _fmt(c["pass"], "pass/s") + _fmt(c["drop"], "drop/s")
                         + _fmt(c["redir"], "redir/s"))
    for errno_name, v in sorted(r["redirect_err"].items()):
        L.append(f"{'  redirect_err ' + errno_name:<23}" + _fmt(v, "error/s"))
    for action, v in sorted(r["xdp_exception"].items()):
        L.append(f"{'  xdp_exception ' + action:<23}" + _fmt(v, "hit/s"))
    return L


@xdp.command("redirect-cpu")
@click.option("-c", "--cpu", "cpus", type=int, multiple=True,
              help="Add a CPU (an entry and its worker); repeatable.  Default: every online CPU.")
@click.option("-q", "--qsize", type=click.IntRange(1, 16384), default=2048, show_default=True,
              help="Ring size of each entry.")
@click.option("--program-mode", "mode", type=click.Choice(MODES), default="l4-hash", show_default=True,
              help="How the RX program picks a CPU (xdp-bench's modes).")
@click.option("-r", "--remote-action", "remote", type=click.Choice(REMOTE), default="disabled",
              show_default=True, help="The program every entry runs on its worker.")
@click.option("-i", "--interval", type=click.FloatRange(0.05), default=2.0, show_default=True,
              help="Seconds between statistics lines.")
@click.option("-e", "--extended", is_flag=True, help="Every row (Ctrl-\\ toggles while running).")
@click.option("-x", "--stress-mode", "stress", is_flag=True,
              help="Re-create one entry every interval (qsize 1024, 8, 16000 in turn).")
@click.option("--source", default="gen", show_default=True,
              help="gen[:opts] | pcap:FILE | iface:NAME (AF_PACKET, needs root).")
@click.option("--duration", type=click.FloatRange(0.0), default=None,
              help="Stop after this many seconds (default: until Ctrl-C, or the end of a pcap).")
@click.option("--batch", type=click.IntRange(1, 4096), default=256, show_default=True,
              help="Packets per poll (the NAPI budget).")
@click.option("--rx-cpu", type=int, default=None, help="Pin the receive loop to this CPU.")
@click.option("--start-method", type=click.Choice(("fork", "spawn")), default="fork", show_default=True,
              help="How workers start.")
@click.pass_obj
def redirect_cpu(
    opts: Options,
    cpus: tuple[int, ...],
    qsize: int,
    mode: str,
    remote: str,
    interval: float,
    extended: bool,
    stress: bool,
    source: str,
    duration: float | None,
    batch: int,
    rx_cpu: int | None,
    start_method: str,
) -> None:
    """Redirect packets to CPUs through a CPU map (xdp-bench redirect-cpu)."""
    import percpu
    from percpu import cpumap
    from percpu.errors import PercpuError
    from percpu.xdp import RxStats, XdpEngine, open_source

    state = {"extended": extended, "stop": False}

    def on_quit(signum: int, frame: object) -> None:
        state["extended"] = not state["extended"]

    def on_int(signum: int, frame: object) -> None:
        state["stop"] = True

    old_quit = signal.signal(signal.SIGQUIT, on_quit)
    old_int = signal.signal(signal.SIGINT, on_int)
    old_term = signal.signal(signal.SIGTERM, on_int)
    dom = None
    m = None
    try:
        dom = percpu.Domain.create(size=512 << 20)
        with dom:
            online = list(dom.online)
            use = list(cpus) or online
            for c in use:
                if c not in dom.possible:
                    fail(opts, f"CPU {c} is not possible on this machine (possible: {dom.possible})", errno=19)
            try:
                src = open_source(source)
            except PercpuError as e:
                fail(opts, f"--source {source!r}: {e}", errno=e.errno or 22)
            except OSError as e:
                fail(opts, f"--source {source!r}: {e}", errno=e.errno or 5)
            if rx_cpu is not None:
                if rx_cpu not in dom.possible:
                    fail(opts, f"--rx-cpu {rx_cpu} is not possible on this machine (possible: {dom.possible})",
                         errno=19)
                os.sched_setaffinity(0, {dom.real_cpu(rx_cpu)})
            m = cpumap.CpuMap(max(dom.nr_cpu_ids, 1), method=start_method)
            prog = None if remote == "disabled" else remote
            for c in use:
                m.update(c, cpumap.BpfCpumapVal(qsize, prog))
            eng = XdpEngine(m, mode, cpus=use)
            rx = RxStats(dom)
            name = getattr(src, "name", source)
            _run(opts, m, eng, rx, src, name, interval, duration, batch, stress, use, qsize, prog, remote, state)
    finally:
        signal.signal(signal.SIGQUIT, old_quit)
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        if m is not None and dom is not None and not dom.closed:
            with contextlib.suppress(Exception), dom:
                m.close(timeout=30)
        if dom is not None:
            with contextlib.suppress(Exception):
                dom.close()
            with contextlib.suppress(Exception):
                dom.unlink()


def _run(
    opts: Options,
    m: Any,
    eng: Any,
    rx: Any,
    src: Any,
    name: str,
    interval: float,
    duration: float | None,
    batch: int,
    stress: bool,
    use: list[int],
    qsize: int,
    prog: str | None,
    remote: str,
    state: dict[str, bool],
) -> None:
    from percpu import cpumap

    t0 = time.monotonic()
    t_end = None if duration is None else t0 + duration
    first = prev = _Snap(m, rx)
    live = None
    if not opts.json_output:
        live = _live_view()
    stress_i = 0
    ended = False
    try:
        while not state["stop"] and not ended:
            t_next = min(prev.t + interval, t_end) if t_end is not None else prev.t + interval
            while time.monotonic() < t_next and not state["stop"]:
                b = src.read(batch)
                if b is None:
                    ended = True
                    break
                if len(b):
                    eng.poll(b)
            cur = _Snap(m, rx)
            r = _rates(cur, prev)
            prev = cur
            if opts.json_output:
                r["time"] = round(cur.t - t0, 3)
                click.echo(json.dumps(r))
            else:
                lines = _lines(name, r, state["extended"], remote)
                if live is not None:
                    live.update("\n".join(lines))
                else:
                    click.echo("\n".join(lines))
                    sys.stdout.flush()
            if stress:
                c = use[1] if len(use) > 1 else use[0]
                m.update(c, cpumap.BpfCpumapVal(STRESS_QSIZES[stress_i % 3], prog))
                stress_i += 1
            if t_end is not None and time.monotonic() >= t_end:
                break
    finally:
        if live is not None:
            live.stop()
    with contextlib.suppress(Exception):
        src.close()
    dur = time.monotonic() - t0
    m.sync(30)
    # the summary counts what the workers took: wait (bounded) until the rings are empty
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and any(e.queued for e in m.entries() if e.state == "running"):
        time.sleep(0.01)
    _summary(opts, _Snap(m, rx), first, dur)


def _summary(opts: Options, last: _Snap, first: _Snap, dur: float) -> None:
    total = _delta(
        {str(c): {k: v for k, v in d.items() if not isinstance(v, dict)} for c, d in last.rx.items()},
        {str(c): {k: v for k, v in d.items() if not isinstance(v, dict)} for c, d in first.rx.items()},
    )
    rxn = sum(d["rx"] for d in total.values())
    drop = sum(d["drop"] + d["alloc_fail"] for d in total.values())
    errs = sum(d["issue"] for d in total.values())
    enq_drop = 0
    delivered = 0
    for key, per_cpu in last.map.items():
        prevk = first.map.get(key, {})
        for cpu, v in per_cpu.items():
            d = _delta(v, prevk.get(cpu))
            enq_drop += d["enq_drops"]
            delivered += d["kt_processed"]
    s = {
        "duration": round(dur, 3),
        "packets_received": rxn,
        "average_pps": rxn / dur if dur else 0.0,
        "rx_dropped": drop,
        "enqueue_dropped": enq_drop,
        "kthread_processed": delivered,
        "errors": errs,
    }
    if opts.json_output:
        click.echo(json.dumps({"summary": s}))
        return
    click.echo("")
    click.echo(f"  Duration            : {dur:.1f}s")
    click.echo(f"  Packets received    : {rxn:,}")
    click.echo(f"  Average packets/s   : {s['average_pps']:,.0f}")
    click.echo(f"  Rx dropped          : {drop:,}")
    click.echo(f"  Enqueue dropped     : {enq_drop:,}")
    click.echo(f"  Kthread processed   : {delivered:,}")
    click.echo(f"  Errors recorded     : {errs:,}")


class _PlainLive:
    def update(self, text: str) -> None:
        click.echo(text)

    def stop(self) -> None:
        pass


class _RichLive:
    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        self._text = Text
        self.live = Live(Text("starting..."), console=Console(), refresh_per_second=4, transient=False)
        self.live.start()

    def update(self, text: str) -> None:
        self.live.update(self._text(text + "\n(Ctrl-\\ toggles extended rows, Ctrl-C stops)"))

    def stop(self) -> None:
        self.live.stop()


def _live_view() -> Any:
    from percpu.cli.render import _want_rich

    if not _want_rich():
        return None
    try:
        from rich.console import Console

        if not Console().is_terminal:
            return None
        return _RichLive()
    except ImportError:
        return None
