"""Tests for percpu.cpumask: the kernel's vectors, its error order and quirks, algebra, affinity.

The tables ``PARSELIST_TESTS``, ``PARSE_TESTS`` and ``PRINT_TESTS`` are taken
from ``lib/test_bitmap.c`` (torvalds/linux at ``f5675ed7``: ``parselist_tests``,
``parse_tests``, ``test_print``, ``test_zero_clear``/``test_fill_set``/
``test_copy``) and ``lib/tests/printf_kunit.c`` (``bitmap``, ``large_bitmap``),
every entry, with the expected bitmaps written out from their
``BITMAP_FROM_U64`` constants; the kernel compares only the low ``nbits``
bits, and so do we.  The ``*_DERIVED`` tables are not in the kernel's tests:
they follow from reading ``lib/bitmap-str.c`` line by line (see
``/work/shared/reference/cpumask.md`` section 5) and pin the error order and
the quirks.  The leading ``0x`` of ``parse_mask`` is our deliberate extension
beyond ``bitmap_parse`` (which says EINVAL); its tests say so.
"""

from __future__ import annotations

import errno
import os
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import percpu.cpumask as cm
from percpu.cpumask import Cpumask, bitmap_size
from percpu.errors import InvalidArgument, NoDevice, Overflow, PercpuError, RangeError
from percpu.runtime.topology import parse_cpulist

EINVAL, ERANGE, EOVERFLOW = errno.EINVAL, errno.ERANGE, errno.EOVERFLOW

# lib/test_bitmap.c: exp1[] and exp2[]
EXP1 = [
    0x1,
    0x2,
    0x0000FFFF,
    0xFFFF0000,
    0x55555555,
    0xAAAAAAAA,
    0x11111111,
    0x22222222,
    0xFFFFFFFF,
    0xFFFFFFFE,
    0x3333333311111111,
    0xFFFFFFFF77777777,
    0,
    0x00008000,
    0x80000000,
]
EXP2 = 0xFFFFFFFF77777777 << 64 | 0x3333333311111111
# "0-2047:128/256" (PARSE_TIME, no expected bitmap in the kernel): the first 128 of every 256 bits
HALVES_2048 = sum(((1 << 128) - 1) << (256 * k) for k in range(8))

# (errno, text, expected bits or None, nbits): parselist_tests[], in the kernel's order
PARSELIST_TESTS = [
    (0, "0", EXP1[0], 8),
    (0, "1", EXP1[1], 8),
    (0, "0-15", EXP1[2], 32),
    (0, "16-31", EXP1[3], 32),
    (0, "0-31:1/2", EXP1[4], 32),
    (0, "1-31:1/2", EXP1[5], 32),
    (0, "0-31:1/4", EXP1[6], 32),
    (0, "1-31:1/4", EXP1[7], 32),
    (0, "0-31:4/4", EXP1[8], 32),
    (0, "1-31:4/4", EXP1[9], 32),
    (0, "0-31:1/4,32-63:2/4", EXP1[10], 64),
    (0, "0-31:3/4,32-63:4/4", EXP1[11], 64),
    (0, "  ,,  0-31:3/4  ,, 32-63:4/4  ,,  ", EXP1[11], 64),
    (0, "0-31:1/4,32-63:2/4,64-95:3/4,96-127:4/4", EXP2, 128),
    (0, "0-2047:128/256", HALVES_2048, 2048),
    (0, "", EXP1[12], 8),
    (0, "\n", EXP1[12], 8),
    (0, ",,  ,,  , ,  ,", EXP1[12], 8),
    (0, " ,  ,,  , ,   ", EXP1[12], 8),
    (0, " ,  ,,  , ,   \n", EXP1[12], 8),
    (0, "0-0", EXP1[0], 32),
    (0, "1-1", EXP1[1], 32),
    (0, "15-15", EXP1[13], 32),
    (0, "31-31", EXP1[14], 32),
    (0, "0-0:0/1", EXP1[12], 32),
    (0, "0-0:1/1", EXP1[0], 32),
    (0, "0-0:1/31", EXP1[0], 32),
    (0, "0-0:31/31", EXP1[0], 32),
    (0, "1-1:1/1", EXP1[1], 32),
    (0, "0-15:16/31", EXP1[2], 32),
    (0, "15-15:1/2", EXP1[13], 32),
    (0, "15-15:31/31", EXP1[13], 32),
    (0, "15-31:1/31", EXP1[13], 32),
    (0, "16-31:16/31", EXP1[3], 32),
    (0, "31-31:31/31", EXP1[14], 32),
    (0, "N-N", EXP1[14], 32),
    (0, "0-0:1/N", EXP1[0], 32),
    (0, "0-0:N/N", EXP1[0], 32),
    (0, "0-15:16/N", EXP1[2], 32),
    (0, "15-15:N/N", EXP1[13], 32),
    (0, "15-N:1/N", EXP1[13], 32),
    (0, "16-N:16/N", EXP1[3], 32),
    (0, "N-N:N/N", EXP1[14], 32),
    (0, "0-N:1/3,1-N:1/3,2-N:1/3", EXP1[8], 32),
    (0, "0-31:1/3,1-31:1/3,2-31:1/3", EXP1[8], 32),
    (0, "1-10:8/12,8-31:24/29,0-31:0/3", EXP1[9], 32),
    (0, "all", EXP1[8], 32),
    (0, "0, 1, all,  ", EXP1[8], 32),
    (0, "all:1/2", EXP1[4], 32),
    (0, "ALL:1/2", EXP1[4], 32),
    (EINVAL, "al", None, 8),
    (EINVAL, "alll", None, 8),
    (EINVAL, "-1", None, 8),
    (EINVAL, "-0", None, 8),
    (EINVAL, "10-1", None, 8),
    (ERANGE, "8-8", None, 8),
    (ERANGE, "0-31", None, 8),
    (EINVAL, "0-31:", None, 32),
    (EINVAL, "0-31:0", None, 32),
    (EINVAL, "0-31:0/", None, 32),
    (EINVAL, "0-31:0/0", None, 32),
    (EINVAL, "0-31:1/0", None, 32),
    (EINVAL, "0-31:10/1", None, 32),
    (EOVERFLOW, "0-98765432123456789:10/1", None, 8),
    (EINVAL, "a-31", None, 8),
    (EINVAL, "0-a1", None, 8),
    (EINVAL, "a-31:10/1", None, 8),
    (EINVAL, "0-31:a/1", None, 8),
    (EINVAL, "0-\n", None, 8),
]

# Derived from lib/bitmap-str.c (not in test_bitmap.c): error order and quirks.
PARSELIST_DERIVED = [
    (EINVAL, "4294967295", None, 8),  # end + 1 wraps to 0: group length 0
    (EOVERFLOW, "4294967296", None, 8),
    (EINVAL, "4294967295-4294967295", None, 8),
    (EOVERFLOW, "8-4294967296", None, 8),  # a parse error before the range check
    (EOVERFLOW, "0-" + "9" * 5000, None, 8),  # no int-conversion limit on the way
    (0, "0000000000000000000001", 0x2, 8),  # leading zeros are not an overflow
    (ERANGE, "9,x", None, 8),  # the first region is checked before the second is read
    (EINVAL, "x,9", None, 8),
    (EINVAL, "10-1,99999999999", None, 8),
    (EOVERFLOW, "99999999999,10-1", None, 8),
    (EINVAL, "0-31:2/1", None, 64),  # used > group before range
    (EINVAL, "0-100:2/1", None, 8),  # EINVAL wins over ERANGE in one region
    (ERANGE, "0-100:1/2", None, 8),
    (0, "0\n5", 0x1, 8),  # a newline right after a region ends the string
    (0, "0,\n5", 0x21, 8),  # ... after a comma it is whitespace
    (0, "\n5", 0x20, 8),
    (0, "0-3:1/2\n5", 0x25, 8),  # the pattern path does not look at what follows
    (0, "0-3:1/2N", 0x85, 8),  # ... so the next region may follow without a separator
    (0, "0\x005", 0x1, 8),  # NUL ends the string
    (0, "0 5\t6\r7\x0b1\x0c2", 0xE7, 8),  # whitespace separates like commas
    (EINVAL, "0 - 3", None, 8),
    (EINVAL, "3-", None, 8),
    (EINVAL, "+1", None, 8),
    (EINVAL, "!1", None, 8),
    (EINVAL, "0x1", None, 8),
    (EINVAL, "0-7:2", None, 8),  # util-linux strides are not the kernel's
    (EINVAL, "0-7:1/2x", None, 8),
    (EINVAL, "\u0661", None, 8),  # ARABIC-INDIC DIGIT ONE is not a digit here
    (EINVAL, "0\xa01", None, 8),  # nor is NBSP a separator (its UTF-8 bytes are junk to the kernel)
    (0, "N", 0x80, 8),
    (0, "aLl", 0xFF, 8),
    (0, "all,0", 0xFF, 8),
    (EINVAL, "allx", None, 8),
    (0, "0-0:0/1,0-7:0/8", 0, 8),  # used 0: nothing
    (0, "0-7:9/9", 0xFF, 8),  # a group longer than the range
    (0, "2-7:2/3", 0x6C, 8),
    (0, "0-1023:2/256", (0x3 | 0x3 << 256 | 0x3 << 512 | 0x3 << 768), 1024),
    (0, "0-7:1/4294967295", 0x1, 8),
    # the printed form takes a fast path; its errors still come in the kernel's order
    (EINVAL, "0,1,2,3,4,5,6,7,8,9,7-1,99999999999", None, 16),
    (EOVERFLOW, "0,1,2,3,4,5,6,7,8,9,99999999999,7-1", None, 16),
    (ERANGE, "0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,0-0:0/0", None, 16),
    (0, "0,2,4,6,8,10,12,14,15,1-1,00003", 0xD55F, 16),
]


def _errno_of(exc: BaseException) -> int:
    assert isinstance(exc, PercpuError)
    assert exc.errno is not None
    return exc.errno


@pytest.mark.parametrize(("err", "text", "expected", "nbits"), PARSELIST_TESTS + PARSELIST_DERIVED)
def test_parse_list_vectors(err: int, text: str, expected: int | None, nbits: int) -> None:
    if err:
        with pytest.raises(PercpuError) as info:
            Cpumask.parse_list(text, nbits)
        assert _errno_of(info.value) == err, info.value
        assert type(info.value) is {EINVAL: InvalidArgument, ERANGE: RangeError, EOVERFLOW: Overflow}[err]
    else:
        m = Cpumask.parse_list(text, nbits)
        assert m.nr_cpu_ids == nbits
        assert expected is not None
        assert m.bits == expected & ((1 << nbits) - 1)


def test_parse_list_huge_range_is_fast_and_exact() -> None:
    m = Cpumask.parse_list("0-8191:1/2", 8192)
    assert m.bits == int("01" * 4096, 2)
    assert len(m) == 4096
    assert Cpumask.parse_list("1-N:3/1000", 8192).format_list() == ",".join(
        f"{a}-{a + 2}" for a in range(1, 8192, 1000)
    )


# lib/test_bitmap.c parse_tests[]: (errno, text, expected, nbits)
PARSE_TEST2 = [
    0xDEADBEEF << 64 | 0x100000000,
    0xBAADF00DDEADBEEF << 64 | 0x100000000,
    0x0BADF00DDEADBEEF << 64 | 0x100000000,
]
PARSE_TESTS = [
    (0, "", 0, 32),
    (0, " ", 0, 32),
    (0, "0", 0, 32),
    (0, "0\n", 0, 32),
    (0, "1", 1, 32),
    (0, "deadbeef", 0xDEADBEEF, 32),
    (0, "1,0", 0x100000000, 33),
    (0, "deadbeef,\n,0,1", 0xDEADBEEF, 96),
    (0, "deadbeef,1,0", PARSE_TEST2[0], 96),
    (0, "baadf00d,deadbeef,1,0", PARSE_TEST2[1], 128),
    (0, "badf00d,deadbeef,1,0", PARSE_TEST2[2], 124),
    (0, "  badf00d,deadbeef,1,0  ", PARSE_TEST2[2], 124),
    (0, " , badf00d,deadbeef,1,0 , ", PARSE_TEST2[2], 124),
    (0, " , badf00d, ,, ,,deadbeef,1,0 , ", PARSE_TEST2[2], 124),
    (EINVAL, "goodfood,deadbeef,1,0", None, 128),
    (EOVERFLOW, "3,0", None, 33),
    (EOVERFLOW, "123badf00d,deadbeef,1,0", None, 128),
    (EOVERFLOW, "badf00d,deadbeef,1,0", None, 90),
    (EOVERFLOW, "fbadf00d,deadbeef,1,0", None, 95),
    (EOVERFLOW, "badf00d,deadbeef,1,0", None, 100),
]

# Derived from lib/bitmap-str.c (section 5.2 of the reference).
PARSE_DERIVED = [
    (0, "ffffffff", 0xFFFFFFFF, 33),  # fewer groups than chunks: the rest is cleared
    (0, "ffffffff", 0xFFFFFFFF, 32),
    (EOVERFLOW, "ffffffff", None, 31),  # every chunk given: a bit >= nbits overflows
    (EOVERFLOW, "1,0", None, 32),  # more groups than chunks
    (EOVERFLOW, "00000000ff", None, 64),  # 9+ digits, even leading zeros
    (0, "000000ff", 0xFF, 64),
    (0, "DEADBEEF", 0xDEADBEEF, 32),
    (0, "dead beef", 0xDEAD << 32 | 0xBEEF, 64),  # whitespace separates groups too
    (0, "1,,,0", 0x100000000, 64),  # empty groups are skipped, not zero
    (0, ",1,0,", 0x100000000, 64),
    (0, "1\n,0", 0x1, 64),  # the text ends at the first newline
    (0, "\n1", 0, 64),
    (0, "1\x00,0", 0x1, 64),
    (EINVAL, "g", None, 64),
    (EINVAL, "1,0x1", None, 64),  # 0x inside is junk
    (EINVAL, "0x", None, 64),  # a bare 0x is no prefix
    (EINVAL, "-1", None, 64),
    (EOVERFLOW, "g,123456789", None, 64),  # the scan from the end meets the long group first
    (EINVAL, "123456789,g", None, 64),
    (EOVERFLOW, "g,1,2,3", None, 64),  # ... and runs out of chunks before it reaches "g"
    (0, "1x12345678", 0x1_12345678, 64),  # a 9th non-hex character is skipped (the kernel's quirk)
    (0, "", 0, 1),
    (0, "1", 1, 1),
    (EOVERFLOW, "2", None, 1),
    (0, "0,0,0", 0, 65),
]

# Our extension: one leading 0x/0X (bitmap_parse says EINVAL for each of these but the last two).
PARSE_0X = [
    ("0x1", 1, 64),
    ("0X1", 1, 64),
    ("  0xff", 0xFF, 64),
    ("0x1,00000000", 1 << 32, 64),
    ("0x12345678", 0x12345678, 32),  # the kernel: "0" and "12345678", two groups, EOVERFLOW for 32 bits
    ("0x12345678", 0x12345678, 64),  # same bits as the kernel's two groups
]


@pytest.mark.parametrize(("err", "text", "expected", "nbits"), PARSE_TESTS + PARSE_DERIVED)
def test_parse_mask_vectors(err: int, text: str, expected: int | None, nbits: int) -> None:
    if err:
        with pytest.raises(PercpuError) as info:
            Cpumask.parse_mask(text, nbits)
        assert _errno_of(info.value) == err, info.value
    else:
        m = Cpumask.parse_mask(text, nbits)
        assert expected is not None
        assert m.bits == expected & ((1 << nbits) - 1)


@pytest.mark.parametrize(("text", "expected", "nbits"), PARSE_0X)
def test_parse_mask_accepts_leading_0x_as_an_extension(text: str, expected: int, nbits: int) -> None:
    assert Cpumask.parse_mask(text, nbits).bits == expected


def test_parse_mask_0x_then_kernel_rules() -> None:
    with pytest.raises(Overflow):
        Cpumask.parse_mask("0x100000000", 64)  # the 0x prefix does not make one long number
    with pytest.raises(Overflow):
        Cpumask.parse_mask("0x1,0", 32)


def test_parse_mask_large() -> None:
    text = ",".join(["80000000"] + ["00000001"] * 255)
    m = Cpumask.parse_mask(text, 8192)
    assert m.format_mask() == text
    assert list(m) == [32 * k for k in range(255)] + [8191]


# ---- printing -------------------------------------------------------------------

SMALL_BITMAP = 0x3333333311111111
SMALL_LIST = "0,4,8,12,16,20,24,28,32-33,36-37,40-41,44-45,48-49,52-53,56-57,60-61"
LARGE_BITMAP = sum(SMALL_BITMAP << (64 * w) for w in range(40))


def _large_list() -> str:
    """test_bitmap.c's large_list, built word by word from the small one."""
    parts = []
    for w in range(40):
        for item in SMALL_LIST.split(","):
            a, _, b = item.partition("-")
            parts.append(f"{int(a) + 64 * w}-{int(b) + 64 * w}" if b else str(int(a) + 64 * w))
    return ",".join(parts)


def _ranges(*spans: tuple[int, int]) -> int:
    return sum(((1 << (b - a + 1)) - 1) << a for a, b in spans)


# (bits, nbits, %*pb, %*pbl); None where the kernel test does not print that form
PRINT_TESTS = [
    (SMALL_BITMAP, 64, "33333333,11111111", SMALL_LIST),
    (LARGE_BITMAP, 2560, ",".join(["33333333,11111111"] * 40), _large_list()),
    # lib/tests/printf_kunit.c bitmap() and large_bitmap()
    (0, 20, "00000", ""),
    (sum(1 << p for p in (2, 3, 5, 7, 11, 13, 17, 19)), 20, "a28ac", "2-3,5,7,11,13,17,19"),
    (_ranges((0, 19)), 20, "fffff", "0-19"),
    (_ranges((1, 20), (60000, 60014)), 1 << 16, None, "1-20,60000-60014"),
    # test_zero_clear, test_fill_set, test_copy (the bitmaps they leave behind)
    (_ranges((0, 22)), 23, None, "0-22"),
    (_ranges((0, 1023)), 1024, None, "0-1023"),
    (_ranges((9, 1023)), 1024, None, "9-1023"),
    (_ranges((64, 1023)), 1024, None, "64-1023"),
    (_ranges((64, 78), (98, 1023)), 1024, None, "64-78,98-1023"),
    (_ranges((128, 1023)), 1024, None, "128-1023"),
    (0, 1024, None, ""),
    (0, 23, None, ""),
    (_ranges((0, 8)), 1024, None, "0-8"),
    (_ranges((0, 63)), 1024, None, "0-63"),
    (_ranges((0, 63), (79, 97)), 1024, None, "0-63,79-97"),
    (_ranges((0, 127)), 1024, None, "0-127"),
    (_ranges((0, 18)), 1024, None, "0-18"),
    (_ranges((0, 108)), 1024, None, "0-108"),
    (_ranges((0, 108), (128, 1023)), 1024, None, "0-108,128-1023"),
    # derived: %*pb padding (first chunk: ceil((nbits % 32 or 32) / 4) digits, then 8)
    (0b11, 2, "3", "0-1"),
    (0b110, 3, "6", "1-2"),  # a run of two prints as a-b
    (1 << 32, 33, "1,00000000", "32"),
    (0, 36, "0,00000000", ""),
    (0, 40, "00,00000000", ""),
    (0, 64, "00000000,00000000", ""),
    (1 << 64, 65, "1,00000000,00000000", "64"),
    (0x5, 8, "05", "0,2"),
    (1 << 7, 8, "80", "7"),
]


@pytest.mark.parametrize(
    ("bits", "nbits", "mask", "lst"), PRINT_TESTS, ids=[f"{t[1]}:{t[3][:40]}" for t in PRINT_TESTS]
)
def test_print_vectors(bits: int, nbits: int, mask: str | None, lst: str) -> None:
    m = Cpumask.from_bits(bits, nbits)
    assert m.format_list() == lst
    assert str(m) == lst
    if mask is not None:
        assert m.format_mask() == mask
        assert Cpumask.parse_mask(mask, nbits) == m
    assert Cpumask.parse_list(lst, nbits) == m


def test_large_list_is_the_kernels() -> None:
    lst = _large_list()
    assert len(lst + "\n") == 4391  # test_bitmap.c: more than a page (print at offset 4096 returns 296)
    assert lst.startswith("0,4,8,12,16,20,24,28,32-33,36-37,40-41") and lst.endswith("2552-2553,2556-2557")


def test_format_mask_nbits() -> None:
    m = Cpumask.parse_list("0-3,40", 64)
    assert m.format_mask(0) == ""
    assert m.format_mask(4) == "f"
    assert m.format_mask(33) == "0,0000000f"  # CPUs at or above nbits are not printed
    assert m.format_mask(72) == "00,00000100,0000000f"
    with pytest.raises(InvalidArgument):
        m.format_mask(-1)


def test_repr() -> None:
    assert repr(Cpumask.parse_list("0-3,8", 64)) == "Cpumask('0-3,8', nr_cpu_ids=64)"
    assert repr(Cpumask.empty(4)) == "Cpumask('', nr_cpu_ids=4)"
    m = Cpumask([1, 2, 7], 16)
    assert eval(repr(m), {"Cpumask": Cpumask}) == m


# ---- construction ------------------------------------------------------------------


def test_constructors() -> None:
    assert Cpumask([0, 3, 3, 8], 64).bits == 0x109
    assert Cpumask(0x109, 64).bits == 0x109
    assert Cpumask("0-3,8", 64).bits == 0x10F
    assert Cpumask(range(64), 64) == Cpumask.full(64)
    assert Cpumask((), 64) == Cpumask.empty(64)
    assert Cpumask.from_bits(5, 3).nr_cpu_ids == 3
    copy = Cpumask(Cpumask([1], 8))
    assert copy.nr_cpu_ids == 8 and copy.bits == 2
    assert Cpumask(Cpumask([1], 8), 16) == Cpumask([1], 16)


@pytest.mark.parametrize(
    ("args", "exc"),
    [
        (([64], 64), RangeError),
        (([-1], 64), RangeError),
        ((1 << 64, 64), RangeError),
        ((-1, 64), RangeError),
        (("64", 64), RangeError),
        ((Cpumask([9], 10), 8), RangeError),
        (([0], 0), InvalidArgument),
        (([0], 1 << 31), InvalidArgument),
        ((["1"], 64), TypeError),
        (([1.0], 64), TypeError),
        ((True, 64), TypeError),
        (([0], "64"), TypeError),
    ],
)
def test_constructor_errors(args: tuple[object, object], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        Cpumask(*args)  # type: ignore[arg-type]


def test_range_error_names_the_cpu() -> None:
    with pytest.raises(RangeError, match="CPU 70") as info:
        Cpumask([1, 70], 64)
    assert info.value.errno == ERANGE
    with pytest.raises(RangeError, match="CPU 64"):
        Cpumask.from_bits(1 << 64, 64)


def test_immutable_hashable_picklable() -> None:
    m = Cpumask([1, 2], 8)
    with pytest.raises(AttributeError):
        m._bits = 0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        m.foo = 1  # type: ignore[attr-defined]
    assert {m: 1}[Cpumask([2, 1], 8)] == 1
    assert hash(m) == hash(Cpumask.from_bits(6, 8))
    assert m != Cpumask([1, 2], 16)  # same CPUs, another width
    assert m != {1, 2}
    assert pickle.loads(pickle.dumps(m)) == m


def test_bytes_layout() -> None:
    assert bitmap_size(1) == 8 and bitmap_size(64) == 8 and bitmap_size(65) == 16 and bitmap_size(72) == 16
    m = Cpumask([0, 9, 64, 71], 72)
    raw = m.to_bytes()
    assert len(raw) == 16
    assert raw == bytes([0x01, 0x02, 0, 0, 0, 0, 0, 0, 0x81, 0, 0, 0, 0, 0, 0, 0])
    assert Cpumask.from_bytes(raw, 72) == m
    # the tail of the last word and bytes past bitmap_size are ignored, as bpf_cpumask_populate does
    assert Cpumask.from_bytes(b"\xff" * 24, 72) == Cpumask.full(72)
    assert Cpumask.from_bytes(memoryview(bytearray(raw)), 72) == m
    with pytest.raises(InvalidArgument):
        Cpumask.from_bytes(b"\x00" * 8, 72)


# ---- algebra, searches --------------------------------------------------------------


def test_algebra() -> None:
    a = Cpumask("0-7", 16)
    b = Cpumask("4-11", 16)
    assert (a | b) == Cpumask("0-11", 16)
    assert (a & b) == Cpumask("4-7", 16)
    assert (a ^ b) == Cpumask("0-3,8-11", 16)
    assert (a - b) == Cpumask("0-3", 16)
    assert ~a == Cpumask("8-15", 16)
    assert ~Cpumask.full(16) == Cpumask.empty(16)
    assert (a & b) <= a and (a & b) < a and a >= (a & b) and a > (a & b)
    assert a <= a and not a < a and a >= a and not a > a
    assert not (a <= b) and not (a >= b)
    assert 3 in a and 8 not in a and -1 not in a and 99 not in a and "3" not in a
    assert len(a) == a.weight() == 8
    assert list(a | b) == list(range(12))
    assert bool(a) and not Cpumask.empty(16)
    assert a.intersects(b) and not a.intersects(Cpumask("8-9", 16))


def test_algebra_refuses_other_widths_and_types() -> None:
    a = Cpumask([1], 8)
    b = Cpumask([1], 16)
    for op in (
        lambda: a | b,
        lambda: a & b,
        lambda: a ^ b,
        lambda: a - b,
        lambda: a <= b,
        lambda: a < b,
        lambda: a >= b,
        lambda: a > b,
        lambda: a.first_and(b),
        lambda: a.intersects(b),
    ):
        with pytest.raises(InvalidArgument):
            op()
    with pytest.raises(TypeError):
        a | {1}  # type: ignore[operator]
    with pytest.raises(TypeError):
        assert a <= {1}  # type: ignore[operator]
    with pytest.raises(TypeError):
        a.first_and({1})  # type: ignore[arg-type]


@pytest.mark.parametrize("nr", [1, 2, 64, 65, 4096])
def test_searches_return_nr_cpu_ids_when_nothing_found(nr: int) -> None:
    empty = Cpumask.empty(nr)
    full = Cpumask.full(nr)
    assert empty.first() == nr
    assert empty.next(-1) == nr
    assert full.first_zero() == nr
    assert full.next(nr - 1) == nr
    assert full.next(nr + 5) == nr
    assert empty.first_and(full) == nr
    assert full.first() == 0 and empty.first_zero() == 0 and full.first_and(full) == 0


def test_searches() -> None:
    m = Cpumask("3,5,64-66,4000", 4096)
    assert m.first() == 3
    assert m.next(-1) == 3 and m.next(-5) == 3
    assert m.next(3) == 5 and m.next(5) == 64 and m.next(66) == 4000 and m.next(4000) == 4096
    assert m.first_zero() == 0
    assert Cpumask("0-70", 4096).first_zero() == 71
    assert m.first_and(Cpumask("6-65", 4096)) == 64
    walked = []
    cpu = m.first()
    while cpu < m.nr_cpu_ids:  # for_each_cpu()
        walked.append(cpu)
        cpu = m.next(cpu)
    assert walked == list(m) == [3, 5, 64, 65, 66, 4000]


# ---- the domain's and the machine's CPUs ------------------------------------------------


def test_default_width_follows_the_current_domain(domain64: object) -> None:
    assert Cpumask([63]).nr_cpu_ids == 64
    assert Cpumask.parse_list("N").bits == 1 << 63
    assert Cpumask.possible() == Cpumask.full(64)
    assert Cpumask.online() == Cpumask.full(64)
    assert Cpumask.full() == Cpumask.full(64)
    with pytest.raises(RangeError):
        Cpumask([64])


def test_4096_simulated_cpus(make_domain: object) -> None:
    make_domain(size=64 << 20, nr_cpus=4096)  # type: ignore[operator]
    m = Cpumask.parse_list("0-4095:1/64")
    assert m.nr_cpu_ids == 4096 and len(m) == 64
    assert m.format_mask().count(",") == 127
    assert Cpumask.parse_mask(m.format_mask()) == m
    assert (~m).first() == 1 and (~m).first_zero() == 0
    assert Cpumask.possible() == Cpumask.full(4096)
    assert Cpumask.of_process() <= Cpumask.possible()


SYS_CPU = Path("/sys/devices/system/cpu")


@pytest.fixture
def no_domain() -> None:
    if cm._peek_domain() is not None:
        pytest.skip("a process default domain is current; the machine's masks are not the default")


def test_machine_masks_agree_with_sysfs_and_affinity(no_domain: None) -> None:
    possible = parse_cpulist((SYS_CPU / "possible").read_text())
    online = parse_cpulist((SYS_CPU / "online").read_text())
    nr = possible[-1] + 1
    assert Cpumask().nr_cpu_ids == nr
    assert Cpumask.possible() == Cpumask(possible, nr)
    assert Cpumask.online() == Cpumask(online, nr)
    assert Cpumask.possible().format_list() == (SYS_CPU / "possible").read_text().strip()
    assert set(Cpumask.of_process(os.getpid())) == os.sched_getaffinity(os.getpid())
    assert Cpumask.of_process() == Cpumask.of_thread(threading.get_native_id())
    assert Cpumask.of_process() <= Cpumask.online()


def test_of_process_errors() -> None:
    with pytest.raises(PercpuError) as info:
        Cpumask.of_process(4_194_305)  # above PID_MAX_LIMIT: never a process
    assert info.value.errno == errno.ESRCH
    top = max(os.sched_getaffinity(0))
    if top == 0:
        pytest.skip("runs on CPU 0 only")
    with pytest.raises(NoDevice, match=f"CPU {top}"):
        Cpumask.of_process(0, nr_cpu_ids=top)


def test_of_process_in_a_smaller_domain(make_domain: object) -> None:
    if max(os.sched_getaffinity(0)) == 0:
        pytest.skip("runs on CPU 0 only")
    make_domain(nr_cpus=1)  # type: ignore[operator]
    with pytest.raises(NoDevice, match="not possible"):
        Cpumask.of_process()


@pytest.fixture
def restore_affinity() -> Iterator[set[int]]:
    orig = os.sched_getaffinity(0)
    yield orig
    os.sched_setaffinity(0, orig)


def test_apply_to_round_trips(restore_affinity: set[int]) -> None:
    nr = cm._machine_nr_cpu_ids()
    orig = Cpumask(restore_affinity, nr)
    one = Cpumask([max(restore_affinity)], nr)
    one.apply_to()
    assert Cpumask.of_process(nr_cpu_ids=nr) == one
    assert os.sched_getaffinity(0) == {max(restore_affinity)}
    orig.apply_to(os.getpid())  # the main thread: pid == tid
    assert Cpumask.of_process(os.getpid(), nr_cpu_ids=nr) == orig
    assert os.sched_getaffinity(0) == restore_affinity


def test_apply_to_refuses_impossible_cpus(restore_affinity: set[int]) -> None:
    nr = cm._machine_nr_cpu_ids()
    with pytest.raises(NoDevice, match=f"CPU {nr} ") as info:
        Cpumask([0, nr], nr + 8).apply_to()
    assert info.value.errno == errno.ENODEV
    with pytest.raises(InvalidArgument):
        Cpumask.empty(nr).apply_to()
    with pytest.raises(PercpuError) as esrch:
        Cpumask([0], nr).apply_to(4_194_305)
    assert esrch.value.errno == errno.ESRCH
    assert os.sched_getaffinity(0) == restore_affinity
