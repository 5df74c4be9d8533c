"""The ``percpu`` command group: ``percpu [OPTIONS] OBJECT COMMAND``.

The grammar is bpftool's: global options first (``-j``, ``-p``, ``-v``,
``-V``), then an object, then what to do with it.  Each object lives in its
own module under ``percpu.cli`` and is registered at the bottom of this file.
Usage errors are JSON too when ``-j``/``-p`` was given, so a script reading
stdout never gets a half-text answer.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from percpu.cli.cpumask import cpumask
from percpu.cli.domain import domain
from percpu.cli.freelist import freelist
from percpu.cli.map import map_
from percpu.cli.memalloc import memalloc
from percpu.cli.pcpu import pcpu
from percpu.cli.rcu import rcu
from percpu.cli.render import Options, fail
from percpu.cli.topology import topology
from percpu.cli.xdp import xdp

__all__ = ["cli", "main"]

def _version() -> str:
    """Return the installed version of the ``percpu`` distribution."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("percpu")
    except PackageNotFoundError:
        return "0+unknown"


def _global_flag(args: Sequence[str], short: str, long: str) -> bool:
    """Return whether a global flag appears among the options before the object.

    Every short global option is a flag, so a bundle such as ``-vj`` counts.
    """
    for arg in args:
        if arg == "--" or not arg.startswith("-") or arg == "-":
            return False
        if arg == long or (not arg.startswith("--") and short in arg[1:]):
            return True
    return False


def _json_requested(args: Sequence[str]) -> bool:
    """Return whether the global options in ``args`` ask for JSON output."""
    return _global_flag(args, "j", "--json") or _global_flag(args, "p", "--pretty")


_ANYWHERE = ("-j", "--json", "-p", "--pretty")


def _hoist_global_flags(args: list[str]) -> list[str]:
    """Move ``-j``/``-p`` given after the object or command to the front.

    bpftool accepts its output flags anywhere (``bpftool map show -j``); so do
    we.  Only these exact tokens move, never anything after ``--``.
    """
    if "--" in args:
        cut = args.index("--")
        head, tail = args[:cut], args[cut:]
    else:
        head, tail = args, []
    moved = [a for a in head if a in _ANYWHERE]
    if not moved:
        return args
    return moved + [a for a in head if a not in _ANYWHERE] + tail


class PercpuGroup(click.Group):
    """A click group whose usage errors follow the ``-j``/``-p`` output mode."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        """Parse the global options, reporting a usage error as JSON if asked."""
        if parent is None:
            args = _hoist_global_flags(list(args))
        as_json = _json_requested(args)
        pretty = _global_flag(args, "p", "--pretty")
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as exc:
            if not as_json:
                raise
            fail(Options(json=True, pretty=pretty), exc.format_message(), exit_code=exc.exit_code)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the object's command, reporting its usage errors as JSON if asked."""
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            # ctx.obj is not set yet when the object name itself is wrong.
            pretty = bool(ctx.params.get("pretty"))
            opts = Options(json=bool(ctx.params.get("json_")) or pretty, pretty=pretty)
            if not opts.json_output:
                raise
            fail(opts, exc.format_message(), exit_code=exc.exit_code)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """Print ``percpu VERSION`` and exit (the ``-V`` callback)."""
    if not value or ctx.resilient_parsing:
        return
    click.echo(f"percpu {_version()}")
    ctx.exit()


@click.group(
    cls=PercpuGroup,
    subcommand_metavar="OBJECT COMMAND [ARGS]...",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=(
        "Plain output is meant for humans and its format is not promised to "
        "stay stable; the JSON output of -j/-p is the contract for scripts."
    ),
)
@click.option("-j", "--json", "json_", is_flag=True, help="Print JSON (errors too).")
@click.option("-p", "--pretty", is_flag=True, help="Print indented JSON; implies -j.")
@click.option("-v", "--verbose", count=True, help="Say more; repeat for more detail.")
@click.option(
    "-V",
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Print the version and exit.",
)
@click.pass_context
def cli(ctx: click.Context, json_: bool, pretty: bool, verbose: int) -> None:
    """Inspect and drive per-CPU objects in shared memory."""
    ctx.obj = Options(json=json_ or pretty, pretty=pretty, verbose=verbose)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``percpu`` command line (the console-script entry point)."""
    cli.main(args=list(argv) if argv is not None else sys.argv[1:], prog_name="percpu")


# --- Objects ---------------------------------------------------------------
# One OBJECT per module under percpu.cli.  To add one: import its command or
# group next to `topology` at the top of this file and add it here.
cli.add_command(topology)
cli.add_command(domain)
cli.add_command(rcu)
cli.add_command(cpumask)
cli.add_command(freelist)
cli.add_command(memalloc)
cli.add_command(pcpu)
cli.add_command(xdp)
cli.add_command(map_)
