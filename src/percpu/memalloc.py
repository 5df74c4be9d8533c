"""The BPF memory allocator (``kernel/bpf/memalloc.c``) in shared memory.

"Any context (including NMI) BPF specific memory allocator": the domain's
``kmalloc`` (or, for the per-CPU flavour, ``kmalloc`` plus the per-CPU
allocator) fronted by a cache of free objects per (CPU, bucket) that
``irq_work`` refills and trims, with the kernel's RCU and RCU Tasks Trace
paths for objects freed with ``free_rcu`` and for objects on their way back
to ``kmalloc``.  The mechanism is in ``csrc/memalloc.{h,c}``;
``docs/design/memalloc.md`` has the object life cycle, the synchronization
table and how processes that share a CPU are handled.

Pointers are arena offsets of the user area (8 bytes after the hidden
header); an allocation that fails returns ``None``.

    >>> ma = BpfMemAlloc(48, name="conns")            # doctest: +SKIP
    >>> p = ma.cache_alloc()                          # this CPU's cache
    >>> dom.mem(p, 48)[:8] = b"12345678"
    >>> ma.cache_free(p)                              # reusable at once (LIFO)
    >>> q = ma.cache_alloc(); assert q == p
    >>> ma.cache_free_rcu(q)                          # not reused before a grace period
    >>> ma.destroy()

Every process of the domain may use an allocator created in another one
(:meth:`BpfMemAlloc.attach` by name).  Refill and trim run inline, right
after the operation that crossed a watermark, in normal context (the kernel's
self-IPI fires as soon as interrupts are enabled again); in NMI context
(``percpu.nmi()``) they are queued to this process's irq_work thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from percpu import _core
from percpu.errors import InvalidArgument
from percpu.runtime import rcu
from percpu.runtime.domain import Domain, current_domain
from percpu.runtime.work import IrqWork

__all__ = [
    "BPF_MEM_ALLOC_SIZE_MAX",
    "LLIST_NODE_SZ",
    "NUM_CACHES",
    "BpfMemAlloc",
    "DestroyReport",
    "bpf_mem_cache_idx",
    "check_size",
    "sizes",
    "size_index",
    "watermarks",
]

log = logging.getLogger("percpu.memalloc")

KIND = "memalloc"

#: The kernel's constants (``kernel/bpf/memalloc.c``).
LLIST_NODE_SZ = 8
BPF_MEM_ALLOC_SIZE_MAX = 4096
NUM_CACHES = 11
#: Unit size by bucket index, in the kernel's order.
sizes: tuple[int, ...] = (96, 192, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
#: Bucket + 1 for sizes 1..192, indexed by ``(size - 1) // 8``.
size_index: tuple[int, ...] = (3, 3, 4, 4, 5, 5, 5, 5, 1, 1, 1, 1, 6, 6, 6, 6, 2, 2, 2, 2, 2, 2, 2, 2)

#: The lists of a cache, in the order of the kernel's ``check_mem_cache()``.
LISTS = (
    "free_llist",
    "free_llist_extra",
    "free_by_rcu",
    "free_llist_extra_rcu",
    "waiting_for_gp",
    "free_by_rcu_ttrace",
    "waiting_for_gp_ttrace",
)


def bpf_mem_cache_idx(size: int) -> int:
    """The bucket of a request of ``size`` bytes (header included): 0..10, or -1."""
    return int(_core.bpf_mem_cache_idx(size))


def watermarks(unit_size: int, percpu: bool = False) -> tuple[int, int, int]:
    """``(low_watermark, high_watermark, batch)`` of a cache, as ``init_refill_work()`` sets them."""
    lo, hi, b = _core.ma_watermarks(unit_size, 1 if percpu else 0)
    return int(lo), int(hi), int(b)


def check_size(percpu: bool, size: int) -> int:
    """``bpf_mem_alloc_check_size()``: 0, or ``-E2BIG`` past what a bucket can hold."""
    return int(_core.ma_check_size(1 if percpu else 0, size))


@dataclass
class DestroyReport:
    """What :meth:`BpfMemAlloc.destroy` found.

    ``lists``: objects left on each of the seven lists after the drain (the
    kernel's ``check_mem_cache()``; all zero unless something freed into the
    allocator while it was being destroyed).  ``outstanding``: objects handed
    out and never freed (a project extension: the kernel does not count
    them); ``leaked``: the first few of their pointers.  ``deferred``: objects
    that were waiting for a grace period and are freed after it.
    """

    outstanding: int
    leaked: list[int]
    lists: dict[str, int]
    deferred: int
    created: int
    released: int
    warnings: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.outstanding and not any(self.lists.values())


class BpfMemAlloc(_core.MemAlloc):
    """``struct bpf_mem_alloc`` in a domain (``bpf_mem_alloc_init(ma, size, percpu)``).

    ``size > 0``: the fixed-size flavour, used with :meth:`cache_alloc`,
    :meth:`cache_free`, :meth:`cache_free_rcu`, :meth:`cache_alloc_flags`.
    ``size == 0``: the kmalloc-like flavour with the 11 buckets, used with
    :meth:`alloc` (up to 4088 bytes), :meth:`free`, :meth:`free_rcu`.
    ``percpu=True``: objects hold a per-CPU pointer (read it with
    :meth:`pptr`) to ``size`` bytes per CPU from the per-CPU allocator.

    Objects are charged to the :mod:`percpu.memcg` group active in the
    calling thread at init.  Errors: ``EINVAL`` (per-CPU with size 0, a
    negative size), ``E2BIG`` (absurd sizes), ``ENOMEM``.

    The C methods (inherited): ``cache_alloc()``, ``cache_alloc_flags(gfp_kernel)``,
    ``cache_free(ptr)``, ``cache_free_rcu(ptr)``, ``alloc(size)``, ``free(ptr)``,
    ``free_rcu(ptr)``, ``raw_free(ptr)``, ``percpu_unit_init(size)``,
    ``check()``, ``info()``, ``obj_cache(ptr)``.  Freeing something that is
    not an allocated object of this allocator raises ``EINVAL`` and changes
    nothing (the kernel would corrupt its lists).
    """

    domain: Domain
    name: str | None

    def __init__(
        self,
        size: int = 0,
        percpu: bool = False,
        *,
        name: str | None = None,
        domain: Domain | None = None,
    ) -> None:
        dom = domain or current_domain()
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidArgument(f"bpf_mem_alloc_init: size must be an int >= 0, not {size!r}")
        if percpu and size == 0:
            raise InvalidArgument(
                "bpf_mem_alloc_init: a per-CPU allocator needs a size "
                "(bpf_mem_alloc_percpu_init() + percpu_unit_init() give all buckets on demand)"
            )
        if percpu and size > _core.PCPU_MIN_UNIT_SIZE:
            raise InvalidArgument(f"bpf_mem_alloc_init: per-CPU unit {size} is larger than a per-CPU unit")
        self._setup(dom, dom.arena.ma_create(size, 1 if percpu else 0, 1), name)

    def _setup(self, dom: Domain, off: int, name: str | None, register: bool = True) -> None:
        try:
            _core.MemAlloc.__init__(self, dom.arena, off)
            self.domain = dom
            self.name = name
            if name is not None and register:
                dom.register(name, KIND, off, 0)
        except BaseException:
            if register:  # never published: nobody else can hold it, free it now
                with contextlib.suppress(Exception):
                    _core.MemAlloc._destroy(self)
                    _finish_now(dom, off)
            raise

    @classmethod
    def percpu_init(
        cls,
        objcg: Any = None,
        *,
        name: str | None = None,
        domain: Domain | None = None,
    ) -> BpfMemAlloc:
        """``bpf_mem_alloc_percpu_init(ma, objcg)``: all buckets, per-CPU, none initialised.

        Buckets are set up on demand with :meth:`percpu_unit_init`.
        ``objcg`` is a :class:`percpu.memcg.Group` (or None: the thread's active one).
        """
        dom = domain or current_domain()
        self = cls.__new__(cls)
        if objcg is not None:
            with objcg:
                off = dom.arena.ma_create(0, 1, 0)
        else:
            off = dom.arena.ma_create(0, 1, 0)
        self._setup(dom, off, name)
        return self

    @classmethod
    def attach(cls, name: str, domain: Domain | None = None) -> BpfMemAlloc:
        """The allocator registered as ``name`` in the domain (from any process)."""
        dom = domain or current_domain()
        e = dom.lookup(name)
        if e.kind != KIND:
            raise InvalidArgument(f"{name!r} is a {e.kind}, not a BPF memory allocator")
        self = cls.__new__(cls)
        self._setup(dom, e.offset, name, register=False)
        return self

    # ---- helpers -------------------------------------------------------------------------

    def pptr(self, ptr: int) -> int:
        """The per-CPU pointer held by a per-CPU object (``*(void **)ptr``)."""
        if not self.percpu:
            raise InvalidArgument("pptr() is for per-CPU allocators")
        if self.obj_cache(ptr) is None:
            raise InvalidArgument(f"{ptr:#x} is not an allocated object of this allocator")
        return int(self.domain.arena.load(ptr))

    def unit_size(self, ptr: int) -> int:
        """Usable bytes of an allocated object (its bucket's unit less the header)."""
        c = self.obj_cache(ptr)
        if c is None:
            raise InvalidArgument(f"{ptr:#x} is not an allocated object of this allocator")
        for ci in self.info()["caches"]:
            if ci["cache"] == c:
                return int(ci["unit_size"]) - (0 if self.percpu else LLIST_NODE_SZ)
        raise InvalidArgument("cache not found")  # pragma: no cover

    def refill(self, cpu: int | None = None) -> None:
        """Run ``bpf_mem_refill()`` now on every cache of ``cpu`` (default: all CPUs)."""
        for ci in self.info()["caches"]:
            if cpu is None or ci["cpu"] == cpu:
                self._refill(ci["cache"])

    def poll(self) -> None:
        """Run every grace-period callback that is due (normally done by the callbacks)."""
        for ci in self.info()["caches"]:
            self._poll(ci["cache"])

    def stats(self) -> dict[str, Any]:
        """Totals over all caches: objects on each list, free_cnt, counters."""
        info = self.info()
        tot: dict[str, Any] = {k: 0 for k in (*LISTS, "free_cnt", "nr_alloc", "nr_free", "nr_new",
                                              "nr_released", "nr_refill", "nr_busy", "nr_empty")}
        for ci in info["caches"]:
            for k in tot:
                tot[k] += ci[k]
        tot["created"] = info["created"]
        tot["released"] = info["released"]
        tot["outstanding"] = tot["nr_alloc"] + info["direct"] - tot["nr_free"] - tot["nr_busy"] - info["raw_freed"]
        return tot

    # ---- destroy ---------------------------------------------------------------------------

    def destroy(self, wait: bool = False) -> DestroyReport:
        """``bpf_mem_alloc_destroy()``: drain every list, check them, report what is still allocated.

        Objects on ``free_llist``/``free_llist_extra`` go back to kmalloc now.
        Objects waiting for a grace period, and the caches themselves (late
        callbacks of other processes may still look at them), are freed after
        an RCU Tasks Trace and an RCU grace period, off the caller's path as
        the kernel defers its barriers; ``wait=True`` waits for that here.
        Every handle, in every process, refuses to be used afterwards.
        """
        dom = self.domain
        r = self._destroy()
        if self.name is not None:
            try:
                dom.unregister(self.name)
            except Exception:  # noqa: BLE001 - another process may have unregistered it
                pass
        lists = {k: int(r[k]) for k in LISTS}
        rep = DestroyReport(
            outstanding=int(r["outstanding"]),
            leaked=[int(x) for x in r["leaked"]],
            lists=lists,
            deferred=int(r["in_flight"]),
            created=int(r["created"]),
            released=int(r["released"]),
        )
        for k, v in lists.items():
            if v:
                rep.warnings.append(f"check_mem_cache: {k} not empty after drain ({v} objects)")
        if rep.outstanding:
            shown = ", ".join(f"{p:#x}" for p in rep.leaked)
            rep.warnings.append(
                f"bpf_mem_alloc_destroy: {rep.outstanding} objects still allocated"
                + (f" (first: {shown})" if shown else "")
            )
        for w in rep.warnings:
            log.warning("%s", w)
        off = self.off
        if wait:
            rcu.synchronize(rcu.TASKS_TRACE, dom)
            rcu.synchronize(rcu.RCU, dom)
            _finish_now(dom, off)
        else:
            _after_gps(dom, lambda: _finish_now(dom, off))
        return rep

    def __repr__(self) -> str:
        if self.domain.closed:
            return f"<BpfMemAlloc {self.name or hex(self.off)} (domain closed)>"
        kind = "percpu " if self.percpu else ""
        what = f"size={self.size}" if self.size else "all buckets"
        state = " destroyed" if self.destroyed else ""
        return f"<BpfMemAlloc {self.name or hex(self.off)} {kind}{what}{state}>"


def _finish_now(dom: Domain, off: int) -> None:
    if not dom.closed:
        dom.arena.ma_destroy_finish(off)


def _after_gps(dom: Domain, fn: Callable[[], object]) -> None:
    """Run ``fn`` after a Tasks Trace and then an RCU grace period (``__free_rcu_tasks_trace``).

    ``rcu_trace_implies_rcu_gp()`` is false here: the two flavours are separate.
    """

    def second() -> None:
        if not dom.closed:
            rcu.call(fn, rcu.RCU, dom)

    rcu.call(second, rcu.TASKS_TRACE, dom)


# ---- events from the C core: irq_work and the RCU callbacks ----------------------------------

# Keys name an allocator by its unique id (never reused), not by the Python objects.
_works: dict[tuple[int, int], IrqWork] = {}


def _refill_work(ma: BpfMemAlloc, cache: int, key: tuple[int, int]) -> None:
    dom = ma.domain
    if dom.closed or ma.destroyed:
        _works.pop(key, None)  # the allocator is gone: drop the item (and its references)
        return
    ma._refill(cache)


def _poll(ma: BpfMemAlloc, cache: int, key: tuple[int, int, str]) -> None:
    _pending.discard(key)
    dom = ma.domain
    if dom.closed:
        return
    # _poll reads inside a read-side section of ma's own domain (the caches outlive
    # it); it must not make that domain current: the current domain is process-wide.
    still = ma._poll(cache)
    # A wait that started after this callback was queued has a later cookie: queue again.
    if still & 1:
        _core_event("rcu", ma, cache)
    if still & 2:
        _core_event("ttrace", ma, cache)


# One queued callback per (domain, allocator, cache, flavour) at a time: a cache
# that starts a new wait while its callback is queued is polled by that callback.
_pending: set[tuple[int, int, str]] = set()


def _core_event(kind: str, ma: BpfMemAlloc, cache: int) -> None:
    dom = ma.domain
    if kind == "refill":
        wkey = (ma.id, cache)
        w = _works.get(wkey)
        if w is None:  # no lock: this runs in signal handlers too (dict ops are atomic under the GIL)
            w = _works.setdefault(wkey, IrqWork(lambda: _refill_work(ma, cache, wkey)))
        w.queue()
        return
    key = (ma.id, cache, kind)
    if key in _pending:
        return
    _pending.add(key)
    if kind == "rcu":
        rcu.call(lambda: _poll(ma, cache, key), rcu.RCU, dom)
    elif kind == "ttrace":
        _after_gps(dom, lambda: _poll(ma, cache, key))


def _after_fork_child() -> None:
    # Callbacks and irq_work items are per process: the child has none queued.
    _pending.clear()
    _works.clear()


os.register_at_fork(after_in_child=_after_fork_child)
_core.ma_set_hook(_core_event)
