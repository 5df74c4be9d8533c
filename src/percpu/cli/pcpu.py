"""``percpu pcpu``: the per-CPU allocator of a domain.

    percpu pcpu stats [-d DOMAIN]   /sys/kernel/debug/percpu_stats, in the kernel's format
    percpu pcpu show [-d DOMAIN]    configuration, counters, chunks and their populated pages

Without ``-d`` the domain must be the only one of this user.  ``-j`` gives the
same data as JSON (``stats``: ``alloc_info``/``global``/``chunks``, as
``percpu.pcpu.stats_dict``).
"""

from __future__ import annotations

from typing import Any

import click

from percpu.cli.render import Options, emit, fail, table

__all__ = ["pcpu"]


def _attach(opts: Options, name: str | None) -> Any:
    from percpu.runtime.domain import Domain, list_domains

    if name is None:
        names = [d.name for d in list_domains() if d.error is None]
        if not names:
            fail(opts, "no domain", "ENOENT")
        if len(names) > 1:
            fail(opts, f"several domains ({', '.join(names)}); use -d DOMAIN", "EINVAL")
        name = names[0]
    try:
        return Domain.attach(name)
    except OSError as e:
        fail(opts, str(e), e.errno)


def _popmap(raw: bytes, nr_pages: int) -> str:
    bits = int.from_bytes(raw, "little")
    return "".join("#" if bits >> i & 1 else "." for i in range(nr_pages))


@click.group()
def pcpu() -> None:
    """The per-CPU allocator (mm/percpu.c) of a domain."""


@pcpu.command("stats")
@click.option("-d", "--domain", default=None, help="The domain (default: the only one).")
@click.pass_context
def stats(ctx: click.Context, domain: str | None) -> None:
    """Print percpu_stats: allocation info, global stats, per-chunk stats."""
    from percpu.pcpu import stats_dict, stats_text

    opts = ctx.find_object(Options) or Options()
    dom = _attach(opts, domain)
    try:
        data = stats_dict(dom)
        text = stats_text(dom)
    finally:
        dom.close()
    emit(opts, data, lambda: click.echo(text, nl=False))


@pcpu.command("show")
@click.option("-d", "--domain", default=None, help="The domain (default: the only one).")
@click.pass_context
def show(ctx: click.Context, domain: str | None) -> None:
    """Show the configuration, the counters, every chunk and the accounting groups."""
    from percpu.memcg import groups
    from percpu.pcpu import chunks, info

    opts = ctx.find_object(Options) or Options()
    dom = _attach(opts, domain)
    try:
        i = info(dom)
        chs = chunks(dom) if i["setup"] else []
        grs = [g.info() for g in groups(dom)]
        name = dom.name
    finally:
        dom.close()
    report: dict[str, Any] = {
        "domain": name,
        "setup": bool(i["setup"]),
        "alloc_info": {k: i[k] for k in ("unit_size", "static_size", "reserved_size", "dyn_size",
                                         "atom_size", "alloc_size", "nr_units")},
        "slots": {"nr_slots": i["nr_slots"], "sidelined": i["sidelined_slot"], "free": i["free_slot"],
                  "to_depopulate": i["to_depopulate_slot"]},
        "pages": {"nr_populated": i["nr_populated"], "pcpu_nr_pages": i["nr_populated"] * i["nr_units"],
                  "empty_pop_pages": i["nr_empty_pop_pages"], "low": 2, "high": 4},
        "counters": {k: i[k] for k in ("nr_cur_alloc", "nr_alloc", "nr_dealloc", "nr_chunks", "nr_balance_runs",
                                        "nr_pages_populated", "nr_pages_depopulated", "nr_chunks_created",
                                        "nr_chunks_destroyed", "recoveries", "static_used")},
        "chunks": [{k: (_popmap(c["populated"], c["nr_pages"]) if k == "populated" else c[k])
                    for k in ("label", "offset", "base", "slot", "nr_pages", "nr_populated", "isolated",
                              "immutable", "nr_alloc", "free_bytes", "contig_bytes", "empty_pop_pages",
                              "populated")}
                   for c in chs],
        "memcg": [{k: g[k] for k in ("name", "limit", "usage", "max_usage", "failcnt", "nr_pcpu_objs")}
                  for g in grs],
    }

    def plain() -> None:
        a = report["alloc_info"]
        click.echo(f"domain {name}: per-CPU allocator "
                   + ("set up" if report["setup"] else "not set up yet (the first per-CPU call builds it)"))
        click.echo(f"  units: {a['nr_units']} x {a['unit_size']} B (s{a['static_size']} r{a['reserved_size']} "
                   f"d{a['dyn_size']}), atom {a['atom_size']}")
        s = report["slots"]
        click.echo(f"  slots: {s['nr_slots']} (sidelined {s['sidelined']}, free {s['free']}, "
                   f"to_depopulate {s['to_depopulate']})")
        p = report["pages"]
        click.echo(f"  populated: {p['nr_populated']} pages per unit, pcpu_nr_pages {p['pcpu_nr_pages']}; "
                   f"empty populated {p['empty_pop_pages']} (low {p['low']}, high {p['high']})")
        c = report["counters"]
        click.echo(f"  allocations: {c['nr_cur_alloc']} live ({c['nr_alloc']} made, {c['nr_dealloc']} freed); "
                   f"chunks {c['nr_chunks']} ({c['nr_chunks_created']} created, {c['nr_chunks_destroyed']} "
                   f"destroyed); balance runs {c['nr_balance_runs']}; pages populated {c['nr_pages_populated']}, "
                   f"depopulated {c['nr_pages_depopulated']}; recoveries {c['recoveries']}")
        if report["chunks"]:
            table(opts, ["CHUNK", "KIND", "SLOT", "ALLOCS", "FREE", "CONTIG", "EMPTY_POP", "PAGES"],
                  [[hex(ch["offset"]), ch["label"] or "-", str(ch["slot"]), str(ch["nr_alloc"]),
                    str(ch["free_bytes"]), str(ch["contig_bytes"]), str(ch["empty_pop_pages"]), ch["populated"]]
                   for ch in report["chunks"]],
                  ["left", "left", "right", "right", "right", "right", "right", "left"])
        if report["memcg"]:
            table(opts, ["GROUP", "LIMIT", "USAGE", "MAX", "FAILCNT", "OBJS"],
                  [[g["name"], str(g["limit"]), str(g["usage"]), str(g["max_usage"]), str(g["failcnt"]),
                    str(g["nr_pcpu_objs"])] for g in report["memcg"]],
                  ["left", "right", "right", "right", "right", "right"])

    emit(opts, report, plain)
