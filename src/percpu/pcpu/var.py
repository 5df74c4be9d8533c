"""Typed per-CPU variables and counters on the per-CPU allocator.

``PerCpu`` is ``DEFINE_PER_CPU(type, name)`` / ``alloc_percpu(type)`` for a
Python program: one value per possible CPU, at the same offset in every unit,
read and written as a ``struct`` format or a numpy dtype.  ``PerCpuCounter``
is the common case made fast: ``add()`` is one C call and one atomic add on
this CPU's copy, ``sum()`` reads every CPU's copy.  Both live in the domain,
so every process of it sees them; a name makes them attachable.

    >>> hits = PerCpuCounter("hits")                   # doctest: +SKIP
    >>> hits.add()                                     # this CPU, no lock
    >>> hits.sum()                                     # all CPUs
    1
    >>> lat = PerCpu("qd", name="lat")                 # count, total seconds
    >>> lat.set((1, 0.25))                             # this CPU's copy
    >>> dict(lat.items())                              # every possible CPU
    {0: (1, 0.25), 1: (0, 0.0)}

Context: every method may be called from any process and thread of the
domain.  ``PerCpu.set`` is a plain store, as ``this_cpu_write`` is: two
processes acting as the same CPU may race on it; ``PerCpuCounter.add`` is
atomic.  Nothing here reads a page that is not populated: every ``PerCpu``
access and ``PerCpuCounter.sum``/``read`` first checks that the area is live
(a freed variable raises ``EINVAL``).  ``PerCpuCounter.add`` checks only its
own handle, to stay one atomic: a handle in another process used after the
counter was freed is the kernel's use-after-free.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from percpu import _core
from percpu.errors import Exists, InvalidArgument, NoEntry
from percpu.pcpu import allocator as _alloc
from percpu.runtime.cpu import smp_processor_id
from percpu.runtime.domain import Domain, current_domain

__all__ = ["PerCpu", "PerCpuCounter", "define_per_cpu"]

KIND_VAR = "pcpu_var"
KIND_COUNTER = "pcpu_counter"
_DESC = struct.Struct("<IIQQI")  # magic flags ptr size fmt_len, then the format text
_DESC_MAGIC = 0x52415650  # "PVAR"
_F_STATIC = 1
_MAX_FMT = 200


class _Type:
    """A value type: a ``struct`` format, or a numpy dtype."""

    def __init__(self, spec: Any) -> None:
        self.np: Any = None
        if isinstance(spec, int) and not isinstance(spec, bool):
            if spec <= 0:
                raise InvalidArgument(f"a per-CPU variable needs a positive size, not {spec}")
            spec = f"{spec}s"
        if isinstance(spec, str):
            try:
                self.st: struct.Struct | None = struct.Struct(spec)
            except struct.error as e:
                raise InvalidArgument(f"bad struct format {spec!r}: {e}") from None
            self.size = self.st.size
            self.align = _alloc.natural_align(self.size)
            self.text = "st:" + spec
            self.single = len(self.st.unpack(bytes(self.size))) == 1
        else:
            try:
                import numpy as np
            except ImportError:  # pragma: no cover - numpy is optional
                raise InvalidArgument(f"{spec!r} is not a struct format, and numpy is not installed") from None
            try:
                dt = np.dtype(spec)
            except TypeError as e:
                raise InvalidArgument(f"not a struct format or numpy dtype: {spec!r} ({e})") from None
            if dt.hasobject:
                raise InvalidArgument("a per-CPU numpy dtype cannot hold Python objects")
            self.np, self.st = np, None
            self.dtype = dt
            self.size = dt.itemsize
            self.align = max(_alloc.PCPU_MIN_ALLOC_SIZE, min(dt.alignment, 8))
            self.text = "np:" + (repr(dt.descr) if dt.fields else dt.str)
            self.single = True
        if not 0 < self.size <= _alloc.PCPU_MIN_UNIT_SIZE:
            raise InvalidArgument(f"a per-CPU value of {self.size} bytes is not in 1..{_alloc.PCPU_MIN_UNIT_SIZE}")

    @classmethod
    def from_text(cls, text: str) -> _Type:
        if text.startswith("st:"):
            return cls(text[3:])
        import ast

        import numpy as np

        body = text[3:]
        return cls(np.dtype(ast.literal_eval(body) if body.startswith("[") else body))

    def read(self, buf: memoryview, off: int) -> Any:
        if self.st is not None:
            v = self.st.unpack_from(buf, off)
            return v[0] if self.single else v
        return self.np.ndarray((), self.dtype, buffer=buf, offset=off).copy()[()]

    def write(self, buf: memoryview, off: int, value: Any) -> None:
        if self.st is not None:
            if self.single:
                self.st.pack_into(buf, off, value)
            else:
                self.st.pack_into(buf, off, *value)
        else:
            self.np.ndarray((), self.dtype, buffer=buf, offset=off)[()] = value


class PerCpuRef:
    """One CPU's copy of a :class:`PerCpu` (``per_cpu(var, cpu)``)."""

    __slots__ = ("_var", "cpu", "offset")

    def __init__(self, var: PerCpu, cpu: int) -> None:
        self._var = var
        self.cpu = cpu
        self.offset: int = var._arena.pcpu_ptr(var.ptr, cpu)

    def get(self) -> Any:
        """The value (a scalar for one field, else a tuple; numpy: a numpy scalar)."""
        self._var._check()
        return self._var._type.read(self._var._buf, self.offset)

    def set(self, value: Any) -> None:
        """Store ``value`` (a plain store, like ``per_cpu(var, cpu) = value``)."""
        self._var._check()
        self._var._type.write(self._var._buf, self.offset, value)

    def view(self) -> Any:
        """A writable view of this copy: a ``memoryview`` (struct) or a 0-d ndarray (numpy)."""
        v = self._var
        v._check()
        if v._type.np is not None:
            return v._type.np.ndarray((), v._type.dtype, buffer=v._buf, offset=self.offset)
        return v._buf[self.offset : self.offset + v.size]

    def __repr__(self) -> str:
        return f"<PerCpuRef {self._var.name or hex(self._var.ptr)} cpu={self.cpu}>"


class PerCpu:
    """A typed per-CPU variable in a domain, one copy per possible CPU.

    ``alloc_percpu(type)``: ``PerCpu(spec)`` allocates ``spec``'s size, zeroed
    on every CPU, aligned naturally (at most 8 bytes).  ``spec`` is a
    ``struct`` format (``"q"``, ``"2d"``, ``"<qI"``), a byte count (raw
    bytes), or a numpy dtype (``np.int64``, ``np.dtype([("n", "i8"), ...])``).
    ``name`` registers it so other processes can :meth:`attach`; see
    :func:`define_per_cpu` for the static kind.

    Errors: :class:`~percpu.errors.InvalidArgument` (a bad spec, or larger
    than ``PCPU_MIN_UNIT_SIZE``), :class:`~percpu.errors.OutOfMemory` (the
    allocator or the thread's accounting group refused),
    :class:`~percpu.errors.Exists` (the name is taken).
    """

    def __init__(self, spec: Any, *, name: str | None = None, domain: Domain | None = None) -> None:
        dom = current_domain() if domain is None else domain
        t = _Type(spec)
        ptr = dom.arena.pcpu_alloc(t.size, t.align)
        if ptr is None:
            from percpu.errors import OutOfMemory

            raise OutOfMemory(f"alloc_percpu of {t.size} bytes failed (see the percpu warning)")
        desc = 0
        try:
            if name is not None:
                desc = _register(dom, name, KIND_VAR, ptr, t, 0)
        except BaseException:
            dom.arena.pcpu_free(ptr)
            raise
        self._init(dom, ptr, t, name, desc, static=False)

    def _init(self, dom: Domain, ptr: int, t: _Type, name: str | None, desc: int, *, static: bool) -> None:
        self.domain = dom
        self.ptr = ptr
        self.name = name
        self.static = static
        self._type = t
        self._desc = desc
        self._arena = dom.arena
        self._buf = memoryview(dom.arena)  # type: ignore[arg-type]  # Buffer is 3.12+
        self._freed = False

    @classmethod
    def attach(cls, name: str, domain: Domain | None = None) -> PerCpu:
        """The variable registered as ``name`` (by any process); :class:`NoEntry` if none."""
        dom = current_domain() if domain is None else domain
        e = dom.lookup(name)
        if e.kind != KIND_VAR:
            raise InvalidArgument(f"{name!r} is a {e.kind}, not a per-CPU variable")
        ptr, flags, t = _read_desc(dom, e.offset)
        self = cls.__new__(cls)
        self._init(dom, ptr, t, name, e.offset, static=bool(flags & _F_STATIC))
        return self

    @property
    def size(self) -> int:
        """Bytes of one CPU's copy."""
        return self._type.size

    @property
    def format(self) -> str:
        """The value type: ``st:<struct format>`` or ``np:<dtype>``."""
        return self._type.text

    def _check(self) -> None:
        if self._freed:
            raise ValueError("per-CPU variable was freed")
        if not self._arena.pcpu_area_live(self.ptr, self.size):
            raise InvalidArgument(f"per-CPU variable at {self.ptr:#x} is not live (freed by another process?)")

    def on(self, cpu: int) -> PerCpuRef:
        """``cpu``'s copy (``per_cpu(var, cpu)``); EINVAL if the CPU is not possible."""
        return PerCpuRef(self, cpu)

    def this_cpu(self) -> PerCpuRef:
        """The calling thread's copy (``this_cpu_ptr``)."""
        return PerCpuRef(self, smp_processor_id())

    def get(self) -> Any:
        """This CPU's value (``this_cpu_read``)."""
        return self.this_cpu().get()

    def set(self, value: Any) -> None:
        """Store into this CPU's copy (``this_cpu_write``)."""
        self.this_cpu().set(value)

    def items(self) -> Iterator[tuple[int, Any]]:
        """``(cpu, value)`` for every possible CPU (``for_each_possible_cpu``)."""
        self._check()
        for cpu in self.domain.possible:
            yield cpu, self._type.read(self._buf, self._arena.pcpu_ptr(self.ptr, cpu))

    def values(self) -> list[Any]:
        """The values of every possible CPU, in CPU order."""
        return [v for _, v in self.items()]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.values())

    def as_array(self) -> Any:
        """numpy: a writable ndarray over every CPU's copy (strided by the unit size)."""
        self._check()
        if self._type.np is None:
            raise InvalidArgument("as_array() needs a numpy dtype")
        info = self._arena.pcpu_info()
        return self._type.np.ndarray(
            (len(self.domain.possible),), self._type.dtype, buffer=self._buf, offset=self.ptr,
            strides=(info["unit_size"],),
        )

    def free(self) -> None:
        """``free_percpu()``; the name is dropped.  Static variables are never freed (EINVAL)."""
        if self.static:
            raise InvalidArgument("a define_per_cpu() variable is never freed")
        if self._freed:
            return
        if self.name is not None:
            _unregister(self.domain, self.name, self._desc)
        self._freed = True
        self._arena.pcpu_free(self.ptr)

    def __repr__(self) -> str:
        what = "static " if self.static else ""
        return f"<PerCpu {what}{self.name or ''} ptr={self.ptr:#x} {self._type.text}>"


def define_per_cpu(name: str, spec: Any, *, domain: Domain | None = None) -> PerCpu:
    """``DEFINE_PER_CPU``: a named variable in the first chunk's static area.

    The static area is sized when the domain is created
    (``Domain.create(pcpu_static_size=...)``, 4 KiB by default); its
    variables are never freed.  Every process may declare the same name: the
    first creates it, the others get it (the type must match, else
    :class:`~percpu.errors.Exists`).  :class:`~percpu.errors.NoSpace` when
    the static area is full.
    """
    dom = current_domain() if domain is None else domain
    t = _Type(spec)
    for _ in range(2):
        try:
            v = PerCpu.attach(name, dom)
        except NoEntry:
            pass
        else:
            if not v.static or v.format != t.text:
                raise Exists(f"{name!r} exists as {v!r}, not as a static {t.text}")
            return v
        ptr = dom.arena.pcpu_static_alloc(t.size, t.align)
        try:
            desc = _register(dom, name, KIND_VAR, ptr, t, _F_STATIC)
        except Exists:
            continue  # another process declared it first: its copy wins (ours stays unused)
        v = PerCpu.__new__(PerCpu)
        v._init(dom, ptr, t, name, desc, static=True)
        return v
    raise Exists(f"{name!r} is being redefined concurrently")


class PerCpuCounter(_core.PcpuCounter):
    """A 64-bit per-CPU counter: lock-free ``add`` on this CPU, ``sum`` over all.

    The usual kernel pattern (``this_cpu_add`` then a sum over
    ``for_each_possible_cpu``) for statistics that many processes bump.
    ``add(delta=1)`` and ``sum()`` are the C core's methods: ``add`` is one
    atomic add on this CPU's copy; ``sum`` reads every possible CPU's copy,
    which are populated by construction.  ``read(cpu)`` gives one copy.
    ``name`` makes it attachable from other processes.
    """

    def __init__(self, name: str | None = None, *, domain: Domain | None = None) -> None:
        dom = current_domain() if domain is None else domain
        ptr = dom.arena.pcpu_alloc(8, 8)
        if ptr is None:
            from percpu.errors import OutOfMemory

            raise OutOfMemory("alloc_percpu of a counter failed (see the percpu warning)")
        try:
            super().__init__(dom.arena, ptr)
            self._desc = _register(dom, name, KIND_COUNTER, ptr, _Type("q"), 0) if name else 0
        except BaseException:
            dom.arena.pcpu_free(ptr)
            raise
        self.domain = dom
        self.name = name

    @classmethod
    def attach(cls, name: str, domain: Domain | None = None) -> PerCpuCounter:
        """The counter registered as ``name``; :class:`NoEntry` if none."""
        dom = current_domain() if domain is None else domain
        e = dom.lookup(name)
        if e.kind != KIND_COUNTER:
            raise InvalidArgument(f"{name!r} is a {e.kind}, not a per-CPU counter")
        ptr, _, _ = _read_desc(dom, e.offset)
        self = cls.__new__(cls)
        _core.PcpuCounter.__init__(self, dom.arena, ptr)
        self.domain, self.name, self._desc = dom, name, e.offset
        return self

    @property
    def value(self) -> int:
        """``sum()``."""
        return int(self.sum())

    def per_cpu(self) -> dict[int, int]:
        """Every possible CPU's copy."""
        return {cpu: int(self.read(cpu)) for cpu in self.domain.possible}

    def free(self) -> None:
        """``free_percpu()``: this handle stops working; others raise on their next use."""
        if self.freed:
            return
        if self.name:
            _unregister(self.domain, self.name, self._desc)
        self._invalidate()
        self.domain.arena.pcpu_free(self.ptr)

    def __repr__(self) -> str:
        return f"<PerCpuCounter {self.name or ''} ptr={self.ptr:#x}>"


# ---- the registry descriptor: where the variable is and its type -------------

def _register(dom: Domain, name: str, kind: str, ptr: int, t: _Type, flags: int) -> int:
    text = t.text.encode()
    if len(text) > _MAX_FMT:
        raise InvalidArgument(f"the type description is too long to register ({len(text)} bytes)")
    desc = dom.kzalloc(_DESC.size + len(text))
    if desc is None:
        from percpu.errors import OutOfMemory

        raise OutOfMemory("no memory for the variable's descriptor")
    m = dom.mem(desc, _DESC.size + len(text))
    _DESC.pack_into(m, 0, _DESC_MAGIC, flags, ptr, t.size, len(text))
    m[_DESC.size :] = text
    m.release()
    try:
        dom.register(name, kind, desc, t.size, flags)
    except BaseException:
        dom.kfree(desc)
        raise
    return int(desc)


def _read_desc(dom: Domain, desc: int) -> tuple[int, int, _Type]:
    m = dom.mem(desc, _DESC.size)
    magic, flags, ptr, _size, n = _DESC.unpack_from(m, 0)
    m.release()
    if magic != _DESC_MAGIC or n > _MAX_FMT:
        raise InvalidArgument("registry entry does not describe a per-CPU variable")
    m = dom.mem(desc + _DESC.size, n)
    text = bytes(m).decode()
    m.release()
    return ptr, flags, _Type.from_text(text)


def _unregister(dom: Domain, name: str, desc: int) -> None:
    """Drop ``name`` if it still names our descriptor ``desc`` (not a later object of that name)."""
    try:
        if dom.lookup(name).offset != desc:
            return
        dom.unregister(name)
    except NoEntry:
        return
    dom.kfree(desc)
