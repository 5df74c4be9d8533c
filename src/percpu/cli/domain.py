"""``percpu domain``: list, inspect, check and remove domains; take the tour.

Commands (bpftool grammar, ``percpu [-j|-p] domain COMMAND``)::

    percpu domain ls                   every domain of this user in /dev/shm
    percpu domain show [NAME]          header, memory, kmalloc classes, objects (all: ls)
    percpu domain check NAME           verify pages, descriptors, size classes
    percpu domain rm NAME... | --stale remove by name, or every stale domain
    percpu domain tour                 a short guided run of a live domain

A domain is *stale* when its creator is gone (dead, or its PID reused by a
later process) or its file is not a usable domain.  ``rm`` refuses a domain
whose creator is alive unless ``--force`` is given.
"""

from __future__ import annotations

import os
import time
from typing import Any

import click

from percpu.cli.render import Options, emit, fail, table

__all__ = ["domain"]


def _opts(ctx: click.Context) -> Options:
    opts = ctx.find_object(Options)
    return opts if opts is not None else Options()


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
        value /= 1024
    return f"{n}B"


@click.group()
def domain() -> None:
    """Shared-memory domains: the machines percpu objects live in."""


@domain.command("ls")
@click.pass_context
def ls(ctx: click.Context) -> None:
    """List the domains of this user (like ``bpftool map show``)."""
    from percpu.runtime.domain import list_domains

    opts = _opts(ctx)
    infos = list(list_domains())

    def plain() -> None:
        if not infos:
            click.echo("no domains")
            return
        table(
            opts,
            ["NAME", "SIZE", "POPULATED", "CPUS", "OBJECTS", "OWNER", "STATE"],
            [
                [
                    i.name,
                    _human(i.size),
                    _human(i.populated_pages * 4096),
                    (i.possible + (" (sim)" if i.simulated else "")) or "-",
                    str(i.objects),
                    str(i.owner_pid or "-"),
                    "invalid" if i.error else ("live" if i.owner_alive else "stale"),
                ]
                for i in infos
            ],
            ["left", "right", "right", "left", "right", "right", "left"],
        )

    emit(opts, [i.to_json() for i in infos], plain)


@domain.command("show")
@click.argument("name", required=False)
@click.pass_context
def show(ctx: click.Context, name: str | None) -> None:
    """Show one domain: header, memory, kmalloc classes and named objects (all: see ls)."""
    from percpu.runtime.domain import Domain, owner_alive
    from percpu.runtime.topology import format_cpulist

    if name is None:  # bpftool: `map show` without an id lists them all
        ctx.invoke(ls)
        return
    opts = _opts(ctx)
    try:
        dom = Domain.attach(name)
    except OSError as e:
        fail(opts, str(e), e.errno)
    try:
        hdr = dom.arena.header()
        stats = dom.stats()
        objects = dom.objects()
        data: dict[str, Any] = {
            "name": dom.name,
            "path": dom.path,
            "owner_pid": dom.owner_pid,
            "owner_alive": owner_alive(dom.owner_pid, hdr["created_ns"]),
            "created_ns": hdr["created_ns"],
            "version": hdr["version"],
            "nr_cpu_ids": dom.nr_cpu_ids,
            "possible": format_cpulist(dom.possible),
            "online": format_cpulist(dom.online),
            "simulated": dom.simulated,
            **{k: v for k, v in stats.items() if k != "kmalloc"},
            "kmalloc": stats["kmalloc"],
            "objects": [
                {
                    "name": o.name,
                    "kind": o.kind,
                    "offset": o.offset,
                    "bytes": o.size,
                    "owner_pid": o.owner_pid,
                }
                for o in objects
            ],
        }
    finally:
        dom.close()

    def plain() -> None:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(data["created_ns"] / 1e9))
        alive = "alive" if data["owner_alive"] else "gone"
        click.echo(f"{data['name']}: {data['path']}")
        click.echo(f"  owner pid {data['owner_pid']} ({alive}), created {created}, layout v{data['version']}")
        sim = " (simulated)" if data["simulated"] else ""
        click.echo(
            f"  cpus: possible {data['possible']}  online {data['online']}  "
            f"nr_cpu_ids {data['nr_cpu_ids']}{sim}"
        )
        click.echo(
            f"  memory: {_human(data['size'])} reserved, {data['pages']} pages; "
            f"{data['populated_pages']} populated ({data['meta_pages']} meta + "
            f"{data['used_pages']} in use), st_blocks {data['st_blocks_pages']} pages"
        )
        click.echo(
            f"  page allocs {data['page_allocs']}  frees {data['page_frees']}  "
            f"recoveries (generation) {data['generation']}"
        )
        click.echo("  kmalloc:")
        table(
            opts,
            ["  CLASS", "SLABS", "EMPTY", "INUSE", "ALLOCS", "FREES"],
            [
                [f"  kmalloc-{c['size']}", str(c["slabs"]), str(c["empty_slabs"]), str(c["inuse"]),
                 str(c["allocs"]), str(c["frees"])]
                for c in data["kmalloc"]
            ],
            ["left", "right", "right", "right", "right", "right"],
        )
        if data["objects"]:
            click.echo("  objects:")
            for o in data["objects"]:
                click.echo(f"    {o['name']}  {o['kind']}  off {o['offset']}  {o['bytes']}B  pid {o['owner_pid']}")

    emit(opts, data, plain)


@domain.command("check")
@click.argument("name")
@click.pass_context
def check(ctx: click.Context, name: str) -> None:
    """Verify a domain's page allocator and kmalloc classes (an fsck)."""
    from percpu.runtime.domain import Domain

    opts = _opts(ctx)
    try:
        dom = Domain.attach(name)
    except OSError as e:
        fail(opts, str(e), e.errno)
    try:
        dom.check()
        consistent = dom.populated_pages() == dom.st_blocks_pages()
        data = {
            "name": name,
            "ok": consistent,
            "populated_pages": dom.populated_pages(),
            "st_blocks_pages": dom.st_blocks_pages(),
        }
    except OSError as e:
        fail(opts, f"{name}: {e}", e.errno)
    finally:
        dom.close()
    if not consistent:
        fail(opts, f"{name}: populated pages {data['populated_pages']} != st_blocks {data['st_blocks_pages']}")
    emit(opts, data, f"{name}: ok ({data['populated_pages']} populated pages)")


@domain.command("rm")
@click.argument("names", nargs=-1)
@click.option("--stale", is_flag=True, help="Remove every domain whose creator is gone.")
@click.option("-f", "--force", is_flag=True, help="Remove even if the creator is alive.")
@click.pass_context
def rm(ctx: click.Context, names: tuple[str, ...], stale: bool, force: bool) -> None:
    """Remove domains by name, or all stale ones with --stale."""
    from percpu.runtime.domain import domain_info, list_domains, remove

    opts = _opts(ctx)
    if not names and not stale:
        fail(opts, "name a domain or give --stale", exit_code=2)
    removed: list[str] = []
    if stale:
        for info in list_domains():
            if info.stale:
                try:
                    remove(info.name)
                    removed.append(info.name)
                except OSError:
                    pass  # removed by someone else meanwhile
    for name in names:
        try:
            info = domain_info(name)
        except OSError as e:
            fail(opts, str(e), e.errno)
        if not info.stale and not force:
            fail(
                opts,
                f"domain {name!r} is in use by its creator (pid {info.owner_pid}); use --force",
                "EBUSY",
            )
        remove(name)
        removed.append(name)
    emit(opts, {"removed": removed}, "\n".join(f"removed {n}" for n in removed) or "nothing to remove")


# ---- the tour ----------------------------------------------------------------


def _tour_worker(hits: str, counter: int, lock_off: int, rounds: int) -> int:
    """Worker of the tour: count on this CPU's copy of a per-CPU counter, and under the shared lock."""
    from percpu.pcpu import PerCpuCounter
    from percpu.runtime.domain import current_domain

    dom = current_domain()
    lock = dom.lock_at(lock_off)
    word = dom.mem(counter, 8).cast("Q")
    add = PerCpuCounter.attach(hits).add
    for _ in range(rounds):
        add()
        lock.lock()
        word[0] += 1  # a plain read-modify-write: only the lock makes it safe
        lock.unlock()
    return 0


@domain.command("tour")
@click.option("--cpus", "nr_cpus", type=int, default=None, help="Simulate this many possible CPUs.")
@click.option("--rounds", type=int, default=20000, show_default=True, help="Increments per worker.")
@click.option("--method", type=click.Choice(["fork", "spawn"]), default="spawn", show_default=True)
@click.pass_context
def tour(ctx: click.Context, nr_cpus: int | None, rounds: int, method: str) -> None:
    """Create a domain, run pinned workers in it, show what happened, remove it."""
    from percpu.runtime.domain import Domain
    from percpu.runtime.kthread import kthread_run_on_cpu
    from percpu.runtime.topology import format_cpulist

    opts = _opts(ctx)
    say = (lambda *a: None) if opts.json_output else click.echo
    dom = Domain.create(size=64 << 20, nr_cpus=nr_cpus)
    report: dict[str, Any] = {"domain": dom.name, "nr_cpu_ids": dom.nr_cpu_ids}
    try:
        with dom:
            say(f"1. Created domain {dom.name}: {dom.path}, {_human(dom.size)} reserved,")
            say(f"   {dom.populated_pages()} pages populated (header, registry, page map).")
            say(f"   CPUs: possible {format_cpulist(dom.possible)}, online {format_cpulist(dom.online)}"
                + (" (simulated)" if dom.simulated else ""))
            from percpu.pcpu import PerCpuCounter
            from percpu.pcpu import info as pcpu_info

            hits = PerCpuCounter("tour.hits")
            counter = dom.kzalloc(8)
            lock_off = dom.kzalloc(8)
            assert counter is not None and lock_off is not None
            dom.register("tour.lock", "lock", lock_off, 8)
            pi = pcpu_info()
            say(f"2. alloc_percpu'd a counter 'tour.hits' at {hits.ptr:#x}: one copy per possible CPU,")
            say(f"   {pi['unit_size'] // 1024} KiB apart (mm/percpu.c units); kmalloc'd a plain counter at "
                f"{counter} and a lock at {lock_off}.")
            real = sorted(os.sched_getaffinity(0))
            cpus = [c for c in dom.possible if dom.real_cpu(c) in real][: max(2, len(real))]
            say(f"3. Starting {len(cpus)} kthreads ({method}) pinned to CPUs {format_cpulist(cpus)}, "
                f"{rounds} rounds each ...")
            t0 = time.perf_counter()
            workers = [
                kthread_run_on_cpu(_tour_worker, c, "tour/%u", "tour.hits", counter, lock_off, rounds, method=method)
                for c in cpus
            ]
            for w in workers:
                say(f"   {w.name:<10} pid {w.pid} on real CPU {w.real_cpu}")
            codes = [w.join(120) for w in workers]
            for w in workers:
                w.stop()
            dt = time.perf_counter() - t0
            per_cpu = {c: hits.read(c) for c in cpus}
            total = hits.sum()
            locked = dom.mem(counter, 8).cast("Q")[0]
            say(f"4. Done in {dt:.2f} s; exit codes {codes}.")
            say("   per-CPU counter: " + ", ".join(f"cpu{c}={v}" for c, v in per_cpu.items())
                + f"; sum over all {len(dom.possible)} possible CPUs = {total} (added without a lock)")
            say(f"   counter under the shared lock = {locked} (expected {rounds * len(cpus)})")
            dom.check()
            say(f"5. Consistency check passed; populated pages {dom.populated_pages()} = "
                f"st_blocks {dom.st_blocks_pages()}.")
            ok = locked == rounds * len(cpus) and total == rounds * len(cpus) and all(c == 0 for c in codes)
            report.update(
                workers=[{"name": w.name, "cpu": w.cpu, "real_cpu": w.real_cpu, "exit": c}
                         for w, c in zip(workers, codes)],
                per_cpu={str(c): v for c, v in per_cpu.items()},
                sum=total,
                locked_counter=locked,
                expected=rounds * len(cpus),
                seconds=dt,
                populated_pages=dom.populated_pages(),
                st_blocks_pages=dom.st_blocks_pages(),
                ok=ok,
            )
            hits.free()
            for off in (counter, lock_off):
                dom.kfree(off)
    finally:
        dom.close()
        dom.unlink()
        say(f"6. Unlinked {dom.name}.")
    if not report.get("ok"):
        fail(opts, f"tour failed: {report}")
    emit(opts, report, "")
