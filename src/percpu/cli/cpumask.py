"""``percpu cpumask``: CPU sets in the kernel's formats, and a process's affinity.

    percpu cpumask show SPEC [-m] [-n NR]      a set in every format, with its weight
    percpu cpumask convert SPEC --to list|mask [-m] [-n NR]
                                               one format to the other (like ``bits``)
    percpu cpumask possible | online           this machine's masks (sysfs list format)
    percpu cpumask affinity PID [--set LIST] [-m]
                                               like ``taskset -cp`` (``-m``: ``taskset -p``)

``SPEC`` is a CPU list as ``bitmap_parselist`` reads it (``0-3,8``,
``0-15:2/4``, ``N``, ``all``), or with ``-m`` a hex mask as ``bitmap_parse``
reads it (32-bit comma-separated groups, ``0x`` allowed).  ``-n`` sets the
number of CPU ids the set is parsed against (default: this machine's
``nr_cpu_ids``).  Errors carry the kernel's errno (EINVAL, ERANGE, EOVERFLOW);
``-j`` gives JSON.
"""

from __future__ import annotations

from typing import Any

import click

from percpu.cli.render import Options, emit, fail

__all__ = ["cpumask"]


def _parse(opts: Options, spec: str, mask: bool, nr: int | None) -> Any:
    from percpu.cpumask import Cpumask
    from percpu.errors import PercpuError

    try:
        return Cpumask.parse_mask(spec, nr) if mask else Cpumask.parse_list(spec, nr)
    except PercpuError as e:
        fail(opts, f"{'mask' if mask else 'list'} {spec!r}: {e}", e.errno)


def _describe(m: Any) -> dict[str, Any]:
    return {
        "list": m.format_list(),
        "mask": m.format_mask(),
        "weight": m.weight(),
        "first": m.first() if m.weight() else None,
        "nr_cpu_ids": m.nr_cpu_ids,
        "cpus": list(m),
    }


@click.group()
def cpumask() -> None:
    """CPU sets in the kernel's list and mask formats; process affinity."""


_mask_opt = click.option("-m", "--mask", "as_mask", is_flag=True, help="SPEC is a hex mask, not a CPU list.")
_nr_opt = click.option("-n", "--nr-cpu-ids", "nr", type=click.IntRange(min=1), default=None,
                       help="CPU ids to parse against (default: this machine's nr_cpu_ids).")


@cpumask.command("show")
@click.argument("spec")
@_mask_opt
@_nr_opt
@click.pass_context
def show(ctx: click.Context, spec: str, as_mask: bool, nr: int | None) -> None:
    """Show a CPU set in every format, with its weight."""
    opts = ctx.find_object(Options) or Options()
    d = _describe(_parse(opts, spec, as_mask, nr))

    def plain() -> None:
        click.echo(f"list:       {d['list'] or '(empty)'}")
        click.echo(f"mask:       {d['mask']}")
        click.echo(f"weight:     {d['weight']}")
        click.echo(f"nr_cpu_ids: {d['nr_cpu_ids']}")

    emit(opts, d, plain)


@cpumask.command("convert")
@click.argument("spec")
@click.option("--to", "to", type=click.Choice(["list", "mask"]), required=True, help="The output format.")
@_mask_opt
@_nr_opt
@click.pass_context
def convert(ctx: click.Context, spec: str, to: str, as_mask: bool, nr: int | None) -> None:
    """Convert a CPU list to a mask or back; prints only the result."""
    opts = ctx.find_object(Options) or Options()
    m = _parse(opts, spec, as_mask, nr)
    out = m.format_list() if to == "list" else m.format_mask()
    emit(opts, {to: out}, out)


def _machine(opts: Options, which: str) -> None:
    from percpu.cpumask import Cpumask

    m = Cpumask.possible() if which == "possible" else Cpumask.online()
    d = _describe(m)
    emit(opts, d, d["list"])


@cpumask.command("possible")
@click.pass_context
def possible(ctx: click.Context) -> None:
    """This machine's possible CPUs (cpu_possible_mask), in list format."""
    _machine(ctx.find_object(Options) or Options(), "possible")


@cpumask.command("online")
@click.pass_context
def online(ctx: click.Context) -> None:
    """This machine's online CPUs (cpu_online_mask), in list format."""
    _machine(ctx.find_object(Options) or Options(), "online")


@cpumask.command("affinity")
@click.argument("pid", type=click.IntRange(min=0))
@click.option("--set", "new", default=None, metavar="LIST", help="Set the affinity to this CPU list first.")
@_mask_opt
@click.pass_context
def affinity(ctx: click.Context, pid: int, new: str | None, as_mask: bool) -> None:
    """Show (and with --set, change) a process's CPU affinity, as taskset -cp / -p does."""
    from percpu.cpumask import Cpumask
    from percpu.errors import PercpuError

    opts = ctx.find_object(Options) or Options()
    try:
        cur = Cpumask.of_process(pid)
        out: dict[str, Any] = {"pid": pid, "current": _describe(cur)}
        if new is not None:
            m = Cpumask.parse_mask(new, cur.nr_cpu_ids) if as_mask else Cpumask.parse_list(new, cur.nr_cpu_ids)
            m.apply_to(pid)
            out["new"] = _describe(Cpumask.of_process(pid))
    except PercpuError as e:
        fail(opts, f"pid {pid}: {e}", e.errno)
    except OSError as e:
        fail(opts, f"pid {pid}: {e.strerror or e}", e.errno)
    kind = "mask" if as_mask else "list"

    def plain() -> None:
        click.echo(f"pid {pid}'s current affinity {kind}: {out['current'][kind]}")
        if "new" in out:
            click.echo(f"pid {pid}'s new affinity {kind}: {out['new'][kind]}")

    emit(opts, out, plain)
