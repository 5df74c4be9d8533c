"""percpu: the Linux kernel's per-CPU infrastructure for Python processes.

Worker processes pinned to real CPUs share a *domain*: one shared-memory file
holding per-CPU data, object caches, CPU sets and queues, with the kernel's
semantics.  Start with :class:`Domain` and :func:`current_domain`; the kernel's
own names are in :mod:`percpu.kernel`.
"""

from percpu import errors, memcg
from percpu.bpf_cpumask import BpfCpumask
from percpu.cpumap import BpfCpumapVal, CpuMap
from percpu.cpumask import Cpumask
from percpu.freelist import PcpuFreelist
from percpu.maps import ArrayMap, HashMap, PercpuArrayMap, PercpuHashMap
from percpu.memalloc import BpfMemAlloc
from percpu.pcpu import PerCpu, PerCpuCounter, define_per_cpu
from percpu.runtime import rcu
from percpu.runtime.context import in_nmi, nmi, signal
from percpu.runtime.cpu import on_cpu, smp_processor_id
from percpu.runtime.domain import Domain, current_domain, mem
from percpu.runtime.kthread import Kthread

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("percpu")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "ArrayMap",
    "BpfCpumapVal",
    "BpfCpumask",
    "BpfMemAlloc",
    "CpuMap",
    "Cpumask",
    "Domain",
    "HashMap",
    "Kthread",
    "PcpuFreelist",
    "PercpuArrayMap",
    "PercpuHashMap",
    "PerCpu",
    "PerCpuCounter",
    "__version__",
    "current_domain",
    "define_per_cpu",
    "errors",
    "in_nmi",
    "mem",
    "memcg",
    "nmi",
    "on_cpu",
    "rcu",
    "signal",
    "smp_processor_id",
]
