"""A pure-Python reference model of a domain's kmalloc and page allocator.

It does not predict offsets (the C allocator chooses them); it records what
was handed out and checks everything that must hold whatever the choice:

* a request of ``size`` bytes gets the smallest size class >= size, or whole
  pages above the largest class (``expected_ksize``);
* no live allocation overlaps another, a small object never straddles a
  page, and a slab page holds objects of one class only (``alloc``);
* the per-class object counts and the pages holding live objects, against
  which the C counters (``inuse``, ``slabs``, ``empty_slabs``, used pages)
  are compared by the tests;
* which offsets were freed and not handed out again (for double-free probes).

Used by tests/property/test_kmalloc_model.py.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


class ModelError(AssertionError):
    """The allocator did something the model forbids."""


@dataclass(frozen=True)
class Allocation:
    offset: int
    size: int  # requested
    usable: int  # the size class, or the page-rounded size
    small: bool  # from a size class (a slab object), not a page block


class SlabModel:
    """Live allocations of one domain, by offset."""

    def __init__(self, classes: tuple[int, ...], page_size: int, first_data_offset: int, end: int) -> None:
        if list(classes) != sorted(set(classes)) or classes[-1] > page_size:
            raise ValueError(f"bad size classes {classes}")
        self.classes = classes
        self.page_size = page_size
        self.first_data_offset = first_data_offset
        self.end = end
        self.live: dict[int, Allocation] = {}
        self.freed: set[int] = set()  # freed and not handed out since

    # ---- what the allocator must return -----------------------------------

    def expected_ksize(self, size: int) -> int:
        for c in self.classes:
            if size <= c:
                return c
        return -(-size // self.page_size) * self.page_size

    def is_small(self, size: int) -> bool:
        return size <= self.classes[-1]

    # ---- transitions --------------------------------------------------------

    def alloc(self, offset: int, size: int, ksize: int) -> Allocation:
        """Record that ``size`` bytes were handed out at ``offset`` with usable size ``ksize``."""
        want = self.expected_ksize(size)
        if ksize != want:
            raise ModelError(f"kmalloc({size}) gave a {ksize}-byte object, expected {want}")
        if offset in self.live:
            raise ModelError(f"offset {offset:#x} handed out twice")
        if offset < self.first_data_offset or offset + ksize > self.end:
            raise ModelError(f"{offset:#x}+{ksize} is outside the data pages")
        if offset % 8:
            raise ModelError(f"{offset:#x} is not 8-byte aligned")
        small = self.is_small(size)
        if small:
            if ksize & (ksize - 1) == 0 and offset % ksize:
                raise ModelError(f"{offset:#x} is not aligned to its class {ksize}")
            if offset % self.page_size + ksize > self.page_size:
                raise ModelError(f"{offset:#x}+{ksize} straddles a page")
        elif offset % self.page_size:
            raise ModelError(f"page block {offset:#x} is not page aligned")
        page = offset // self.page_size
        for a in self.live.values():
            if offset < a.offset + a.usable and a.offset < offset + ksize:
                raise ModelError(f"{offset:#x}+{ksize} overlaps {a.offset:#x}+{a.usable}")
            if small and a.small and a.usable != ksize and a.offset // self.page_size == page:
                raise ModelError(f"page {page} holds objects of classes {a.usable} and {ksize}")
        a = Allocation(offset, size, ksize, small)
        self.live[offset] = a
        self.freed.discard(offset)
        return a

    def free(self, offset: int) -> Allocation:
        try:
            a = self.live.pop(offset)
        except KeyError:
            raise ModelError(f"freeing {offset:#x}, which is not live") from None
        self.freed.add(offset)
        return a

    # ---- derived figures ------------------------------------------------------

    def dead_offsets(self) -> list[int]:
        """Offsets that were freed and are not live again: every kfree of them must fail."""
        return sorted(self.freed - self.live.keys())

    def small_inuse(self) -> int:
        return sum(a.small for a in self.live.values())

    def inuse_by_class(self) -> Counter[int]:
        return Counter(a.usable for a in self.live.values() if a.small)

    def slab_pages_by_class(self) -> dict[int, set[int]]:
        """Pages holding at least one live object, per class."""
        pages: dict[int, set[int]] = {c: set() for c in self.classes}
        for a in self.live.values():
            if a.small:
                pages[a.usable].add(a.offset // self.page_size)
        return pages

    def block_pages(self) -> int:
        """Pages held by live page blocks."""
        return sum(a.usable // self.page_size for a in self.live.values() if not a.small)
