"""The runtime: what the kernel gives its subsystems, rebuilt in user space.

======================  ==========================================
kernel facility         here
======================  ==========================================
pages, kmalloc          :mod:`percpu.runtime.domain` (C core: arena.c)
raw_spinlock_t, llist   :class:`percpu._core.Lock`, ``Arena.llist_*``
smp_processor_id()      :mod:`percpu.runtime.cpu`
in_nmi()                :mod:`percpu.runtime.context`
irq_work                :mod:`percpu.runtime.work`
kthreads                :mod:`percpu.runtime.kthread`
CPU topology            :mod:`percpu.runtime.topology`
======================  ==========================================
"""

from percpu.runtime.context import in_nmi, in_task, nmi, signal
from percpu.runtime.cpu import on_cpu, smp_processor_id
from percpu.runtime.domain import Domain, current_domain, mem
from percpu.runtime.kthread import Kthread, kthread_run_on_cpu, kthread_should_stop, kthread_stop
from percpu.runtime.work import IrqWork, irq_work_queue

__all__ = [
    "Domain",
    "IrqWork",
    "Kthread",
    "current_domain",
    "in_nmi",
    "in_task",
    "irq_work_queue",
    "kthread_run_on_cpu",
    "kthread_should_stop",
    "kthread_stop",
    "mem",
    "nmi",
    "on_cpu",
    "signal",
    "smp_processor_id",
]
