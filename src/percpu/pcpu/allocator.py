"""The per-CPU allocator's Python side: entry points, warnings, balance work, stats.

The mechanism is ``csrc/pcpu.{h,c}`` (``mm/percpu.c`` function by function);
this module is the policy the kernel keeps outside the allocator proper: the
``gfp`` flags, the rate-limited warnings, scheduling the balance work on the
process's irq_work thread, and the text of ``/sys/kernel/debug/percpu_stats``
(``mm/percpu-stats.c``).
"""

from __future__ import annotations

import logging
from typing import Any

from percpu import _core
from percpu.errors import InvalidArgument
from percpu.runtime import work
from percpu.runtime.cpu import smp_processor_id
from percpu.runtime.domain import Domain, current_domain

__all__ = [
    "GFP_ATOMIC",
    "GFP_KERNEL",
    "GFP_NOWAIT",
    "PCPU_MIN_ALLOC_SIZE",
    "PCPU_MIN_UNIT_SIZE",
    "alloc",
    "alloc_size",
    "balance",
    "chunks",
    "free",
    "info",
    "nr_pages",
    "per_cpu_ptr",
    "stats_dict",
    "stats_text",
    "this_cpu_ptr",
]

log = logging.getLogger("percpu.pcpu")

PCPU_MIN_ALLOC_SIZE = _core.PCPU_MIN_ALLOC_SIZE
PCPU_MIN_UNIT_SIZE = _core.PCPU_MIN_UNIT_SIZE
PCPU_EMPTY_POP_PAGES_LOW = _core.PCPU_EMPTY_POP_PAGES_LOW
PCPU_EMPTY_POP_PAGES_HIGH = _core.PCPU_EMPTY_POP_PAGES_HIGH

# include/linux/gfp_types.h, the bits this allocator looks at.
__GFP_HIGH = 0x20
__GFP_IO = 0x40
__GFP_FS = 0x80
__GFP_DIRECT_RECLAIM = 0x400
__GFP_KSWAPD_RECLAIM = 0x800
__GFP_NOWARN = 0x2000
__GFP_RECLAIM = __GFP_DIRECT_RECLAIM | __GFP_KSWAPD_RECLAIM
GFP_KERNEL = __GFP_RECLAIM | __GFP_IO | __GFP_FS
GFP_NOWAIT = __GFP_KSWAPD_RECLAIM
GFP_ATOMIC = __GFP_HIGH | __GFP_KSWAPD_RECLAIM


def natural_align(size: int) -> int:
    """``alloc_percpu(type)``'s alignment for a type of ``size`` bytes: the largest
    power of two dividing it, at most 8, at least ``PCPU_MIN_ALLOC_SIZE``."""
    a = 1
    while a < 8 and size > 0 and size % (a * 2) == 0:
        a *= 2
    return max(a, PCPU_MIN_ALLOC_SIZE)


def _domain(domain: Domain | None) -> Domain:
    return current_domain() if domain is None else domain


def alloc(size: int, align: int = PCPU_MIN_ALLOC_SIZE, *, reserved: bool = False, gfp: int = GFP_KERNEL,
          domain: Domain | None = None) -> int | None:
    """Allocate ``size`` bytes on every possible CPU, zeroed; the per-CPU pointer or None.

    ``pcpu_alloc_noprof()``.  ``size`` is rounded up to 4 bytes; 0, above
    ``PCPU_MIN_UNIT_SIZE`` (32 KiB), an alignment above a page or not a power
    of two is illegal (None and the kernel's warning, unless ``__GFP_NOWARN``);
    alignment 0-3 counts as 4.  A ``gfp`` without ``__GFP_DIRECT_RECLAIM``
    (``GFP_NOWAIT``, ``GFP_ATOMIC``) is atomic: served from populated pages
    only, it never creates a chunk and schedules the balance work when it fails.
    The thread's active :class:`percpu.memcg.Group` is charged; past its limit
    the result is None, silently, as in the kernel.

    Context: a non-atomic allocation takes ``pcpu_alloc_mutex`` and may
    populate pages (system calls); the GIL is released while waiting for a lock.
    """
    if not isinstance(gfp, int) or isinstance(gfp, bool):
        raise InvalidArgument(f"gfp must be an int of GFP_* flags, not {gfp!r}")
    atomic = not gfp & __GFP_DIRECT_RECLAIM
    return _domain(domain).arena.pcpu_alloc(size, align, reserved, atomic, bool(gfp & __GFP_NOWARN))


def free(ptr: int | None, *, domain: Domain | None = None) -> None:
    """Free a per-CPU area by its pointer alone (``free_percpu()``); None or 0 does nothing.

    Beyond the kernel, a pointer that is not the start of a live area (a
    double free, a static variable, a pointer of nothing) raises
    :class:`~percpu.errors.InvalidArgument` and changes nothing.
    Context: takes ``pcpu_lock`` only; callable from any context.
    """
    if ptr is None:
        return
    _domain(domain).arena.pcpu_free(ptr)


def alloc_size(ptr: int, *, domain: Domain | None = None) -> int:
    """Bytes of the live area at ``ptr`` (the kernel's former ``pcpu_alloc_size()``)."""
    return int(_domain(domain).arena.pcpu_alloc_size(ptr))


def per_cpu_ptr(ptr: int, cpu: int, *, domain: Domain | None = None) -> int:
    """The arena offset of ``cpu``'s copy: ``ptr + unit_offset[cpu]``."""
    if not isinstance(cpu, int) or isinstance(cpu, bool) or cpu < 0:
        raise InvalidArgument(f"not a CPU: {cpu!r}")
    return int(_domain(domain).arena.pcpu_ptr(ptr, cpu))


def this_cpu_ptr(ptr: int, *, domain: Domain | None = None) -> int:
    """The calling thread's copy: ``per_cpu_ptr(ptr, smp_processor_id())``."""
    return per_cpu_ptr(ptr, smp_processor_id(), domain=domain)


def info(domain: Domain | None = None) -> dict[str, Any]:
    """The allocator's configuration, counters and stats (a lock-free snapshot)."""
    return dict(_domain(domain).arena.pcpu_info())


def nr_pages(domain: Domain | None = None) -> int:
    """``pcpu_nr_pages()``: populated pages of all units (``Percpu:`` of /proc/meminfo)."""
    i = info(domain)
    return int(i["nr_populated"] * i["nr_units"])


def balance(domain: Domain | None = None) -> None:
    """Run ``pcpu_balance_workfn()`` now, in the calling thread.

    It frees surplus empty chunks (one is kept), depopulates pages of
    isolated chunks, and populates until ``PCPU_EMPTY_POP_PAGES_HIGH`` empty
    pages are ready for atomic allocations.  It normally runs by itself on
    the irq_work thread of the process that needed it.
    """
    _domain(domain).arena.pcpu_balance()


def chunks(domain: Domain | None = None) -> list[dict[str, Any]]:
    """The chunks in ``percpu_stats`` order, each with ``chunk_map_stats()``'s fields."""
    return list(_domain(domain).arena.pcpu_chunks())


_AI = ("unit_size", "static_size", "reserved_size", "dyn_size", "atom_size", "alloc_size")
_GLOBAL = ("nr_alloc", "nr_dealloc", "nr_cur_alloc", "nr_max_alloc", "nr_chunks", "nr_max_chunks",
           "min_alloc_size", "max_alloc_size")
_CHUNK = ("nr_alloc", "max_alloc_size", "empty_pop_pages", "first_bit", "free_bytes", "contig_bytes",
          "sum_frag", "max_frag", "cur_min_alloc", "cur_med_alloc", "cur_max_alloc")
_HEADING = {
    "reserved": "Chunk: <- Reserved Chunk",
    "first": "Chunk: <- First Chunk",
    "to_depopulate": "Chunk (to_depopulate)",
    "sidelined": "Chunk (sidelined):",
    "": "Chunk:",
}


def stats_dict(domain: Domain | None = None) -> dict[str, Any]:
    """``percpu_stats`` as data: ``alloc_info``, ``global``, ``chunks``."""
    dom = _domain(domain)
    dom.arena.pcpu_setup()  # the kernel's first chunk exists from boot
    chs = chunks(dom)
    i = info(dom)
    return {
        "alloc_info": {k: i[k] for k in _AI},
        "global": {**{k: i[k] for k in _GLOBAL}, "empty_pop_pages": i["nr_empty_pop_pages"]},
        "chunks": [{"label": c["label"], **{k: c[k] for k in _CHUNK}} for c in chs],
    }


def stats_text(domain: Domain | None = None) -> str:
    """The text of ``/sys/kernel/debug/percpu_stats``, in ``mm/percpu-stats.c``'s format."""
    s = stats_dict(domain)
    out = ["Percpu Memory Statistics", "Allocation Info:", "-" * 40]
    out += [f"  {k:<20}: {v:12d}" for k, v in s["alloc_info"].items()]
    out += ["", "Global Stats:", "-" * 40]
    out += [f"  {k:<20}: {v:12d}" for k, v in s["global"].items()]
    out += ["", "Per Chunk Stats:", "-" * 40]
    for c in s["chunks"]:
        out.append(_HEADING[c["label"]])
        out += [f"  {k:<20}: {c[k]:12d}" for k in _CHUNK]
        out.append("")
    return "\n".join(out) + "\n"


# ---- events from the C core ------------------------------------------------

def _run_balance(arena: _core.Arena) -> None:
    if not arena.closed:
        arena.pcpu_balance()


def _core_event(event: str, *args: Any) -> None:
    """Called by the C core: warnings in the kernel's words, and balance work."""
    if event == "balance":
        arena = args[0]
        work.irq_work_queue(lambda: _run_balance(arena))
    elif event == "illegal":
        size, align = args
        log.warning("illegal size (%d) or align (%d) for percpu allocation", size, align)
    elif event == "fail":
        size, align, atomic, err, last = args
        log.warning("percpu: allocation failed, size=%d align=%d atomic=%d, %s", size, align, atomic, err)
        if last:
            log.warning("percpu: limit reached, disable warning")


_core.pcpu_set_hook(_core_event)
