"""``percpu memalloc``: list the BPF memory allocators of a domain and show one.

    percpu memalloc ls [-d DOMAIN]                    every named allocator
    percpu memalloc show NAME [-d DOMAIN] [--cpu N]   per CPU and bucket: free_cnt,
                                                      watermarks, objects on each list

Without ``-d`` the name is looked up in every domain of this user; it must be
unique.  ``show`` reads each cache under its lock, then runs the allocator's
check (every lock, every list) and reports ``ok`` or the problem it found.
"""

from __future__ import annotations

from typing import Any

import click

from percpu.cli.render import Options, domain_names, emit, fail, table

__all__ = ["memalloc"]

_LISTS = (
    ("free_llist_extra", "EXTRA"),
    ("free_by_rcu", "BY_RCU"),
    ("free_llist_extra_rcu", "EXTRA_RCU"),
    ("waiting_for_gp", "WAIT_GP"),
    ("free_by_rcu_ttrace", "TTRACE"),
    ("waiting_for_gp_ttrace", "WAIT_TTRACE"),
)



def _collect(domain: str | None, only: str | None, cpu: int | None = None) -> list[dict[str, Any]]:
    from percpu.memalloc import KIND, LISTS, BpfMemAlloc
    from percpu.runtime.domain import Domain

    out = []
    for dname in domain_names(domain):
        dom = Domain.attach(dname)
        try:
            for e in dom.objects():
                if e.kind != KIND or (only is not None and e.name != only):
                    continue
                ma = BpfMemAlloc.attach(e.name, dom)
                info = ma.info()
                try:
                    chk: dict[str, Any] | None = ma.check()
                    problem = None
                except OSError as err:
                    chk, problem = None, str(err)
                caches = [c for c in info["caches"] if cpu is None or c["cpu"] == cpu]
                totals = {k: sum(c[k] for c in info["caches"]) for k in (*LISTS, "free_cnt", "nr_alloc", "nr_free",
                                                                 "nr_busy")}
                outstanding = (totals["nr_alloc"] + info["direct"] - totals["nr_free"] - totals["nr_busy"]
                               - info["raw_freed"])
                out.append({
                    "domain": dname,
                    "name": e.name,
                    "offset": e.offset,
                    "flavour": ("percpu " if info["percpu"] else "")
                    + ("all buckets" if info["all_buckets"] else f"size {info['size']}"),
                    "percpu": info["percpu"],
                    "size": info["size"],
                    "nr_cpu_ids": info["nr_cpu_ids"],
                    "memcg": info["memcg"],
                    "created": info["created"],
                    "released": info["released"],
                    "outstanding": outstanding,
                    "totals": totals,
                    "caches": [{k: v for k, v in c.items() if k != "cache"} for c in caches],
                    "check": "ok" if problem is None else problem,
                    "cached": None if chk is None else chk["cached"],
                })
        finally:
            dom.close()
    return out


@click.group()
def memalloc() -> None:
    """BPF memory allocators (kernel/bpf/memalloc.c) in shared memory."""


@memalloc.command("ls")
@click.option("-d", "--domain", default=None, help="Only this domain.")
@click.pass_context
def ls(ctx: click.Context, domain: str | None) -> None:
    """List allocators: domain, name, flavour, objects cached and handed out."""
    opts = ctx.find_object(Options) or Options()
    try:
        rows = _collect(domain, None)
    except OSError as e:
        fail(opts, str(e), e.errno)

    def plain() -> None:
        if not rows:
            click.echo("no BPF memory allocators")
            return
        table(opts, ["DOMAIN", "NAME", "FLAVOUR", "CACHED", "ALLOCATED", "CREATED", "RELEASED", "CHECK"],
              [[r["domain"], r["name"], r["flavour"], str(r["cached"]), str(r["outstanding"]),
                str(r["created"]), str(r["released"]), r["check"]] for r in rows],
              ["left", "left", "left", "right", "right", "right", "right", "left"])

    emit(opts, rows, plain)


@memalloc.command("show")
@click.argument("name")
@click.option("-d", "--domain", default=None, help="The domain (default: search them all).")
@click.option("--cpu", type=int, default=None, help="Only this CPU's caches.")
@click.pass_context
def show(ctx: click.Context, name: str, domain: str | None, cpu: int | None) -> None:
    """Show one allocator: per CPU and bucket, free_cnt, watermarks and the RCU lists."""
    opts = ctx.find_object(Options) or Options()
    try:
        rows = _collect(domain, name, cpu)
    except OSError as e:
        fail(opts, str(e), e.errno)
    if not rows:
        fail(opts, f"no BPF memory allocator named {name!r}" + (f" in domain {domain!r}" if domain else ""),
             "ENOENT")
    if len(rows) > 1:
        fail(opts, f"allocator {name!r} exists in several domains ({', '.join(r['domain'] for r in rows)}); "
             "use -d DOMAIN", "EINVAL")
    r = rows[0]

    def plain() -> None:
        t = r["totals"]
        click.echo(f"{r['name']} in domain {r['domain']}: {r['flavour']}; {r['outstanding']} allocated, "
                   f"{r['cached']} cached; {r['created']} taken from kmalloc, {r['released']} given back; "
                   f"memcg {r['memcg'] or '-'}; check {r['check']}")
        head = ["CPU", "UNIT", "FREE_CNT", "LOW", "HIGH", "BATCH", *(h for _, h in _LISTS), "ALLOCS", "FREES"]
        body = [[str(c["cpu"]), str(c["unit_size"]), str(c["free_cnt"]), str(c["low_watermark"]),
                 str(c["high_watermark"]), str(c["batch"]), *(str(c[k]) for k, _ in _LISTS),
                 str(c["nr_alloc"]), str(c["nr_free"])] for c in r["caches"]]
        body.append(["total", "", str(t["free_cnt"]), "", "", "", *(str(t[k]) for k, _ in _LISTS),
                     str(t["nr_alloc"]), str(t["nr_free"])])
        table(opts, head, body, ["right"] * len(head))

    emit(opts, r, plain)
