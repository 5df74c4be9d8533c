"""CPU identity: which CPU the caller is, in the kernel's sense.

Counterpart of ``smp_processor_id()``, ``raw_smp_processor_id()``,
``nr_cpu_ids`` and the possible/online masks.  In the kernel a task in a
per-CPU section cannot migrate; in user space it can, at any instruction.  So
the CPU id here is a *hint* that every per-CPU structure must tolerate being
stale (it locks or CASes); only a pinned worker really is its CPU.

Resolution order for the calling thread:

1. inside ``with on_cpu(cpu):`` -- that CPU (per thread, nestable);
2. in a worker started by :mod:`percpu.runtime.kthread` -- the worker's CPU;
3. otherwise ``sched_getcpu()``, folded into the current domain's possible
   CPUs (a simulated 1-CPU domain on a 2-core machine counts everything as 0).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from percpu import _core
from percpu.runtime.domain import current_domain

__all__ = ["on_cpu", "pinned_cpu", "raw_smp_processor_id", "set_pinned_cpu", "smp_processor_id"]

# The state lives in the C core (a thread-local override, a process-wide pinned
# CPU) so that the per-CPU fast paths in C read it without calling back here.


def set_pinned_cpu(cpu: int | None) -> None:
    """Declare this process a worker of ``cpu`` (called by the kthread bootstrap)."""
    _core.set_pinned_cpu(cpu)


def pinned_cpu() -> int | None:
    """The CPU this process is a pinned worker of, or None."""
    return _core.pinned_cpu()


#: The CPU the calling thread acts as.  Counterpart of ``smp_processor_id()``.
#: Context: any.  The answer may be stale by the time it is used unless the
#: caller is a pinned worker or inside :func:`on_cpu`.  (The C entry point
#: itself: one call, no Python frame.)
smp_processor_id = _core.smp_processor_id

raw_smp_processor_id = smp_processor_id


@contextmanager
def on_cpu(cpu: int) -> Iterator[int]:
    """Act as ``cpu`` in the calling thread for the block (nestable).

    Nothing migrates: this only changes what :func:`smp_processor_id` returns
    (and which per-CPU head the C fast paths use), so a test can drive the
    per-CPU paths of CPU 37 of a simulated 64-CPU domain.
    Errors: :class:`~percpu.errors.NoDevice` if ``cpu`` is not possible in the
    current domain.
    """
    current_domain().check_cpu(cpu)
    prev = _core.set_cpu_override(cpu)
    try:
        yield cpu
    finally:
        _core.set_cpu_override(prev)
