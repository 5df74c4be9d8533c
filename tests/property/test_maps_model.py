"""The BPF maps against the pure-Python model (tests/models/maps_model.py).

One hypothesis state machine per (map type, flags): hash and per-CPU hash,
preallocated or ``BPF_F_NO_PREALLOC``, with ``BPF_F_ZERO_SEED`` (so that the
model knows every bucket and predicts ``get_next_key()`` and the batches
exactly) or with a random seed (contents only), and the two arrays.  Each run
makes its own small domain (1, 3 or 4 CPUs) and a map of 1, 3 or 8 entries
over a key space a bit larger than the map, so that full maps, collisions and
``ENOSPC`` batches happen.  Rules: syscall and program updates with every
flag value (the model gives the errno), deletes, lookups (and the program's
view on a random CPU, written through too), lookup_and_delete,
get_next_key, lookup_batch / lookup_and_delete_batch walks with a random
count, update_batch / delete_batch.  After every step: the contents and the
length equal the model's, ``check()`` finds every element and no leak, the
freelists hold ``max_entries - len`` elements (and the extra elements stay one
per possible CPU), the allocator has exactly ``len`` objects out (no-prealloc).
"""

from __future__ import annotations

import errno
import struct
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from models.maps_model import MapModel

import percpu
from percpu import rcu
from percpu.errors import PercpuError
from percpu.maps import (
    BPF_F_NO_PREALLOC,
    BPF_F_ZERO_SEED,
    ArrayMap,
    BatchError,
    HashMap,
    PercpuArrayMap,
    PercpuHashMap,
    bpf_map_delete_elem,
    bpf_map_lookup_elem,
    bpf_map_update_elem,
)
from percpu.runtime import work

UPDATE_FLAGS = st.sampled_from([0, 0, 0, 1, 1, 2, 2, 3, 4, 5, 6])
SMALL = st.integers(0, 10_000)
U64 = 2**64 - 1


def _errno_of(fn: Any) -> tuple[int, Any]:
    try:
        return 0, fn()
    except BatchError:
        raise
    except PercpuError as e:
        return int(e.errno or 0), None


class MapMachine(RuleBasedStateMachine):
    """A map and its model; subclasses fix the map type and the flags."""

    CLS: type = HashMap
    FLAGS = 0

    def teardown(self) -> None:
        dom = getattr(self, "dom", None)
        if dom is None:
            return
        try:
            if getattr(self, "m", None) is not None:
                self.m.free()
        finally:
            rcu.barrier(rcu.TASKS_TRACE)
            rcu.barrier(rcu.RCU)
            work.flush(10)
            dom.__exit__(None, None, None)
            dom.close()
            dom.unlink()

    # ---- set-up ---------------------------------------------------------------------

    @initialize(nr_cpus=st.sampled_from([1, 3, 4]), max_entries=st.sampled_from([1, 3, 8]))
    def setup(self, nr_cpus: int, max_entries: int) -> None:
        self.dom = percpu.Domain.create(size=2 << 20, nr_cpus=nr_cpus)
        self.dom.__enter__()
        self.cpus = tuple(self.dom.possible)
        self.m = self.CLS(key="<I", value="<Q", max_entries=max_entries, map_flags=self.FLAGS)
        self.is_hash = issubclass(self.CLS, HashMap)
        self.exact = self.is_hash and bool(self.FLAGS & BPF_F_ZERO_SEED)
        self.model = MapModel("hash" if self.is_hash else "array", percpu=self.m.percpu,
                              max_entries=max_entries, nr_possible=len(self.cpus), exact_order=self.exact)
        self.nkeys = max_entries + 3

    # ---- helpers ----------------------------------------------------------------------

    def ready(self) -> bool:
        return hasattr(self, "model")

    def key(self, data: st.DataObject) -> int:
        extra = [] if self.is_hash else [2**32 - 1]
        return data.draw(st.one_of(st.integers(0, self.nkeys - 1), st.sampled_from([*extra, 0])), label="key")

    def value(self, data: st.DataObject) -> Any:
        if self.m.percpu and data.draw(st.booleans(), label="list"):
            return data.draw(st.lists(SMALL, min_size=len(self.cpus), max_size=len(self.cpus)), label="values")
        return data.draw(st.one_of(SMALL, st.just(U64)), label="value")

    def got(self, v: Any) -> Any:
        return tuple(v) if isinstance(v, list) else v

    # ---- rules ------------------------------------------------------------------------

    @precondition(ready)
    @rule(data=st.data(), flags=UPDATE_FLAGS)
    def update(self, data: st.DataObject, flags: int) -> None:
        k, v = self.key(data), self.value(data)
        want = self.model.update_errno(k, flags)
        err, _ = _errno_of(lambda: self.m.update(k, v, flags))
        assert err == want, f"update({k}, flags={flags}): errno {err}, model {want}"
        if not err:
            self.model.update(k, v, flags)

    @precondition(ready)
    @rule(data=st.data(), flags=UPDATE_FLAGS, v=SMALL)
    def prog_update(self, data: st.DataObject, flags: int, v: int) -> None:
        k = self.key(data)
        pos = data.draw(st.integers(0, len(self.cpus) - 1), label="cpu")
        want = self.model.update_errno(k, flags)
        with percpu.on_cpu(self.cpus[pos]):
            err, _ = _errno_of(lambda: bpf_map_update_elem(self.m, k, v, flags))
        assert err == want, f"bpf_map_update_elem({k}, flags={flags}) on CPU {self.cpus[pos]}: {err}, model {want}"
        if not err:
            self.model.update(k, v, flags, prog_cpu_pos=pos)

    @precondition(ready)
    @rule(data=st.data(), prog=st.booleans())
    def delete(self, data: st.DataObject, prog: bool) -> None:
        k = self.key(data)
        if prog:
            err, _ = _errno_of(lambda: bpf_map_delete_elem(self.m, k))
        else:
            err, _ = _errno_of(lambda: self.m.delete(k))
        want = self.model.delete(k)
        assert err == want, f"delete({k}): errno {err}, model {want}"

    @precondition(ready)
    @rule(data=st.data())
    def lookup(self, data: st.DataObject) -> None:
        k = self.key(data)
        want_err, want = self.model.lookup(k)
        err, got = _errno_of(lambda: self.m.lookup(k))
        assert (err, self.got(got)) == (want_err, want), f"lookup({k})"
        pos = data.draw(st.integers(0, len(self.cpus) - 1), label="cpu")
        with percpu.on_cpu(self.cpus[pos]):
            view = bpf_map_lookup_elem(self.m, k)
            if want is None:
                assert view is None
                return
            assert view is not None and len(view) == 8
            mine = want[pos] if isinstance(want, tuple) else want
            assert struct.unpack("<Q", view)[0] == mine
            if data.draw(st.booleans(), label="write"):
                nv = data.draw(SMALL, label="new")
                view[:] = struct.pack("<Q", nv)  # a program's store: this CPU's copy, no lock
                if isinstance(want, tuple):
                    self.model.d[k] = tuple(nv if i == pos else x for i, x in enumerate(want))
                else:
                    self.model.d[k] = nv

    @precondition(lambda self: self.ready() and self.is_hash)
    @rule(data=st.data())
    def lookup_and_delete(self, data: st.DataObject) -> None:
        k = self.key(data)
        want_err, want = self.model.lookup(k)
        err, got = _errno_of(lambda: self.m.lookup_and_delete(k))
        assert (err, self.got(got)) == (want_err, want), f"lookup_and_delete({k})"
        if not err:
            self.model.delete(k)

    @precondition(ready)
    @rule(data=st.data(), first=st.booleans())
    def get_next_key(self, data: st.DataObject, first: bool) -> None:
        k = None if first else self.key(data)
        want_err, want = self.model.get_next_key(k)
        err, got = _errno_of(lambda: self.m.get_next_key(k))
        if want_err is None:  # after a present key, order not modelled: another key, or the end
            assert err == errno.ENOENT or (err == 0 and got in self.model.d and got != k), (k, err, got)
            return
        assert err == want_err, f"get_next_key({k}): errno {err}, model {want_err}"
        if err:
            return
        if want is not None:
            assert got == want, f"get_next_key({k}) = {got}, model {want}"
        else:  # the order is not modelled: the first key, for None and for a missing key alike
            assert got in self.model.d
            assert got == self.m.get_next_key(None)

    @precondition(ready)
    @rule(count=st.integers(1, 9), delete=st.booleans())
    def batch_walk(self, count: int, delete: bool) -> None:
        if not self.is_hash:
            delete = False
        seen: list[int] = []
        cursor = None
        for _ in range(100):
            fn = self.m.lookup_and_delete_batch if delete else self.m.lookup_batch
            err, b = _errno_of(lambda: fn(count, cursor))  # noqa: B023
            if self.exact or not self.is_hash:
                want_err, want_keys, want_next = self.model.batch(count, cursor, delete)
                assert err == want_err, f"batch({count}, {cursor}, delete={delete}): {err}, model {want_err}"
                if err:
                    return
                assert b.keys == want_keys and b.next == want_next, f"batch({count}, {cursor})"
            else:
                if err:
                    assert err == errno.ENOSPC and count < len(self.model.d)
                    return
                for k in b.keys:
                    if delete:
                        self.model.delete(k)
            for k, v in zip(b.keys, b.values, strict=True):
                assert k not in seen, f"key {k} in two batches"
                seen.append(k)
                if not delete:
                    assert self.got(v) == self.model.d[k]
            if b.next is None:
                break
            assert cursor is None or b.next > cursor
            cursor = b.next
        else:
            raise AssertionError("the batches do not end")
        if not delete and (self.exact or not self.is_hash):
            assert sorted(seen) == sorted(self.model.d)

    @precondition(ready)
    @rule(data=st.data(), lock=st.booleans())
    def update_batch(self, data: st.DataObject, lock: bool) -> None:
        keys = data.draw(st.lists(st.integers(0, self.nkeys - 1), max_size=5), label="keys")
        vals = [self.value(data) for _ in keys]
        flags = 4 if lock else 0
        want_err, want_n = self.model.update_batch(zip(keys, vals, strict=True), flags)
        try:
            n = self.m.update_batch(keys, vals, flags)
            err = 0
        except BatchError as e:
            err, n = int(e.errno or 0), e.count
        assert (err, n) == (want_err, want_n), f"update_batch({keys}, flags={flags})"

    @precondition(ready)
    @rule(data=st.data())
    def delete_batch(self, data: st.DataObject) -> None:
        keys = data.draw(st.lists(st.integers(0, self.nkeys - 1), max_size=4), label="keys")
        want_err, want_n = self.model.delete_batch(keys)
        try:
            n = self.m.delete_batch(keys)
            err = 0
        except BatchError as e:
            err, n = int(e.errno or 0), e.count
        assert (err, n) == (want_err, want_n), f"delete_batch({keys})"

    # ---- invariants -------------------------------------------------------------------

    @invariant()
    def contents_match(self) -> None:
        if not self.ready():
            return
        got = {k: self.got(v) for k, v in self.m.items()}
        assert got == self.model.contents()
        assert len(self.m) == len(self.model)
        if self.exact:
            assert list(self.m.keys()) == self.model.order()

    @invariant()
    def accounting(self) -> None:
        if not self.ready() or not self.is_hash:
            return
        m, n = self.m, len(self.model)
        assert m.check() == {"elements": n, "leaked": 0}
        if m.prealloc:
            assert m.freelist.count() == m.max_entries - n
            assert m.freelist_extra.count() == (0 if m.percpu else len(self.cpus))
        else:
            assert int(m._core.count) == n
            assert m.ma.stats()["outstanding"] == n
            if m.percpu:
                assert m.pcpu_ma.stats()["outstanding"] == n


SETTINGS = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _machine(name: str, cls: type, flags: int) -> type:
    m = type(name, (MapMachine,), {"CLS": cls, "FLAGS": flags})
    m.TestCase.settings = SETTINGS
    return m


HashPrealloc = _machine("HashPrealloc", HashMap, BPF_F_ZERO_SEED)
HashNoPrealloc = _machine("HashNoPrealloc", HashMap, BPF_F_ZERO_SEED | BPF_F_NO_PREALLOC)
HashRandomSeed = _machine("HashRandomSeed", HashMap, 0)
PercpuHashPrealloc = _machine("PercpuHashPrealloc", PercpuHashMap, BPF_F_ZERO_SEED)
PercpuHashNoPrealloc = _machine("PercpuHashNoPrealloc", PercpuHashMap, BPF_F_ZERO_SEED | BPF_F_NO_PREALLOC)
PercpuHashRandomSeedNoPrealloc = _machine("PercpuHashRandomSeedNoPrealloc", PercpuHashMap, BPF_F_NO_PREALLOC)
Array = _machine("Array", ArrayMap, 0)
PercpuArray = _machine("PercpuArray", PercpuArrayMap, 0)

TestHashPrealloc = HashPrealloc.TestCase
TestHashNoPrealloc = HashNoPrealloc.TestCase
TestHashRandomSeed = HashRandomSeed.TestCase
TestPercpuHashPrealloc = PercpuHashPrealloc.TestCase
TestPercpuHashNoPrealloc = PercpuHashNoPrealloc.TestCase
TestPercpuHashRandomSeedNoPrealloc = PercpuHashRandomSeedNoPrealloc.TestCase
TestArray = Array.TestCase
TestPercpuArray = PercpuArray.TestCase


# ---- the model itself ---------------------------------------------------------------------


def test_model_order_and_batches_by_hand() -> None:
    """The model's kernel rules on a tiny example (a test of the test)."""
    m = MapModel("hash", percpu=False, max_entries=2, nr_possible=2, exact_order=True)
    assert m.update(1, 10) == 0 and m.update(2, 20) == 0
    assert m.update(3, 30) == errno.E2BIG and m.update(3, 30, 2) == errno.ENOENT
    assert m.update(1, 11, 1) == errno.EEXIST and m.update(1, 11, 4) == errno.EINVAL
    order = m.order()
    assert order is not None and sorted(order) == [1, 2]
    assert m.get_next_key(None) == (0, order[0]) and m.get_next_key(order[-1]) == (errno.ENOENT, None)
    assert m.get_next_key(99) == (0, order[0])
    err, keys, nxt = m.batch(2, None, False)
    assert err == 0 and sorted(keys) == [1, 2] and nxt is None
    a = MapModel("array", percpu=True, max_entries=3, nr_possible=2)
    assert a.update(0, 5, prog_cpu_pos=1) == 0 and a.d[0] == (0, 5)
    assert a.update(3, 1) == errno.E2BIG and a.update(0, 1, 1) == errno.EEXIST and a.delete(0) == errno.EINVAL
    assert a.batch(2, None, False) == (0, [0, 1], 2) and a.batch(2, 2, False) == (0, [2], None)

