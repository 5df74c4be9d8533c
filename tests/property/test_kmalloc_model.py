"""kmalloc and the page allocator against the pure-Python model (tests/models/slab_model.py).

A hypothesis state machine allocates, frees, double-frees and stamps objects
in a small domain of its own; after every step the C core's own check, the
file's st_blocks and the per-class counters must agree with the model.
"""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)
from models.slab_model import SlabModel

import percpu
from percpu.errors import InvalidArgument
from percpu.runtime.domain import KMALLOC_CLASSES, MIN_SIZE, PAGE_SIZE

#: Empty slab pages a size class keeps (PK_SLAB_KEEP_EMPTY, csrc/arena.h).
SLAB_KEEP_EMPTY = 1

_BOUNDARIES = sorted({s for c in KMALLOC_CLASSES for s in (c - 1, c, c + 1) if s > 0})

#: Request sizes: mostly small (every class, with its boundaries), some whole pages.
SIZES = st.one_of(
    st.integers(1, 256),
    st.sampled_from(_BOUNDARIES),
    st.integers(1, PAGE_SIZE),
    st.integers(1, 3).map(lambda n: n * PAGE_SIZE),
    st.integers(PAGE_SIZE + 1, 3 * PAGE_SIZE),
)


def _stamp_bytes(stamp: int, n: int) -> bytes:
    word = stamp.to_bytes(8, "little")
    return (word * (n // 8 + 1))[:n]


def _meta_pages(dom: percpu.Domain) -> int:
    return int(dom.arena.header()["meta_pages"])


class KmallocMachine(RuleBasedStateMachine):
    """One 4 MiB domain per run; live allocations in the 'objs' bundle."""

    objs = Bundle("objs")

    def __init__(self) -> None:
        super().__init__()
        self.dom = percpu.Domain.create(size=4 << 20, nr_cpus=2)
        meta = _meta_pages(self.dom)
        self.model = SlabModel(KMALLOC_CLASSES, PAGE_SIZE, meta * PAGE_SIZE, self.dom.size)
        self.stamps: dict[int, int] = {}
        self.next_stamp = 1

    def teardown(self) -> None:
        self.dom.close()
        self.dom.unlink()

    # ---- helpers --------------------------------------------------------------

    def _stamp(self, p: int) -> None:
        a = self.model.live[p]
        stamp = self.next_stamp
        self.next_stamp += 1
        self.dom.mem(p, a.usable)[:] = _stamp_bytes(stamp, a.usable)
        self.stamps[p] = stamp

    def _check_stamps(self) -> None:
        for p, a in self.model.live.items():
            got = bytes(self.dom.mem(p, a.usable))
            assert got == _stamp_bytes(self.stamps[p], a.usable), f"object {p:#x}+{a.usable} corrupted"

    # ---- rules ----------------------------------------------------------------------

    @initialize()
    def consistent_at_start(self) -> None:
        self.dom.check()
        assert self.dom.populated_pages() == self.dom.st_blocks_pages() == _meta_pages(self.dom)

    @rule(target=objs, size=SIZES, zero=st.booleans())
    def alloc(self, size: int, zero: bool) -> int:
        p = self.dom.kzalloc(size) if zero else self.dom.kmalloc(size)
        # 4 MiB and at most a few dozen live objects of <= 3 pages: never out of memory.
        assert p is not None
        a = self.model.alloc(p, size, self.dom.ksize(p))
        if zero:
            assert bytes(self.dom.mem(p, a.usable)) == bytes(a.usable), "kzalloc memory not zeroed"
        self._stamp(p)
        return p

    @rule(p=consumes(objs))
    def free(self, p: int) -> None:
        assert bytes(self.dom.mem(p, 8)) == _stamp_bytes(self.stamps[p], 8)
        self.dom.kfree(p)
        self.model.free(p)
        del self.stamps[p]

    @precondition(lambda self: bool(self.model.dead_offsets()))
    @rule(data=st.data())
    def double_free(self, data: st.DataObject) -> None:
        p = data.draw(st.sampled_from(self.model.dead_offsets()), label="dead")
        before = self.dom.stats()
        with pytest.raises(InvalidArgument) as ei:
            self.dom.kfree(p)
        assert ei.value.errno == errno.EINVAL
        assert self.dom.stats() == before

    @rule(p=objs, delta=st.sampled_from([1, 4, 8, 24]))
    def free_interior(self, p: int, delta: int) -> None:
        a = self.model.live[p]
        if delta >= a.usable:
            delta = a.usable - 1
        before = self.dom.stats()
        with pytest.raises(InvalidArgument) as ei:
            self.dom.kfree(p + delta)
        assert ei.value.errno == errno.EINVAL
        assert self.dom.stats() == before

    @rule(p=objs)
    def restamp(self, p: int) -> None:
        self._stamp(p)
        self._check_stamps()

    # ---- invariants ------------------------------------------------------------------

    @invariant()
    def arena_checks(self) -> None:
        self.dom.check()

    @invariant()
    def backing_matches_accounting(self) -> None:
        assert self.dom.populated_pages() == self.dom.st_blocks_pages()

    @invariant()
    def counters_match_model(self) -> None:
        classes = self.dom.stats()["kmalloc"]
        assert sum(c["inuse"] for c in classes) == self.model.small_inuse()  # type: ignore[attr-defined]
        want = self.model.inuse_by_class()
        pages = self.model.slab_pages_by_class()
        slabs = 0
        for c in classes:  # type: ignore[attr-defined]
            size = c["size"]
            assert c["inuse"] == want[size], size
            # Every page with a live object is a slab; at most KEEP_EMPTY more, all empty.
            assert c["slabs"] - c["empty_slabs"] == len(pages[size]), size
            assert 0 <= c["empty_slabs"] <= SLAB_KEEP_EMPTY, size
            slabs += c["slabs"]
        hdr = self.dom.arena.header()
        assert hdr["nr_used_pages"] == slabs + self.model.block_pages()


KmallocMachine.TestCase.settings = settings(
    KmallocMachine.TestCase.settings, stateful_step_count=40
)
TestKmallocMachine = KmallocMachine.TestCase


# ---- the page allocator alone ---------------------------------------------------------

PAGE_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), st.integers(1, 48)),
        st.tuples(st.just("free"), st.integers(0, 1 << 16)),
    ),
    min_size=1,
    max_size=40,
)


def _longest_free_run(free: list[bool]) -> int:
    best = run = 0
    for f in free:
        run = run + 1 if f else 0
        best = max(best, run)
    return best


@given(ops=PAGE_OPS)
def test_page_blocks_never_overlap(ops: list[tuple[str, int]]) -> None:
    """alloc_pages/free_pages on a 1 MiB domain: blocks are disjoint, and None means no room."""
    dom = percpu.Domain.create(size=MIN_SIZE, nr_cpus=1)
    try:
        meta = _meta_pages(dom)
        nr_pages = dom.size // PAGE_SIZE
        owner: list[int | None] = [None] * nr_pages  # page -> first page of its block
        blocks: dict[int, int] = {}  # first page -> pages
        for op, arg in ops:
            if op == "alloc":
                p = dom.alloc_pages(arg)
                if p is None:
                    # First fit over the whole arena: None only if no run of 'arg' free pages.
                    assert _longest_free_run([o is None for o in owner[meta:]]) < arg
                    continue
                assert p % PAGE_SIZE == 0
                first = p // PAGE_SIZE
                assert meta <= first and first + arg <= nr_pages
                for pg in range(first, first + arg):
                    assert owner[pg] is None, f"page {pg} handed out twice"
                    owner[pg] = first
                blocks[first] = arg
                assert dom.ksize(p) == arg * PAGE_SIZE
            elif blocks:
                first = sorted(blocks)[arg % len(blocks)]
                dom.free_pages(first * PAGE_SIZE)
                for pg in range(first, first + blocks.pop(first)):
                    owner[pg] = None
            dom.check()
            assert dom.populated_pages() == dom.st_blocks_pages() == meta + sum(blocks.values())
        for first in list(blocks):
            dom.free_pages(first * PAGE_SIZE)
        assert dom.populated_pages() == dom.st_blocks_pages() == meta
        dom.check()
    finally:
        dom.close()
        dom.unlink()
