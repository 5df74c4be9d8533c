"""The BPF per-CPU freelist (``kernel/bpf/percpu_freelist.c``) in shared memory.

A cross-process free list of caller-owned elements with one head per possible
CPU, each under its own lock, and the extra list, as in kernels v5.10-v6.14
(the version the seed document describes): push goes to this CPU's head; pop
tries this CPU, then the other possible CPUs in wrap order, skipping heads
that read empty, then the extra list; in NMI context (``percpu.nmi()`` or a
handler installed with ``percpu.signal``) nothing spins.  The mechanism is in
``csrc/freelist.{h,c}``; ``docs/design/freelist.md`` has the layout, the
synchronization table, the NMI rules and the crash behaviour.

Nodes are offsets of elements of an area the caller owns (from ``kmalloc``
or ``alloc_pages``); while an element is free its first 8 bytes hold the
offset of the next one, as ``struct pcpu_freelist_node`` does.

    >>> s = PcpuFreelist.create(name="elems")          # doctest: +SKIP
    >>> buf = dom.kzalloc(64 * 100)
    >>> s.populate(buf, 64, 100)                       # the kernel's even split
    >>> node = s.pop()                                 # this CPU's head first
    >>> s.push(node)
"""

from __future__ import annotations

from typing import Any

from percpu import _core
from percpu.errors import InvalidArgument, OutOfMemory
from percpu.runtime.domain import Domain, current_domain

__all__ = ["PcpuFreelist"]

KIND = "freelist"


class PcpuFreelist(_core.Freelist):
    """``struct pcpu_freelist`` in a domain, usable from every process of it.

    Create with :meth:`create`, join from another process with :meth:`attach`.
    ``push``/``pop``/``push_bulk``/``pop_bulk`` are the C core's methods,
    inherited (process-safe; never block in NMI context; elsewhere they wait
    only for a head lock held for a few instructions):

    - ``push(node)``: to this CPU's head (``pcpu_freelist_push()``);
    - ``pop()`` -> node | None: this CPU, the others in wrap order, then the
      extra list (``pcpu_freelist_pop()``);
    - ``push_bulk(nodes)``: as ``len(nodes)`` pushes, under one lock (a list
      of ints, or a buffer of native uint64 such as ``array('Q')``);
    - ``pop_bulk(n)`` -> list, or ``pop_bulk(buffer)`` -> count: as ``n`` pops.

    The CPU is the calling thread's ``smp_processor_id()``; a caller whose CPU
    id is stale (it migrated) is still correct, only less local.

    ``robust=True`` keeps a bit per element so that pushing an element that is
    already free is refused (``EINVAL``) instead of corrupting the list (the
    kernel has no such check); it costs one atomic per push and pop.
    """

    def __init__(
        self,
        domain: Domain,
        offset: int,
        name: str | None = None,
        *,
        create: bool = False,
        flags: int = 0,
    ) -> None:
        super().__init__(domain.arena, offset, create, flags)
        self.domain = domain
        self.name = name

    # ---- lifetime ------------------------------------------------------------

    @classmethod
    def create(
        cls,
        domain: Domain | None = None,
        name: str | None = None,
        *,
        robust: bool = False,
    ) -> PcpuFreelist:
        """Allocate an empty freelist (``pcpu_freelist_init()``), named when ``name`` is given.

        Errors: :class:`~percpu.errors.OutOfMemory` (``ENOMEM``, as the
        kernel's), :class:`~percpu.errors.Exists` (the name is taken).
        """
        dom = domain or current_domain()
        size = _core.freelist_size(dom.nr_cpu_ids)
        off = dom.kzalloc(size)
        if off is None:
            raise OutOfMemory(f"no room for a freelist of {size} bytes")
        try:
            s = cls(dom, off, name, create=True, flags=_core.FREELIST_ROBUST if robust else 0)
            if name is not None:
                dom.register(name, KIND, off, size)
        except BaseException:
            dom.kfree(off)
            raise
        return s

    @classmethod
    def attach(cls, name: str, domain: Domain | None = None) -> PcpuFreelist:
        """The freelist registered as ``name`` in the domain (any process)."""
        dom = domain or current_domain()
        e = dom.lookup(name)
        if e.kind != KIND:
            raise InvalidArgument(f"{name!r} is a {e.kind}, not a freelist")
        return cls(dom, e.offset, name)

    def destroy(self) -> None:
        """Free the heads (``pcpu_freelist_destroy()``); the elements stay the caller's.

        Every handle of this freelist, in every process, refuses to be used
        afterwards (``ValueError``), instead of writing into freed memory.
        """
        info = super().info()
        self.invalidate()
        if self.name is not None:
            self.domain.unregister(self.name)
        if info["bitmap_off"]:
            self.domain.kfree(info["bitmap_off"])
        self.domain.kfree(self.offset)

    # ---- filling ---------------------------------------------------------------

    def populate(self, buf: int, elem_size: int, nr_elems: int, /) -> None:
        """Push ``nr_elems`` elements at ``buf, buf+elem_size, ...`` (``pcpu_freelist_populate()``).

        The kernel's split since 4b45cd81f737: ``n = nr_elems // P``; the first
        ``nr_elems % P`` possible CPUs (by position) get ``n + 1`` contiguous
        elements, the others ``n``, pushed in address order, so pops on a CPU
        return descending addresses.  The first populate fixes the element
        area that later pushes are checked against.
        Errors: :class:`~percpu.errors.InvalidArgument` when the elements do
        not fit the arena (or the area set before), ``elem_size`` is not a
        multiple of 8, or a count is not positive; nothing changes then.
        """
        for v in (buf, elem_size, nr_elems):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise InvalidArgument(f"populate({buf!r}, {elem_size!r}, {nr_elems!r}): positive ints")
        if elem_size % 8 or buf + elem_size * nr_elems > self.domain.size:
            raise InvalidArgument(
                f"pcpu_freelist_populate: {nr_elems} elements of {elem_size} bytes at {buf} do not fit "
                f"the arena of {self.domain.size} bytes, or elem_size is not a multiple of 8"
            )
        info = super().info()
        if info["robust"] and not info["elem_size"]:
            bitmap = self.domain.kzalloc(max(8, (nr_elems + 63) // 64 * 8))
            if bitmap is None:
                raise OutOfMemory("no room for the robust-mode bitmap")
            try:
                self.set_area(buf, elem_size, nr_elems, bitmap)
            except BaseException:
                self.domain.kfree(bitmap)
                raise
        super().populate(buf, elem_size, nr_elems)

    # ---- inspection ------------------------------------------------------------

    def check(self) -> int:  # noqa: D102 - extends the C method's docstring
        """Walk every list under its lock; return the number of free nodes.

        Raises :class:`~percpu.errors.Corrupted` on a cycle, a node on two
        lists, a node outside the element area, or a count that does not match.
        """
        return int(super().check())

    def per_cpu(self) -> dict[int | str, int]:
        """Free nodes by CPU (possible CPUs), and ``"extra"`` for the extra list."""
        return self.counts()

    def count(self) -> int:
        """Free nodes on all lists (a racy sum of the per-list counters)."""
        return sum(self.counts().values())

    def __len__(self) -> int:
        return self.count()

    def info(self) -> dict[str, Any]:
        """Offset, element area, robust mode."""
        return dict(super().info(), name=self.name)

    def __repr__(self) -> str:
        counts = self.per_cpu()
        busy = sum(1 for k, v in counts.items() if k != "extra" and v)
        return (f"<PcpuFreelist {self.name or hex(self.offset)} free={sum(counts.values())} "
                f"cpus_with_nodes={busy} extra={counts['extra']}>")
