"""The one output layer of the ``percpu`` command line.

Every command decides *what* to say; this module decides *how*: JSON when the
global ``-j``/``-p`` is given (the stable contract, as in bpftool), plain text
for humans otherwise (not promised stable).  Errors follow the same rule: in
JSON mode they are a JSON object on stdout, so a pipe never receives half
text, and in plain mode an ``Error:`` line on stderr; both exit non-zero (1,
or click's 2 for a usage error).

Tables use rich only when stdout is a terminal (or FORCE_COLOR/TTY_COMPATIBLE
ask for it); piped output is plain aligned columns without escape codes.  rich
honours NO_COLOR itself.  rich is imported lazily: ``percpu -j ...`` in a
script should not pay for it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, NoReturn

import click

__all__ = [
    "Justify",
    "domain_names",
    "Options",
    "current_options",
    "dumps",
    "emit",
    "fail",
    "table",
]

Justify = Literal["left", "right"]


@dataclass(frozen=True)
class Options:
    """Global options of the ``percpu`` command, stored as the click context object."""

    json: bool = False
    pretty: bool = False
    verbose: int = 0

    @property
    def json_output(self) -> bool:
        """Return whether output is JSON (``-j``, or ``-p`` which implies it)."""
        return self.json or self.pretty


def current_options() -> Options:
    """Return the global Options of the running command (defaults outside one)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return Options()
    opts = ctx.find_object(Options)
    return opts if opts is not None else Options()


def dumps(opts: Options, data: object) -> str:
    """Return ``data`` as JSON text, indented when ``-p`` was given."""
    return json.dumps(data, indent=2 if opts.pretty else None)


def emit(opts: Options, data: object, plain: Callable[[], None] | str) -> None:
    """Print ``data`` as JSON in JSON mode, else the plain rendering.

    ``plain`` is either the text to print or a function that prints it, so
    the plain form is only built when it is needed.
    """
    if opts.json_output:
        click.echo(dumps(opts, data))
    elif callable(plain):
        plain()
    else:
        click.echo(plain)


def fail(
    opts: Options,
    message: str,
    errno: int | str | None = None,
    *,
    exit_code: int = 1,
) -> NoReturn:
    """Report an error in the current output mode and exit with ``exit_code``.

    Mirrors bpftool's ``p_err()``.  JSON mode prints ``{"error": message}``
    to stdout, with ``"errno": "ENOENT"`` added when ``errno`` is given (a
    number is turned into its name); plain mode prints ``Error: message`` to
    stderr.  Raises SystemExit(exit_code) (1 unless a usage error asks for
    click's 2), which click's CliRunner reports as the exit code.
    """
    if opts.json_output:
        obj: dict[str, object] = {"error": message}
        if errno is not None:
            obj["errno"] = _errno_name(errno)
        click.echo(dumps(opts, obj))
    else:
        click.echo(f"Error: {message}", err=True)
    raise SystemExit(exit_code)


def _errno_name(errno: int | str) -> str:
    """Return the symbolic name of an errno value (``2`` → ``ENOENT``)."""
    if isinstance(errno, str):
        return errno
    from percpu.errors import errno_name

    return errno_name(errno)


def table(
    opts: Options,
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    justify: Sequence[Justify] | None = None,
) -> None:
    """Print rows under a header: a rich table on a terminal, plain columns otherwise.

    ``justify`` gives each column's alignment (default left).  Plain output
    separates columns with one space and strips trailing blanks, like
    ``lscpu -e``; it never contains escape codes.
    """
    aligns: list[Justify] = list(justify) if justify is not None else ["left"] * len(columns)
    if len(aligns) != len(columns):
        raise ValueError("justify must give one alignment per column")
    body = [[str(cell) for cell in row] for row in rows]
    if _want_rich():
        if _rich_table(columns, body, aligns):
            return
    widths = [len(name) for name in columns]
    for row in body:
        if len(row) != len(columns):
            raise ValueError("every row must have one cell per column")
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    for row in [list(columns), *body]:
        cells = [
            cell.rjust(w) if align == "right" else cell.ljust(w)
            for cell, w, align in zip(row, widths, aligns)
        ]
        click.echo(" ".join(cells).rstrip())


def _want_rich() -> bool:
    """Return whether a terminal (or a forcing variable) may take rich output.

    A cheap test that avoids importing rich when piped; rich's
    ``Console.is_terminal`` makes the final decision.
    """
    if "FORCE_COLOR" in os.environ or "TTY_COMPATIBLE" in os.environ:
        return True
    isatty = getattr(sys.stdout, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except ValueError:
        return False


def _rich_table(columns: Sequence[str], body: list[list[str]], aligns: list[Justify]) -> bool:
    """Print a rich table if rich is installed and stdout is a terminal."""
    try:
        from rich import box
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text
    except ImportError:
        return False
    console = Console()
    if not console.is_terminal:
        return False
    tbl = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for name, align in zip(columns, aligns):
        tbl.add_column(name, justify=align, no_wrap=True)
    for row in body:
        if len(row) != len(columns):
            raise ValueError("every row must have one cell per column")
        tbl.add_row(*(Text(cell) for cell in row))
    console.print(tbl)
    return True


def domain_names(only: str | None) -> list[str]:
    """The domains a listing command looks at: ``only``, or every readable domain of this user."""
    from percpu.runtime.domain import list_domains

    if only is not None:
        return [only]
    return [d.name for d in list_domains() if d.error is None]
