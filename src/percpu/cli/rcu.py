"""``percpu rcu show NAME``: grace periods, readers by CPU and pid, callbacks.

The reader table lists every registered reader slot of the domain with the CPU
its thread is on now (``/proc/<tid>/stat``), whether it is inside a read-side
section of each flavour, and whether its owner is still alive (a dead owner's
slot is freed by the next grace period that it holds back).
"""

from __future__ import annotations

from typing import Any

import click

from percpu.cli.render import Options, emit, fail, table

__all__ = ["rcu"]


@click.group()
def rcu() -> None:
    """RCU of a domain: grace periods, readers and callbacks."""


def _snapshot(name: str) -> dict[str, Any]:
    from percpu import _core
    from percpu.runtime.domain import Domain
    from percpu.runtime.rcu import _task_cpu

    dom = Domain.attach(name)
    try:
        info = dom.arena.rcu_info()
    finally:
        dom.close()
    flavours = {}
    for f, fname in enumerate(("rcu", "rcu_tasks_trace")):
        flavours[fname] = {
            "gp_seq": info["gp_seq"][f],
            "gp_done": info["gp_done"][f],
            "in_flight": info["gp_seq"][f] - info["gp_done"][f],
            "cbs_queued": info["cbs_queued"][f],
            "cbs_invoked": info["cbs_invoked"][f],
            "cbs_pending": info["cbs_queued"][f] - info["cbs_invoked"][f],
        }
    readers = []
    for r in info["readers"]:
        alive = bool(_core.task_alive(r["tid"]))
        readers.append({
            "slot": r["slot"],
            "pid": r["pid"],
            "tid": r["tid"],
            "cpu": _task_cpu(r["tid"]) if alive else None,
            "alive": alive,
            "inside": {"rcu": r["seq"][0] != 0, "rcu_tasks_trace": r["seq"][1] != 0},
            "nest": {"rcu": r["nest"][0], "rcu_tasks_trace": r["nest"][1]},
            "seq": {"rcu": r["seq"][0], "rcu_tasks_trace": r["seq"][1]},
        })
    readers.sort(key=lambda r: (r["cpu"] if r["cpu"] is not None else 1 << 30, r["pid"], r["tid"]))
    return {
        "domain": name,
        "flavours": flavours,
        "nslots": info["nslots"],
        "slots_used": len(readers),
        "dead_readers": info["dead_readers"],
        "stalls": info["stalls"],
        "gp_scans": info["gp_scans"],
        "readers": readers,
    }


@rcu.command("show")
@click.argument("name")
@click.pass_context
def show(ctx: click.Context, name: str) -> None:
    """Show the grace-period sequence, readers by CPU and pid, pending callbacks."""
    opts = ctx.find_object(Options) or Options()
    try:
        data = _snapshot(name)
    except OSError as e:
        fail(opts, str(e), e.errno)

    def plain() -> None:
        click.echo(f"{name}: reader slots {data['slots_used']}/{data['nslots']}, "
                   f"dead readers reclaimed {data['dead_readers']}, stalls {data['stalls']}, "
                   f"scans {data['gp_scans']}")
        for fname, f in data["flavours"].items():
            click.echo(f"  {fname:<16} gp started {f['gp_seq']}  completed {f['gp_done']}  "
                       f"in flight {f['in_flight']}  callbacks queued {f['cbs_queued']}  "
                       f"invoked {f['cbs_invoked']}  pending {f['cbs_pending']}")
        if not data["readers"]:
            click.echo("  no readers registered")
            return

        def state(r: dict[str, Any]) -> str:
            if not r["alive"]:
                return "dead"
            inside = [k.replace("rcu_tasks_trace", "trace") for k, v in r["inside"].items() if v]
            return "inside " + "+".join(inside) if inside else "idle"

        table(
            opts,
            ["CPU", "PID", "TID", "SLOT", "STATE", "NEST", "GP"],
            [
                ["-" if r["cpu"] is None else str(r["cpu"]), str(r["pid"]), str(r["tid"]), str(r["slot"]),
                 state(r), f"{r['nest']['rcu']}/{r['nest']['rcu_tasks_trace']}",
                 str(r["seq"]["rcu"] or r["seq"]["rcu_tasks_trace"] or "-")]
                for r in data["readers"]
            ],
            ["right", "right", "right", "right", "left", "right", "right"],
        )

    emit(opts, data, plain)
