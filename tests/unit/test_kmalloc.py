"""kmalloc, the page allocator and mem() of a domain (csrc/arena.c, runtime/domain.py).

Table-driven: size -> size class at every class boundary, bad arguments ->
EINVAL with nothing changed.  Accounting is checked against fstat's
st_blocks, the honest measure of what the shared file really holds.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator

import pytest

import percpu
import percpu.kernel
from percpu.errors import InvalidArgument
from percpu.runtime.domain import KMALLOC_CLASSES, MIN_SIZE, PAGE_SIZE

#: Empty slab pages a size class keeps before returning one (PK_SLAB_KEEP_EMPTY, arena.h).
SLAB_KEEP_EMPTY = 1


def _pages(size: int) -> int:
    return -(-size // PAGE_SIZE) * PAGE_SIZE


def _class_vectors() -> list[tuple[int, int]]:
    """(request, ksize) at both sides of every class boundary, then whole pages."""
    vec = [(1, KMALLOC_CLASSES[0])]
    prev = 0
    for cls in KMALLOC_CLASSES:
        vec += [(prev + 1, cls), (cls - 1, cls), (cls, cls)]
        prev = cls
    for size in (4097, 5000, 8191, 8192, 8193, 3 * PAGE_SIZE, 3 * PAGE_SIZE + 1, 1 << 20):
        vec.append((size, _pages(size)))
    return sorted(set(vec))


CLASS_VECTORS = _class_vectors()


def _snapshot(dom: percpu.Domain) -> dict[str, object]:
    return dom.stats()


def _consistent(dom: percpu.Domain) -> None:
    dom.check()
    assert dom.populated_pages() == dom.st_blocks_pages()


def _meta(dom: percpu.Domain) -> int:
    return int(dom.stats()["meta_pages"])  # type: ignore[call-overload]


def _data_pages(dom: percpu.Domain) -> int:
    st = dom.stats()
    return int(st["pages"]) - int(st["meta_pages"])  # type: ignore[call-overload]


def _class(dom: percpu.Domain, size: int) -> dict[str, int]:
    (c,) = [c for c in dom.stats()["kmalloc"] if c["size"] == size]  # type: ignore[attr-defined]
    return c  # type: ignore[no-any-return]


@pytest.fixture
def small_domain() -> Iterator[percpu.Domain]:
    """The smallest domain there is (1 MiB), for running out of memory quickly."""
    dom = percpu.Domain.create(size=MIN_SIZE, nr_cpus=2)
    try:
        yield dom
    finally:
        dom.close()
        dom.unlink()


# ---- size classes ----------------------------------------------------------


def test_class_vectors_cover_every_boundary() -> None:
    got = {k for _, k in CLASS_VECTORS}
    assert set(KMALLOC_CLASSES) <= got
    assert all(KMALLOC_CLASSES[i] < KMALLOC_CLASSES[i + 1] for i in range(len(KMALLOC_CLASSES) - 1))
    assert KMALLOC_CLASSES[-1] == PAGE_SIZE


@pytest.mark.parametrize(("size", "ksize"), CLASS_VECTORS)
def test_kmalloc_size_class(domain: percpu.Domain, size: int, ksize: int) -> None:
    before = domain.stats()["used_pages"]
    p = domain.kmalloc(size)
    assert p is not None and p > 0
    assert domain.ksize(p) == ksize
    used = domain.stats()["used_pages"]
    if size <= PAGE_SIZE:
        assert _class(domain, ksize)["inuse"] == 1
        assert sum(c["inuse"] for c in domain.stats()["kmalloc"]) == 1  # type: ignore[attr-defined]
        assert used == before + 1  # one slab page
    else:
        assert p % PAGE_SIZE == 0
        assert used == before + ksize // PAGE_SIZE
        assert sum(c["inuse"] for c in domain.stats()["kmalloc"]) == 0  # type: ignore[attr-defined]
    # The whole usable size is addressable.
    percpu.mem(p, ksize)[:] = b"\xa5" * ksize
    _consistent(domain)
    domain.kfree(p)
    _consistent(domain)
    if size > PAGE_SIZE:
        assert domain.stats()["used_pages"] == before


# ---- kzalloc -----------------------------------------------------------------


@pytest.mark.parametrize("size", KMALLOC_CLASSES)
def test_kzalloc_zeroes_reused_slab_object(domain: percpu.Domain, size: int) -> None:
    p = domain.kmalloc(size)
    assert p is not None
    percpu.mem(p, size)[:] = b"\xff" * size
    domain.kfree(p)
    q = domain.kzalloc(size)
    # The free chain is LIFO: q is the dirtied object, which is what this test is about.
    assert q == p
    assert bytes(percpu.mem(q, size)) == bytes(size)
    # kmalloc (not zeroed) of a reused object at least drops the free marker.
    percpu.mem(q, size)[:] = b"\xee" * size
    domain.kfree(q)
    r = domain.kmalloc(size)
    assert r == q
    _consistent(domain)


def test_kzalloc_zeroes_reused_pages(small_domain: percpu.Domain) -> None:
    dom = small_domain
    p = dom.kmalloc(3 * PAGE_SIZE)
    assert p is not None
    dom.mem(p, 3 * PAGE_SIZE)[:] = b"\x5a" * (3 * PAGE_SIZE)
    dom.kfree(p)
    # The only block that fits is the whole data area, which covers p's pages.
    whole = _data_pages(dom) * PAGE_SIZE
    q = dom.kzalloc(whole)
    assert q is not None and q <= p and p + 3 * PAGE_SIZE <= q + whole
    assert bytes(dom.mem(q, whole)) == bytes(whole)
    _consistent(dom)
    dom.kfree(q)
    _consistent(dom)


# ---- bad arguments -------------------------------------------------------------


def test_kfree_null_is_a_noop(domain: percpu.Domain) -> None:
    p = domain.kmalloc(64)
    before = _snapshot(domain)
    domain.kfree(0)
    percpu.kernel.kfree(0)
    assert _snapshot(domain) == before
    domain.kfree(p)


def _bad_sizes(dom: percpu.Domain) -> list[object]:
    data = _data_pages(dom) * PAGE_SIZE
    return [
        0,
        -1,
        -(1 << 40),
        dom.size + 1,  # bigger than the arena
        dom.size,  # the arena itself: the meta pages can never be handed out
        data + 1,  # one page more than all data pages
        1 << 64,
        1 << 100,
        1.5,
        8.0,
        "8",
        None,
        True,
    ]


def test_kmalloc_bad_size(domain: percpu.Domain) -> None:
    keep = domain.kmalloc(64)  # something live, so "nothing changes" means something
    for bad in _bad_sizes(domain):
        for alloc in (domain.kmalloc, domain.kzalloc):
            before = _snapshot(domain)
            with pytest.raises(InvalidArgument) as ei:
                alloc(bad)  # type: ignore[arg-type]
            assert ei.value.errno == errno.EINVAL, bad
            assert _snapshot(domain) == before, bad
            _consistent(domain)
    domain.kfree(keep)


def test_kmalloc_all_data_pages_fits(small_domain: percpu.Domain) -> None:
    """The largest request that can succeed is every data page: not EINVAL."""
    dom = small_domain
    p = dom.kmalloc(_data_pages(dom) * PAGE_SIZE)
    assert p == _meta(dom) * PAGE_SIZE
    assert dom.kmalloc(8) is None  # no page left for a slab
    dom.kfree(p)
    _consistent(dom)


BadFree = Callable[[percpu.Domain, dict[str, int]], int]

# name -> offset that kfree() must refuse.  'live' holds a few live allocations.
KFREE_BAD: dict[str, BadFree] = {
    "inside a 64-byte object": lambda d, live: live["o64"] + 8,
    "odd offset in an object": lambda d, live: live["o64"] + 1,
    "last byte of an object": lambda d, live: live["o64"] + 63,
    "never-carved slot of a slab": lambda d, live: live["o64"] + 10 * 64,
    "tail slack of the 96 class": lambda d, live: live["o96"] - live["o96"] % PAGE_SIZE + 42 * 96,
    "inside a page block": lambda d, live: live["block"] + 8,
    "tail page of a block": lambda d, live: live["block"] + PAGE_SIZE,
    "header": lambda d, live: 8,
    "first meta page past the header": lambda d, live: PAGE_SIZE,
    "last word of the meta pages": lambda d, live: _meta(d) * PAGE_SIZE - 8,
    "end of the arena": lambda d, live: d.size,
    "past the arena": lambda d, live: d.size + PAGE_SIZE,
    "far past the arena": lambda d, live: 1 << 62,
    "a free page": lambda d, live: d.size - PAGE_SIZE,
    "negative": lambda d, live: -8,
    "beyond u64": lambda d, live: 1 << 64,
}


@pytest.fixture
def live(domain: percpu.Domain) -> dict[str, int]:
    objs = {"o64": domain.kmalloc(64), "o96": domain.kmalloc(96), "block": domain.alloc_pages(3)}
    assert all(v is not None for v in objs.values())
    return objs  # type: ignore[return-value]


@pytest.mark.parametrize("case", list(KFREE_BAD))
def test_kfree_bad_pointer(domain: percpu.Domain, live: dict[str, int], case: str) -> None:
    off = KFREE_BAD[case](domain, live)
    before = _snapshot(domain)
    with pytest.raises(InvalidArgument) as ei:
        domain.kfree(off)
    assert ei.value.errno == errno.EINVAL
    assert _snapshot(domain) == before
    _consistent(domain)
    # The live allocations are untouched and still free normally.
    for p in live.values():
        domain.kfree(p)
    _consistent(domain)


@pytest.mark.parametrize("size", [8, 96, 2048, PAGE_SIZE, 3 * PAGE_SIZE])
def test_kfree_double_free(domain: percpu.Domain, size: int) -> None:
    p = domain.kmalloc(size)
    other = domain.kmalloc(size)  # keeps p's slab page (if any) alive
    assert p is not None and other is not None
    domain.kfree(p)
    before = _snapshot(domain)
    with pytest.raises(InvalidArgument) as ei:
        domain.kfree(p)
    assert ei.value.errno == errno.EINVAL
    assert _snapshot(domain) == before
    _consistent(domain)
    # The object is handed out exactly once again.
    q = domain.kmalloc(size)
    r = domain.kmalloc(size)
    assert q != r
    for x in (q, r, other):
        domain.kfree(x)
    _consistent(domain)


def test_kfree_live_object_that_looks_free(domain: percpu.Domain) -> None:
    """User data equal to the free marker must not make a live object unfreeable."""
    p = domain.kmalloc(16)
    assert p is not None
    percpu.mem(p, 16)[:] = (0).to_bytes(4, "little") + (0xF7EEF7EE).to_bytes(4, "little") + bytes(8)
    domain.kfree(p)
    assert _class(domain, 16)["inuse"] == 0
    _consistent(domain)


def test_free_pages_of_slab_objects(domain: percpu.Domain) -> None:
    page_obj = domain.kmalloc(PAGE_SIZE)  # a 4096-class slab object: page aligned, not a block
    small = domain.kmalloc(64)
    block = domain.alloc_pages(2)
    assert page_obj is not None and small is not None and block is not None
    assert page_obj % PAGE_SIZE == 0
    for off in (page_obj, small, small - small % PAGE_SIZE, block + 1, block + PAGE_SIZE, 0):
        before = _snapshot(domain)
        with pytest.raises(InvalidArgument) as ei:
            domain.free_pages(off)
        assert ei.value.errno == errno.EINVAL, off
        assert _snapshot(domain) == before, off
    domain.free_pages(block)
    with pytest.raises(InvalidArgument):
        domain.free_pages(block)  # double free of a block
    domain.kfree(page_obj)
    domain.kfree(small)
    _consistent(domain)


@pytest.mark.parametrize("n", [0, -1, -(1 << 40)])
def test_alloc_pages_bad_count(domain: percpu.Domain, n: int) -> None:
    before = _snapshot(domain)
    with pytest.raises(InvalidArgument) as ei:
        domain.alloc_pages(n)
    assert ei.value.errno == errno.EINVAL
    assert _snapshot(domain) == before
    _consistent(domain)


def test_alloc_pages_more_than_data_pages(domain: percpu.Domain) -> None:
    before = _snapshot(domain)
    for n in (_data_pages(domain) + 1, domain.size // PAGE_SIZE, domain.size // PAGE_SIZE + 1):
        with pytest.raises(InvalidArgument):
            domain.alloc_pages(n)
    assert _snapshot(domain) == before


# ---- out of memory -------------------------------------------------------------


def test_out_of_pages(small_domain: percpu.Domain) -> None:
    dom = small_domain
    meta, data = _meta(dom), _data_pages(dom)
    blocks = []
    while (p := dom.alloc_pages(1)) is not None:
        blocks.append(p)
        assert len(blocks) <= data
    assert len(blocks) == data
    assert len(set(blocks)) == data
    assert dom.populated_pages() == dom.st_blocks_pages() == meta + data
    _consistent(dom)
    full = _snapshot(dom)
    # Every allocator path now fails softly and changes nothing.
    assert dom.alloc_pages(1) is None
    assert dom.kmalloc(8) is None  # needs a new slab page
    assert dom.kzalloc(100) is None
    assert dom.kmalloc(2 * PAGE_SIZE) is None
    after = _snapshot(dom)
    assert after == full
    _consistent(dom)
    # A hole of one page: a 2-page request still fails, a 1-page one fits in it.
    dom.free_pages(blocks[10])
    assert dom.alloc_pages(2) is None
    assert dom.alloc_pages(1) == blocks[10]
    for p in blocks:
        dom.free_pages(p)
    assert dom.populated_pages() == dom.st_blocks_pages() == meta
    _consistent(dom)
    # The whole data area is one free run again.
    assert dom.alloc_pages(data) == meta * PAGE_SIZE


def test_out_of_slab_objects(small_domain: percpu.Domain) -> None:
    dom = small_domain
    meta, data = _meta(dom), _data_pages(dom)
    objs = []
    while (p := dom.kmalloc(2048)) is not None:
        objs.append(p)
    assert len(objs) == 2 * data
    assert _class(dom, 2048)["slabs"] == data
    assert dom.populated_pages() == dom.st_blocks_pages() == meta + data
    _consistent(dom)
    for p in objs:
        dom.kfree(p)
        assert dom.populated_pages() == dom.st_blocks_pages()
    # Every slab page went back but the one empty page the class keeps.
    assert dom.populated_pages() == dom.st_blocks_pages() == meta + SLAB_KEEP_EMPTY
    c = _class(dom, 2048)
    assert (c["slabs"], c["empty_slabs"], c["inuse"]) == (SLAB_KEEP_EMPTY, SLAB_KEEP_EMPTY, 0)
    assert (c["allocs"], c["frees"]) == (2 * data, 2 * data)
    _consistent(dom)


# ---- layout --------------------------------------------------------------------


def test_objects_do_not_overlap_and_are_aligned(domain: percpu.Domain) -> None:
    live: list[tuple[int, int]] = []
    for cls in KMALLOC_CLASSES:
        for _ in range(2 * (PAGE_SIZE // cls) + 1):  # spans three slab pages
            p = domain.kmalloc(cls)
            assert p is not None
            live.append((p, cls))
    for n in (1, 2, 5):
        p = domain.alloc_pages(n)
        assert p is not None
        live.append((p, n * PAGE_SIZE))
    for p, size in live:
        assert domain.ksize(p) == size
        assert p % 8 == 0
        if size <= PAGE_SIZE:
            if size & (size - 1) == 0:  # kmalloc-8 ... kmalloc-4k: naturally aligned
                assert p % size == 0, (p, size)
            assert p % PAGE_SIZE + size <= PAGE_SIZE, "an object straddles a page"
        else:
            assert p % PAGE_SIZE == 0  # page blocks: page aligned only
        assert p >= _meta(domain) * PAGE_SIZE
        assert p + size <= domain.size
    live.sort()
    for (a, asz), (b, _) in zip(live, live[1:]):
        assert a + asz <= b, f"{a:#x}+{asz} overlaps {b:#x}"
    # Stamp every object, then check every stamp: no aliasing anywhere.
    for i, (p, size) in enumerate(live):
        percpu.mem(p, 8)[:] = i.to_bytes(8, "little")
        percpu.mem(p + size - 8, 8)[:] = i.to_bytes(8, "little")
    for i, (p, size) in enumerate(live):
        assert int.from_bytes(percpu.mem(p, 8), "little") == i
        assert int.from_bytes(percpu.mem(p + size - 8, 8), "little") == i
    _consistent(domain)


# ---- accounting ------------------------------------------------------------------


def test_page_block_backing_is_punched(domain: percpu.Domain) -> None:
    meta = _meta(domain)
    _consistent(domain)
    assert domain.populated_pages() == meta
    p = domain.alloc_pages(5)
    assert p is not None
    assert domain.st_blocks_pages() == meta + 5
    _consistent(domain)
    percpu.mem(p, 5 * PAGE_SIZE)[:] = b"\x01" * (5 * PAGE_SIZE)  # writing adds no pages
    assert domain.st_blocks_pages() == meta + 5
    q = domain.kmalloc(2 * PAGE_SIZE + 1)
    assert q is not None
    assert domain.st_blocks_pages() == meta + 8
    _consistent(domain)
    domain.free_pages(p)
    assert domain.st_blocks_pages() == meta + 3
    # Punched: reads as zero.  pread, because a fault through the mapping would repopulate.
    assert os.pread(domain.arena.fd, 5 * PAGE_SIZE, p) == bytes(5 * PAGE_SIZE)
    _consistent(domain)
    domain.kfree(q)
    assert domain.st_blocks_pages() == meta
    _consistent(domain)


@pytest.mark.parametrize("size", [2048, 1024, PAGE_SIZE, 96])
def test_empty_slab_pages_are_returned(domain: percpu.Domain, size: int) -> None:
    meta = _meta(domain)
    per_page = PAGE_SIZE // size
    pages: list[list[int]] = []
    for i in range(SLAB_KEEP_EMPTY + 2):
        objs = [domain.kmalloc(size) for _ in range(per_page)]
        assert all(o is not None for o in objs)
        assert len({o // PAGE_SIZE for o in objs}) == 1  # type: ignore[operator]
        pages.append(objs)  # type: ignore[arg-type]
        assert domain.populated_pages() == domain.st_blocks_pages() == meta + i + 1
        _consistent(domain)
    nslabs = len(pages)
    for i, objs in enumerate(pages):
        for o in objs[:-1]:
            domain.kfree(o)
            _consistent(domain)
            assert domain.st_blocks_pages() == meta + nslabs - max(0, i - SLAB_KEEP_EMPTY)
        domain.kfree(objs[-1])  # this page is now empty
        _consistent(domain)
        empty = i + 1
        returned = max(0, empty - SLAB_KEEP_EMPTY)
        assert domain.populated_pages() == domain.st_blocks_pages() == meta + nslabs - returned
        c = _class(domain, size)
        assert c["slabs"] == nslabs - returned
        assert c["empty_slabs"] == min(empty, SLAB_KEEP_EMPTY)
    # The kept empty page is reused: no new backing for the next object.
    p = domain.kmalloc(size)
    assert p is not None
    assert domain.st_blocks_pages() == meta + SLAB_KEEP_EMPTY
    assert _class(domain, size)["empty_slabs"] == 0
    domain.kfree(p)
    _consistent(domain)


def test_classes_keep_their_own_empty_page(domain: percpu.Domain) -> None:
    meta = _meta(domain)
    ptrs = [domain.kmalloc(c) for c in KMALLOC_CLASSES]
    assert domain.st_blocks_pages() == meta + len(KMALLOC_CLASSES)
    for p in ptrs:
        domain.kfree(p)  # type: ignore[arg-type]
    # One empty page per class is within every class's allowance.
    assert domain.populated_pages() == domain.st_blocks_pages() == meta + len(KMALLOC_CLASSES)
    _consistent(domain)


# ---- mem() -----------------------------------------------------------------------


def test_mem_is_shared_with_another_handle(domain: percpu.Domain) -> None:
    p = domain.kmalloc(256)
    assert p is not None
    other = percpu.Domain.attach(domain.name)
    try:
        pattern = bytes(range(256))
        percpu.mem(p, 256)[:] = pattern
        view = other.mem(p, 256)
        assert bytes(view) == pattern
        view[:4] = b"back"
        assert bytes(percpu.mem(p, 4)) == b"back"
        assert other.ksize(p) == 256
        other.kfree(p)  # the allocator state is shared too
        assert _class(domain, 256)["inuse"] == 0
        view.release()
        _consistent(domain)
    finally:
        other.close()


def test_mem_bad_ranges(domain: percpu.Domain) -> None:
    p = domain.kmalloc(64)
    assert p is not None
    size = domain.size
    bad = [(0, 8), (p, 0), (p, -1), (-8, 8), (size - 4, 8), (size, 1), (size + PAGE_SIZE, 8),
           (p, size), (1.0, 8), (p, "8")]
    for ptr, n in bad:
        with pytest.raises(InvalidArgument) as ei:
            percpu.mem(ptr, n)  # type: ignore[arg-type]
        assert ei.value.errno == errno.EINVAL, (ptr, n)
    # The last valid byte is fine.
    assert len(percpu.mem(size - 1, 1)) == 1
    assert len(percpu.mem(1, size - 1)) == size - 1
