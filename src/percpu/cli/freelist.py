"""``percpu freelist``: list the freelists of a domain and show one.

    percpu freelist ls [-d DOMAIN]         every freelist, in every domain by default
    percpu freelist show NAME [-d DOMAIN]  per-CPU free counts, extra list, element area

Without ``-d`` the name is looked up in every domain of this user; it must be
unique.  ``show`` walks every list under its lock (the structure check) and
reports ``ok`` or the problem it found.
"""

from __future__ import annotations

from typing import Any

import click

from percpu.cli.render import Options, domain_names, emit, fail, table

__all__ = ["freelist"]



def _collect(domain: str | None, only: str | None) -> list[dict[str, Any]]:
    from percpu.freelist import KIND, PcpuFreelist
    from percpu.runtime.domain import Domain

    out = []
    for dname in domain_names(domain):
        dom = Domain.attach(dname)
        try:
            for e in dom.objects():
                if e.kind != KIND or (only is not None and e.name != only):
                    continue
                s = PcpuFreelist.attach(e.name, dom)
                info = s.info()
                counts = s.per_cpu()
                try:
                    total: int | None = s.check()
                    problem = None
                except OSError as err:
                    total, problem = None, str(err)
                out.append({
                    "domain": dname,
                    "name": e.name,
                    "offset": e.offset,
                    "owner_pid": e.owner_pid,
                    "robust": info["robust"],
                    "area": {"base": info["area_base"], "elem_size": info["elem_size"],
                             "nr_elems": info["nr_elems"]},
                    "free": sum(counts.values()),
                    "per_cpu": [{"cpu": c, "free": n} for c, n in counts.items() if c != "extra"],
                    "extra": counts["extra"],
                    "check": "ok" if problem is None else problem,
                    "checked_free": total,
                })
        finally:
            dom.close()
    return out


@click.group()
def freelist() -> None:
    """Per-CPU freelists (kernel/bpf/percpu_freelist.c) in shared memory."""


@freelist.command("ls")
@click.option("-d", "--domain", default=None, help="Only this domain.")
@click.pass_context
def ls(ctx: click.Context, domain: str | None) -> None:
    """List freelists: domain, name, free nodes, element area."""
    opts = ctx.find_object(Options) or Options()
    try:
        rows = _collect(domain, None)
    except OSError as e:
        fail(opts, str(e), e.errno)

    def plain() -> None:
        if not rows:
            click.echo("no freelists")
            return
        table(opts, ["DOMAIN", "NAME", "FREE", "ELEMS", "ELEM_SIZE", "EXTRA", "CHECK"],
              [[r["domain"], r["name"], str(r["free"]), str(r["area"]["nr_elems"]),
                str(r["area"]["elem_size"]), str(r["extra"]), r["check"]] for r in rows],
              ["left", "left", "right", "right", "right", "right", "left"])

    emit(opts, rows, plain)


@freelist.command("show")
@click.argument("name")
@click.option("-d", "--domain", default=None, help="The domain (default: search them all).")
@click.pass_context
def show(ctx: click.Context, name: str, domain: str | None) -> None:
    """Show one freelist: free nodes per possible CPU and on the extra list."""
    opts = ctx.find_object(Options) or Options()
    try:
        rows = _collect(domain, name)
    except OSError as e:
        fail(opts, str(e), e.errno)
    if not rows:
        fail(opts, f"no freelist named {name!r}" + (f" in domain {domain!r}" if domain else ""), "ENOENT")
    if len(rows) > 1:
        fail(opts, f"freelist {name!r} exists in several domains ({', '.join(r['domain'] for r in rows)}); "
             "use -d DOMAIN", "EINVAL")
    r = rows[0]

    def plain() -> None:
        a = r["area"]
        click.echo(f"{r['name']} in domain {r['domain']}: {r['free']} free of {a['nr_elems']} elements "
                   f"of {a['elem_size']} B at offset {a['base']}; extra list {r['extra']}; "
                   f"robust {'on' if r['robust'] else 'off'}; check {r['check']}")
        table(opts, ["CPU", "FREE"], [[str(p["cpu"]), str(p["free"])] for p in r["per_cpu"]],
              ["right", "right"])

    emit(opts, r, plain)
