"""``struct bpf_cpumask`` (``kernel/bpf/cpumask.c``): a refcounted CPU mask in the arena.

A :class:`BpfCpumask` lives in shared memory, so every process of the domain
that holds its pointer sees the same bits.  It is allocated from the domain's
``bpf_cpumask_ma`` (a fixed-size :class:`~percpu.memalloc.BpfMemAlloc`, as the
kernel's), and when its last reference is released it is freed with
``bpf_mem_cache_free_rcu``: readers inside an RCU section may still read it.

Layout (one memalloc object)::

    +0                 the mask: ceil(nr_cpu_ids / 64) words, bit n of word w = CPU 64w + n
    +8 * nwords        usage: the refcount (refcount_t)

Single-bit updates (``set_cpu``, ``clear_cpu``, ``test_and_set_cpu``,
``test_and_clear_cpu``) are atomic RMWs on one word; ``setall``, ``clear``,
``and``/``or``/``xor``, ``copy`` and ``populate`` are word-wise stores, as in
the kernel (a concurrent reader may see a mix).  Bits at and above
``nr_cpu_ids`` are always zero.

Each :class:`BpfCpumask` handle owns one reference: :meth:`acquire` returns a
new handle with its own, :meth:`release` drops the handle's.  The kernel's
verifier rejects a second release and any use after release; here the handle
refuses them at run time (``ValueError``), and a handle whose object was
freed through another handle (its refcount reached zero) refuses too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from percpu import _core
from percpu.cpumask import Cpumask
from percpu.errors import AccessDenied, Exists, InvalidArgument
from percpu.memalloc import BpfMemAlloc
from percpu.runtime.cpu import smp_processor_id
from percpu.runtime.domain import Domain, current_domain

__all__ = ["BpfCpumask", "bpf_cpumask_ma"]

MA_NAME = "bpf_cpumask_ma"


def bpf_cpumask_ma(domain: Domain | None = None) -> BpfMemAlloc:
    """The domain's allocator of ``struct bpf_cpumask`` (created on first use, shared by name)."""
    dom = domain or current_domain()
    ma = _mas.get(id(dom))
    if ma is not None and not ma.destroyed and ma.domain is dom:
        return ma
    nwords = (dom.nr_cpu_ids + 63) // 64
    try:
        ma = BpfMemAlloc.attach(MA_NAME, dom)
    except Exception:  # noqa: BLE001 - not there yet: create it (another process may race us)
        try:
            ma = BpfMemAlloc(8 * nwords + 8, name=MA_NAME, domain=dom)
        except Exists:
            ma = BpfMemAlloc.attach(MA_NAME, dom)
    _mas[id(dom)] = ma
    return ma


_mas: dict[int, BpfMemAlloc] = {}


class BpfCpumask(_core.CpumaskRef):
    """A reference to a ``struct bpf_cpumask`` in the arena (see the module docstring).

    The C methods (inherited, each checking that the handle and the mask are
    still alive): ``set_cpu``, ``clear_cpu``, ``test_cpu``,
    ``test_and_set_cpu``, ``test_and_clear_cpu``, ``weight``, ``bits()``,
    ``store_bits(int)``.
    """

    __slots__ = ("domain", "_ma", "_borrowed", "__weakref__")

    def __init__(self, ma: BpfMemAlloc, ptr: int) -> None:
        super().__init__(ma, ptr, ma.domain.nr_cpu_ids)
        self._ma = ma
        self.domain = ma.domain
        self._borrowed = False

    # ---- kptr slots: an arena word holding a mask's pointer (the reference it owns) ---------

    @classmethod
    def _adopt(cls, ptr: int, domain: Domain | None = None) -> BpfCpumask:
        """A handle that takes over a reference someone gave up (a slot's), without counting a new one."""
        m = cls(bpf_cpumask_ma(domain), ptr)
        m.weight()  # the liveness checks
        return m

    def _give(self) -> int:
        """Give this handle's reference away (into a slot): the handle can no longer be used."""
        if self._borrowed:
            raise ValueError("a borrowed (RCU) bpf_cpumask cannot be stored into a kptr slot")
        self.weight()  # the liveness checks
        if self._mark_released():
            raise ValueError("bpf_cpumask used after its release (the verifier would reject this program)")
        return int(self.ptr)

    @classmethod
    def from_slot(cls, slot: int, domain: Domain | None = None) -> BpfCpumask | None:
        """The mask in a kptr slot as an RCU pointer (borrowed: no reference, no release), or None.

        Call inside ``percpu.rcu.read_lock()``: the mask stays readable until the
        section ends even if another process takes it out of the slot and
        releases it.
        """
        dom = domain or current_domain()
        ptr = int(dom.arena.load(slot))
        if not ptr:
            return None
        m = cls(bpf_cpumask_ma(dom), ptr)
        m._borrowed = True
        return m

    # ---- life cycle --------------------------------------------------------------------

    @classmethod
    def create(cls, domain: Domain | None = None) -> BpfCpumask | None:
        """``bpf_cpumask_create()``: an empty mask with one reference, or None (out of memory)."""
        ma = bpf_cpumask_ma(domain)
        ptr = ma.cache_alloc()
        if ptr is None:
            return None
        ma.domain.arena.store(ptr + 8 * ((ma.domain.nr_cpu_ids + 63) // 64), 1)  # usage
        m = cls(ma, ptr)
        m.store_bits(0)  # recycled objects are not zeroed: the kernel memsets here too
        return m

    @classmethod
    def from_ptr(cls, ptr: int, domain: Domain | None = None) -> BpfCpumask:
        """Take a new reference on the mask at ``ptr`` (another process's, say): ``bpf_cpumask_acquire``."""
        ma = bpf_cpumask_ma(domain)
        if ma.obj_cache(ptr) is None:
            raise InvalidArgument(f"{ptr:#x} is not a live bpf_cpumask of this domain")
        m = cls(ma, ptr)
        m._get()
        return m

    def _usage_off(self) -> int:
        return int(self.ptr) + 8 * ((self.nr_cpu_ids + 63) // 64)

    def _get(self) -> None:
        self.weight()  # the liveness checks
        a = self.domain.arena
        off = self._usage_off()
        while True:  # refcount_inc, refusing 0 -> 1 (refcount_inc_not_zero)
            old = a.load(off)
            if old == 0:
                raise ValueError("bpf_cpumask was freed (its last reference was released)")
            if a.cmpxchg(off, old, old + 1) == old:
                return

    def acquire(self) -> BpfCpumask:
        """``bpf_cpumask_acquire()``: a new handle holding its own reference."""
        self._get()
        return BpfCpumask(self._ma, self.ptr)

    def release(self) -> None:
        """``bpf_cpumask_release()``: drop this handle's reference; the last one frees with free_rcu."""
        if self._borrowed:
            raise ValueError("release of a borrowed (RCU) bpf_cpumask: it holds no reference")
        if self.released:
            raise ValueError("bpf_cpumask released twice (the verifier would reject this program)")
        self.weight()  # the liveness checks
        if self._mark_released():  # test-and-set under the GIL: two threads cannot both release it
            raise ValueError("bpf_cpumask released twice (the verifier would reject this program)")
        if self.domain.arena.fetch_add(self._usage_off(), -1) == 1:
            self._ma.cache_free_rcu(self.ptr)

    @property
    def refcount(self) -> int:
        return int(self.domain.arena.load(self._usage_off()))

    # ---- reading ---------------------------------------------------------------------------

    def cpumask(self) -> Cpumask:
        """A snapshot as an immutable :class:`~percpu.Cpumask`."""
        return Cpumask.from_bits(self.bits(), self.nr_cpu_ids)

    def __iter__(self) -> Iterator[int]:
        return iter(self.cpumask())

    def __len__(self) -> int:
        return int(self.weight())

    def __contains__(self, cpu: object) -> bool:
        return isinstance(cpu, int) and bool(self.test_cpu(cpu))

    # ---- writing ---------------------------------------------------------------------------

    def populate(self, src: bytes | bytearray | memoryview) -> None:
        """``bpf_cpumask_populate()``: copy ``bitmap_size(nr_cpu_ids)`` bytes of little-endian words.

        A source smaller than that is refused with ``EACCES`` and changes nothing.
        """
        self.weight()  # the liveness checks
        need = 8 * ((self.nr_cpu_ids + 63) // 64)
        data = bytes(memoryview(src).cast("B"))  # a buffer: an int is a TypeError, not that many zeros
        if len(data) < need:
            raise AccessDenied(f"bpf_cpumask_populate: source of {len(data)} bytes, the mask needs {need}")
        self.store_bits(int.from_bytes(data[:need], "little"))

    def __repr__(self) -> str:
        if self.released:
            return f"<BpfCpumask {self.ptr:#x} released>"
        try:
            return f"<BpfCpumask {self.ptr:#x} {self.cpumask().format_list() or '(empty)'} refcount={self.refcount}>"
        except ValueError:
            return f"<BpfCpumask {self.ptr:#x} freed>"


def bits_of(m: Any) -> tuple[int, int]:
    """``(bits, nr_cpu_ids)`` of a ``const struct cpumask *`` argument: a Cpumask or a BpfCpumask."""
    if isinstance(m, BpfCpumask):
        return int(m.bits()), int(m.nr_cpu_ids)
    if isinstance(m, Cpumask):
        return m.bits, m.nr_cpu_ids
    raise TypeError(f"expected a Cpumask or a BpfCpumask, not {type(m).__name__}")


# The any_distribute cursor: per process and CPU (the kernel's is per CPU,
# shared by every caller on it).
_cursor: dict[int, int] = {}


def distribute(bits: int, nr: int) -> int:
    """``cpumask_any_distribute()``: the next set CPU after this CPU's cursor, wrapping; nr if none."""
    if not bits:
        return nr
    cpu = smp_processor_id()
    prev = _cursor.get(cpu, 0)
    above = bits >> (prev + 1) << (prev + 1)
    pick = (above & -above).bit_length() - 1 if above else (bits & -bits).bit_length() - 1
    _cursor[cpu] = pick
    return pick
