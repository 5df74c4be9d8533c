"""A pure-Python reference model of the BPF maps (``kernel/bpf/hashtab.c``, ``arraymap.c``).

Models one map of :mod:`percpu.maps` single-threaded, with the kernel's
errno for every operation:

* hash maps (``HASH``, ``PERCPU_HASH``, prealloc or not): ``max_entries``
  elements at most, a new key in a full map is ``E2BIG``, ``check_flags()``
  (``BPF_NOEXIST`` on an existing key ``EEXIST``, ``BPF_EXIST`` on a missing
  one ``ENOENT``), flags above ``BPF_EXIST`` or with ``BPF_F_LOCK`` ``EINVAL``
  (no ``bpf_spin_lock`` in our values), delete of a missing key ``ENOENT``;
* arrays (``ARRAY``, ``PERCPU_ARRAY``): every index below ``max_entries``
  exists (zeroed at create), ``E2BIG`` past the end for updates, ``ENOENT``
  for lookups, ``EEXIST`` for ``BPF_NOEXIST``, ``EINVAL`` for deletes.

With ``BPF_F_ZERO_SEED`` the hash of a key is known (``jhash`` with seed 0,
ported here from ``include/linux/jhash.h``), so the model also keeps each
bucket's chain in the kernel's order -- a new element is linked at the head,
a replacement of a non-per-CPU element is a new element (at the head), a
per-CPU replacement is written in place -- and predicts ``get_next_key()``
and the whole-bucket batches exactly.  Without it, ``buckets`` is None and
only the contents are modelled.

Values are ints (a ``"<Q"`` value); per-CPU values are tuples with one int
per possible CPU.  Used by tests/property/test_maps_model.py (and the jhash
port by tests/unit/test_maps.py).
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterable, Sequence

BPF_ANY, BPF_NOEXIST, BPF_EXIST, BPF_F_LOCK = 0, 1, 2, 4
MASK32 = 0xFFFFFFFF
JHASH_INITVAL = 0xDEADBEEF


# ---- jhash (include/linux/jhash.h) ------------------------------------------------------------


def _rol32(w: int, s: int) -> int:
    return ((w << s) | (w >> (32 - s))) & MASK32


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    a = (a - c) & MASK32; a ^= _rol32(c, 4); c = (c + b) & MASK32  # noqa: E702
    b = (b - a) & MASK32; b ^= _rol32(a, 6); a = (a + c) & MASK32  # noqa: E702
    c = (c - b) & MASK32; c ^= _rol32(b, 8); b = (b + a) & MASK32  # noqa: E702
    a = (a - c) & MASK32; a ^= _rol32(c, 16); c = (c + b) & MASK32  # noqa: E702
    b = (b - a) & MASK32; b ^= _rol32(a, 19); a = (a + c) & MASK32  # noqa: E702
    c = (c - b) & MASK32; c ^= _rol32(b, 4); b = (b + a) & MASK32  # noqa: E702
    return a, b, c


def _final(a: int, b: int, c: int) -> int:
    c ^= b; c = (c - _rol32(b, 14)) & MASK32  # noqa: E702
    a ^= c; a = (a - _rol32(c, 11)) & MASK32  # noqa: E702
    b ^= a; b = (b - _rol32(a, 25)) & MASK32  # noqa: E702
    c ^= b; c = (c - _rol32(b, 16)) & MASK32  # noqa: E702
    a ^= c; a = (a - _rol32(c, 4)) & MASK32  # noqa: E702
    b ^= a; b = (b - _rol32(a, 14)) & MASK32  # noqa: E702
    c ^= b; c = (c - _rol32(b, 24)) & MASK32  # noqa: E702
    return c


def jhash(key: bytes, initval: int = 0) -> int:
    """``jhash(key, length, initval)``: the byte-wise Bob Jenkins hash (lookup3)."""
    k = bytes(key)
    length = len(k)
    a = b = c = (JHASH_INITVAL + length + initval) & MASK32
    while length > 12:
        a = (a + int.from_bytes(k[0:4], "little")) & MASK32
        b = (b + int.from_bytes(k[4:8], "little")) & MASK32
        c = (c + int.from_bytes(k[8:12], "little")) & MASK32
        a, b, c = _mix(a, b, c)
        length -= 12
        k = k[12:]
    if length == 0:
        return c
    t = k + bytes(12 - length)  # the switch's fall-through adds the tail bytes as little-endian words
    a = (a + int.from_bytes(t[0:4], "little")) & MASK32
    b = (b + int.from_bytes(t[4:8], "little")) & MASK32
    c = (c + int.from_bytes(t[8:12], "little")) & MASK32
    return _final(a, b, c)


def jhash2(words: Sequence[int], initval: int = 0) -> int:
    """``jhash2(k, length, initval)``: the same over ``length`` u32 words."""
    length = len(words)
    a = b = c = (JHASH_INITVAL + (length << 2) + initval) & MASK32
    i = 0
    while length > 3:
        a = (a + words[i]) & MASK32
        b = (b + words[i + 1]) & MASK32
        c = (c + words[i + 2]) & MASK32
        a, b, c = _mix(a, b, c)
        length -= 3
        i += 3
    if length == 0:
        return c
    if length == 3:
        c = (c + words[i + 2]) & MASK32
    if length >= 2:
        b = (b + words[i + 1]) & MASK32
    a = (a + words[i]) & MASK32
    return _final(a, b, c)


def htab_map_hash(key: bytes, hashrnd: int = 0) -> int:
    """``htab_map_hash()``: jhash2 when the key is a multiple of 4 bytes, else jhash."""
    if len(key) % 4 == 0:
        return jhash2(struct.unpack(f"<{len(key) // 4}I", key), hashrnd)
    return jhash(key, hashrnd)


def roundup_pow_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length() if n > 1 else 1


# ---- the map -------------------------------------------------------------------------------


class MapModel:
    """One map; keys are ints (encoded as ``"<I"`` to hash them), values ints or per-CPU tuples."""

    def __init__(self, kind: str, *, percpu: bool, max_entries: int, nr_possible: int,
                 exact_order: bool = False, key_size: int = 4) -> None:
        if kind not in ("hash", "array"):
            raise ValueError(kind)
        self.kind, self.percpu, self.max_entries = kind, percpu, max_entries
        self.nposs = nr_possible
        self.key_size = key_size
        self.d: dict[int, int | tuple[int, ...]] = {}
        self.n_buckets = roundup_pow_of_two(max_entries)
        self.buckets: list[list[int]] | None = None
        if kind == "hash" and exact_order:
            self.buckets = [[] for _ in range(self.n_buckets)]
        if kind == "array":
            zero: int | tuple[int, ...] = tuple([0] * nr_possible) if percpu else 0
            self.d = {i: zero for i in range(max_entries)}

    # ---- helpers ----

    def bucket(self, key: int) -> int:
        return htab_map_hash(key.to_bytes(self.key_size, "little")) & (self.n_buckets - 1)

    def _full_value(self, v: int | Sequence[int]) -> int | tuple[int, ...]:
        if not self.percpu:
            assert isinstance(v, int)
            return v
        if isinstance(v, int):
            return tuple([v] * self.nposs)
        assert len(v) == self.nposs
        return tuple(v)

    def __len__(self) -> int:
        return len(self.d)

    def contents(self) -> dict[int, int | tuple[int, ...]]:
        return dict(self.d)

    # ---- the syscall side ----

    def update_errno(self, key: int, flags: int) -> int:
        """The errno of an update (0: it succeeds), in the kernel's order."""
        if self.kind == "array":
            if (flags & ~BPF_F_LOCK) > BPF_EXIST:
                return errno.EINVAL
            if key >= self.max_entries:
                return errno.E2BIG
            if flags & BPF_NOEXIST:
                return errno.EEXIST
            if flags & BPF_F_LOCK:
                return errno.EINVAL
            return 0
        if (flags & ~BPF_F_LOCK) > BPF_EXIST or flags & BPF_F_LOCK:
            return errno.EINVAL
        exists = key in self.d
        if exists and flags == BPF_NOEXIST:
            return errno.EEXIST
        if not exists and flags == BPF_EXIST:
            return errno.ENOENT
        if not exists and len(self.d) >= self.max_entries:
            return errno.E2BIG
        return 0

    def update(self, key: int, value: int | Sequence[int], flags: int = BPF_ANY, *,
               prog_cpu_pos: int | None = None) -> int:
        """Update (syscall side, or a program on the CPU at position ``prog_cpu_pos``); the errno."""
        err = self.update_errno(key, flags)
        if err:
            return err
        old = self.d.get(key)
        if prog_cpu_pos is not None and self.percpu:
            assert isinstance(value, int)
            if old is None:  # pcpu_init_value(): the other CPUs' copies are zeroed
                base = [0] * self.nposs
            else:
                assert isinstance(old, tuple)
                base = list(old)
            base[prog_cpu_pos] = value
            new: int | tuple[int, ...] = tuple(base)
        else:
            new = self._full_value(value)
        self.d[key] = new
        if self.buckets is not None:
            chain = self.buckets[self.bucket(key)]
            if old is None:
                chain.insert(0, key)
            elif not self.percpu:  # a new element hides the old one at the head
                chain.remove(key)
                chain.insert(0, key)
            # per-CPU replacement: in place
        return 0

    def delete(self, key: int) -> int:
        if self.kind == "array":
            return errno.EINVAL
        if key not in self.d:
            return errno.ENOENT
        del self.d[key]
        if self.buckets is not None:
            self.buckets[self.bucket(key)].remove(key)
        return 0

    def lookup(self, key: int) -> tuple[int, int | tuple[int, ...] | None]:
        if key not in self.d:
            return errno.ENOENT, None
        return 0, self.d[key]

    def order(self) -> list[int] | None:
        """The keys in get_next_key() order (None when the order is not modelled)."""
        if self.kind == "array":
            return list(range(self.max_entries))
        if self.buckets is None:
            return None
        return [k for chain in self.buckets for k in chain]

    def get_next_key(self, key: int | None) -> tuple[int | None, int | None]:
        """(errno, next key).  A hash map without exact order knows only part of the answer:
        (ENOENT, None) when it is empty, (0, None) for the first key (None or a missing key),
        (None, None) after a present key (another key, or ENOENT after the last)."""
        if self.kind == "array":
            if key is None or key >= self.max_entries:
                return 0, 0
            if key == self.max_entries - 1:
                return errno.ENOENT, None
            return 0, key + 1
        if self.buckets is None:
            if not self.d:
                return errno.ENOENT, None
            return (None, None) if key in self.d else (0, None)
        start = 0
        if key is not None and key in self.d:
            b = self.bucket(key)
            chain = self.buckets[b]
            i = chain.index(key)
            if i + 1 < len(chain):
                return 0, chain[i + 1]
            start = b + 1
        for chain in self.buckets[start:]:
            if chain:
                return 0, chain[0]
        return errno.ENOENT, None

    def batch(self, count: int, cursor: int | None, delete: bool) -> tuple[int, list[int], int | None]:
        """(errno, keys, next cursor) of lookup_batch / lookup_and_delete_batch."""
        start = cursor or 0
        if self.kind == "array":
            assert not delete
            end = min(self.max_entries, start + count)
            keys = list(range(start, end)) if start < end else []
            return 0, keys, end if end < self.max_entries else None
        assert self.buckets is not None, "batches need the exact order"
        keys: list[int] = []
        i = start
        while i < self.n_buckets:
            chain = self.buckets[i]
            if chain:
                if len(chain) > count - len(keys):
                    if not keys:
                        return errno.ENOSPC, [], cursor
                    break
                keys.extend(chain)
                if delete:
                    for k in chain:
                        del self.d[k]
                    chain.clear()
            i += 1
        return 0, keys, None if i >= self.n_buckets else i

    def update_batch(self, items: Iterable[tuple[int, int | Sequence[int]]], flags: int) -> tuple[int, int]:
        """(errno of the first failing update or 0, updates done before it)."""
        n = 0
        for k, v in items:
            err = self.update(k, v, flags)
            if err:
                return err, n
            n += 1
        return 0, n

    def delete_batch(self, keys: Iterable[int]) -> tuple[int, int]:
        n = 0
        for k in keys:
            err = self.delete(k)
            if err:
                return err, n
            n += 1
        return 0, n
