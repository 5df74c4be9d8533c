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

from percpu import _core
from percpu import cpumap as _cpumap
from percpu import maps as _maps
from percpu.bpf_cpumask import BpfCpumask as BpfCpumask
from percpu.bpf_cpumask import bits_of as _bits_of
from percpu.bpf_cpumask import distribute as _distribute
from percpu.cpumap import BpfCpumapVal as BpfCpumapVal
from percpu.cpumap import CpuMap as CpuMap
from percpu.freelist import PcpuFreelist
from percpu.maps import BpfMap as BpfMap
from percpu.memalloc import BpfMemAlloc
from percpu.memalloc import check_size as _ma_check_size
from percpu.pcpu import allocator as _pcpu
from percpu.pcpu.allocator import GFP_ATOMIC as GFP_ATOMIC
from percpu.pcpu.allocator import GFP_KERNEL as GFP_KERNEL
from percpu.pcpu.allocator import GFP_NOWAIT as GFP_NOWAIT
from percpu.pcpu.allocator import PCPU_MIN_UNIT_SIZE as PCPU_MIN_UNIT_SIZE
from percpu.runtime import rcu as _rcu
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
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_F_NUMA_NODE",
    "BPF_F_TEST_XDP_LIVE_FRAMES",
    "BPF_NOEXIST",
    "BpfCpumapVal",
    "CPU_MAP_BULK_SIZE",
    "CpuMap",
    "XDP_ABORTED",
    "XDP_DROP",
    "XDP_PASS",
    "XDP_REDIRECT",
    "XDP_TX",
    "bpf_prog_test_run",
    "bpf_redirect_map",
    "bpf_map_create",
    "bpf_map_lookup_elem",
    "bpf_map_update_elem",
    "bpf_map_delete_elem",
    "map_lookup_elem",
    "map_update_elem",
    "map_delete_elem",
    "map_get_next_key",
    "BPF_MAP_TYPE_HASH",
    "BPF_MAP_TYPE_ARRAY",
    "BPF_MAP_TYPE_PERCPU_HASH",
    "BPF_MAP_TYPE_PERCPU_ARRAY",
    "BPF_F_NO_PREALLOC",
    "BPF_F_RDONLY",
    "BPF_F_WRONLY",
    "BPF_F_RDONLY_PROG",
    "BPF_F_WRONLY_PROG",
    "BPF_F_ZERO_SEED",
    "BPF_F_LOCK",
    "cpu_map_alloc",
    "cpu_map_delete_elem",
    "cpu_map_get_next_key",
    "cpu_map_lookup_elem",
    "cpu_map_update_elem",
    "xdp_do_flush",
    "xdp_do_redirect",
    "GFP_ATOMIC",
    "GFP_KERNEL",
    "GFP_NOWAIT",
    "IrqWork",
    "PCPU_MIN_UNIT_SIZE",
    "__alloc_percpu",
    "__alloc_percpu_gfp",
    "__alloc_reserved_percpu",
    "alloc_percpu",
    "alloc_percpu_gfp",
    "free_percpu",
    "pcpu_nr_pages",
    "per_cpu_ptr",
    "percpu_stats",
    "this_cpu_ptr",
    "BpfCpumask",
    "bpf_cpumask_create",
    "bpf_cpumask_acquire",
    "bpf_cpumask_release",
    "bpf_cpumask_release_dtor",
    "bpf_cpumask_first",
    "bpf_cpumask_first_zero",
    "bpf_cpumask_first_and",
    "bpf_cpumask_set_cpu",
    "bpf_cpumask_clear_cpu",
    "bpf_cpumask_test_cpu",
    "bpf_cpumask_test_and_set_cpu",
    "bpf_cpumask_test_and_clear_cpu",
    "bpf_cpumask_setall",
    "bpf_cpumask_clear",
    "bpf_cpumask_and",
    "bpf_cpumask_or",
    "bpf_cpumask_xor",
    "bpf_kptr_xchg",
    "bpf_cpumask_equal",
    "bpf_cpumask_intersects",
    "bpf_cpumask_subset",
    "bpf_cpumask_empty",
    "bpf_cpumask_full",
    "bpf_cpumask_copy",
    "bpf_cpumask_any_distribute",
    "bpf_cpumask_any_and_distribute",
    "bpf_cpumask_weight",
    "bpf_cpumask_populate",
    "bpf_mem_alloc",
    "bpf_mem_alloc_check_size",
    "bpf_mem_alloc_destroy",
    "bpf_mem_alloc_init",
    "bpf_mem_alloc_percpu_init",
    "bpf_mem_alloc_percpu_unit_init",
    "bpf_mem_cache_alloc",
    "bpf_mem_cache_alloc_flags",
    "bpf_mem_cache_free",
    "bpf_mem_cache_free_rcu",
    "bpf_mem_cache_idx",
    "bpf_mem_cache_raw_free",
    "bpf_mem_free",
    "bpf_mem_free_rcu",
    "__pcpu_freelist_pop",
    "__pcpu_freelist_push",
    "pcpu_freelist_destroy",
    "pcpu_freelist_init",
    "pcpu_freelist_pop",
    "pcpu_freelist_populate",
    "pcpu_freelist_push",
    "call_rcu",
    "call_rcu_tasks_trace",
    "cond_synchronize_rcu",
    "get_state_synchronize_rcu",
    "poll_state_synchronize_rcu",
    "rcu_barrier",
    "rcu_barrier_tasks_trace",
    "rcu_read_lock",
    "rcu_read_lock_held",
    "rcu_read_lock_trace",
    "rcu_read_unlock",
    "rcu_read_unlock_trace",
    "rcu_trace_implies_rcu_gp",
    "start_poll_synchronize_rcu",
    "synchronize_rcu",
    "synchronize_rcu_tasks_trace",
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


#: kmalloc(size) -> offset | None: allocate in the current domain (the C entry point itself).
kmalloc = _core.kmalloc
#: kzalloc(size) -> offset | None: zeroed.
kzalloc = _core.kzalloc
#: kfree(ptr): kfree(0) does nothing; a pointer that is not a live allocation raises EINVAL.
kfree = _core.kfree


def ksize(ptr: int) -> int:
    return current_domain().ksize(ptr)


def kthread_run_on_cpu(fn: Callable[..., Any], cpu: int, namefmt: str, *args: Any) -> Kthread:
    """Start ``fn(*args)`` in a worker bound to ``cpu`` named ``namefmt % cpu``."""
    return _kthread_run_on_cpu(fn, cpu, namefmt, *args)


# ---- RCU (percpu.runtime.rcu) -------------------------------------------------------
# The read side is the C core's own entry points: one C call each, no Python frame.

rcu_read_lock = _core.rcu_read_lock
rcu_read_unlock = _core.rcu_read_unlock
rcu_read_lock_trace = _core.rcu_read_lock_trace
rcu_read_unlock_trace = _core.rcu_read_unlock_trace


def rcu_read_lock_held() -> bool:
    return _rcu.read_lock_held(_rcu.RCU)


def synchronize_rcu() -> None:
    """Wait for a grace period of the current domain."""
    _rcu.synchronize(_rcu.RCU)


def call_rcu(fn: Callable[[], object]) -> None:
    """Run ``fn()`` after a grace period, in this process's irq_work thread."""
    _rcu.call(fn, _rcu.RCU)


def rcu_barrier() -> None:
    """Wait for every ``call_rcu`` callback this process queued."""
    _rcu.barrier(_rcu.RCU)


def get_state_synchronize_rcu() -> int:
    return _rcu.get_state(_rcu.RCU)


def start_poll_synchronize_rcu() -> int:
    return _rcu.start_poll(_rcu.RCU)


def poll_state_synchronize_rcu(cookie: int) -> bool:
    return _rcu.poll_state(cookie, _rcu.RCU)


def cond_synchronize_rcu(cookie: int) -> None:
    _rcu.cond_synchronize(cookie, _rcu.RCU)


def synchronize_rcu_tasks_trace() -> None:
    _rcu.synchronize(_rcu.TASKS_TRACE)


def call_rcu_tasks_trace(fn: Callable[[], object]) -> None:
    _rcu.call(fn, _rcu.TASKS_TRACE)


def rcu_barrier_tasks_trace() -> None:
    _rcu.barrier(_rcu.TASKS_TRACE)


def rcu_trace_implies_rcu_gp() -> bool:
    """False: the two flavours' grace periods are independent here (see docs/design/rcu.md)."""
    return False


# ---- the per-CPU freelist (percpu.freelist) -------------------------------------------


def pcpu_freelist_init() -> PcpuFreelist:
    """A new, empty freelist in the current domain (``ENOMEM`` raises OutOfMemory)."""
    return PcpuFreelist.create()


def pcpu_freelist_destroy(s: PcpuFreelist) -> None:
    s.destroy()


def pcpu_freelist_populate(s: PcpuFreelist, buf: int, elem_size: int, nr_elems: int) -> None:
    s.populate(buf, elem_size, nr_elems)


def pcpu_freelist_push(s: PcpuFreelist, node: int) -> None:
    s.push(node)


def pcpu_freelist_pop(s: PcpuFreelist) -> int | None:
    return s.pop()


# The kernel's "__" variants only skip local_irq_save(); interrupts here are signal
# handlers, which never run inside the C push/pop, so both spellings are one function.
__pcpu_freelist_push = pcpu_freelist_push
__pcpu_freelist_pop = pcpu_freelist_pop


# ---- the BPF cpumask kfuncs (kernel/bpf/cpumask.c) ---------------------------------------
#
# ``const struct cpumask *`` arguments take a Cpumask or a BpfCpumask; the ones the
# kfunc writes take a BpfCpumask.  A search that finds nothing returns nr_cpu_ids;
# a CPU >= nr_cpu_ids is ignored by set/clear and false for the tests.


def _first(bits: int) -> int:
    return (bits & -bits).bit_length() - 1


def bpf_cpumask_create() -> BpfCpumask | None:
    """An empty mask with one reference, or None when the allocator is out of memory."""
    return BpfCpumask.create()


def bpf_cpumask_acquire(cpumask: BpfCpumask) -> BpfCpumask:
    return cpumask.acquire()


def bpf_cpumask_release(cpumask: BpfCpumask) -> None:
    cpumask.release()


def bpf_cpumask_release_dtor(cpumask: BpfCpumask | int) -> None:
    """The kptr destructor: drops the reference a slot held (a handle, or the slot's arena offset)."""
    if isinstance(cpumask, int):
        old = bpf_kptr_xchg(cpumask, None)
        if old is not None:
            old.release()
        return
    cpumask.release()


def bpf_kptr_xchg(slot: int, new: BpfCpumask | None) -> BpfCpumask | None:
    """Swap ``new`` (whose reference moves into the slot) with the slot's occupant (whose moves out).

    ``slot`` is the arena offset of an 8-byte kptr field (a map value's, a
    global's).  ``new``'s handle can no longer be used; the returned handle
    owns the previous occupant's reference (None if the slot was empty).
    """
    dom = current_domain()
    ptr = new._give() if new is not None else 0
    old = int(dom.arena.xchg(slot, ptr))
    return BpfCpumask._adopt(old, dom) if old else None


def bpf_cpumask_first(cpumask: Any) -> int:
    bits, nr = _bits_of(cpumask)
    return _first(bits) if bits else nr


def bpf_cpumask_first_zero(cpumask: Any) -> int:
    bits, nr = _bits_of(cpumask)
    zeros = ~bits & ((1 << nr) - 1)
    return _first(zeros) if zeros else nr


def bpf_cpumask_first_and(src1: Any, src2: Any) -> int:
    (a, nr1), (b, nr2) = _bits_of(src1), _bits_of(src2)
    nr = min(nr1, nr2)
    both = a & b & ((1 << nr) - 1)
    return _first(both) if both else nr


# The single-bit kfuncs and weight are C entry points (no Python frame): they take
# a BpfCpumask (test_cpu and weight also a Cpumask); CPUs >= nr_cpu_ids are ignored / false.
bpf_cpumask_set_cpu: Callable[[int, BpfCpumask], None] = _core.bpf_cpumask_set_cpu
bpf_cpumask_clear_cpu: Callable[[int, BpfCpumask], None] = _core.bpf_cpumask_clear_cpu
bpf_cpumask_test_cpu: Callable[[int, Any], bool] = _core.bpf_cpumask_test_cpu
bpf_cpumask_test_and_set_cpu: Callable[[int, BpfCpumask], bool] = _core.bpf_cpumask_test_and_set_cpu
bpf_cpumask_test_and_clear_cpu: Callable[[int, BpfCpumask], bool] = _core.bpf_cpumask_test_and_clear_cpu
bpf_cpumask_weight: Callable[[Any], int] = _core.bpf_cpumask_weight


def bpf_cpumask_setall(cpumask: BpfCpumask) -> None:
    _dst(cpumask).store_bits((1 << cpumask.nr_cpu_ids) - 1)


def bpf_cpumask_clear(cpumask: BpfCpumask) -> None:
    _dst(cpumask).store_bits(0)


def _dst(dst: Any) -> BpfCpumask:
    if not isinstance(dst, BpfCpumask):
        raise TypeError("the destination must be a BpfCpumask (a read-only cpumask cannot be written)")
    return dst


def _store(d: BpfCpumask, v: int) -> int:
    """Store the nr_cpu_ids bits of ``v`` that the destination has (the kernel reads no more)."""
    v &= (1 << d.nr_cpu_ids) - 1
    d.store_bits(v)
    return v


def bpf_cpumask_and(dst: BpfCpumask, src1: Any, src2: Any) -> bool:
    """dst = src1 & src2; True iff the result is not empty."""
    return _store(_dst(dst), _bits_of(src1)[0] & _bits_of(src2)[0]) != 0


def bpf_cpumask_or(dst: BpfCpumask, src1: Any, src2: Any) -> None:
    _store(_dst(dst), _bits_of(src1)[0] | _bits_of(src2)[0])


def bpf_cpumask_xor(dst: BpfCpumask, src1: Any, src2: Any) -> None:
    _store(_dst(dst), _bits_of(src1)[0] ^ _bits_of(src2)[0])


def bpf_cpumask_equal(src1: Any, src2: Any) -> bool:
    return _bits_of(src1)[0] == _bits_of(src2)[0]


def bpf_cpumask_intersects(src1: Any, src2: Any) -> bool:
    return (_bits_of(src1)[0] & _bits_of(src2)[0]) != 0


def bpf_cpumask_subset(src1: Any, src2: Any) -> bool:
    a, b = _bits_of(src1)[0], _bits_of(src2)[0]
    return a & ~b == 0


def bpf_cpumask_empty(cpumask: Any) -> bool:
    return _bits_of(cpumask)[0] == 0


def bpf_cpumask_full(cpumask: Any) -> bool:
    """All of [0, nr_cpu_ids) set: every *possible* id, not the online ones."""
    bits, nr = _bits_of(cpumask)
    return bits == (1 << nr) - 1


def bpf_cpumask_copy(dst: BpfCpumask, src: Any) -> None:
    _store(_dst(dst), _bits_of(src)[0])


def bpf_cpumask_any_distribute(src: Any) -> int:
    """A set CPU, spreading over calls (the next after this CPU's cursor); nr_cpu_ids if empty."""
    bits, nr = _bits_of(src)
    return _distribute(bits, nr)


def bpf_cpumask_any_and_distribute(src1: Any, src2: Any) -> int:
    (a, nr1), (b, nr2) = _bits_of(src1), _bits_of(src2)
    nr = min(nr1, nr2)
    return _distribute(a & b & ((1 << nr) - 1), nr)


def bpf_cpumask_populate(cpumask: BpfCpumask, src: bytes | bytearray | memoryview) -> int:
    """Copy ``bitmap_size(nr_cpu_ids)`` bytes of little-endian words; 0, or raises EACCES if src is smaller."""
    _dst(cpumask).populate(src)
    return 0


# ---- the BPF memory allocator (percpu.memalloc) ---------------------------------------
#
# The kernel's init functions fill a caller's struct and return 0 or -errno; here
# they return the allocator (``ma``) and raise the errno.


def bpf_mem_alloc_init(size: int, percpu: bool) -> BpfMemAlloc:
    """``bpf_mem_alloc_init(ma, size, percpu)``: size 0 gives all 11 buckets."""
    return BpfMemAlloc(size, percpu)


def bpf_mem_alloc_percpu_init(objcg: Any = None) -> BpfMemAlloc:
    """``bpf_mem_alloc_percpu_init(ma, objcg)``: per-CPU, all buckets, none set up yet."""
    return BpfMemAlloc.percpu_init(objcg)


def bpf_mem_alloc_percpu_unit_init(ma: BpfMemAlloc, size: int) -> int:
    """Set up the bucket of ``size`` on every CPU (idempotent); ``EINVAL`` raises."""
    ma.percpu_unit_init(size)
    return 0


def bpf_mem_alloc_destroy(ma: BpfMemAlloc) -> None:
    ma.destroy()


def bpf_mem_alloc_check_size(percpu: bool, size: int) -> int:
    """0, or ``-E2BIG`` (returned, as the kernel returns it)."""
    return _ma_check_size(percpu, size)


# The allocation and free calls are the C entry points themselves (no Python frame).
bpf_mem_alloc: Callable[[BpfMemAlloc, int], int | None] = _core.bpf_mem_alloc
bpf_mem_free: Callable[[BpfMemAlloc, int | None], None] = _core.bpf_mem_free
bpf_mem_free_rcu: Callable[[BpfMemAlloc, int | None], None] = _core.bpf_mem_free_rcu
bpf_mem_cache_alloc: Callable[[BpfMemAlloc], int | None] = _core.bpf_mem_cache_alloc
bpf_mem_cache_free: Callable[[BpfMemAlloc, int | None], None] = _core.bpf_mem_cache_free
bpf_mem_cache_free_rcu: Callable[[BpfMemAlloc, int | None], None] = _core.bpf_mem_cache_free_rcu


def bpf_mem_cache_alloc_flags(ma: BpfMemAlloc, flags: int) -> int | None:
    """With ``flags == GFP_KERNEL``, an empty cache falls back to kmalloc (may block)."""
    return ma.cache_alloc_flags(flags == GFP_KERNEL)


def bpf_mem_cache_raw_free(ptr: int | None) -> None:
    """Straight back to kmalloc; the caller has waited for a Tasks Trace grace period."""
    current_domain().arena.ma_raw_free(ptr)


def bpf_mem_cache_idx(size: int) -> int:
    return int(_core.bpf_mem_cache_idx(size))


# ---- the per-CPU allocator (percpu.pcpu) ---------------------------------------------
# A per-CPU pointer is the arena offset of the first possible CPU's copy.


def __alloc_percpu_gfp(size: int, align: int, gfp: int) -> int | None:
    """``pcpu_alloc(size, align, false, gfp)``: GFP_KERNEL may block, GFP_NOWAIT is atomic."""
    return _pcpu.alloc(size, align, gfp=gfp)


def __alloc_percpu(size: int, align: int) -> int | None:
    """``__alloc_percpu()``: GFP_KERNEL; None (and the kernel's warning) on failure."""
    return current_domain().arena.pcpu_alloc(size, align)


def __alloc_reserved_percpu(size: int, align: int) -> int | None:
    """From the first chunk's reserved region only (the normal chunks if it has none)."""
    return current_domain().arena.pcpu_alloc(size, align, True)


def alloc_percpu(size: int) -> int | None:
    """``alloc_percpu(type)`` with the type's size: aligned naturally, at most 8 bytes."""
    return current_domain().arena.pcpu_alloc(size, _pcpu.natural_align(size))


def alloc_percpu_gfp(size: int, gfp: int) -> int | None:
    return _pcpu.alloc(size, _pcpu.natural_align(size), gfp=gfp)


def free_percpu(ptr: int | None) -> None:
    """Free by pointer; None/0 does nothing; a pointer of no live area raises EINVAL."""
    if ptr:
        current_domain().arena.pcpu_free(ptr)


def per_cpu_ptr(ptr: int, cpu: int) -> int:
    """The arena offset of ``cpu``'s copy (``EINVAL`` for a CPU that is not possible)."""
    return current_domain().arena.pcpu_ptr(ptr, cpu)


def this_cpu_ptr(ptr: int) -> int:
    return _pcpu.this_cpu_ptr(ptr)


def pcpu_nr_pages() -> int:
    """Populated pages of every unit: ``Percpu:`` of /proc/meminfo, in pages."""
    return _pcpu.nr_pages()


def percpu_stats() -> str:
    """The text of ``/sys/kernel/debug/percpu_stats``."""
    return _pcpu.stats_text()


# ---- kernel/bpf/cpumap.c ---------------------------------------------------------------------

BPF_ANY = _cpumap.BPF_ANY
BPF_NOEXIST = _cpumap.BPF_NOEXIST
BPF_EXIST = _cpumap.BPF_EXIST
BPF_F_NUMA_NODE = _cpumap.BPF_F_NUMA_NODE
XDP_ABORTED = _cpumap.XDP_ABORTED
XDP_DROP = _cpumap.XDP_DROP
XDP_PASS = _cpumap.XDP_PASS
XDP_TX = _cpumap.XDP_TX
XDP_REDIRECT = _cpumap.XDP_REDIRECT
CPU_MAP_BULK_SIZE = _cpumap.CPU_MAP_BULK_SIZE
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1


def cpu_map_alloc(max_entries: int, value_size: int = 8, map_flags: int = 0, **kw: Any) -> CpuMap:
    """``cpu_map_alloc(attr)``: EINVAL (max_entries 0, value_size not 4/8, flags), E2BIG (> NR_CPUS)."""
    return CpuMap(max_entries, value_size, map_flags, **kw)


def cpu_map_update_elem(map: CpuMap, key: int, value: int | BpfCpumapVal, flags: int = BPF_ANY) -> None:
    """``cpu_map_update_elem()``: EINVAL, E2BIG, EEXIST (BPF_NOEXIST), EOVERFLOW, ENODEV, in that order."""
    map.update(key, value, flags)


def cpu_map_delete_elem(map: CpuMap, key: int) -> None:
    """``cpu_map_delete_elem()``: EINVAL past max_entries; an empty slot is fine."""
    map.delete(key)


def cpu_map_lookup_elem(map: CpuMap, key: int) -> BpfCpumapVal | None:
    """``cpu_map_lookup_elem()``: the value (qsize, prog id) or None."""
    return map.lookup(key)


def cpu_map_get_next_key(map: CpuMap, key: int | None) -> int:
    """``cpu_map_get_next_key()``: array semantics; ENOENT after the last index."""
    return map.get_next_key(key)


bpf_redirect_map = _cpumap.bpf_redirect_map
xdp_do_redirect = _cpumap.xdp_do_redirect
xdp_do_flush = _cpumap.xdp_do_flush


def bpf_prog_test_run(prog: Any, data: bytes, repeat: int = 1, flags: int = 0) -> Any:
    """``BPF_PROG_TEST_RUN`` of an XDP program (see :func:`percpu.xdp.bpf_prog_test_run`)."""
    from percpu.xdp import bpf_prog_test_run as _run

    return _run(prog, data, repeat, flags)


# ---- kernel/bpf/hashtab.c, kernel/bpf/arraymap.c, kernel/bpf/syscall.c ------------------------

BPF_MAP_TYPE_HASH = _maps.BPF_MAP_TYPE_HASH
BPF_MAP_TYPE_ARRAY = _maps.BPF_MAP_TYPE_ARRAY
BPF_MAP_TYPE_PERCPU_HASH = _maps.BPF_MAP_TYPE_PERCPU_HASH
BPF_MAP_TYPE_PERCPU_ARRAY = _maps.BPF_MAP_TYPE_PERCPU_ARRAY
BPF_F_NO_PREALLOC = _maps.BPF_F_NO_PREALLOC
BPF_F_RDONLY = _maps.BPF_F_RDONLY
BPF_F_WRONLY = _maps.BPF_F_WRONLY
BPF_F_RDONLY_PROG = _maps.BPF_F_RDONLY_PROG
BPF_F_WRONLY_PROG = _maps.BPF_F_WRONLY_PROG
BPF_F_ZERO_SEED = _maps.BPF_F_ZERO_SEED
BPF_F_LOCK = _maps.BPF_F_LOCK


def bpf_map_create(map_type: int, key_size: int, value_size: int, max_entries: int, map_flags: int = 0,
                   **kw: Any) -> BpfMap:
    """``BPF_MAP_CREATE`` (``map_create()`` -> ``htab_map_alloc`` / ``array_map_alloc``) for the four types."""
    cls = _maps._TYPES.get(map_type)
    if cls is None:
        from percpu.errors import InvalidArgument

        raise InvalidArgument(f"map_type {map_type} is not one of HASH, ARRAY, PERCPU_HASH, PERCPU_ARRAY")
    return cls(key_size, value_size, max_entries, map_flags, **kw)


def map_lookup_elem(map: BpfMap, key: Any) -> Any:
    """``BPF_MAP_LOOKUP_ELEM`` from user space: a copy (per-CPU: every possible CPU's); ENOENT."""
    return map.lookup(key)


def map_update_elem(map: BpfMap, key: Any, value: Any, flags: int = BPF_ANY) -> None:
    """``BPF_MAP_UPDATE_ELEM``: EINVAL, EEXIST, ENOENT, E2BIG, ENOMEM, EPERM (see the map types)."""
    map.update(key, value, flags)


def map_delete_elem(map: BpfMap, key: Any) -> None:
    """``BPF_MAP_DELETE_ELEM``: ENOENT (hash), EINVAL (arrays)."""
    map.delete(key)


def map_get_next_key(map: BpfMap, key: Any) -> Any:
    """``BPF_MAP_GET_NEXT_KEY``: the first key for None or a missing key; ENOENT at the end."""
    return map.get_next_key(key)


bpf_map_lookup_elem = _maps.bpf_map_lookup_elem
bpf_map_update_elem = _maps.bpf_map_update_elem
bpf_map_delete_elem = _maps.bpf_map_delete_elem
