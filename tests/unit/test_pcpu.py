"""The per-CPU allocator: the kernel's request rules, layout, population, balance, stats."""

from __future__ import annotations

import logging
import os
import re

import pytest

import percpu
from percpu import _core, pcpu
from percpu import kernel as K
from percpu.errors import InvalidArgument
from percpu.runtime import work

PAGE = _core.PAGE_SIZE


def blocks_match(dom: percpu.Domain) -> None:
    work.flush(10)
    assert dom.populated_pages() == dom.st_blocks_pages()


# ---- request rules ---------------------------------------------------------

# (size, align, legal) as pcpu_alloc_noprof() decides, after its rounding.
RULES = [
    (1, 1, True), (3, 0, True), (4, 2, True), (4, 3, True), (5, 4, True),
    (0, 4, False), (32768, 4, True), (32765, 4, True), (32769, 4, False), (32789, 8, False),
    (8, 4096, True), (8, 8192, False), (8, 6, False), (8, 12, False), (16, 16, True),
]


@pytest.mark.parametrize(("size", "align", "legal"), RULES)
def test_request_rules(domain: percpu.Domain, size: int, align: int, legal: bool) -> None:
    ptr = K.__alloc_percpu(size, align)
    assert (ptr is not None) == legal
    if legal:
        assert ptr % max(align, 4) == 0
        assert pcpu.alloc_size(ptr) == -(-size // 4) * 4
        K.free_percpu(ptr)


def test_illegal_request_prints_the_kernel_text_with_rounded_values(
        domain: percpu.Domain, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "percpu.pcpu"):
        assert K.__alloc_percpu(32789, 8) is None
        assert K.__alloc_percpu(8, 6) is None
        assert K.__alloc_percpu(0, 1) is None
    assert [r.getMessage() for r in caplog.records] == [
        "illegal size (32792) or align (8) for percpu allocation",
        "illegal size (8) or align (6) for percpu allocation",
        "illegal size (0) or align (4) for percpu allocation",
    ]
    assert pcpu.info()["nr_alloc"] == 0  # nothing changed


def test_nowarn_is_silent(domain: percpu.Domain, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "percpu.pcpu"):
        assert pcpu.alloc(0, 4, gfp=K.GFP_KERNEL | 0x2000) is None
    assert caplog.records == []


def test_failure_warnings_are_rate_limited_to_ten(make_domain, caplog: pytest.LogCaptureFixture) -> None:
    # A 1 MiB domain of 4 CPUs has room for a few chunks only.
    dom = make_domain(size=1 << 20, nr_cpus=4)
    ptrs = []
    with caplog.at_level(logging.WARNING, "percpu.pcpu"):
        for _ in range(40):
            p = K.__alloc_percpu(16384, 4)
            if p is not None:
                ptrs.append(p)
    fails = [r.getMessage() for r in caplog.records]
    assert len(fails) == 11
    assert fails[0] == "percpu: allocation failed, size=16384 align=4 atomic=0, failed to allocate new chunk"
    assert fails[-1] == "percpu: limit reached, disable warning"
    assert pcpu.info(dom)["warn_limit"] == 0
    for p in ptrs:
        K.free_percpu(p)
    dom.check()


# ---- layout -----------------------------------------------------------------

def test_first_chunk_layout_and_unit_offsets(domain64: percpu.Domain) -> None:
    i = pcpu.info()
    # pcpu_build_alloc_info with the defaults: s4096 r8192 d28672 -> u40960
    assert (i["static_size"], i["reserved_size"], i["dyn_size"], i["unit_size"]) == (4096, 8192, 28672, 40960)
    assert i["nr_units"] == 64
    assert i["sidelined_slot"] == 14 and i["free_slot"] == 15 and i["to_depopulate_slot"] == 16
    p = K.__alloc_percpu(8, 8)
    for cpu in (0, 1, 17, 63):
        assert K.per_cpu_ptr(p, cpu) == p + cpu * 40960
    with pytest.raises(InvalidArgument):
        K.per_cpu_ptr(p, 64)
    with percpu.on_cpu(17):
        assert K.this_cpu_ptr(p) == p + 17 * 40960


def test_sparse_possible_cpus_map_to_dense_units() -> None:
    # possible = {0, 3, 9}: three units; a CPU that is not possible has none.
    fd = os.memfd_create("pcpu-sparse")
    try:
        os.ftruncate(fd, 8 << 20)
        a = _core.Arena(fd, 8 << 20)
        mask = (1 | 1 << 3 | 1 << 9).to_bytes(2, "little")
        a.format(nr_cpu_ids=10, possible=mask, online=mask, owner=os.getpid(), classes=[8, 64, 4096],
                 registry_max=16, registry_entry=128)
        p = a.pcpu_alloc(8, 8)
        unit = a.pcpu_info()["unit_size"]
        assert a.pcpu_info()["nr_units"] == 3
        assert [a.pcpu_ptr(p, c) - p for c in (0, 3, 9)] == [0, unit, 2 * unit]
        for cpu in (1, 2, 4, 8, 10):
            with pytest.raises(InvalidArgument):
                a.pcpu_ptr(p, cpu)
        a.pcpu_free(p)
        a.pcpu_check()
        a.close()
    finally:
        os.close(fd)


def test_allocations_are_zeroed_on_every_cpu(domain: percpu.Domain) -> None:
    p = K.__alloc_percpu(64, 8)
    for cpu in domain.possible:
        domain.mem(K.per_cpu_ptr(p, cpu), 64)[:] = b"\xab" * 64
    K.free_percpu(p)
    q = K.__alloc_percpu(64, 8)
    assert q == p  # first fit: the freed area is reused at the same offset
    for cpu in domain.possible:
        assert bytes(domain.mem(K.per_cpu_ptr(q, cpu), 64)) == bytes(64)


def test_reserved_allocations_use_the_reserved_chunk(domain: percpu.Domain) -> None:
    r = K.__alloc_reserved_percpu(64, 8)
    n = K.__alloc_percpu(64, 8)
    first, static = pcpu.info()["first_block"], pcpu.info()["static_size"]
    assert first + static <= r < first + static + 8192
    assert n >= first + static + 8192
    # the reserved chunk serves only reserved requests: fill it
    more = []
    while (q := K.__alloc_reserved_percpu(1024, 4)) is not None:
        more.append(q)
    assert len(more) == 7  # 8192 - 64 bytes left: seven 1 KiB areas
    for q in more + [r, n]:
        K.free_percpu(q)
    domain.check()


def test_reserved_without_reserved_chunk_falls_through(make_domain) -> None:
    dom = percpu.Domain.create(size=8 << 20, nr_cpus=2, pcpu_reserved_size=0)
    try:
        with dom:
            assert K.__alloc_reserved_percpu(16, 4) is not None
            assert [c["label"] for c in pcpu.chunks()] == ["first"]
    finally:
        dom.close()
        dom.unlink()


# ---- free -------------------------------------------------------------------

def test_double_and_invalid_frees_are_refused_and_change_nothing(domain: percpu.Domain) -> None:
    p = K.__alloc_percpu(32, 8)
    q = K.__alloc_percpu(32, 8)
    K.free_percpu(p)
    before = pcpu.stats_text()
    for bad in (p, q + 4, q + 8, 12345 * PAGE, domain.kmalloc(64)):
        with pytest.raises(InvalidArgument) as ei:
            K.free_percpu(bad)
        assert ei.value.errno == 22
    s = percpu.define_per_cpu("v", "q")
    with pytest.raises(InvalidArgument, match="static"):
        K.free_percpu(s.ptr)
    assert pcpu.stats_text() == before
    K.free_percpu(None)
    K.free_percpu(0)
    K.free_percpu(q)
    domain.check()


# ---- population ------------------------------------------------------------------

def test_pages_populate_in_unison_and_only_when_needed(domain64: percpu.Domain) -> None:
    dom = domain64
    _core.pcpu_set_hook(None)  # no background balance work: every page change is ours
    try:
        dom.arena.pcpu_setup()
        ptrs = []
        while pcpu.info()["nr_chunks"] == 1:  # fill the first chunk until a new one is made
            ptrs.append(K.__alloc_percpu(4096, 4096))
        assert dom.populated_pages() == dom.st_blocks_pages()
        i = pcpu.info()
        # the new chunk: 10 pages in each of 64 units reserved, one populated (the area's)
        assert i["nr_data_pages"] - i["nr_populated"] * 64 == 9 * 64
        before = dom.st_blocks_pages()
        ptrs.append(K.__alloc_percpu(4096, 4096))  # the next page: in all 64 units at once
        assert dom.st_blocks_pages() - before == 64
        before = dom.st_blocks_pages()
        ptrs.append(K.__alloc_percpu(8, 8))  # the next free byte is on an unpopulated page
        assert dom.st_blocks_pages() - before == 64
        before = dom.st_blocks_pages()
        ptrs.append(K.__alloc_percpu(100, 4))  # fits that page now: nothing new
        ptrs.append(K.__alloc_percpu(2000, 4))
        assert dom.st_blocks_pages() == before
        before = dom.st_blocks_pages()
        ptrs.append(K.__alloc_percpu(12000, 8))  # spans pages: only the missing ones, everywhere
        added = dom.st_blocks_pages() - before
        assert added % 64 == 0 and 64 * 2 <= added <= 64 * 4
        assert dom.populated_pages() == dom.st_blocks_pages()
        dom.check()
        for p in ptrs:
            K.free_percpu(p)
    finally:
        _core.pcpu_set_hook(pcpu.allocator._core_event)
    pcpu.balance()
    blocks_match(dom)


def test_atomic_allocation_uses_populated_pages_only(make_domain) -> None:
    dom = make_domain(size=16 << 20, nr_cpus=4)
    dom.arena.pcpu_setup()
    pcpu.balance()
    _core.pcpu_set_hook(None)  # no balance work while we drain the populated pages
    try:
        before = pcpu.info()["nr_populated"]
        got = []
        while (p := pcpu.alloc(4096, 4096, gfp=K.GFP_NOWAIT | 0x2000)) is not None:
            assert dom.arena.pcpu_area_live(p, 4096)  # its pages were populated already
            got.append(p)
        assert got and pcpu.info()["nr_populated"] == before  # atomic never populates
        assert pcpu.info()["atomic_alloc_failed"] == 1
    finally:
        _core.pcpu_set_hook(pcpu.allocator._core_event)
    runs = pcpu.info()["nr_balance_runs"]
    assert pcpu.alloc(4096, 4096, gfp=K.GFP_NOWAIT | 0x2000) is None  # schedules the balance work
    work.flush(10)
    i = pcpu.info()
    assert i["nr_balance_runs"] > runs and i["atomic_alloc_failed"] == 0
    assert i["nr_empty_pop_pages"] >= _core.PCPU_EMPTY_POP_PAGES_HIGH
    assert pcpu.alloc(4096, 4096, gfp=K.GFP_NOWAIT) is not None
    for p in got:
        K.free_percpu(p)
    dom.check()
    blocks_match(dom)


def test_memory_returns_after_freeing_everything(make_domain) -> None:
    dom = make_domain(size=64 << 20, nr_cpus=8)
    K.__alloc_percpu(4, 4)
    pcpu.balance()
    start = dom.st_blocks_pages()
    ptrs = [K.__alloc_percpu(1024, 8) for _ in range(2000)]
    grown = dom.st_blocks_pages()
    n_chunks = pcpu.info()["nr_chunks"]
    assert n_chunks > 3 and grown > start
    for p in ptrs:
        K.free_percpu(p)
    work.flush(10)
    pcpu.balance()
    i = pcpu.info()
    # pcpu_balance_free keeps one fully free chunk besides the first chunk
    assert i["nr_chunks"] == 2
    # the spare is kept with at most HIGH empty populated pages...
    assert i["nr_empty_pop_pages"] <= pcpu.info()["unit_pages"] + _core.PCPU_EMPTY_POP_PAGES_HIGH
    # ...and the file's backing went back: the first block plus one spare chunk at most
    spare = i["unit_pages"] * 8 + 10
    assert dom.st_blocks_pages() <= start + spare
    blocks_match(dom)
    dom.check()


def test_partial_depopulation_of_a_sparse_chunk(make_domain) -> None:
    dom = make_domain(size=64 << 20, nr_cpus=4)
    # Several chunks full of page-sized areas, then free most of them: the
    # chunks go to to_depopulate and their empty pages are punched.
    ptrs = [K.__alloc_percpu(4096, 4096) for _ in range(60)]
    keep = ptrs[::10]
    for p in ptrs:
        if p not in keep:
            K.free_percpu(p)
    work.flush(10)
    pcpu.balance()
    assert pcpu.info()["nr_pages_depopulated"] > 0
    labels = [c["label"] for c in pcpu.chunks()]
    assert "sidelined" in labels or pcpu.info()["nr_chunks_destroyed"] > 0
    blocks_match(dom)
    dom.check()
    for p in keep:
        K.free_percpu(p)
    pcpu.balance()
    dom.check()


# ---- stats -------------------------------------------------------------------------

def test_percpu_stats_format_and_invariants(domain: percpu.Domain) -> None:
    ptrs = [K.__alloc_percpu(s, 4) for s in (4, 8, 12, 100, 1000, 4)]
    K.free_percpu(ptrs[1])
    text = K.percpu_stats()
    lines = text.splitlines()
    assert lines[:3] == ["Percpu Memory Statistics", "Allocation Info:", "-" * 40]
    assert lines[3] == "  unit_size           :        40960"
    for line in lines:
        if ":" in line and line.startswith("  "):
            assert re.fullmatch(r"  [a-z_]{1,20} *: +-?\d{1,12}", line), line
    s = pcpu.stats_dict()
    g = s["global"]
    assert g["nr_cur_alloc"] == g["nr_alloc"] - g["nr_dealloc"] == 5
    assert g["nr_max_alloc"] >= g["nr_cur_alloc"]
    assert g["nr_max_chunks"] >= g["nr_chunks"]
    assert g["min_alloc_size"] == 4 and g["max_alloc_size"] == 1000
    assert sum(c["nr_alloc"] for c in s["chunks"]) == g["nr_cur_alloc"]
    first = [c for c in s["chunks"] if c["label"] == "first"][0]
    assert first["sum_frag"] == 8 and first["max_frag"] == 8  # the freed 8 bytes
    assert first["cur_min_alloc"] == 4 and first["cur_max_alloc"] == 1000
    assert first["cur_med_alloc"] == 12  # lower median of 4 4 12 100 1000
    assert "Chunk: <- Reserved Chunk" in text and "Chunk: <- First Chunk" in text
    assert K.pcpu_nr_pages() == pcpu.info()["nr_populated"] * len(domain.possible)


def test_align8_four_byte_objects_are_not_pathological(make_domain) -> None:
    dom = make_domain(size=64 << 20, nr_cpus=2)
    ptrs = [K.__alloc_percpu(4, 8) for _ in range(5000)]
    assert all(p % 8 == 0 for p in ptrs) and len(set(ptrs)) == 5000
    for p in reversed(ptrs):
        K.free_percpu(p)
    dom.check()


# ---- memcg ---------------------------------------------------------------------------

def test_memcg_charges_limits_and_returns(domain: percpu.Domain) -> None:
    g = percpu.memcg.Group("tenant", limit=10_000)
    full = 64 * 4 + 64 // 4 * 8  # pcpu_obj_full_size(64) on 4 CPUs
    ptrs = []
    with g:
        while (p := K.__alloc_percpu(64, 8)) is not None:
            ptrs.append(p)
    assert len(ptrs) == 10_000 // full
    assert g.usage == len(ptrs) * full and g.failcnt == 1
    assert K.__alloc_percpu(64, 8) is not None  # outside the group: no limit
    with pytest.raises(percpu.errors.Busy):
        g.remove()
    for p in ptrs:
        K.free_percpu(p)  # the charge goes back whoever frees
    assert g.usage == 0
    domain.check()
    g.remove()
    with pytest.raises(percpu.errors.NoEntry):
        percpu.memcg.Group.attach("tenant")


def test_memcg_nested_activation_and_other_charges(domain: percpu.Domain) -> None:
    a = percpu.memcg.Group("a", 1 << 20)
    b = percpu.memcg.Group("b", 1 << 20)
    with a:
        with b:
            p = K.__alloc_percpu(4, 4)
        q = K.__alloc_percpu(4, 4)
    assert percpu.memcg.active() is None
    assert b.info()["nr_pcpu_objs"] == 1 and a.info()["nr_pcpu_objs"] == 1
    assert a.charge(1000) and not a.charge(1 << 20)
    a.uncharge(1000)
    assert {x.name for x in percpu.memcg.groups()} == {"a", "b"}
    with pytest.raises(percpu.errors.Exists):
        percpu.memcg.Group("a", 5)
    K.free_percpu(p)
    K.free_percpu(q)


def test_an_empty_first_chunk_is_never_destroyed(make_domain) -> None:
    # No static and no reserved region: the first chunk covers the whole unit and
    # can sit on the free slot; the balance work must spare it (review finding).
    dom = percpu.Domain.create(size=16 << 20, nr_cpus=2, pcpu_static_size=0, pcpu_reserved_size=0,
                               pcpu_dyn_size=32768)
    try:
        with dom:
            first = [K.__alloc_percpu(4096, 4096) for _ in range(8)]  # fills the first chunk
            other = K.__alloc_percpu(4096, 4096)  # a second chunk
            for p in first:
                K.free_percpu(p)
            K.free_percpu(other)
            work.flush(10)
            pcpu.balance()
            pcpu.balance()
            i = pcpu.info()
            assert i["nr_chunks"] >= 1 and [c["label"] for c in pcpu.chunks()].count("first") == 1
            dom.check()
            assert K.__alloc_percpu(16, 4) is not None
            blocks_match(dom)
    finally:
        dom.close()
        dom.unlink()


def test_allocation_in_a_removed_group_raises(domain: percpu.Domain) -> None:
    g = percpu.memcg.Group("gone", 1 << 20)
    with g:
        g.remove()
        with pytest.raises(percpu.errors.NoEntry, match="removed"):
            K.__alloc_percpu(8, 8)
    assert pcpu.info()["nr_cur_alloc"] == 0


def test_a_balance_claim_that_never_ran_is_taken_over(make_domain) -> None:
    import time

    dom = make_domain(size=16 << 20, nr_cpus=2)
    dom.arena.pcpu_setup()
    _core.pcpu_set_hook(lambda *args: None)  # the queued work is dropped (its process "closed" the domain)
    try:
        pcpu.alloc(32768, 4096, gfp=K.GFP_NOWAIT | 0x2000)  # fails: schedules balance work
    finally:
        _core.pcpu_set_hook(pcpu.allocator._core_event)
    assert pcpu.info()["balance_tid"] != 0
    runs = pcpu.info()["nr_balance_runs"]
    pcpu.alloc(32768, 4096, gfp=K.GFP_NOWAIT | 0x2000)  # claimed a moment ago: not queued again
    work.flush(10)
    assert pcpu.info()["nr_balance_runs"] == runs
    time.sleep(1.1)
    pcpu.alloc(32768, 4096, gfp=K.GFP_NOWAIT | 0x2000)  # a stale claim is taken over
    work.flush(10)
    assert pcpu.info()["nr_balance_runs"] > runs
