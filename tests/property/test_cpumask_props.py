"""Hypothesis laws of percpu.Cpumask against a plain ``set[int]`` model.

Round trips through both string formats, the set-algebra laws within
``nr_cpu_ids``, subset consistency, searches, iteration and the byte layout,
for the widths where word and chunk boundaries fall (1, 31-33, 63-65, 255,
256, 4096, 8192); and both parsers against a second, pointer-by-pointer port
of ``lib/bitmap-str.c`` (``_lit_parselist``, ``_lit_parse`` below, written
apart from the module's port) on random text over the grammar's alphabet.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from percpu.cpumask import Cpumask
from percpu.errors import PercpuError
from percpu.runtime.topology import format_cpulist

WIDTHS = [1, 2, 31, 32, 33, 63, 64, 65, 255, 256, 4096, 8192]


@st.composite
def bitmaps(draw: st.DrawFn, nr: int) -> int:
    """Dense random bits, a few CPUs, or a few runs (the shapes lists and masks take)."""
    kind = draw(st.sampled_from(["dense", "sparse", "runs", "edges"]))
    if kind == "dense":
        return draw(st.integers(0, (1 << nr) - 1))
    if kind == "sparse":
        return sum({1 << c for c in draw(st.lists(st.integers(0, nr - 1), max_size=12))})
    if kind == "runs":
        bits = 0
        for a, n in draw(st.lists(st.tuples(st.integers(0, nr - 1), st.integers(1, 300)), max_size=6)):
            bits |= ((1 << n) - 1) << a
        return bits & ((1 << nr) - 1)
    edges = {0, nr - 1, 31, 32, 63, 64} & set(range(nr))
    return sum(1 << c for c in draw(st.sets(st.sampled_from(sorted(edges)))))


@st.composite
def masks(draw: st.DrawFn, count: int = 1) -> tuple[Cpumask, ...]:
    nr = draw(st.sampled_from(WIDTHS))
    return tuple(Cpumask.from_bits(draw(bitmaps(nr)), nr) for _ in range(count))


def model(m: Cpumask) -> set[int]:
    return {c for c in range(m.bits.bit_length()) if m.bits >> c & 1}


@given(masks())
def test_format_round_trips(ms: tuple[Cpumask, ...]) -> None:
    (m,) = ms
    nr = m.nr_cpu_ids
    assert Cpumask.parse_list(m.format_list(), nr) == m
    assert Cpumask.parse_mask(m.format_mask(), nr) == m
    assert Cpumask.parse_mask("0x" + m.format_mask(), nr) == m
    assert Cpumask(repr(m).split("'")[1], nr) == m
    assert m.format_list() == format_cpulist(model(m))  # an independent %*pbl
    assert m.format_mask().count(",") == -(-nr // 32) - 1
    assert Cpumask.from_bytes(m.to_bytes(), nr) == m
    assert len(m.to_bytes()) == -(-nr // 64) * 8


@given(masks(), st.lists(st.sampled_from([",", " ", "\t", ", ,"]), min_size=1, max_size=4))
def test_parse_mask_skips_empty_groups(ms: tuple[Cpumask, ...], seps: list[str]) -> None:
    (m,) = ms
    groups = m.format_mask().split(",")
    noisy = seps[0] + (",".join(g + seps[i % len(seps)] for i, g in enumerate(groups))) + "\n,ff"
    assert Cpumask.parse_mask(noisy, m.nr_cpu_ids) == m
    # the shortest groups mean the same: leading zeros are not significant within a group
    stripped = ",".join(g.lstrip("0") or "0" for g in groups)
    assert Cpumask.parse_mask(stripped, m.nr_cpu_ids) == m


@given(masks(3))
def test_algebra_laws(ms: tuple[Cpumask, ...]) -> None:
    a, b, c = ms
    full = Cpumask.full(a.nr_cpu_ids)
    assert ~(a | b) == ~a & ~b
    assert ~(a & b) == ~a | ~b
    assert a & (b | c) == (a & b) | (a & c)
    assert a | (b & c) == (a | b) & (a | c)
    assert a - b == a & ~b
    assert a ^ b == (a - b) | (b - a)
    assert ~~a == a and a | ~a == full and not (a & ~a)
    assert (~a).bits >> a.nr_cpu_ids == 0  # the tail stays zero
    sa, sb = model(a), model(b)
    assert model(a | b) == sa | sb and model(a & b) == sa & sb
    assert model(a ^ b) == sa ^ sb and model(a - b) == sa - sb
    assert model(~a) == set(range(a.nr_cpu_ids)) - sa


@given(masks(2))
def test_subset_consistency(ms: tuple[Cpumask, ...]) -> None:
    a, b = ms
    sa, sb = model(a), model(b)
    assert (a <= b) == (a & b == a) == (a | b == b) == (sa <= sb)
    assert (a < b) == (a <= b and a != b) == (sa < sb)
    assert (a >= b) == (b <= a) and (a > b) == (b < a)
    assert a & b <= a <= a | b
    assert a.intersects(b) == bool(sa & sb)
    assert (a == b) == (sa == sb) and (hash(a) == hash(b) or a != b)


@given(masks(2), st.integers(-3, 8200))
def test_counts_iteration_and_searches(ms: tuple[Cpumask, ...], cpu: int) -> None:
    a, b = ms
    nr = a.nr_cpu_ids
    s = model(a)
    assert len(a) == a.weight() == bin(a.bits).count("1") == len(s)
    cpus = list(a)
    assert cpus == sorted(s)
    assert [c for c in range(nr) if c in a] == cpus
    assert a.first() == min(s, default=nr)
    assert a.next(cpu) == min((c for c in s if c > cpu), default=nr)
    assert a.first_zero() == min(set(range(nr)) - s, default=nr)
    assert a.first_and(b) == min(s & model(b), default=nr)


# ---- a literal port of lib/bitmap-str.c, C pointer by C pointer ---------------------------

_UINT_MAX = 0xFFFFFFFF


class _Err(Exception):
    pass


def _sep(c: str) -> bool:  # __end_of_region()
    return c in " \t\n\v\f\r,"


def _lit_parselist(buf: str, nbits: int) -> int:
    s = buf + "\0"
    mask = 0
    lastbit = (nbits - 1) & _UINT_MAX

    def end_of_str(c: str) -> bool:
        return c in "\0\n"

    def getnum(p: int) -> tuple[int, int]:
        if s[p] == "N":
            return p + 1, lastbit
        q, n = p, 0
        while s[q] in "0123456789":
            n, q = n * 10 + int(s[q]), q + 1
        if q == p:
            raise _Err(errno.EINVAL)
        if n > _UINT_MAX:
            raise _Err(errno.EOVERFLOW)
        return q, n

    p = 0
    while True:
        while _sep(s[p]):
            p += 1
        if end_of_str(s[p]):
            return mask
        nxt: int | None = None
        if s[p : p + 3].lower() == "all" and s[p : p + 3].isascii():
            start, end, p = 0, lastbit, p + 3
            label = "check_pattern"
        else:
            p, start = getnum(p)
            if _sep(s[p]) or end_of_str(s[p]):
                label = "no_end"
            elif s[p] != "-":
                raise _Err(errno.EINVAL)
            else:
                p, end = getnum(p + 1)
                label = "check_pattern"
        if label == "check_pattern":
            if _sep(s[p]) or end_of_str(s[p]):
                label = "no_pattern"
            else:
                if s[p] != ":":
                    raise _Err(errno.EINVAL)
                p, off = getnum(p + 1)
                if s[p] != "/":
                    raise _Err(errno.EINVAL)
                p, group = getnum(p + 1)
                nxt = p
        if label == "no_end":
            end, label = start, "no_pattern"
        if label == "no_pattern":
            off = group = (end + 1) & _UINT_MAX
            nxt = None if end_of_str(s[p]) else p
        if start > end or group == 0 or off > group:
            raise _Err(errno.EINVAL)
        if end >= nbits:
            raise _Err(errno.ERANGE)
        at = start
        while at <= end:
            for bit in range(at, at + min(end - at + 1, off)):
                mask |= 1 << bit
            at += group
        if nxt is None:
            return mask
        p = nxt


def _lit_parse(buf: str, nbits: int) -> int:
    s = buf + "\0"
    end = 0
    while s[end] not in "\0\n":
        end += 1
    end -= 1
    chunks = total = (nbits + 31) // 32
    mask = chunk = 0

    def hex_to_bin(c: str) -> int:
        return int(c, 16) if c in "0123456789abcdefABCDEF" else -1

    while True:
        while end >= 0 and _sep(s[end]):
            end -= 1
        if end < 0:
            break
        if chunks == 0:
            raise _Err(errno.EOVERFLOW)
        chunks -= 1
        value, out = 0, False
        for i in range(0, 32, 4):
            c = hex_to_bin(s[end])
            end -= 1
            if c < 0:
                raise _Err(errno.EINVAL)
            value |= c << i
            if end < 0 or _sep(s[end]):
                out = True
                break
        if not out:
            end -= 1
            if hex_to_bin(s[end + 1]) >= 0:
                raise _Err(errno.EOVERFLOW)
        mask |= value << (32 * chunk)
        chunk += 1
    if (total - chunks) * 32 < nbits:
        return mask
    if mask >> nbits:
        raise _Err(errno.EOVERFLOW)
    return mask


def _outcome(f: Callable[[], int]) -> tuple[str, int]:
    try:
        return ("ok", f())
    except PercpuError as e:
        assert e.errno is not None
        return ("err", e.errno)
    except _Err as e:
        return ("err", e.args[0])


LIST_TOKENS = [*"0123456789,- :/N\n\t\0x", "all", "ALL", "31", "32", "63", "4294967295", "4294967296", "00"]
MASK_TOKENS = [*"0123456789abcdefABCDEF, \n\tx\0", "ffffffff", "123456789", "0x"]
NBITS = st.sampled_from([1, 2, 8, 31, 32, 33, 63, 64, 65, 100])
_PREFIX = re.compile(r"[ \t\n\v\f\r]*0[xX][0-9a-fA-F]")


@given(st.lists(st.sampled_from(LIST_TOKENS), max_size=12).map("".join), NBITS)
def test_parse_list_matches_the_literal_port(text: str, nbits: int) -> None:
    assert _outcome(lambda: Cpumask.parse_list(text, nbits).bits) == _outcome(lambda: _lit_parselist(text, nbits))


@given(st.lists(st.sampled_from(MASK_TOKENS), max_size=12).map("".join), NBITS)
def test_parse_mask_matches_the_literal_port(text: str, nbits: int) -> None:
    ours = _outcome(lambda: Cpumask.parse_mask(text, nbits).bits)
    if _PREFIX.match(text.split("\0")[0].split("\n")[0]):  # our 0x extension
        assert ours == _outcome(lambda: _lit_parse(_PREFIX.sub(lambda m: m.group()[-1], text, count=1), nbits))
    else:
        assert ours == _outcome(lambda: _lit_parse(text, nbits))
