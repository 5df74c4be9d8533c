"""Arena word atomics, llist (csrc/llist.h) and per-CPU slots, single process.

Offsets come from kzalloc so every test works on memory it owns; a node's
first 8 bytes are its link, as in include/linux/llist.h.
"""

from __future__ import annotations

import errno

import pytest

import percpu
from percpu import _core
from percpu.errors import InvalidArgument, PercpuError
from percpu.runtime.domain import PAGE_SIZE

U64 = (1 << 64) - 1
CACHELINE = 64


@pytest.fixture
def arena(domain: percpu.Domain) -> _core.Arena:
    return domain.arena


@pytest.fixture
def words(domain: percpu.Domain) -> int:
    """A zeroed, page-aligned page of words owned by the test."""
    p = domain.kzalloc(PAGE_SIZE)
    assert p is not None and p % PAGE_SIZE == 0
    return p


# ---- word atomics ----------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 0x0123456789ABCDEF, U64, 1 << 63])
def test_store_load(arena: _core.Arena, words: int, value: int) -> None:
    arena.store(words + 8, value)
    assert arena.load(words + 8) == value
    assert arena.load(words) == 0 and arena.load(words + 16) == 0  # neighbours untouched
    assert bytes(percpu.mem(words + 8, 8)) == value.to_bytes(8, "little")


# (start, delta, returned old, new value): negative deltas subtract mod 2**64.
FETCH_ADD_VECTORS = [
    (0, 1, 0, 1),
    (10, -3, 10, 7),
    (7, -7, 7, 0),
    (0, -1, 0, U64),
    (U64, 1, U64, 0),
    (5, 0, 5, 5),
    (1 << 62, 1 << 62, 1 << 62, 1 << 63),
    (0, -(1 << 63), 0, 1 << 63),
]


@pytest.mark.parametrize(("start", "delta", "old", "new"), FETCH_ADD_VECTORS)
def test_fetch_add(arena: _core.Arena, words: int, start: int, delta: int, old: int, new: int) -> None:
    arena.store(words, start)
    assert arena.fetch_add(words, delta) == old
    assert arena.load(words) == new


def test_fetch_add_accumulates(arena: _core.Arena, words: int) -> None:
    for i in range(1, 101):
        arena.fetch_add(words, i)
    for _ in range(50):
        arena.fetch_add(words, -1)
    assert arena.load(words) == 5050 - 50


def test_cmpxchg(arena: _core.Arena, words: int) -> None:
    arena.store(words, 5)
    assert arena.cmpxchg(words, 4, 9) == 5  # failure returns what was found ...
    assert arena.load(words) == 5  # ... and changes nothing
    assert arena.cmpxchg(words, 5, 9) == 5  # success returns the old value
    assert arena.load(words) == 9
    assert arena.cmpxchg(words, 9, U64) == 9
    assert arena.load(words) == U64


def test_xchg(arena: _core.Arena, words: int) -> None:
    assert arena.xchg(words, 42) == 0
    assert arena.xchg(words, U64) == 42
    assert arena.xchg(words, 0) == U64
    assert arena.load(words) == 0


def _bad_word_offsets(size: int, words: int) -> list[int]:
    return [words + 1, words + 4, words + 7, size, size - 4, size + 8, 1 << 62, -8]


def test_atomics_reject_bad_offsets(domain: percpu.Domain, words: int) -> None:
    a = domain.arena
    calls = {
        "load": lambda off: a.load(off),
        "store": lambda off: a.store(off, 1),
        "fetch_add": lambda off: a.fetch_add(off, 1),
        "cmpxchg": lambda off: a.cmpxchg(off, 0, 1),
        "xchg": lambda off: a.xchg(off, 1),
        "llist_add head": lambda off: a.llist_add(off, words + 64),
        "llist_add node": lambda off: a.llist_add(words, off),
        "llist_add_batch": lambda off: a.llist_add_batch(words, off, off),
        "llist_del_all": lambda off: a.llist_del_all(off),
        "llist_del_first": lambda off: a.llist_del_first(off),
        "llist_nodes": lambda off: a.llist_nodes(off, 10),
    }
    before = bytes(domain.mem(words, PAGE_SIZE))
    accepted = []
    for name, call in calls.items():
        for off in _bad_word_offsets(domain.size, words):
            try:
                call(off)
            except ValueError:
                continue
            accepted.append(f"{name}({off:#x})")
    assert not accepted, f"bad offsets accepted: {accepted}"
    assert bytes(domain.mem(words, PAGE_SIZE)) == before  # nothing was written
    # The last word of the arena is fine.
    last = domain.size - 8
    a.store(last, 3)
    assert a.load(last) == 3


def test_atomic_values_out_of_range(arena: _core.Arena, words: int) -> None:
    for value in (-1, 1 << 64):
        with pytest.raises(ValueError):
            arena.store(words, value)
        with pytest.raises(ValueError):
            arena.cmpxchg(words, 0, value)
        with pytest.raises(ValueError):
            arena.xchg(words, value)
    assert arena.load(words) == 0


def test_atomics_are_shared_between_handles(domain: percpu.Domain, words: int) -> None:
    other = percpu.Domain.attach(domain.name)
    try:
        domain.arena.store(words, 7)
        assert other.arena.fetch_add(words, -2) == 7
        assert domain.arena.load(words) == 5
    finally:
        other.close()


# ---- llist --------------------------------------------------------------------------


@pytest.fixture
def nodes(domain: percpu.Domain) -> tuple[int, list[int]]:
    """A list head and 8 nodes, each in its own 16-byte object."""
    head = domain.kzalloc(8)
    ns = [domain.kzalloc(16) for _ in range(8)]
    assert head is not None and all(n is not None for n in ns)
    return head, ns  # type: ignore[return-value]


def test_llist_add_returns_was_empty(arena: _core.Arena, nodes: tuple[int, list[int]]) -> None:
    head, ns = nodes
    assert arena.llist_add(head, ns[0]) is True
    assert arena.llist_add(head, ns[1]) is False
    assert arena.llist_add(head, ns[2]) is False
    assert arena.load(head) == ns[2]
    assert arena.load(ns[2]) == ns[1] and arena.load(ns[1]) == ns[0] and arena.load(ns[0]) == 0
    assert arena.llist_nodes(arena.load(head), 100) == [ns[2], ns[1], ns[0]]
    first = arena.llist_del_all(head)
    assert first == ns[2]
    assert arena.load(head) == 0
    assert arena.llist_add(head, ns[3]) is True  # empty again


def test_llist_add_null_node(arena: _core.Arena, nodes: tuple[int, list[int]]) -> None:
    head, _ = nodes
    with pytest.raises(InvalidArgument) as ei:
        arena.llist_add(head, 0)
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(InvalidArgument):
        arena.llist_add_batch(head, 0, 0)
    assert arena.load(head) == 0


def test_llist_del_first_is_lifo(arena: _core.Arena, nodes: tuple[int, list[int]]) -> None:
    head, ns = nodes
    for n in ns:
        arena.llist_add(head, n)
    out = []
    while (n := arena.llist_del_first(head)) != 0:
        out.append(n)
    assert out == ns[::-1]
    assert arena.load(head) == 0
    assert arena.llist_del_first(head) == 0  # empty list: NULL


def test_llist_del_all_empty(arena: _core.Arena, nodes: tuple[int, list[int]]) -> None:
    head, _ = nodes
    assert arena.llist_del_all(head) == 0
    assert arena.llist_nodes(0, 0) == []


def test_llist_add_batch(arena: _core.Arena, nodes: tuple[int, list[int]]) -> None:
    head, ns = nodes
    assert arena.llist_add(head, ns[0]) is True
    # Chain ns[1] -> ns[2] -> ns[3] privately, then publish it in one step.
    arena.store(ns[1], ns[2])
    arena.store(ns[2], ns[3])
    assert arena.llist_add_batch(head, ns[1], ns[3]) is False
    assert arena.llist_nodes(arena.load(head), 100) == [ns[1], ns[2], ns[3], ns[0]]
    # A batch into an empty list reports was-empty and ends the chain with NULL.
    other = ns[7]
    arena.store(ns[4], ns[5])
    arena.store(ns[5], 12345 * 8)  # stale link: must be overwritten
    assert arena.llist_add_batch(other, ns[4], ns[5]) is True
    assert arena.llist_nodes(arena.load(other), 100) == [ns[4], ns[5]]
    assert arena.load(ns[5]) == 0


def test_llist_nodes_limit_and_cycle(arena: _core.Arena, nodes: tuple[int, list[int]]) -> None:
    head, ns = nodes
    for n in ns[:4]:
        arena.llist_add(head, n)
    first = arena.load(head)
    assert arena.llist_nodes(first, 4) == ns[3::-1]  # exactly the limit: fine
    with pytest.raises(PercpuError) as ei:
        arena.llist_nodes(first, 3)
    assert ei.value.errno == errno.ELOOP
    # A cycle: ns[0] -> ns[3] (the head's first node).
    arena.store(ns[0], ns[3])
    with pytest.raises(PercpuError) as ei:
        arena.llist_nodes(first, 1000)
    assert ei.value.errno == errno.ELOOP
    # A self-loop.
    arena.store(ns[5], ns[5])
    with pytest.raises(PercpuError) as ei:
        arena.llist_nodes(ns[5], 10)
    assert ei.value.errno == errno.ELOOP


def test_llist_nodes_bad_link(domain: percpu.Domain, nodes: tuple[int, list[int]]) -> None:
    a = domain.arena
    _, ns = nodes
    for bad in (ns[2] + 3, domain.size, domain.size + 64):
        a.store(ns[1], bad)
        with pytest.raises(ValueError):
            a.llist_nodes(ns[1], 100)


# ---- per-CPU slots ---------------------------------------------------------------------


@pytest.fixture
def slots(domain64: percpu.Domain) -> int:
    """One zeroed cache line per possible CPU of the 64-CPU domain."""
    assert domain64.nr_cpu_ids == 64
    p = domain64.kzalloc(64 * CACHELINE)
    assert p is not None and p % CACHELINE == 0
    return p


def test_percpu_add_sum(domain64: percpu.Domain, slots: int) -> None:
    a = domain64.arena
    n = domain64.nr_cpu_ids
    assert a.percpu_sum(slots, n) == 0
    expect = 0
    for cpu in range(n):
        a.percpu_add(slots, cpu, cpu + 1)
        expect += cpu + 1
        assert a.percpu_sum(slots, n) == expect
    # Each CPU's counter is the first word of its own cache line; the rest stays zero.
    for cpu in range(n):
        line = bytes(domain64.mem(slots + cpu * CACHELINE, CACHELINE))
        assert int.from_bytes(line[:8], "little") == cpu + 1
        assert line[8:] == bytes(CACHELINE - 8)
    assert a.percpu_sum(slots, 1) == 1
    assert a.percpu_sum(slots, 10) == 55


def test_percpu_negative_deltas(domain64: percpu.Domain, slots: int) -> None:
    a = domain64.arena
    # Frees on other CPUs than the allocations: slots go negative, the sum is right.
    a.percpu_add(slots, 0, 10)
    for cpu in range(1, 11):
        a.percpu_add(slots, cpu, -1)
    assert a.percpu_sum(slots, 64) == 0
    a.percpu_add(slots, 63, -5)
    assert a.percpu_sum(slots, 64) == -5
    assert a.load(slots + 63 * CACHELINE) == (1 << 64) - 5


def test_percpu_bad_arguments(domain64: percpu.Domain, slots: int) -> None:
    a = domain64.arena
    size = domain64.size
    with pytest.raises(ValueError):
        a.percpu_add(slots + 8, 0, 1)  # not cache-line aligned
    with pytest.raises(ValueError):
        a.percpu_add(size - CACHELINE, 1, 1)  # slot past the arena
    with pytest.raises(InvalidArgument):
        a.percpu_add(slots, 4096, 1)  # cpu beyond PK_MAX_CPUS
    with pytest.raises(InvalidArgument) as ei:
        a.percpu_sum(slots, 0)
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(ValueError):
        a.percpu_sum(slots, 4097)
    with pytest.raises(ValueError):
        a.percpu_sum(slots + 8, 64)
    with pytest.raises(ValueError):
        a.percpu_sum(size - 10 * CACHELINE, 11)  # runs past the arena
    assert a.percpu_sum(slots, 64) == 0  # nothing was added
