"""``percpu topology``: the CPUs of this machine, the way lscpu -e shows them.

Three renderings of one :class:`~percpu.runtime.topology.Topology`:

* plain (default): an ``lscpu -e`` table over *possible* CPUs (columns
  ``CPU NODE SOCKET CORE L1d:L1i:L2:L3 ONLINE``, ``-`` where sysfs gives no
  value), then the possible/present/online lists and a ``numactl --hardware``
  style nodes section;
* ``--parse``: ``lscpu -p -a`` CSV with its ``#`` comment header and empty
  fields where sysfs gives no value;
* global ``-j``/``-p``: :meth:`Topology.to_json`, which ignores ``-e`` and
  ``--parse`` (JSON always carries every field).
"""

from __future__ import annotations

from collections.abc import Callable

import click

from percpu.cli.render import Justify, Options, emit, fail, table
from percpu.runtime.topology import DEFAULT_SYSFS_ROOT, CpuInfo, Topology, format_cpulist

__all__ = ["COLUMNS", "topology"]

# name → (table header, --parse header, justification); the names are the
# values -e accepts, the headers are lscpu's.
COLUMNS: dict[str, tuple[str, str, Justify]] = {
    "cpu": ("CPU", "CPU", "right"),
    "node": ("NODE", "Node", "right"),
    "socket": ("SOCKET", "Socket", "right"),
    "die": ("DIE", "Die", "right"),
    "cluster": ("CLUSTER", "Cluster", "right"),
    "core": ("CORE", "Core", "right"),
    "cache": ("L1d:L1i:L2:L3", "", "left"),
    "online": ("ONLINE", "Online", "right"),
}
_DEFAULT_TABLE = ("cpu", "node", "socket", "core", "cache", "online")
_DEFAULT_PARSE = ("cpu", "core", "socket", "node", "cache")
_CACHE_PARSE_HEADER = ("", "L1d", "L1i", "L2", "L3")
_PARSE_PREAMBLE = (
    "# The following is the parsable format, which can be fed to other\n"
    "# programs. Each different item in every column has an unique ID\n"
    "# starting usually from zero."
)


def _parse_columns(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[str, ...] | None:
    """Turn the ``-e`` value into column names, rejecting unknown ones."""
    if value is None:
        return None
    if value == "all":
        return tuple(COLUMNS)
    names = tuple(name.strip().lower() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in COLUMNS]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown column {unknown[0]!r}" if unknown else "no column given",
            param_hint="'-e/--extended'",
        )
    return names


def _dash(value: int | None) -> str:
    """Return a table cell: the number, or ``-`` when unknown."""
    return "-" if value is None else str(value)


def _table_cell(info: CpuInfo, column: str) -> str:
    """Return one ``lscpu -e`` style cell of a CPU's row."""
    if column == "cache":
        caches = (info.l1d, info.l1i, info.l2, info.l3)
        if all(c is None for c in caches):
            return "-"
        return ":".join(_dash(c) for c in caches)
    if column == "online":
        return "yes" if info.online else "no"
    value = getattr(info, column)
    assert value is None or isinstance(value, int)
    return _dash(value)


def _parse_cells(info: CpuInfo, column: str) -> list[str]:
    """Return the ``lscpu -p`` CSV fields of one column of a CPU's row."""
    if column == "cache":
        return [""] + ["" if c is None else str(c) for c in (info.l1d, info.l1i, info.l2, info.l3)]
    if column == "online":
        return ["Y" if info.online else "N"]
    value = getattr(info, column)
    return ["" if value is None else str(value)]


def _print_table(opts: Options, topo: Topology, columns: tuple[str, ...]) -> None:
    """Print the ``lscpu -e`` style table."""
    table(
        opts,
        [COLUMNS[c][0] for c in columns],
        [[_table_cell(info, c) for c in columns] for info in topo.cpus],
        justify=[COLUMNS[c][2] for c in columns],
    )


def _print_summary(topo: Topology) -> None:
    """Print the CPU lists and a ``numactl --hardware`` style nodes section."""
    click.echo()
    click.echo(
        f"possible: {format_cpulist(topo.possible)}  "
        f"present: {format_cpulist(topo.present)}  "
        f"online: {format_cpulist(topo.online)}"
    )
    if topo.nodes:
        click.echo(f"available: {len(topo.nodes)} nodes ({format_cpulist(topo.nodes)})")
        for node, cpus in topo.nodes.items():
            click.echo(f"node {node} cpus: {' '.join(map(str, cpus))}".rstrip())


def _print_parse(topo: Topology, columns: tuple[str, ...]) -> None:
    """Print ``lscpu -p`` style CSV with its comment header."""
    header: list[str] = []
    for c in columns:
        header.extend(_CACHE_PARSE_HEADER if c == "cache" else [COLUMNS[c][1]])
    click.echo(_PARSE_PREAMBLE)
    click.echo("# " + ",".join(header))
    for info in topo.cpus:
        fields: list[str] = []
        for c in columns:
            fields.extend(_parse_cells(info, c))
        click.echo(",".join(fields))


def _plain(
    opts: Options, topo: Topology, columns: tuple[str, ...] | None, parse: bool
) -> Callable[[], None]:
    """Return the function that prints the chosen plain rendering."""

    def render() -> None:
        if parse:
            _print_parse(topo, columns or _DEFAULT_PARSE)
        else:
            _print_table(opts, topo, columns or _DEFAULT_TABLE)
            _print_summary(topo)

    return render


@click.command("topology")
@click.option(
    "-e",
    "--extended",
    "columns",
    is_flag=False,
    flag_value="all",
    default=None,
    metavar="[LIST]",
    callback=_parse_columns,
    help=(
        "Comma list of columns: cpu,node,socket,die,cluster,core,cache,online "
        "(alone: all of them)."
    ),
)
@click.option("--parse", is_flag=True, help="Print lscpu -p style CSV with a '#' header.")
@click.option(
    "--simulate",
    type=click.IntRange(min=1),
    metavar="N",
    help="Show the simulated topology of N CPUs instead of this machine's.",
)
@click.option(
    "--sysfs-root",
    type=click.Path(file_okay=False),
    default=None,
    help=f"Read this sysfs tree instead of {DEFAULT_SYSFS_ROOT} (for tests).",
)
@click.pass_obj
def topology(
    obj: Options | None,
    columns: tuple[str, ...] | None,
    parse: bool,
    simulate: int | None,
    sysfs_root: str | None,
) -> None:
    """Show CPUs, sockets, cores, caches and NUMA nodes (like lscpu -e).

    One row per possible CPU; values sysfs does not give (an offline CPU's
    core, say) show as '-'.
    """
    opts = obj if obj is not None else Options()
    if simulate is not None and sysfs_root is not None:
        raise click.UsageError("--simulate and --sysfs-root exclude each other")
    root = sysfs_root if sysfs_root is not None else DEFAULT_SYSFS_ROOT
    try:
        topo = Topology.simulated(simulate) if simulate is not None else Topology.read(root)
    except OSError as exc:
        where = exc.filename if exc.filename is not None else root
        fail(opts, f"cannot read CPU topology: {exc.strerror or exc}: {where}", exc.errno)
    except ValueError as exc:
        fail(opts, f"cannot read CPU topology under {root}: {exc}", "EINVAL")
    emit(opts, topo.to_json(), _plain(opts, topo, columns, parse))
