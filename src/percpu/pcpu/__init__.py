"""The per-CPU memory allocator (``mm/percpu.c``) in a domain, and per-CPU variables.

Chunks of one unit per possible CPU live in the arena; an allocation takes the
same offset in every unit, so a per-CPU pointer plus a CPU's unit offset is
that CPU's copy.  The first chunk is ``static | reserved | dynamic``; pages
are populated in unison across units when an allocation needs them and given
back by the balance work.  ``docs/design/pcpu.md`` has the layout, the slot
table, the locks and the deviations; the kernel's names are in
:mod:`percpu.kernel` (``__alloc_percpu``, ``free_percpu``, ``per_cpu_ptr``...).

What most programs use:

- :class:`PerCpuCounter`: ``add()`` on this CPU without a lock, ``sum()``;
- :class:`PerCpu`: a typed per-CPU variable (``struct`` format or numpy dtype);
- :func:`define_per_cpu`: a named variable in the static area;
- :func:`stats_text`: ``/sys/kernel/debug/percpu_stats``.
"""

from percpu.pcpu.allocator import (
    GFP_ATOMIC,
    GFP_KERNEL,
    GFP_NOWAIT,
    PCPU_MIN_ALLOC_SIZE,
    PCPU_MIN_UNIT_SIZE,
    alloc,
    alloc_size,
    balance,
    chunks,
    free,
    info,
    nr_pages,
    per_cpu_ptr,
    stats_dict,
    stats_text,
    this_cpu_ptr,
)
from percpu.pcpu.var import PerCpu, PerCpuCounter, PerCpuRef, define_per_cpu

__all__ = [
    "GFP_ATOMIC",
    "GFP_KERNEL",
    "GFP_NOWAIT",
    "PCPU_MIN_ALLOC_SIZE",
    "PCPU_MIN_UNIT_SIZE",
    "PerCpu",
    "PerCpuCounter",
    "PerCpuRef",
    "alloc",
    "alloc_size",
    "balance",
    "chunks",
    "define_per_cpu",
    "free",
    "info",
    "nr_pages",
    "per_cpu_ptr",
    "stats_dict",
    "stats_text",
    "this_cpu_ptr",
]
