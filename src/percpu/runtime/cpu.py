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

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from percpu import _core
from percpu.runtime.domain import current_domain

__all__ = ["on_cpu", "pinned_cpu", "raw_smp_processor_id", "set_pinned_cpu", "smp_processor_id"]

_tls = threading.local()
_pinned: int | None = None


def set_pinned_cpu(cpu: int | None) -> None:
    """Declare this process a worker of ``cpu`` (called by the kthread bootstrap)."""
    global _pinned
    _pinned = cpu


def pinned_cpu() -> int | None:
    """The CPU this process is a pinned worker of, or None."""
    return _pinned


def smp_processor_id() -> int:
    """The CPU the calling thread acts as.  Counterpart of ``smp_processor_id()``.

    Context: any.  The answer may be stale by the time it is used unless the
    caller is a pinned worker or inside :func:`on_cpu`.
    """
    cpu: int | None = getattr(_tls, "cpu", None)
    if cpu is not None:
        return cpu
    if _pinned is not None:
        return _pinned
    return current_domain().fold_cpu(_core.sched_getcpu())


raw_smp_processor_id = smp_processor_id


@contextmanager
def on_cpu(cpu: int) -> Iterator[int]:
    """Act as ``cpu`` in the calling thread for the block (nestable).

    Nothing migrates: this only changes what :func:`smp_processor_id` returns,
    so a test can drive per-CPU paths of CPU 37 of a simulated 64-CPU domain.
    Errors: :class:`~percpu.errors.NoDevice` if ``cpu`` is not possible in the
    current domain.
    """
    current_domain().check_cpu(cpu)
    prev = getattr(_tls, "cpu", None)
    _tls.cpu = cpu
    try:
        yield cpu
    finally:
        _tls.cpu = prev
