"""The kernel facade: the seed documents' functions under the kernel's names.

A reader checks this project against the kernel line by line here, so every
function keeps the kernel's name and argument order and stays a thin call into
the Pythonic classes.  Pointers are ints (arena offsets of the current
domain); a call that returns NULL in the kernel returns None; a call that
returns ``-errno`` raises the matching :mod:`percpu.errors` exception, which
carries ``.errno``.

Components add their functions here as they land (freelist, memalloc,
per-CPU allocator, cpumask kfuncs, cpumap).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from percpu.runtime.context import in_nmi as in_nmi
from percpu.runtime.context import in_task as in_task
from percpu.runtime.cpu import raw_smp_processor_id as raw_smp_processor_id
from percpu.runtime.cpu import smp_processor_id as smp_processor_id
from percpu.runtime.domain import current_domain
from percpu.runtime.kthread import Kthread
from percpu.runtime.kthread import kthread_run_on_cpu as _kthread_run_on_cpu
from percpu.runtime.kthread import kthread_should_stop as kthread_should_stop
from percpu.runtime.kthread import kthread_stop as kthread_stop
from percpu.runtime.work import IrqWork as IrqWork
from percpu.runtime.work import irq_work_queue as irq_work_queue
from percpu.runtime.work import irq_work_sync as irq_work_sync

__all__ = [
    "IrqWork",
    "cpu_online_mask",
    "cpu_possible_mask",
    "in_nmi",
    "in_task",
    "irq_work_queue",
    "irq_work_sync",
    "kfree",
    "kmalloc",
    "ksize",
    "kthread_run_on_cpu",
    "kthread_should_stop",
    "kthread_stop",
    "kzalloc",
    "nr_cpu_ids",
    "num_online_cpus",
    "num_possible_cpus",
    "raw_smp_processor_id",
    "smp_processor_id",
]


def nr_cpu_ids() -> int:
    """One more than the highest possible CPU of the current domain."""
    return current_domain().nr_cpu_ids


def num_possible_cpus() -> int:
    return len(current_domain().possible)


def num_online_cpus() -> int:
    return len(current_domain().online)


def cpu_possible_mask() -> tuple[int, ...]:
    """The possible CPUs, in order (a Cpumask once the cpumask component lands)."""
    return current_domain().possible


def cpu_online_mask() -> tuple[int, ...]:
    return current_domain().online


def kmalloc(size: int) -> int | None:
    """Allocate ``size`` bytes of the current domain; the offset, or None (NULL)."""
    return current_domain().kmalloc(size)


def kzalloc(size: int) -> int | None:
    """Allocate ``size`` zeroed bytes; the offset, or None (NULL)."""
    return current_domain().kzalloc(size)


def kfree(ptr: int) -> None:
    """Free an allocation; ``kfree(0)`` does nothing; a bad pointer raises EINVAL."""
    current_domain().kfree(ptr)


def ksize(ptr: int) -> int:
    return current_domain().ksize(ptr)


def kthread_run_on_cpu(fn: Callable[..., Any], cpu: int, namefmt: str, *args: Any) -> Kthread:
    """Start ``fn(*args)`` in a worker bound to ``cpu`` named ``namefmt % cpu``."""
    return _kthread_run_on_cpu(fn, cpu, namefmt, *args)
