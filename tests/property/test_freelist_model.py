"""The per-CPU freelist against the pure-Python model (tests/models/freelist_model.py).

A hypothesis state machine populates a ``PcpuFreelist`` in a domain of its own
(1, 3, 4, 7 or 64 simulated CPUs, robust or not), then pushes, pops and
bulk-pushes/pops on random CPUs, in and out of NMI context, sometimes while
holding some head locks itself (NMI paths under contention), and pushes bad
nodes that must be refused without changing anything.  Every pop must return
exactly the node the model predicts; after every step the C core's walk
(``check()``) and its per-list counters must match the model.

Plain ``@given`` tests check the populate split for many (nr_elems, nr_cpus).
"""

from __future__ import annotations

import contextlib
import errno
from array import array
from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from models.freelist_model import EXTRA, FreelistModel, populate_split

import percpu
from percpu import _core
from percpu.errors import InvalidArgument
from percpu.freelist import PcpuFreelist

CPU_COUNTS = (1, 3, 4, 7, 64)
ELEM_SIZES = (8, 16, 24, 64)
#: Sentinel for the unused tail of a pop_bulk buffer.
UNTOUCHED = 0xDEAD_BEEF_DEAD_BEEF
CACHELINE = 64


def _stamp(node: int, elem_size: int) -> bytes:
    word = (node ^ 0x5A5A_5A5A_5A5A_5A5A).to_bytes(8, "little")
    return word * (elem_size // 8)


def _lock_offset(fl: PcpuFreelist, which: int | str) -> int:
    """The head lock of a list (csrc/freelist.h: header line, extra list, then one line per CPU)."""
    line = 1 if which == EXTRA else 2 + int(which)
    return fl.offset + CACHELINE * line


class FreelistMachine(RuleBasedStateMachine):
    """One domain per run (made by the first initialize rule); the test holds the popped nodes."""

    dom: percpu.Domain
    fl: PcpuFreelist
    model: FreelistModel

    def teardown(self) -> None:
        dom = getattr(self, "dom", None)
        if dom is not None:
            dom.__exit__(None, None, None)
            dom.close()
            dom.unlink()

    # ---- set-up ---------------------------------------------------------------------

    @initialize(
        nr_cpus=st.sampled_from(CPU_COUNTS),
        robust=st.booleans(),
        nr_elems=st.integers(1, 150),
        elem_size=st.sampled_from(ELEM_SIZES),
    )
    def setup(self, nr_cpus: int, robust: bool, nr_elems: int, elem_size: int) -> None:
        # The domain needs the CPU count, which __init__ cannot draw: this rule runs first.
        self.dom = percpu.Domain.create(size=1 << 20, nr_cpus=nr_cpus)
        self.dom.__enter__()
        self.cpus = tuple(self.dom.possible)
        self.fl = PcpuFreelist.create(robust=robust)
        buf = self.dom.kzalloc(elem_size * nr_elems)
        assert buf is not None
        self.fl.populate(buf, elem_size, nr_elems)
        self.model = FreelistModel(self.cpus, robust=robust)
        self.model.populate(buf, elem_size, nr_elems)
        self.elem_size = elem_size
        self.held: list[int] = []  # popped nodes, in pop order

    # ---- helpers --------------------------------------------------------------------

    def _took(self, nodes: list[int]) -> None:
        for n in nodes:
            assert n not in self.held, f"node {n:#x} handed out twice"
            self.dom.mem(n, self.elem_size)[:] = _stamp(n, self.elem_size)
            self.held.append(n)

    def _give_back(self, nodes: list[int]) -> None:
        for n in nodes:
            # The freelist must not have written to an element the test held.
            assert bytes(self.dom.mem(n, self.elem_size)) == _stamp(n, self.elem_size), f"{n:#x}"
            self.held.remove(n)

    def _snapshot(self) -> tuple[dict[int | str, int], int]:
        return self.fl.per_cpu(), self.fl.check()

    def _call(self, fn, cpu: int, nmi: bool):  # type: ignore[no-untyped-def]
        with percpu.on_cpu(cpu):
            if nmi:
                with percpu.nmi():
                    return fn()
            return fn()

    # ---- rules ----------------------------------------------------------------------

    @precondition(lambda self: bool(getattr(self, "held", None)))
    @rule(data=st.data(), nmi=st.booleans())
    def push(self, data: st.DataObject, nmi: bool) -> None:
        node = data.draw(st.sampled_from(self.held), label="node")
        cpu = data.draw(st.sampled_from(self.cpus), label="cpu")
        self._give_back([node])
        self._call(lambda: self.fl.push(node), cpu, nmi)
        self.model.push(cpu, node, nmi=nmi)

    @precondition(lambda self: hasattr(self, "model"))
    @rule(data=st.data(), nmi=st.booleans())
    def pop(self, data: st.DataObject, nmi: bool) -> None:
        cpu = data.draw(st.sampled_from(self.cpus), label="cpu")
        got = self._call(self.fl.pop, cpu, nmi)
        want = self.model.pop(cpu, nmi=nmi)
        assert got == want, f"pop on CPU {cpu} (nmi={nmi}): {got!r}, model {want!r}"
        if got is not None:
            self._took([got])

    @precondition(lambda self: bool(getattr(self, "held", None)))
    @rule(data=st.data(), nmi=st.booleans(), as_array=st.booleans())
    def push_bulk(self, data: st.DataObject, nmi: bool, as_array: bool) -> None:
        nodes = data.draw(st.lists(st.sampled_from(self.held), unique=True, max_size=20), label="nodes")
        cpu = data.draw(st.sampled_from(self.cpus), label="cpu")
        self._give_back(nodes)
        arg = array("Q", nodes) if as_array else list(nodes)
        self._call(lambda: self.fl.push_bulk(arg), cpu, nmi)
        self.model.push_bulk(cpu, nodes, nmi=nmi)

    @precondition(lambda self: hasattr(self, "model"))
    @rule(data=st.data(), k=st.integers(0, 40), nmi=st.booleans(), as_array=st.booleans())
    def pop_bulk(self, data: st.DataObject, k: int, nmi: bool, as_array: bool) -> None:
        cpu = data.draw(st.sampled_from(self.cpus), label="cpu")
        if as_array:
            out = array("Q", [UNTOUCHED] * k)
            n = self._call(lambda: self.fl.pop_bulk(out), cpu, nmi)
            got = list(out[:n])
            assert list(out[n:]) == [UNTOUCHED] * (k - n), "pop_bulk wrote past the nodes it returned"
        else:
            got = self._call(lambda: self.fl.pop_bulk(k), cpu, nmi)
        want = self.model.pop_bulk(cpu, k, nmi=nmi)
        assert got == want, f"pop_bulk({k}) on CPU {cpu} (nmi={nmi}): {got!r}, model {want!r}"
        self._took(got)

    @precondition(lambda self: hasattr(self, "model"))
    @rule(
        data=st.data(),
        kind=st.sampled_from(["outside", "misaligned", "zero", "double"]),
        bulk=st.booleans(),
        nmi=st.booleans(),
    )
    def bad_push(self, data: st.DataObject, kind: str, bulk: bool, nmi: bool) -> None:
        m = self.model
        end = m.area_base + m.nr_elems * m.elem_size
        if kind == "double":
            free = sorted(m.free_nodes())
            if not m.robust or not free:
                kind = "misaligned"  # only robust mode can tell a double push
            else:
                bad = data.draw(st.sampled_from(free), label="free node")
        if kind == "outside":
            bad = data.draw(
                st.sampled_from([end, end + m.elem_size, m.area_base - m.elem_size, self.dom.size + 8]),
                label="outside",
            )
        elif kind == "misaligned":
            elem = data.draw(st.sampled_from(m.elements()), label="elem")
            bad = elem + data.draw(st.sampled_from([1, 4, 8]), label="delta")
            if self.elem_size == 8 and bad % 8 == 0:
                bad = elem + 4  # with 8-byte elements elem + 8 is the next element
        elif kind == "zero":
            bad = 0
        assert m.push_error(bad) == errno.EINVAL
        cpu = data.draw(st.sampled_from(self.cpus), label="cpu")
        good: list[int] = []
        if bulk and self.held:
            good = data.draw(st.lists(st.sampled_from(self.held), unique=True, max_size=4), label="good")
        # The bad node anywhere in the batch: a refused batch pushes nothing, NMI or not.
        pos = data.draw(st.integers(0, len(good)), label="pos") if bulk else 0
        batch = good[:pos] + [bad] + good[pos:]
        before = self._snapshot()
        with pytest.raises(InvalidArgument) as ei:
            if bulk:
                self._call(lambda: self.fl.push_bulk(batch), cpu, nmi)
            else:
                self._call(lambda: self.fl.push(bad), cpu, nmi)
        assert ei.value.errno == errno.EINVAL
        assert self._snapshot() == before, f"refused push {batch!r} (nmi={nmi}) changed the lists"

    @precondition(lambda self: hasattr(self, "model") and len(self.cpus) > 1)
    @rule(data=st.data(), op=st.sampled_from(["push", "pop", "pop_bulk", "push_bulk"]))
    def nmi_with_held_locks(self, data: st.DataObject, op: str) -> None:
        """Hold some head locks (as the interrupted code would), then run an NMI operation."""
        lists: list[int | str] = [*self.cpus, EXTRA]
        locked = data.draw(st.lists(st.sampled_from(lists), unique=True, min_size=1), label="locked")
        if set(self.cpus) <= set(locked) and EXTRA in locked:
            locked.remove(EXTRA)  # an NMI push with every list locked would spin forever
        cpu = data.draw(st.sampled_from(self.cpus), label="cpu")
        if op in ("push", "push_bulk") and not self.held:
            op = "pop"
        if op == "push":
            nodes = [data.draw(st.sampled_from(self.held), label="node")]
        elif op == "push_bulk":
            nodes = data.draw(st.lists(st.sampled_from(self.held), unique=True, max_size=8), label="nodes")
        k = data.draw(st.integers(0, 10), label="k") if op == "pop_bulk" else 0
        held_locks = [_core.Lock(self.dom.arena, _lock_offset(self.fl, w)) for w in locked]
        for lk in held_locks:
            lk.lock()
        try:
            with percpu.on_cpu(cpu), percpu.nmi():
                if op == "push":
                    self._give_back(nodes)
                    self.fl.push(nodes[0])
                    self.model.push(cpu, nodes[0], nmi=True, locked=locked)
                elif op == "push_bulk":
                    self._give_back(nodes)
                    self.fl.push_bulk(nodes)
                    self.model.push_bulk(cpu, nodes, nmi=True, locked=locked)
                elif op == "pop":
                    got = self.fl.pop()
                    want = self.model.pop(cpu, nmi=True, locked=locked)
                    assert got == want, f"NMI pop on CPU {cpu}, {locked} locked: {got!r}, model {want!r}"
                    if got is not None:
                        self._took([got])
                else:
                    got_list = self.fl.pop_bulk(k)
                    want_list = self.model.pop_bulk(cpu, k, nmi=True, locked=locked)
                    assert got_list == want_list, f"NMI pop_bulk({k}) on CPU {cpu}, {locked} locked"
                    self._took(got_list)
        finally:
            for lk in reversed(held_locks):
                lk.unlock()

    # ---- invariants -----------------------------------------------------------------

    @invariant()
    def walk_matches_model(self) -> None:
        if hasattr(self, "model"):
            assert self.fl.check() == self.model.total()

    @invariant()
    def counters_match_model(self) -> None:
        if hasattr(self, "model"):
            assert self.fl.per_cpu() == self.model.per_cpu()

    @invariant()
    def every_element_free_or_held(self) -> None:
        if hasattr(self, "model"):
            free = self.model.free_nodes()
            assert not free & set(self.held)
            assert len(free) + len(self.held) == self.model.nr_elems


FreelistMachine.TestCase.settings = settings(FreelistMachine.TestCase.settings, stateful_step_count=60)
TestFreelistMachine = FreelistMachine.TestCase


@pytest.mark.parametrize("robust", [False, True])
@pytest.mark.parametrize("nmi", [False, True])
def test_refused_push_bulk_changes_nothing(
    make_domain: Callable[..., percpu.Domain], robust: bool, nmi: bool
) -> None:
    """A push_bulk that raises EINVAL must push nothing, in NMI context as outside it."""
    dom = make_domain(size=1 << 20, nr_cpus=4)
    fl = PcpuFreelist.create(robust=robust)
    buf = dom.kzalloc(64 * 8)
    assert buf is not None
    fl.populate(buf, 64, 8)
    with percpu.on_cpu(0):
        a, b = fl.pop(), fl.pop()
    assert a is not None and b is not None
    bad_batches = [[a, b, buf + 3], [a, b, buf + 64 * 8], [a, b, 0]]
    if robust:
        bad_batches.append([a, a])  # a double push inside the batch
    for batch in bad_batches:
        before = fl.per_cpu(), fl.check()
        ctx = percpu.nmi() if nmi else contextlib.nullcontext()
        with percpu.on_cpu(0), ctx, pytest.raises(InvalidArgument) as ei:
            fl.push_bulk(batch)
        assert ei.value.errno == errno.EINVAL
        assert (fl.per_cpu(), fl.check()) == before, f"refused batch {batch} (nmi={nmi}) pushed nodes"


# ---- populate alone ---------------------------------------------------------------------


def _check_populate(nr_elems: int, nr_cpus: int, elem_size: int) -> list[int]:
    dom = percpu.Domain.create(size=1 << 20, nr_cpus=nr_cpus)
    try:
        with dom:
            fl = PcpuFreelist.create()
            buf = dom.kzalloc(elem_size * nr_elems)
            assert buf is not None
            fl.populate(buf, elem_size, nr_elems)
            model = FreelistModel(dom.possible)
            model.populate(buf, elem_size, nr_elems)
            assert fl.per_cpu() == model.per_cpu()
            assert fl.check() == nr_elems
            counts = [fl.per_cpu()[c] for c in dom.possible]
            # Popping exactly its count on each CPU takes that CPU's own list: a
            # contiguous run, descending; the runs follow one another in CPU order.
            start = buf
            for cpu, n in zip(dom.possible, counts):
                with percpu.on_cpu(cpu):
                    got = fl.pop_bulk(n)
                assert got == model.pop_bulk(cpu, n)
                assert got == [start + elem_size * i for i in range(n - 1, -1, -1)], cpu
                start += elem_size * n
            assert fl.check() == 0 and model.total() == 0
            return counts
    finally:
        dom.close()
        dom.unlink()


@given(
    nr_elems=st.integers(1, 600),
    nr_cpus=st.one_of(st.sampled_from([1, 2, 3, 4, 7, 8, 32, 64]), st.integers(1, 128)),
    elem_size=st.sampled_from(ELEM_SIZES),
)
@example(nr_elems=256, nr_cpus=32, elem_size=32)
@example(nr_elems=10, nr_cpus=4, elem_size=32)
@example(nr_elems=3, nr_cpus=4, elem_size=32)
@example(nr_elems=7, nr_cpus=3, elem_size=32)
def test_populate_split_matches_the_model(nr_elems: int, nr_cpus: int, elem_size: int) -> None:
    counts = _check_populate(nr_elems, nr_cpus, elem_size)
    assert counts == populate_split(nr_elems, nr_cpus)
    assert max(counts) - min(counts) <= 1 and counts == sorted(counts, reverse=True)


@pytest.mark.parametrize(
    "nr_elems, nr_cpus, split",
    [
        (256, 32, [8] * 32),  # 4b45cd81f737's example (the old split gave 9 x 28, 4, 0, 0, 0)
        (10, 4, [3, 3, 2, 2]),
        (3, 4, [1, 1, 1, 0]),
        (7, 3, [3, 2, 2]),
    ],
)
def test_populate_split_examples(nr_elems: int, nr_cpus: int, split: list[int]) -> None:
    assert populate_split(nr_elems, nr_cpus) == split
    assert _check_populate(nr_elems, nr_cpus, 32) == split


@given(nr_elems=st.integers(0, 10_000), nr_possible=st.integers(1, 512))
def test_model_split_is_even(nr_elems: int, nr_possible: int) -> None:
    split = populate_split(nr_elems, nr_possible)
    assert len(split) == nr_possible and sum(split) == nr_elems
    assert split == sorted(split, reverse=True) and max(split) - min(split) <= 1


def test_model_sparse_possible_mask() -> None:
    """The model counts CPUs by position in the possible mask, not by id (the C core does too)."""
    m = FreelistModel((0, 2, 5))
    m.populate(64, 8, 7)
    assert m.per_cpu() == {0: 3, 2: 2, 5: 2, EXTRA: 0}
    assert m.wrap_order(5) == [5, 0, 2]
    assert m.pop_bulk(2, 7) == [96, 88, 112, 104, 80, 72, 64]
    assert m.pop(0) is None
