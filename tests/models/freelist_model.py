"""A pure-Python reference model of the BPF per-CPU freelist, v5.10-v6.14.

``kernel/bpf/percpu_freelist.c`` as ``csrc/freelist.c`` implements it (see
``/work/shared/reference/freelist_memalloc.md`` §1), single-threaded:

* one LIFO list per possible CPU, plus the extra list;
* ``populate(buf, elem_size, n)``: the even split of 4b45cd81f737 -- with P
  possible CPUs, the first ``n % P`` of them *by position in the possible
  mask* get ``n // P + 1`` elements, the others ``n // P``; each CPU gets a
  contiguous run pushed in address order (so its pops come out descending);
* ``push(cpu, node)``: to ``cpu``'s list;
* ``pop(cpu)``: ``cpu``'s list, then the following possible CPUs in wrap order
  (``for_each_cpu_wrap``), then the extra list; ``None`` when all are empty;
* ``pop_bulk(cpu, k)`` is ``k`` pops, ``push_bulk(cpu, nodes)`` is one push
  per node, in order.

NMI context: with no contention every trylock succeeds, so an NMI push or pop
is the same as a normal one.  For contention that the test itself creates (it
holds some head locks and then calls in NMI context from the same thread),
``locked`` names the lists whose lock is held: an NMI push goes to the first
unlocked CPU in wrap order from ``cpu``, else to the extra list (it would spin
forever if that is locked too -- the model refuses that case); an NMI pop
skips locked lists, including the extra list, and may return ``None`` while
nodes exist.  Outside NMI a locked list would be waited for, which a single
thread cannot model (it would deadlock), so ``locked`` is NMI-only.

The model also tracks the element area fixed by the first populate and, in
robust mode, which nodes are free, so that it can say which pushes the C core
must refuse (``push_error``).

Used by tests/property/test_freelist_model.py.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Sequence

#: The key of the extra list in ``per_cpu()`` (as ``PcpuFreelist.per_cpu()``).
EXTRA = "extra"


class ModelError(AssertionError):
    """An operation the model cannot perform (a test bug, not a C bug)."""


def populate_split(nr_elems: int, nr_possible: int) -> list[int]:
    """Elements per possible CPU (by position) after ``populate`` (4b45cd81f737)."""
    if nr_possible <= 0 or nr_elems < 0:
        raise ModelError(f"populate_split({nr_elems}, {nr_possible})")
    per, rem = divmod(nr_elems, nr_possible)
    return [per + (1 if i < rem else 0) for i in range(nr_possible)]


class FreelistModel:
    """The lists of one ``struct pcpu_freelist``; each list's top is its last item."""

    def __init__(self, possible: Sequence[int], *, robust: bool = False) -> None:
        possible = tuple(possible)
        if not possible or list(possible) != sorted(set(possible)) or possible[0] < 0:
            raise ModelError(f"possible CPUs must be sorted, unique and >= 0: {possible!r}")
        self.possible = possible
        self.robust = robust
        self.lists: dict[int, list[int]] = {c: [] for c in possible}
        self.extra: list[int] = []
        # The element area, fixed by the first populate.
        self.area_base = 0
        self.elem_size = 0
        self.nr_elems = 0

    # ---- the element area -------------------------------------------------------------

    def in_area(self, node: int) -> bool:
        """``node`` is an element of the area (``pk_fl_check_node`` once the area is set)."""
        return (
            self.elem_size > 0
            and self.area_base <= node < self.area_base + self.nr_elems * self.elem_size
            and (node - self.area_base) % self.elem_size == 0
        )

    def elements(self) -> list[int]:
        return [self.area_base + i * self.elem_size for i in range(self.nr_elems)]

    def free_nodes(self) -> set[int]:
        out: set[int] = set(self.extra)
        for lst in self.lists.values():
            out.update(lst)
        return out

    def push_error(self, node: int) -> int | None:
        """The errno the C core's push returns for ``node`` (as the Python API raises it), or None.

        ``EINVAL`` for a node outside the area or misaligned; in robust mode also
        ``EINVAL`` (the C ``-EEXIST``, reported as ``EINVAL``) for a node that is free.
        """
        if not self.in_area(node):
            return errno.EINVAL
        if self.robust and node in self.free_nodes():
            return errno.EINVAL
        return None

    # ---- the kernel's operations ----------------------------------------------------

    def wrap_order(self, cpu: int) -> list[int]:
        """``for_each_cpu_wrap(c, cpu_possible_mask, cpu)``: cpu, the following ones, then wrap."""
        if cpu not in self.lists:
            raise ModelError(f"CPU {cpu} is not possible")
        i = self.possible.index(cpu)
        return list(self.possible[i:] + self.possible[:i])

    def populate(self, buf: int, elem_size: int, nr_elems: int) -> None:
        """``pcpu_freelist_populate``: the even split, contiguous runs in address order."""
        if self.elem_size == 0:
            self.area_base, self.elem_size, self.nr_elems = buf, elem_size, nr_elems
        node = buf
        for cpu, cnt in zip(self.possible, populate_split(nr_elems, len(self.possible))):
            for _ in range(cnt):
                self.lists[cpu].append(node)
                node += elem_size

    def _check_push(self, node: int) -> None:
        err = self.push_error(node)
        if err is not None:
            raise ModelError(f"push of {node:#x} must be refused (errno {err})")

    def push(self, cpu: int, node: int, *, nmi: bool = False, locked: Iterable[int | str] = ()) -> None:
        """``__pcpu_freelist_push``; ``locked`` (NMI only) as in the module docstring."""
        self._check_push(node)
        locked = set(locked)
        if not nmi:
            if locked:
                raise ModelError("a non-NMI push with a head lock held would deadlock")
            self.lists[cpu].append(node)
            return
        for c in self.wrap_order(cpu):
            if c not in locked:
                self.lists[c].append(node)
                return
        if EXTRA in locked:
            raise ModelError("an NMI push with every list locked spins forever")
        self.extra.append(node)

    def pop(self, cpu: int, *, nmi: bool = False, locked: Iterable[int | str] = ()) -> int | None:
        """``__pcpu_freelist_pop``: the node it returns, or None."""
        locked = set(locked)
        if locked and not nmi:
            raise ModelError("a non-NMI pop with a head lock held could deadlock")
        for c in self.wrap_order(cpu):
            if self.lists[c] and c not in locked:
                return self.lists[c].pop()
        if self.extra and EXTRA not in locked:
            return self.extra.pop()
        return None

    def pop_bulk(self, cpu: int, k: int, *, nmi: bool = False, locked: Iterable[int | str] = ()) -> list[int]:
        """``k`` pops; stops at the first None."""
        locked = set(locked)
        out: list[int] = []
        for _ in range(k):
            node = self.pop(cpu, nmi=nmi, locked=locked)
            if node is None:
                break
            out.append(node)
        return out

    def push_bulk(
        self, cpu: int, nodes: Sequence[int], *, nmi: bool = False, locked: Iterable[int | str] = ()
    ) -> None:
        """One push per node, in order (the batch is refused as a whole if any node is bad)."""
        for i, node in enumerate(nodes):
            self._check_push(node)
            if node in nodes[:i]:
                raise ModelError(f"node {node:#x} twice in one batch")
        locked = set(locked)
        for node in nodes:
            self.push(cpu, node, nmi=nmi, locked=locked)

    # ---- what the tests compare ---------------------------------------------------------

    def total(self) -> int:
        return len(self.extra) + sum(len(v) for v in self.lists.values())

    def per_cpu(self) -> dict[int | str, int]:
        """Counts as ``PcpuFreelist.per_cpu()`` reports them."""
        out: dict[int | str, int] = {c: len(v) for c, v in self.lists.items()}
        out[EXTRA] = len(self.extra)
        return out
