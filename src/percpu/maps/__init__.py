"""BPF-style maps on the allocators: array, per-CPU array, hash, per-CPU hash.

The kernel's map types, with their element memory where the kernel puts it
(``kernel/bpf/arraymap.c``, ``kernel/bpf/hashtab.c``):

=====================  ===============================================================
``ArrayMap``           ``BPF_MAP_TYPE_ARRAY``: one value area, ``round_up(value_size, 8)`` per index
``PercpuArrayMap``     ``BPF_MAP_TYPE_PERCPU_ARRAY``: one ``alloc_percpu()`` per index
``HashMap``            ``BPF_MAP_TYPE_HASH``: preallocated elements on a per-CPU freelist
                       (:class:`~percpu.freelist.PcpuFreelist`), or with ``BPF_F_NO_PREALLOC``
                       from a :class:`~percpu.memalloc.BpfMemAlloc`, freed after an RCU grace period
``PercpuHashMap``      ``BPF_MAP_TYPE_PERCPU_HASH``: as ``HashMap``, the value one copy per possible CPU
                       (``alloc_percpu()`` per preallocated element, or a per-CPU ``BpfMemAlloc``)
=====================  ===============================================================

Every map lives in the domain's arena, is registered by name (or as
``map.<id>``), and any process of the domain attaches to it with
:func:`attach`.  Two sides, as in the kernel:

- the **syscall side** (``lookup``, ``update``, ``delete``, ``get_next_key``,
  the batches, ``m[key]``...): values are copied; per-CPU values are a list
  over the possible CPUs, each rounded up to 8 bytes in the raw form;
- the **program side** (:func:`bpf_map_lookup_elem` returning a writable view
  of the value, this CPU's copy for per-CPU maps; :func:`bpf_map_update_elem`,
  :func:`bpf_map_delete_elem`, and ``bpf_kptr_xchg`` on :meth:`BpfMap.kptr_slot`).

Keys and values are bytes, or go through a ``struct`` format or a numpy dtype
given at create (:mod:`percpu.maps.codec`).  Errors carry the kernel's errno:
``EINVAL``, ``E2BIG``, ``EEXIST``, ``ENOENT``, ``ENOMEM``, ``EPERM``, ``EBUSY``.
``docs/design/maps.md`` has the layouts, the synchronization table, the crash
rules and every deviation from the kernel.
"""

from __future__ import annotations

import abc
import contextlib
import errno as _errno
import json
import os
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from percpu import _core
from percpu.errors import (
    AccessDenied,
    Exists,
    InvalidArgument,
    NoEntry,
    NotPermitted,
    OutOfMemory,
    PercpuError,
    TooBig,
)
from percpu.maps.codec import Codec, StructCodec, from_spec, make
from percpu.runtime.domain import Domain, current_domain

__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_F_NO_PREALLOC",
    "BPF_F_NUMA_NODE",
    "BPF_F_RDONLY",
    "BPF_F_RDONLY_PROG",
    "BPF_F_WRONLY",
    "BPF_F_WRONLY_PROG",
    "BPF_F_ZERO_SEED",
    "BPF_NOEXIST",
    "ArrayMap",
    "BatchError",
    "Codec",
    "BpfMap",
    "HashMap",
    "PercpuArrayMap",
    "PercpuHashMap",
    "attach",
    "bpf_map_delete_elem",
    "bpf_map_lookup_elem",
    "bpf_map_update_elem",
    "maps",
]

# include/uapi/linux/bpf.h
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
TYPE_NAMES = {BPF_MAP_TYPE_HASH: "hash", BPF_MAP_TYPE_ARRAY: "array",
              BPF_MAP_TYPE_PERCPU_HASH: "percpu_hash", BPF_MAP_TYPE_PERCPU_ARRAY: "percpu_array"}

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2
BPF_F_LOCK = 4

BPF_F_NO_PREALLOC = 1 << 0
BPF_F_NO_COMMON_LRU = 1 << 1
BPF_F_NUMA_NODE = 1 << 2
BPF_F_RDONLY = 1 << 3
BPF_F_WRONLY = 1 << 4
BPF_F_ZERO_SEED = 1 << 6
BPF_F_RDONLY_PROG = 1 << 7
BPF_F_WRONLY_PROG = 1 << 8
BPF_F_MMAPABLE = 1 << 10
BPF_F_PRESERVE_ELEMS = 1 << 11
BPF_F_INNER_MAP = 1 << 12
BPF_F_ACCESS_MASK = BPF_F_RDONLY | BPF_F_RDONLY_PROG | BPF_F_WRONLY | BPF_F_WRONLY_PROG
HTAB_CREATE_FLAG_MASK = (BPF_F_NO_PREALLOC | BPF_F_NO_COMMON_LRU | BPF_F_NUMA_NODE
                         | BPF_F_ACCESS_MASK | BPF_F_ZERO_SEED)
ARRAY_CREATE_FLAG_MASK = (BPF_F_NUMA_NODE | BPF_F_MMAPABLE | BPF_F_ACCESS_MASK
                          | BPF_F_PRESERVE_ELEMS | BPF_F_INNER_MAP)

KMALLOC_MAX_SIZE = 4 << 20  # x86-64: 1 << (PAGE_SHIFT + MAX_PAGE_ORDER)
HTAB_ELEM_KERNEL = 48  # sizeof(struct htab_elem) on 64-bit, for the kernel's size check
_LAYOUT = _core.maps_layout()
ELEM_HDR = _LAYOUT["elem_hdr"]  # struct pk_htab_elem header
BUCKET_SIZE = _LAYOUT["bucket"]
HTAB_HDR = _LAYOUT["htab"]  # sizeof(struct pk_htab)
ARRAY_HDR = _LAYOUT["array"]  # sizeof(struct pk_array)
PCPU_MIN_UNIT_SIZE = _core.PCPU_MIN_UNIT_SIZE
BPF_OBJ_NAME_LEN = 16
KIND = "bpf_map"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.]*$")
_DESC = struct.Struct("<I")  # descriptor: u32 length, then JSON


def _round8(n: int) -> int:
    return (n + 7) & ~7


def _roundup_pow_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length() if n > 1 else 1


def _kzalloc(dom: Domain, size: int, what: str) -> int:
    """kzalloc for a map part: ENOMEM (never EINVAL) when the domain cannot hold it."""
    try:
        off = dom.kzalloc(size)
    except InvalidArgument:
        off = None
    if off is None:
        raise OutOfMemory(f"no room for {what} ({size} bytes) in the domain")
    return off


class _Closed:
    """What a closed or freed handle holds instead of its core: every use raises ValueError."""

    def __init__(self, why: str) -> None:
        self._why = why

    def __getattr__(self, name: str) -> Any:
        raise ValueError(self._why)


_INT_PACK = {1: struct.Struct("<B").pack, 2: struct.Struct("<H").pack, 4: struct.Struct("<I").pack,
             8: struct.Struct("<Q").pack}


def _check_int(what: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > 0xFFFFFFFF:
        raise InvalidArgument(f"{what} must be a u32, not {v!r}")
    return v


class BatchError(PercpuError):
    """A batch stopped at an error; ``count`` elements were done before it (``attr->batch.count``)."""

    def __init__(self, cause: PercpuError, count: int) -> None:
        super().__init__(f"{cause.strerror} (after {count} elements)", cause.errno)
        self.cause = cause
        self.count = count


@dataclass
class Batch:
    """One batch of a lookup: keys, values, and the cursor of the next batch (None: that was the last)."""

    keys: list[Any]
    values: list[Any]
    next: int | None

    def __iter__(self) -> Iterator[Any]:  # keys, values, next = m.lookup_batch(...)
        return iter((self.keys, self.values, self.next))


def _next_map_id(dom: Domain) -> int:
    from percpu.cpumap import _next_map_id as nid

    return nid(dom)


class BpfMap(abc.ABC):
    """What every map type shares; create one of the subclasses, or :func:`attach`."""

    map_type = 0
    percpu = False
    _core: Any

    def __init__(
        self,
        key_size: int | None = None,
        value_size: int | None = None,
        max_entries: int = 0,
        map_flags: int = 0,
        *,
        key: Any = None,
        value: Any = None,
        name: str | None = None,
        kptrs: Sequence[str | int] = (),
        domain: Domain | None = None,
    ) -> None:
        dom = domain or current_domain()
        self.domain = dom
        if key is None and key_size is None and self.map_type in (BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_ARRAY):
            key_size = 4
        kc = make(key, key_size, "key") if (key is not None or key_size is not None) else None
        vc = make(value, value_size, "value") if (value is not None or value_size is not None) else None
        ks = kc.size if kc is not None else 0
        vs = vc.size if vc is not None else 0
        _check_int("max_entries", max_entries)
        _check_int("map_flags", map_flags)
        if name is not None and (len(name) >= BPF_OBJ_NAME_LEN or not _NAME_RE.match(name)):
            # bpf_obj_name_cpy()
            raise InvalidArgument(f"map name {name!r}: up to 15 characters of [A-Za-z0-9_.]")
        self._check_attr(ks, vs, max_entries, map_flags)
        if name is not None:
            with contextlib.suppress(NoEntry):
                dom.lookup(name)
                raise Exists(f"a map or object named {name!r} exists in the domain")
        self.key_size, self.value_size, self.max_entries, self.map_flags = ks, vs, max_entries, map_flags
        assert kc is not None and vc is not None
        self.key_codec, self.value_codec = kc, vc
        self.kptrs = self._kptr_offsets(kptrs)
        self.name = name or ""
        self.id = _next_map_id(dom)
        self._regname = name or f"map.{self.id}"
        self._desc_off = 0
        self._parts: dict[str, int] = {}
        try:
            self._alloc()
            self._publish()
        except BaseException:
            with contextlib.suppress(Exception):
                self._release_parts()
            raise
        self._setup_views()

    # ---- create-time checks (overridden) -------------------------------------------------

    @abc.abstractmethod
    def _check_attr(self, ks: int, vs: int, max_entries: int, flags: int) -> None:
        ...

    @abc.abstractmethod
    def _alloc(self) -> None:
        ...

    def _kptr_offsets(self, kptrs: Sequence[str | int]) -> tuple[int, ...]:
        if not kptrs:
            return ()
        if self.percpu:
            raise InvalidArgument("kptr fields are supported in maps that are not per-CPU")
        dt = getattr(self.value_codec, "dtype", None)
        out = []
        for k in kptrs:
            if isinstance(k, str):
                if dt is None or dt.names is None or k not in dt.names:
                    raise InvalidArgument(f"no field {k!r} in the value dtype for a kptr")
                off = int(dt.fields[k][1])
            else:
                off = int(k)
            if off % 8 or off < 0 or off + 8 > self.value_size:
                raise InvalidArgument(f"a kptr field must be 8 aligned bytes inside the value (offset {off})")
            out.append(off)
        return tuple(sorted(set(out)))

    # ---- the shared descriptor (what attach() reads) -------------------------------------

    def _publish(self) -> None:
        desc = {
            "id": self.id, "type": self.map_type, "name": self.name, "key_size": self.key_size,
            "value_size": self.value_size, "max_entries": self.max_entries, "map_flags": self.map_flags,
            "key": self.key_codec.spec(), "value": self.value_codec.spec(), "kptrs": list(self.kptrs),
            "parts": self._parts, "pid": os.getpid(),
        }
        raw = json.dumps(desc).encode()
        off = _kzalloc(self.domain, len(raw) + 4, "the map's descriptor")
        mv = self.domain.mem(off, len(raw) + 4)
        mv[4:] = raw
        _DESC.pack_into(mv, 0, len(raw))
        try:
            self.domain.register(self._regname, KIND, off, len(raw) + 4)
        except BaseException:
            self.domain.kfree(off)
            raise
        self._desc_off = off

    @classmethod
    def _from_desc(cls, dom: Domain, regname: str, off: int) -> BpfMap:
        n = _DESC.unpack(bytes(dom.mem(off, 4)))[0]
        d = json.loads(bytes(dom.mem(off + 4, n)))
        sub = _TYPES.get(d["type"])
        if sub is None:
            raise InvalidArgument(f"map {regname!r} has an unknown type {d['type']}")
        self = sub.__new__(sub)
        self.domain = dom
        self.id, self.name = d["id"], d["name"]
        self.key_size, self.value_size = d["key_size"], d["value_size"]
        self.max_entries, self.map_flags = d["max_entries"], d["map_flags"]
        self.key_codec = from_spec(d["key"], self.key_size)
        self.value_codec = from_spec(d["value"], self.value_size)
        self.kptrs = tuple(d["kptrs"])
        self._parts = {k: int(v) for k, v in d["parts"].items()}
        self._regname = regname
        self._desc_off = off
        self._setup_views()
        return self

    def _setup_views(self) -> None:
        self.possible = self.domain.possible
        self._nposs = len(self.possible)
        self._rsize = _round8(self.value_size)
        self._raw_vsize = self._rsize * self._nposs if self.percpu else self.value_size
        # Fast paths of lookup()/update(): which conversions a call can skip.
        self._no_read = bool(self.map_flags & BPF_F_WRONLY)
        self._no_write = bool(self.map_flags & BPF_F_RDONLY)
        vc = self.value_codec
        self._vdec: Any = None
        if self.percpu:
            self._vdec = self._value_out
        elif isinstance(vc, StructCodec) and vc.single:
            unpack = vc.st.unpack
            self._vdec = lambda raw: unpack(raw)[0]
        elif vc.kind != "bytes":
            self._vdec = vc.decode
        self._vraw_ok = not self.kptrs and not self.percpu
        self._split = self.percpu and vc.kind == "bytes"  # the C core splits the copies
        if self._split:
            self._vdec = None
        kc = self.key_codec
        self._kpack: Any = None
        if isinstance(kc, StructCodec) and kc.single:
            self._kpack = kc.st.pack
        elif kc.kind == "bytes":
            self._kpack = _INT_PACK.get(kc.size)
        self._vpack: Any = None
        if isinstance(vc, StructCodec) and vc.single:
            self._vpack = vc.st.pack
        elif vc.kind == "bytes":
            self._vpack = _INT_PACK.get(vc.size)
        # per-CPU values of one struct field: one Struct over every CPU's copy (each rounded to 8)
        self._pc_struct: Any = None
        if self.percpu and isinstance(vc, StructCodec) and vc.single:
            order = vc.fmt[0] if vc.fmt[:1] in ("<", ">", "=", "!", "@") else "="
            body = vc.fmt[1:] if order != "=" or vc.fmt[:1] == "=" else vc.fmt
            pad = self._rsize - self.value_size
            with contextlib.suppress(struct.error):
                st = struct.Struct(order + (body + (f"{pad}x" if pad else "")) * self._nposs)
                if st.size == self._raw_vsize:
                    self._pc_struct = st

    @abc.abstractmethod
    def _release_parts(self) -> None:
        ...

    # ---- conversions ---------------------------------------------------------------------

    def _key(self, key: Any) -> Any:
        if type(key) is int and self._kpack is not None:
            try:
                return self._kpack(key)
            except struct.error:
                pass  # negative or too large: the codec's message
        return self.key_codec.encode(key)

    def _value_in(self, value: Any) -> bytes | memoryview:
        """A value from user space: per-CPU maps take a list (one per possible CPU), raw
        bytes of every CPU's copy, or one value for every CPU."""
        vc = self.value_codec
        if self.kptrs:
            raw = bytearray(vc.encode(value))
            for o in self.kptrs:  # copy_map_value() skips special fields
                raw[o:o + 8] = bytes(8)
            return bytes(raw)
        if not self.percpu:
            return vc.encode(value)
        pst = self._pc_struct
        if pst is not None:
            try:
                if type(value) is list:
                    if len(value) == self._nposs:
                        return bytes(pst.pack(*value))
                elif not isinstance(value, (bytes, bytearray, memoryview, tuple)):
                    return bytes(pst.pack(*([value] * self._nposs)))
            except struct.error:
                pass  # the messages below
        if isinstance(value, (bytes, bytearray, memoryview)) and len(memoryview(value).cast("B")) == self._raw_vsize:
            return bytes(value)
        pad = bytes(self._rsize - self.value_size)
        if isinstance(value, list) or (hasattr(value, "ndim") and getattr(value, "ndim", 0) >= 1
                                       and len(value) == self._nposs and self.value_codec.kind == "numpy"
                                       and getattr(value, "dtype", None) == getattr(vc, "dtype", None)):
            if len(value) != self._nposs:
                raise InvalidArgument(
                    f"a per-CPU value is a list of {self._nposs} values (one per possible CPU), not {len(value)}"
                )
            return b"".join(bytes(vc.encode(v)) + pad for v in value)
        one = bytes(vc.encode(value)) + pad
        return one * self._nposs

    def _value_out(self, raw: bytes) -> Any:
        vc = self.value_codec
        if not self.percpu:
            return vc.decode(raw)
        if self._pc_struct is not None:
            return list(self._pc_struct.unpack(raw))
        r, n = self._rsize, self.value_size
        return [vc.decode(raw[i * r:i * r + n]) for i in range(self._nposs)]

    def _check_user(self, write: bool) -> None:
        # map_update_elem()/map_lookup_elem(): the fd's mode from BPF_F_RDONLY / BPF_F_WRONLY
        if write and self.map_flags & BPF_F_RDONLY:
            raise NotPermitted("the map was created BPF_F_RDONLY: no writes from user space")
        if not write and self.map_flags & BPF_F_WRONLY:
            raise NotPermitted("the map was created BPF_F_WRONLY: no reads from user space")

    def _check_prog(self, write: bool) -> None:
        if write and self.map_flags & BPF_F_RDONLY_PROG:
            raise AccessDenied("the map was created BPF_F_RDONLY_PROG: programs cannot write it")
        if not write and self.map_flags & BPF_F_WRONLY_PROG:
            raise AccessDenied("the map was created BPF_F_WRONLY_PROG: programs cannot read it")

    # ---- the syscall side ------------------------------------------------------------------

    def lookup(self, key: Any) -> Any:
        """``BPF_MAP_LOOKUP_ELEM``: a copy of the value; :class:`NoEntry` (``ENOENT``) if missing."""
        if self._no_read:
            self._check_user(False)
        k = key if type(key) is bytes else self._key(key)
        raw = self._core.lookup_split(k) if self._split else self._core.lookup(k)
        if raw is None:
            raise NoEntry(f"key {key!r} not found")
        dec = self._vdec
        return raw if dec is None else dec(raw)

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self.lookup(key)
        except NoEntry:
            return default

    def update(self, key: Any, value: Any, flags: int = BPF_ANY) -> None:
        """``BPF_MAP_UPDATE_ELEM`` with ``BPF_ANY``, ``BPF_NOEXIST`` or ``BPF_EXIST``."""
        if self._no_write:
            self._check_user(True)
        k = key if type(key) is bytes else self._key(key)
        if self._vraw_ok:
            v: Any
            if type(value) is bytes:
                v = value
            elif type(value) is int and self._vpack is not None:
                try:
                    v = self._vpack(value)
                except struct.error:
                    v = self.value_codec.encode(value)
            else:
                v = self.value_codec.encode(value)
            self._core.update(k, v, flags)
            return
        if type(value) is bytes and self.percpu and len(value) == self.value_size and not self.kptrs:
            self._core.update(k, value, flags, 2)  # one value for every CPU
            return
        if type(value) is int and self.percpu and self._vpack is not None:
            try:
                self._core.update(k, self._vpack(value), flags, 2)  # one value for every CPU
                return
            except struct.error:
                pass  # the codec's message
        if self.percpu and not self.kptrs and self._pc_struct is None and self._one_value(value):
            self._core.update(k, self.value_codec.encode(value), flags, 2)  # one value for every CPU
            return
        self._update(k, self._value_in(value), flags, True)

    def _one_value(self, value: Any) -> bool:
        """Whether a per-CPU map's update value is one value (for every CPU), not one per CPU."""
        if type(value) is list:
            return False
        if isinstance(value, (bytes, bytearray, memoryview)):
            return len(memoryview(value).cast("B")) != self._raw_vsize
        if getattr(value, "ndim", 0) >= 1 and self.value_codec.kind == "numpy":
            dt = getattr(self.value_codec, "dtype", None)
            return getattr(value, "dtype", None) != dt or len(value) != self._nposs
        return True

    def _update(self, k: Any, v: Any, flags: int, onall: bool) -> None:
        self._core.update(k, v, flags, onall)

    def delete(self, key: Any) -> None:
        """``BPF_MAP_DELETE_ELEM``: ``ENOENT`` if missing (arrays: ``EINVAL`` always)."""
        self._check_user(True)
        self._delete(self._key(key))

    def _delete(self, k: Any) -> None:
        raise InvalidArgument("array elements cannot be deleted (array_map_delete_elem)")

    def lookup_and_delete(self, key: Any) -> Any:
        """``BPF_MAP_LOOKUP_AND_DELETE_ELEM`` (hash maps)."""
        raise PercpuError(f"{TYPE_NAMES[self.map_type]} maps have no lookup_and_delete", _errno.ENOTSUP)

    @abc.abstractmethod
    def get_next_key(self, key: Any = None) -> Any:
        """``BPF_MAP_GET_NEXT_KEY``: the key after ``key`` (None: the first); ``ENOENT`` at the end."""
        ...

    def keys(self) -> Iterator[Any]:
        key = None
        while True:
            try:
                key = self.get_next_key(key)
            except NoEntry:
                return
            yield key

    def items(self) -> Iterator[tuple[Any, Any]]:
        for k in self.keys():
            try:
                yield k, self.lookup(k)
            except NoEntry:
                continue  # deleted meanwhile

    def values(self) -> Iterator[Any]:
        for _, v in self.items():
            yield v

    def __iter__(self) -> Iterator[Any]:
        return self.keys()

    def __getitem__(self, key: Any) -> Any:
        try:
            return self.lookup(key)
        except NoEntry:
            raise KeyError(key) from None

    def __setitem__(self, key: Any, value: Any) -> None:
        self.update(key, value, BPF_ANY)

    def __delitem__(self, key: Any) -> None:
        try:
            self.delete(key)
        except NoEntry:
            raise KeyError(key) from None

    def __contains__(self, key: Any) -> bool:
        self._check_user(False)
        return self._core.lookup(self._key(key)) is not None

    def per_cpu(self, key: Any) -> dict[int, Any]:
        """A per-CPU map's value as ``{cpu: value}`` over the possible CPUs."""
        if not self.percpu:
            raise InvalidArgument("per_cpu() is for per-CPU maps")
        return dict(zip(self.possible, self.lookup(key), strict=True))

    def sum(self, key: Any) -> Any:
        """The sum of a per-CPU map's numeric value over the possible CPUs."""
        vals = self.lookup(key) if self.percpu else [self.lookup(key)]
        total = vals[0]
        for v in vals[1:]:
            total = total + v
        return total

    # ---- batches ---------------------------------------------------------------------------

    def lookup_batch(self, count: int = 64, in_batch: int | None = None) -> Batch:
        """``BPF_MAP_LOOKUP_BATCH``: up to ``count`` elements from cursor ``in_batch``.

        Returns keys, values and the next cursor (None after the last batch,
        where the kernel returns ``ENOENT``).  Hash maps return whole buckets
        (``ENOSPC`` when the first bucket alone has more than ``count``).
        """
        self._check_user(False)
        return self._batch(count, in_batch, False)

    def lookup_and_delete_batch(self, count: int = 64, in_batch: int | None = None) -> Batch:
        """``BPF_MAP_LOOKUP_AND_DELETE_BATCH`` (hash maps)."""
        raise PercpuError(f"{TYPE_NAMES[self.map_type]} maps have no lookup_and_delete_batch", _errno.ENOTSUP)

    @abc.abstractmethod
    def _batch(self, count: int, in_batch: int | None, delete: bool) -> Batch:
        ...

    def update_batch(self, keys: Iterable[Any], values: Iterable[Any], flags: int = BPF_ANY) -> int:
        """``BPF_MAP_UPDATE_BATCH``: update in order; :class:`BatchError` (``.count`` done) on an error."""
        self._check_user(True)
        if flags & ~BPF_F_LOCK:
            raise InvalidArgument("update_batch: elem_flags may only be BPF_F_LOCK")
        keys, values = list(keys), list(values)
        if len(keys) != len(values):
            raise InvalidArgument(f"update_batch: {len(keys)} keys but {len(values)} values")
        n = 0
        for k, v in zip(keys, values, strict=True):
            try:
                self._update(self._key(k), self._value_in(v), flags, True)
            except PercpuError as e:
                raise BatchError(e, n) from e
            n += 1
        return n

    def delete_batch(self, keys: Iterable[Any]) -> int:
        """``BPF_MAP_DELETE_BATCH``: delete in order; :class:`BatchError` (``.count`` done) on an error."""
        self._check_user(True)
        n = 0
        for k in keys:
            try:
                self._delete(self._key(k))
            except PercpuError as e:
                raise BatchError(e, n) from e
            n += 1
        return n

    # ---- the program side --------------------------------------------------------------------

    def value_off(self, key: Any) -> int | None:
        """The arena offset of the value (per-CPU maps: this CPU's copy), or None."""
        off = self._core.value_off(self._key(key))
        return None if off is None else int(off)

    def kptr_slot(self, key: Any, field: str | int = 0) -> int:
        """The arena offset of a kptr field of ``key``'s value, for ``bpf_kptr_xchg``."""
        if isinstance(field, str):
            dt = getattr(self.value_codec, "dtype", None)
            if dt is None or dt.names is None or field not in dt.names:
                raise InvalidArgument(f"no field {field!r} in the value dtype")
            field = int(dt.fields[field][1])
        if field not in self.kptrs:
            raise InvalidArgument(f"offset {field} is not a kptr field of this map (kptrs={self.kptrs})")
        off = self.value_off(key)
        if off is None:
            raise NoEntry(f"key {key!r} not found")
        return off + field

    def _release_kptrs(self, raw: bytes | None) -> None:
        """check_and_free_fields(): drop the references an old value's kptr fields held."""
        if not raw or not self.kptrs:
            return
        from percpu.bpf_cpumask import BpfCpumask

        for o in self.kptrs:
            ptr = int.from_bytes(raw[o:o + 8], "little")
            if ptr:
                BpfCpumask._adopt(ptr, self.domain).release()

    # ---- inspection, lifetime ----------------------------------------------------------------

    @property
    def type_name(self) -> str:
        return TYPE_NAMES[self.map_type]

    @property
    def off(self) -> int:
        return int(self._core.off)

    def __len__(self) -> int:
        return sum(1 for _ in self.keys())

    def info(self) -> dict[str, Any]:
        """bpftool's ``map show`` fields."""
        d: dict[str, Any] = {
            "id": self.id, "type": self.type_name, "name": self.name, "flags": self.map_flags,
            "bytes_key": self.key_size, "bytes_value": self.value_size, "max_entries": self.max_entries,
            "bytes_memlock": self.memlock(),
        }
        if self.key_codec.spec():
            d["key_format"] = self.key_codec.spec()
        if self.value_codec.spec():
            d["value_format"] = self.value_codec.spec()
        return d

    @abc.abstractmethod
    def memlock(self) -> int:
        ...

    def close(self) -> None:
        """Drop this handle (the map stays, for the other processes); using it raises ValueError."""
        self._core = _Closed("the map handle is closed")

    def free(self) -> None:
        """Free the map and its memory (``bpf_map_free``); every handle refuses it afterwards.

        Call it once no process uses the map any more.  Values' kptr fields
        release their references, as ``bpf_obj_free_fields()`` does.
        """
        if isinstance(self._core, _Closed):
            raise ValueError("the map handle is closed or the map was freed")
        self._free_elems()
        _core.maps_invalidate(self.domain.arena, self.off)
        with contextlib.suppress(NoEntry):
            self.domain.unregister(self._regname)
        self._core = _Closed("the map was freed")
        self._release_parts()
        if self._desc_off:
            self.domain.kfree(self._desc_off)
            self._desc_off = 0

    def _free_elems(self) -> None:  # noqa: B027 - a hook: only maps holding elements override it
        """Give back what the elements hold before the map's memory goes (kptrs, no-prealloc objects)."""

    def __enter__(self) -> BpfMap:
        return self

    def __exit__(self, *exc: object) -> None:
        if not isinstance(self._core, _Closed):
            self.free()

    def __repr__(self) -> str:
        name = f" name {self.name}" if self.name else ""
        return (f"<{type(self).__name__} id {self.id}{name} key {self.key_size}B value {self.value_size}B "
                f"max_entries {self.max_entries} flags {self.map_flags:#x}>")


# ---- arrays -------------------------------------------------------------------------------


class ArrayMap(BpfMap):
    """``BPF_MAP_TYPE_ARRAY`` (``kernel/bpf/arraymap.c``): ``key_size`` 4, every index exists.

    Values are updated in place without a lock, as in the kernel; ``delete``
    is ``EINVAL``; an index past ``max_entries`` is ``ENOENT`` for lookups and
    ``E2BIG`` for updates; ``BPF_NOEXIST`` is ``EEXIST`` always.
    """

    map_type = BPF_MAP_TYPE_ARRAY

    def _check_attr(self, ks: int, vs: int, max_entries: int, flags: int) -> None:
        # array_map_alloc_check()
        percpu = self.percpu
        access = flags & (BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG)
        if (max_entries == 0 or ks != 4 or vs == 0 or flags & ~ARRAY_CREATE_FLAG_MASK
                or access == (BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG)
                or (percpu and flags & BPF_F_NUMA_NODE)):
            raise InvalidArgument(
                f"array_map_alloc_check: max_entries > 0, key_size 4, value_size > 0 and valid flags "
                f"(got {max_entries}, {ks}, {vs}, {flags:#x})"
            )
        if self.map_type != BPF_MAP_TYPE_ARRAY and flags & (BPF_F_MMAPABLE | BPF_F_INNER_MAP):
            raise InvalidArgument("BPF_F_MMAPABLE and BPF_F_INNER_MAP are for plain arrays")
        if flags & BPF_F_PRESERVE_ELEMS:
            raise InvalidArgument("BPF_F_PRESERVE_ELEMS is for perf event arrays")
        if flags & (BPF_F_RDONLY | BPF_F_WRONLY) == BPF_F_RDONLY | BPF_F_WRONLY:
            raise InvalidArgument("BPF_F_RDONLY and BPF_F_WRONLY together")
        if vs > 0x7FFFFFFF:
            raise TooBig("value_size > INT_MAX")
        if percpu and _round8(vs) > PCPU_MIN_UNIT_SIZE:
            raise TooBig(f"per-CPU value {_round8(vs)} B > PCPU_MIN_UNIT_SIZE {PCPU_MIN_UNIT_SIZE}")
        # array_map_alloc(): the index mask rounds max_entries up to a power of two
        if _roundup_pow_of_two(max_entries) >= 1 << 32:
            raise TooBig("max_entries rounded up to a power of two overflows")

    def _alloc(self) -> None:
        dom = self.domain
        self._parts["hdr"] = hdr = _kzalloc(dom, ARRAY_HDR, "the map")
        size = self.max_entries * (8 if self.percpu else _round8(self.value_size))
        self._parts["values"] = vals = _kzalloc(dom, size, "the values")
        if self.percpu:
            self._alloc_pptrs(vals)
        _core.array_format(dom.arena, hdr, self.id, self.map_type, self.map_flags, self.key_size,
                           self.value_size, self.max_entries, vals)

    def _alloc_pptrs(self, vals: int) -> None:
        dom = self.domain
        mv = dom.mem(vals, 8 * self.max_entries)
        rs = _round8(self.value_size)
        self._parts["npptrs"] = 0
        for i in range(self.max_entries):
            p = dom.arena.pcpu_alloc(rs, 8)
            if p is None:
                raise OutOfMemory("bpf_map_alloc_percpu: the per-CPU allocator is out of memory")
            struct.pack_into("<Q", mv, 8 * i, p)
            self._parts["npptrs"] = i + 1

    def _setup_views(self) -> None:
        super()._setup_views()
        self._core = _core.ArrayCore(self.domain.arena, self._parts["hdr"])

    def _release_parts(self) -> None:
        dom = self.domain
        vals = self._parts.get("values")
        if vals and self._parts.get("npptrs"):
            mv = dom.mem(vals, 8 * self.max_entries)
            for i in range(self._parts["npptrs"]):
                p = struct.unpack_from("<Q", mv, 8 * i)[0]
                if p:
                    dom.arena.pcpu_free(p)
            _pcpu_balance(dom)
        for k in ("values", "hdr"):
            if self._parts.get(k):
                dom.kfree(self._parts[k])
                self._parts[k] = 0

    def _key(self, key: Any) -> Any:
        if isinstance(key, int) and not isinstance(key, bool):
            return key
        return self.key_codec.encode(key)

    def _index(self, key: Any) -> int:
        """The u32 index of a key; an int outside u32 is past the end (1 << 40), as the C core reads it."""
        k = self._key(key)
        i = k if isinstance(k, int) else int.from_bytes(bytes(k), "little")
        return i if 0 <= i <= 0xFFFFFFFF else 1 << 40

    def _update(self, k: Any, v: Any, flags: int, onall: bool) -> None:
        if self.kptrs:
            self._update_around_kptrs(k, v, flags)
            return
        self._core.update(k, v, flags, onall)

    def _update_around_kptrs(self, k: Any, v: Any, flags: int) -> None:
        # copy_map_value(): the kptr fields keep their pointers
        i = self._index(k)
        if flags & ~BPF_F_LOCK > BPF_EXIST:
            raise InvalidArgument("invalid flags")
        if i >= self.max_entries:
            raise TooBig("index past max_entries")
        if flags & BPF_NOEXIST:
            raise Exists("every array element exists (BPF_NOEXIST)")
        if flags & BPF_F_LOCK:
            raise InvalidArgument("BPF_F_LOCK needs a bpf_spin_lock in the value")
        self._core.value_off(0)  # the liveness check
        base = self._parts["values"] + i * _round8(self.value_size)
        mv = self.domain.mem(base, self.value_size)
        raw = bytes(v)
        start = 0
        for o in (*self.kptrs, self.value_size):  # copy_map_value(): around the kptr fields
            if o > start:
                mv[start:o] = raw[start:o]
            start = o + 8
        self._free_fields(base)

    def _free_fields(self, base: int) -> None:
        """bpf_obj_free_fields(): each kptr field of the value at ``base`` gives up its reference."""
        from percpu.bpf_cpumask import BpfCpumask

        for o in self.kptrs:
            ptr = int(self.domain.arena.xchg(base + o, 0))
            if ptr:
                BpfCpumask._adopt(ptr, self.domain).release()

    def get_next_key(self, key: Any = None) -> Any:
        # array_map_get_next_key()
        self._check_user(False)
        self._core.value_off(0)  # the liveness check
        if key is None:
            return self._key_out(0)
        i = self._index(key)
        if i >= self.max_entries:
            return self._key_out(0)
        if i == self.max_entries - 1:
            raise NoEntry("the last index")
        return self._key_out(i + 1)

    def _key_out(self, i: int) -> Any:
        if self.key_codec.kind == "bytes":
            return i
        return self.key_codec.decode(i.to_bytes(4, "little"))

    def keys(self) -> Iterator[Any]:
        for i in range(self.max_entries):
            yield self._key_out(i)

    def __len__(self) -> int:
        self._core.value_off(0)  # the liveness check
        return self.max_entries

    def __contains__(self, key: Any) -> bool:
        return 0 <= self._index(key) < self.max_entries

    def _batch(self, count: int, in_batch: int | None, delete: bool) -> Batch:
        # generic_map_lookup_batch(): the cursor is the next index; count 0 returns nothing
        _check_int("count", count)
        start = 0 if in_batch is None else _check_int("in_batch", in_batch)
        if count == 0:
            return Batch([], [], start)
        end = min(self.max_entries, start + count)
        keys = [self._key_out(i) for i in range(start, end)]
        vals = [self._value_out(self._core.lookup(i)) for i in range(start, end)]
        return Batch(keys, vals, end if end < self.max_entries else None)

    def memlock(self) -> int:
        per = 8 + self._nposs * _round8(self.value_size) if self.percpu else _round8(self.value_size)
        return ARRAY_HDR + self.max_entries * per

    def _free_elems(self) -> None:
        if self.kptrs:
            for i in range(self.max_entries):
                self._free_fields(self._parts["values"] + i * _round8(self.value_size))


class PercpuArrayMap(ArrayMap):
    """``BPF_MAP_TYPE_PERCPU_ARRAY``: one ``alloc_percpu()`` value per index."""

    map_type = BPF_MAP_TYPE_PERCPU_ARRAY
    percpu = True


# ---- hash maps -------------------------------------------------------------------------------


class HashMap(BpfMap):
    """``BPF_MAP_TYPE_HASH`` (``kernel/bpf/hashtab.c``).

    Preallocated (the default): ``max_entries`` elements, plus one per
    possible CPU for replacing an element of a full map, populated into a
    :class:`~percpu.freelist.PcpuFreelist` at create and recycled through it
    (:attr:`freelist`).  With ``BPF_F_NO_PREALLOC``: elements come from a
    :class:`~percpu.memalloc.BpfMemAlloc` (:attr:`ma`) and are freed after an
    RCU grace period, so a program's view of a deleted element stays
    readable inside its RCU section.  A new key in a full map is ``E2BIG``.
    """

    map_type = BPF_MAP_TYPE_HASH

    def _check_attr(self, ks: int, vs: int, max_entries: int, flags: int) -> None:
        # htab_map_alloc_check(); BPF_F_ZERO_SEED needs no CAP_SYS_ADMIN here
        access = flags & (BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG)
        if flags & ~HTAB_CREATE_FLAG_MASK or access == (BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG):
            raise InvalidArgument(f"htab_map_alloc_check: invalid map_flags {flags:#x}")
        if flags & (BPF_F_RDONLY | BPF_F_WRONLY) == BPF_F_RDONLY | BPF_F_WRONLY:
            raise InvalidArgument("BPF_F_RDONLY and BPF_F_WRONLY together")
        if flags & BPF_F_NO_COMMON_LRU:  # not an LRU map: !lru && percpu_lru
            raise InvalidArgument("BPF_F_NO_COMMON_LRU is for LRU maps")
        if flags & BPF_F_NUMA_NODE and self.percpu:
            raise InvalidArgument("BPF_F_NUMA_NODE with a per-CPU map")
        if max_entries == 0 or ks == 0 or vs == 0:
            raise InvalidArgument(f"max_entries, key_size and value_size must be > 0 (got {max_entries}, {ks}, {vs})")
        if ks + vs >= KMALLOC_MAX_SIZE - HTAB_ELEM_KERNEL:
            raise TooBig(f"key_size + value_size {ks + vs} >= KMALLOC_MAX_SIZE - sizeof(struct htab_elem)")
        if self.percpu and _round8(vs) > PCPU_MIN_UNIT_SIZE:
            raise TooBig(f"per-CPU value {_round8(vs)} B > PCPU_MIN_UNIT_SIZE {PCPU_MIN_UNIT_SIZE}")
        if max_entries > 1 << 31:  # htab_map_alloc(): n_buckets would overflow
            raise TooBig("max_entries > 2**31")

    @property
    def prealloc(self) -> bool:
        return not self.map_flags & BPF_F_NO_PREALLOC

    @property
    def elem_size(self) -> int:
        return ELEM_HDR + _round8(self.key_size) + (8 if self.percpu else _round8(self.value_size))

    def _alloc(self) -> None:
        from percpu.freelist import PcpuFreelist
        from percpu.memalloc import BpfMemAlloc

        dom = self.domain
        nb = _roundup_pow_of_two(self.max_entries)
        es = self.elem_size
        self._parts["hdr"] = hdr = _kzalloc(dom, HTAB_HDR, "the map")
        self._parts["buckets"] = buckets = _kzalloc(dom, nb * BUCKET_SIZE, f"{nb} buckets")
        fl = flx = elems = nelems = ma = pma = 0
        if self.prealloc:
            nelems = self.max_entries + (0 if self.percpu else len(dom.possible))
            elems = _kzalloc(dom, nelems * es, f"{nelems} elements of {es} bytes")
            self._parts["elems"] = elems
            self._parts["nr_elems"] = nelems
            if self.percpu:
                self._alloc_elem_pptrs(elems, nelems, es)
            f1 = PcpuFreelist.create(dom)
            self._parts["fl"] = fl = f1.offset
            f2 = PcpuFreelist.create(dom)
            self._parts["fl_extra"] = flx = f2.offset
            # prealloc_init(): populate; alloc_extra_elems(): one per possible CPU moves aside
            f1.populate(elems, es, nelems)
            f2.set_area(elems, es, nelems, 0)
            if not self.percpu:
                extra = [f1.pop() for _ in range(len(dom.possible))]
                f2.push_bulk([e for e in extra if e is not None])
        else:
            m1 = BpfMemAlloc(es, domain=dom)
            self._parts["ma"] = ma = m1.off
            if self.percpu:
                m2 = BpfMemAlloc(_round8(self.value_size), True, domain=dom)
                self._parts["pcpu_ma"] = pma = m2.off
        rnd = 0 if self.map_flags & BPF_F_ZERO_SEED else int.from_bytes(os.urandom(4), "little")
        _core.htab_format(dom.arena, hdr, self.id, self.map_type, self.map_flags, self.key_size, self.value_size,
                          self.max_entries, nb, es, rnd, buckets, fl, flx, elems, nelems, ma, pma)

    def _alloc_elem_pptrs(self, elems: int, nelems: int, es: int) -> None:
        dom = self.domain
        mv = dom.mem(elems, nelems * es)
        at = ELEM_HDR + _round8(self.key_size)
        rs = _round8(self.value_size)
        self._parts["npptrs"] = 0
        for i in range(nelems):
            p = dom.arena.pcpu_alloc(rs, 8)
            if p is None:
                raise OutOfMemory("bpf_map_alloc_percpu: the per-CPU allocator is out of memory")
            struct.pack_into("<Q", mv, i * es + at, p)
            self._parts["npptrs"] = i + 1

    def _setup_views(self) -> None:
        super()._setup_views()
        from percpu.freelist import PcpuFreelist

        p = self._parts
        dom = self.domain
        self.freelist = self.freelist_extra = None
        self.ma = self.pcpu_ma = None
        if p.get("fl"):
            self.freelist = PcpuFreelist(dom, p["fl"])
            self.freelist_extra = PcpuFreelist(dom, p["fl_extra"])
        if p.get("ma"):
            self.ma = _ma_handle(dom, p["ma"])
            if p.get("pcpu_ma"):
                self.pcpu_ma = _ma_handle(dom, p["pcpu_ma"])
        self._core = _core.HtabCore(dom.arena, p["hdr"], self.ma, self.pcpu_ma, self.freelist, self.freelist_extra)

    def _release_parts(self) -> None:
        dom = self.domain
        p = self._parts
        for k in ("fl", "fl_extra"):
            if p.get(k):
                from percpu.freelist import PcpuFreelist

                PcpuFreelist(dom, p[k]).destroy()
                p[k] = 0
        for k in ("pcpu_ma", "ma"):
            if p.get(k):
                _ma_handle(dom, p[k]).destroy()
                p[k] = 0
        if p.get("npptrs") and p.get("elems"):
            es = self.elem_size
            mv = dom.mem(p["elems"], p["nr_elems"] * es)
            at = ELEM_HDR + _round8(self.key_size)
            for i in range(p["npptrs"]):
                q = struct.unpack_from("<Q", mv, i * es + at)[0]
                if q:
                    dom.arena.pcpu_free(q)
            _pcpu_balance(dom)
            p["npptrs"] = 0
        for k in ("elems", "buckets", "hdr"):
            if p.get(k):
                dom.kfree(p[k])
                p[k] = 0

    def _update(self, k: Any, v: Any, flags: int, onall: bool) -> None:
        if self.kptrs:
            self._release_kptrs(self._core.update(k, v, flags, onall, True))
            return
        self._core.update(k, v, flags, onall)

    def _delete(self, k: Any) -> None:
        if self.kptrs:
            self._release_kptrs(self._core.delete(k, True))
        else:
            self._core.delete(k)

    def lookup_and_delete(self, key: Any) -> Any:
        self._check_user(True)
        raw = self._core.delete(self._key(key), True)
        self._release_kptrs(raw)
        return self._value_out(raw)

    def get_next_key(self, key: Any = None) -> Any:
        self._check_user(False)
        nk = self._core.get_next_key(None if key is None else self._key(key))
        if nk is None:
            raise NoEntry("no next key")
        return self.key_codec.decode(nk)

    def lookup_and_delete_batch(self, count: int = 64, in_batch: int | None = None) -> Batch:
        self._check_user(True)
        return self._batch(count, in_batch, True)

    def _batch(self, count: int, in_batch: int | None, delete: bool) -> Batch:
        _check_int("count", count)
        if count == 0:  # __htab_map_lookup_and_delete_batch(): if (!max_count) return 0
            return Batch([], [], in_batch or 0)
        kb, vb, n, nxt = self._core.batch(in_batch or 0, count, delete, True)
        ks, vs = self.key_size, self._raw_vsize
        keys = [self.key_codec.decode(kb[i * ks:(i + 1) * ks]) for i in range(n)]
        raws = [vb[i * vs:(i + 1) * vs] for i in range(n)]
        if delete:
            for r in raws:
                self._release_kptrs(r)
        vals = [self._value_out(r) for r in raws]
        return Batch(keys, vals, None if nxt >= _roundup_pow_of_two(self.max_entries) else nxt)

    def check(self) -> dict[str, int]:
        """Verify every bucket under its lock, recount, and take back elements a killed
        process lost (``leaked``).  :class:`~percpu.errors.Corrupted` on a broken chain."""
        n, leaked = self._core.check()
        return {"elements": int(n), "leaked": int(leaked)}

    def __len__(self) -> int:
        if self.prealloc:
            assert self.freelist is not None
            return self.max_entries - self.freelist.count()
        return int(self._core.count)

    def memlock(self) -> int:
        nb = _roundup_pow_of_two(self.max_entries)
        size = HTAB_HDR + nb * BUCKET_SIZE
        if self.prealloc:
            n = self.max_entries + (0 if self.percpu else self._nposs)
            size += n * self.elem_size + (n * self._nposs * self._rsize if self.percpu else 0)
        return size

    def _free_elems(self) -> None:
        if self.kptrs:
            cursor: int | None = 0
            while cursor is not None:
                cursor = self._batch(1 << 16, cursor, True).next
        if not self.prealloc:
            self._core.free_all()


class PercpuHashMap(HashMap):
    """``BPF_MAP_TYPE_PERCPU_HASH``: a hash map whose value has one copy per possible CPU.

    Updating an existing key writes the copies in place (no new element);
    a program's insert writes its CPU's copy and zeroes the others.
    """

    map_type = BPF_MAP_TYPE_PERCPU_HASH
    percpu = True


_TYPES: dict[int, type[BpfMap]] = {
    BPF_MAP_TYPE_HASH: HashMap, BPF_MAP_TYPE_ARRAY: ArrayMap,
    BPF_MAP_TYPE_PERCPU_HASH: PercpuHashMap, BPF_MAP_TYPE_PERCPU_ARRAY: PercpuArrayMap,
}


def _pcpu_balance(dom: Domain) -> None:
    """Give emptied per-CPU chunks back now (pcpu_balance_workfn), not when the work runs."""
    from percpu.pcpu import allocator

    allocator.balance(dom)


def _ma_handle(dom: Domain, off: int) -> Any:
    from percpu.memalloc import BpfMemAlloc

    m = BpfMemAlloc.__new__(BpfMemAlloc)
    m._setup(dom, off, None, register=False)
    return m


# ---- finding maps -------------------------------------------------------------------------


def maps(domain: Domain | None = None) -> list[BpfMap]:
    """Every map of the domain (``bpftool map show``), by id."""
    dom = domain or current_domain()
    out = []
    for e in dom.objects():
        if e.kind == KIND:
            with contextlib.suppress(Exception):
                out.append(BpfMap._from_desc(dom, e.name, e.offset))
    return sorted(out, key=lambda m: m.id)


def attach(name: str | int, domain: Domain | None = None) -> BpfMap:
    """The map named ``name`` (or with id ``name``), from any process of the domain."""
    dom = domain or current_domain()
    if isinstance(name, int):
        for m in maps(dom):
            if m.id == name:
                return m
        raise NoEntry(f"no map with id {name}")
    for regname in (name, f"map.{name}"):
        with contextlib.suppress(NoEntry):
            e = dom.lookup(regname)
            if e.kind != KIND:
                raise InvalidArgument(f"{name!r} is a {e.kind}, not a BPF map")
            return BpfMap._from_desc(dom, e.name, e.offset)
    raise NoEntry(f"no map named {name!r}")


# ---- the program side (helpers a program calls) ---------------------------------------------


def bpf_map_lookup_elem(map: BpfMap, key: Any) -> memoryview | None:
    """``bpf_map_lookup_elem()``: a writable view of the value (per-CPU maps: this CPU's copy), or None.

    The view aliases the element: writes land in the map at once, unlocked,
    as a program's do.  For a no-prealloc hash map the memory stays valid
    until an RCU grace period after the element is deleted (hold
    ``percpu.rcu.read_lock()`` as long as the view is used); a preallocated
    element may be reused for another key once deleted, as in the kernel.
    """
    if map.map_flags & BPF_F_WRONLY_PROG:
        map._check_prog(False)
    off = map._core.value_off(key if type(key) is bytes else map._key(key))
    if off is None:
        return None
    return map.domain.mem(off, map.value_size)


def bpf_map_update_elem(map: BpfMap, key: Any, value: Any, flags: int = BPF_ANY) -> int:
    """``bpf_map_update_elem()`` from a program: per-CPU maps write this CPU's copy. Returns 0."""
    map._check_prog(True)
    v = map.value_codec.encode(value)
    if map.kptrs:
        raw = bytearray(v)
        for o in map.kptrs:
            raw[o:o + 8] = bytes(8)
        v = bytes(raw)
    map._update(map._key(key), v, flags, False)
    return 0


def bpf_map_delete_elem(map: BpfMap, key: Any) -> int:
    """``bpf_map_delete_elem()`` from a program. Returns 0."""
    map._check_prog(True)
    map._delete(map._key(key))
    return 0
