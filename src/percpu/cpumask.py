"""CPU sets as the kernel writes them: ``struct cpumask`` as an immutable value.

Mirrors ``include/linux/cpumask.h`` (set algebra, searches), the string
grammar of ``lib/bitmap-str.c`` (``bitmap_parselist()``, ``bitmap_parse()``)
and the printers of ``lib/vsprintf.c`` (``%*pbl``, ``%*pb``), exactly,
including their error order and quirks; ``tests/unit/test_cpumask.py`` holds
the vectors of ``lib/test_bitmap.c``.

A :class:`Cpumask` is a Python ``int`` (bit ``n`` = CPU ``n``) plus the width
``nr_cpu_ids``; bits at or above ``nr_cpu_ids`` are always zero (the kernel
leaves them undefined in the last word; keeping them zero makes ``==``,
``hash`` and ``len`` exact).  :meth:`Cpumask.to_bytes` gives the kernel's
memory layout, ``bitmap_size(nr_cpu_ids)`` bytes of native ``unsigned long``
words, which ``bpf_cpumask_populate()`` copies::

    nr_cpu_ids = 72 -> bitmap_size = ALIGN(72, 64) / 8 = 16 bytes
    word 0: CPUs 0..63 (bit n = CPU n)   word 1: CPUs 64..71, bits 8..63 zero
    +-------------------------+-------------------------+
    | B0 B1 B2 B3 B4 B5 B6 B7 | B8 0  0  0  0  0  0  0  |   byte k = CPUs 8k..8k+7
    +-------------------------+-------------------------+   (little-endian words shown)

String formats (``lib/bitmap-str.c``, ``lib/vsprintf.c``)::

    list  0-3,8  0-1023:2/256  N  all    parse_list()  / format_list()  (%*pbl)
    mask  ff,00000001                    parse_mask()  / format_mask()  (%*pb)

Deviations from the kernel, all deliberate:

- :meth:`Cpumask.parse_mask` accepts one leading ``0x``/``0X`` before the
  first hex digit (util-linux and taskset users type it); ``bitmap_parse``
  refuses ``"0x1"`` with ``EINVAL``.  Everything after the prefix follows
  ``bitmap_parse`` exactly.
- A failed parse changes nothing (the kernel leaves the regions before the bad
  one set in ``maskp``); masks are immutable anyway.
- Searches that find nothing return exactly ``nr_cpu_ids`` (the kernel may
  return any value ``>= nr_cpu_ids`` when ``NR_CPUS <= BITS_PER_LONG``).
- Text is a ``str``; whitespace is ASCII whitespace (the kernel's ``isspace``
  also takes Latin-1 NBSP, a byte a UTF-8 string never contains alone), and
  any non-ASCII character is junk (``EINVAL``), as its UTF-8 bytes are.

The default ``nr_cpu_ids`` is the current domain's when a domain is current
(without creating one), else this machine's (1 + the last CPU of
``/sys/devices/system/cpu/possible``).

Synchronization: none needed; a mask is immutable and shares nothing.
"""

from __future__ import annotations

import errno as _errno
import functools
import itertools
import os
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from percpu.errors import InvalidArgument, NoDevice, Overflow, RangeError, from_errno
from percpu.runtime.topology import DEFAULT_SYSFS_ROOT, parse_cpulist

if TYPE_CHECKING:
    from percpu.runtime.domain import Domain

__all__ = ["Cpumask", "bitmap_size"]

BITS_PER_LONG = 64
_UINT_MAX = 0xFFFFFFFF
_INT_MAX = 0x7FFFFFFF

# __end_of_region(): isspace(c) || c == ','  (ASCII isspace: \t \n \v \f \r and space)
_SEP = frozenset(" \t\n\v\f\r,")
_DEC = re.compile(r"[0-9]+")
_ALL = re.compile(r"all", re.IGNORECASE | re.ASCII)
_HEXVAL = {c: int(c, 16) for c in "0123456789abcdefABCDEF"}
_LIST_ITEM = re.compile(r"([0-9]+)(?:-([0-9]+))?")
_CLEAN_LIST = re.compile(r"[0-9]+(?:-[0-9]+)?(?:,[0-9]+(?:-[0-9]+)?)*\n?")
_CLEAN_MASK = re.compile(r"[0-9a-fA-F]{1,8}(?:,[0-9a-fA-F]{1,8})*")
_HEX_PREFIX = re.compile(r"[ \t\n\v\f\r]*0[xX](?=[0-9a-fA-F])")
_RUNS = re.compile(r"1+")
_span = re.Match.span
_BIN_TO_BOOL = bytes.maketrans(b"01", b"\x00\x01")


def bitmap_size(nbits: int) -> int:
    """Bytes of a bitmap of ``nbits`` bits: ``ALIGN(nbits, BITS_PER_LONG) / 8``.

    Mirrors the kernel's ``bitmap_size()`` on a 64-bit machine.
    """
    return -(-nbits // BITS_PER_LONG) * (BITS_PER_LONG // 8)


# ---- where nr_cpu_ids comes from ---------------------------------------------


_domain_mod: Any = None


def _peek_domain() -> Domain | None:
    """The current domain if one is current, without creating the default one."""
    global _domain_mod
    try:
        if _domain_mod is None:  # imported once, lazily: percpu.runtime.domain imports topology
            from percpu.runtime import domain as _domain_mod
        d = _domain_mod
        dom: Domain | None = d._stack[-1] if d._stack else d._default
        if dom is None or dom.closed:
            return None
        return dom
    except Exception:  # pragma: no cover - a broken runtime must not break a value type
        return None


def _read_machine_list(name: str) -> tuple[int, ...]:
    return parse_cpulist(Path(DEFAULT_SYSFS_ROOT, "cpu", name).read_text())


@functools.cache
@functools.cache
def _machine_possible() -> tuple[int, ...]:
    """This machine's ``cpu_possible_mask`` (fixed at boot, so read once)."""
    try:
        cpus = _read_machine_list("possible")
    except (OSError, ValueError):  # no sysfs (a container without /sys)
        cpus = ()
    if not cpus:
        cpus = tuple(range(os.cpu_count() or 1))
    return cpus


@functools.cache
def _machine_possible_bits() -> int:
    bits = 0
    for c in _machine_possible():
        bits |= 1 << c
    return bits


def _machine_nr_cpu_ids() -> int:
    return _machine_possible()[-1] + 1


def _default_nr_cpu_ids() -> int:
    dom = _peek_domain()
    return dom.nr_cpu_ids if dom is not None else _machine_nr_cpu_ids()


def _check_nr(nr_cpu_ids: int | None) -> int:
    if nr_cpu_ids is None:
        return _default_nr_cpu_ids()
    if not isinstance(nr_cpu_ids, int) or isinstance(nr_cpu_ids, bool):
        raise TypeError(f"nr_cpu_ids must be an int, not {type(nr_cpu_ids).__name__}")
    if not 1 <= nr_cpu_ids <= _INT_MAX:
        raise InvalidArgument(f"nr_cpu_ids {nr_cpu_ids} is outside [1, {_INT_MAX}]")
    return nr_cpu_ids


# ---- bitmap_parselist() --------------------------------------------------------


def _getnum(s: str, i: int, lastbit: int) -> tuple[int, int]:
    """``bitmap_getnum()``: a decimal ``unsigned int`` or ``N`` at ``s[i]``; (value, next index)."""
    if s.startswith("N", i):
        return lastbit, i + 1
    m = _DEC.match(s, i)
    if m is None:
        raise InvalidArgument(f"expected a number at offset {i} of {s!r}")
    digits = m.group().lstrip("0")
    if len(digits) > 10 or (digits and int(digits) > _UINT_MAX):
        raise Overflow(f"number {m.group()} at offset {i} of {s!r} does not fit unsigned int")
    return int(digits or "0"), m.end()


def _region_bits(start: int, end: int, used: int, group: int) -> int:
    """``bitmap_set_region()``: the first ``used`` of every ``group`` bits from ``start`` to ``end``."""
    span = end - start + 1
    if used == 0:
        return 0
    if group >= span:
        return ((1 << min(used, span)) - 1) << start
    if used == group:
        return ((1 << span) - 1) << start
    k = -(-span // group)
    # sum of (1 << group*i) for i < k, a geometric series, times the used bits
    pattern = ((1 << used) - 1) * (((1 << (group * k)) - 1) // ((1 << group) - 1))
    return (pattern & ((1 << span) - 1)) << start


def _parselist_fast(s: str, nbits: int) -> int | None:
    """The printed form (``%*pbl``: ``a`` and ``a-b`` joined by single commas), or None.

    None for anything the kernel refuses, so that the exact port below finds
    the first error in the kernel's order.
    """
    pairs = _LIST_ITEM.findall(s)
    few = len(pairs) <= 8
    bits = 0
    # many regions: one byte per CPU, converted once at the end
    buf = bytearray() if few else bytearray(b"0") * nbits
    for a, b in pairs:
        if len(a) > 10 or len(b) > 10:
            return None
        start = int(a)
        end = int(b) if b else start
        if start > end or end >= nbits:
            return None
        if few:
            bits |= ((1 << (end - start + 1)) - 1) << start
        elif start == end:
            buf[start] = 0x31
        else:
            buf[start : end + 1] = b"1" * (end - start + 1)
    if few:
        return bits
    buf.reverse()
    return int(buf, 2)


def _parselist(text: str, nbits: int) -> int:
    """A line-by-line port of ``bitmap_parselist()``; returns the bits or raises."""
    s = text.split("\0", 1)[0]
    if _CLEAN_LIST.fullmatch(s):
        bits = _parselist_fast(s.rstrip("\n"), nbits)
        if bits is not None:
            return bits
    n = len(s)
    lastbit = (nbits - 1) & _UINT_MAX
    bits = 0
    i = 0
    while True:
        # bitmap_find_region(): skip separators (whitespace, '\n' included, and commas)
        while i < n and s[i] in _SEP:
            i += 1
        if i >= n:
            return bits
        region_at = i
        # bitmap_parse_region()
        stop = False
        if _ALL.match(s, i):
            start, end = 0, lastbit
            i += 3
            has_pattern = i < n and s[i] not in _SEP
        else:
            start, i = _getnum(s, i, lastbit)
            if i >= n or s[i] in _SEP:
                end = start
                has_pattern = False
            elif s[i] != "-":
                raise InvalidArgument(f"unexpected {s[i]!r} at offset {i} of {s!r}")
            else:
                end, i = _getnum(s, i + 1, lastbit)
                has_pattern = i < n and s[i] not in _SEP
        if has_pattern:
            if s[i] != ":":
                raise InvalidArgument(f"unexpected {s[i]!r} at offset {i} of {s!r}")
            used, i = _getnum(s, i + 1, lastbit)
            if i >= n or s[i] != "/":
                raise InvalidArgument(f"expected '/' at offset {i} of {s!r}")
            group, i = _getnum(s, i + 1, lastbit)
            # the kernel returns here without looking at what follows the group size
        else:
            used = group = (end + 1) & _UINT_MAX
            stop = i >= n or s[i] == "\n"  # end_of_str(): "0\n5" is {0}
        # bitmap_check_region(): EINVAL before ERANGE
        if start > end or group == 0 or used > group:
            raise InvalidArgument(
                f"invalid region {s[region_at:i]!r} in {s!r} (start {start}, end {end}, used {used}, group {group})"
            )
        if end >= nbits:
            raise RangeError(f"CPU {end} in region {s[region_at:i]!r} of {s!r} is >= nr_cpu_ids {nbits}")
        bits |= _region_bits(start, end, used, group)
        if stop:
            return bits


# ---- bitmap_parse() ------------------------------------------------------------


def _parse(text: str, nbits: int) -> int:
    """A port of ``bitmap_parse()`` (plus the leading ``0x``); returns the bits or raises."""
    s = text.split("\0", 1)[0].split("\n", 1)[0]
    m = _HEX_PREFIX.match(s)
    if m is not None:
        s = s[m.end() :]
    nchunks = -(-nbits // 32)
    if _CLEAN_MASK.fullmatch(s):
        # the common case, printed by %*pb: groups of 1-8 hex digits and single commas
        groups = s.split(",")
        if len(groups) > nchunks:
            raise Overflow(f"{len(groups)} groups of 32 bits in {text!r} exceed {nbits} bits")
        bits = int("".join([g.rjust(8, "0") for g in groups]), 16)
        used = len(groups)
    else:
        bits, used = _parse_slow(s, text, nchunks, nbits)
    if used * 32 >= nbits and bits >> nbits:
        raise Overflow(f"mask {text!r} sets a bit at or above {nbits}")
    return bits


def _parse_slow(s: str, text: str, nchunks: int, nbits: int) -> tuple[int, int]:
    """``bitmap_parse()``'s reverse scan: groups from the end, empty groups skipped."""
    bits = 0
    chunk = 0
    end = len(s) - 1
    while True:
        # bitmap_find_region_reverse()
        while end >= 0 and s[end] in _SEP:
            end -= 1
        if end < 0:
            return bits, chunk
        if chunk == nchunks:
            raise Overflow(f"more than {nchunks} groups of 32 bits in {text!r} for {nbits} bits")
        # bitmap_get_x32_reverse()
        value = 0
        for shift in range(0, 32, 4):
            digit = _HEXVAL.get(s[end], -1)
            if digit < 0:
                raise InvalidArgument(f"{s[end]!r} at offset {end} of {text!r} is not a hex digit")
            end -= 1
            value |= digit << shift
            if end < 0 or s[end] in _SEP:
                break
        else:
            # a ninth hex digit overflows; a ninth non-hex character is skipped (the kernel's quirk)
            if s[end] in _HEXVAL:
                raise Overflow(f"a group of more than 8 hex digits at offset {end} of {text!r}")
            end -= 1
        bits |= value << (32 * chunk)
        chunk += 1


# ---- the value type --------------------------------------------------------------


class Cpumask:
    """An immutable set of CPU numbers in ``[0, nr_cpu_ids)``: the kernel's ``struct cpumask``.

    Mirrors ``include/linux/cpumask.h`` and the formats of ``lib/bitmap-str.c``.

    ``Cpumask(cpus, nr_cpu_ids=None)``: ``cpus`` is an iterable of CPU
    numbers, an ``int`` bitmap (bit ``n`` = CPU ``n``), a list string
    (``parse_list``) or another mask; ``nr_cpu_ids`` defaults to the current
    domain's, else the machine's (another mask's, when copying one).

    Set algebra ``|`` ``&`` ``^`` ``-`` and ``~`` (within ``nr_cpu_ids``),
    ``in``, ``len``, iteration in CPU order; ``<=``, ``<``, ``>=``, ``>`` are
    subset tests.  Masks compare equal when bits and ``nr_cpu_ids`` agree;
    operands of a binary operation must have the same ``nr_cpu_ids``.

    Context: pure values; safe from any thread, picklable.
    Raises RangeError (ERANGE) for a CPU outside ``[0, nr_cpu_ids)``,
    InvalidArgument (EINVAL) for a bad ``nr_cpu_ids`` or operands of
    different widths, TypeError for a CPU that is not an int.
    """

    __slots__ = ("_bits", "_nr")

    _bits: int
    _nr: int

    def __init__(self, cpus: Iterable[int] | int | str = (), nr_cpu_ids: int | None = None) -> None:
        if isinstance(cpus, Cpumask):
            nr = cpus._nr if nr_cpu_ids is None else _check_nr(nr_cpu_ids)
            bits = _checked_bits(cpus._bits, nr)
        elif isinstance(cpus, str):
            nr = _check_nr(nr_cpu_ids)
            bits = _parselist(cpus, nr)
        elif isinstance(cpus, int):
            if isinstance(cpus, bool):
                raise TypeError("a CPU mask is not a bool")
            nr = _check_nr(nr_cpu_ids)
            bits = _checked_bits(cpus, nr)
        else:
            nr = _check_nr(nr_cpu_ids)
            bits = _bits_of(cpus, nr)
        _SET_BITS(self, bits)
        _SET_NR(self, nr)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Cpumask is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Cpumask is immutable (cannot delete {name!r})")

    def __reduce__(self) -> tuple[Any, tuple[int, int]]:
        return (Cpumask.from_bits, (self._bits, self._nr))

    # ---- constructors ------------------------------------------------------------

    @classmethod
    def from_bits(cls, bits: int, nr_cpu_ids: int | None = None) -> Cpumask:
        """The mask whose bit ``n`` is CPU ``n``.

        Raises RangeError when a bit at or above ``nr_cpu_ids`` is set or ``bits`` is negative.
        """
        if not isinstance(bits, int) or isinstance(bits, bool):
            raise TypeError(f"bits must be an int, not {type(bits).__name__}")
        nr = _check_nr(nr_cpu_ids)
        return _make(_checked_bits(bits, nr), nr)

    @classmethod
    def parse_list(cls, text: str, nr_cpu_ids: int | None = None) -> Cpumask:
        """Parse the list format, ``0-3,8``, ``0-1023:2/256``, ``N``, ``all``.

        Mirrors ``bitmap_parselist()`` / ``cpulist_parse()`` exactly.  Regions
        are separated by commas or whitespace (repeated, leading and trailing
        separators are fine); ``a-b:used/group`` sets the first ``used`` CPUs of
        every ``group`` from ``a`` to ``b``; ``N`` is ``nr_cpu_ids - 1``;
        ``all`` (any case) is ``0-N``.  The text ends at NUL or at a newline
        that ends a region (``"0\\n5"`` is {0}, ``"0,\\n5"`` is {0, 5}).

        Context: pure function.
        Raises, for the first bad region from the left (each region is parsed,
        then checked, before the next is read): InvalidArgument (EINVAL) for
        malformed text, Overflow (EOVERFLOW) for a number above 4294967295,
        then InvalidArgument for ``start > end``, ``group == 0`` or
        ``used > group``, and only then RangeError (ERANGE) for a CPU
        ``>= nr_cpu_ids`` (``"10-1"`` is EINVAL, never ERANGE).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        nr = _check_nr(nr_cpu_ids)
        return _make(_parselist(text, nr), nr)

    @classmethod
    def parse_mask(cls, text: str, nr_cpu_ids: int | None = None) -> Cpumask:
        """Parse the hex mask format, ``ff,00000001`` (least significant group last).

        Mirrors ``bitmap_parse()`` / ``cpumask_parse()`` exactly: each group
        separated by commas or whitespace is one 32-bit chunk (``"1,0"`` is
        CPU 32), shorter groups are zero-extended, empty groups are skipped,
        the text ends at the first newline or NUL.  One extension: a leading
        ``0x`` or ``0X`` before the first digit is accepted (the kernel says
        EINVAL).

        Context: pure function.
        Raises, in the order the kernel's scan from the end meets them:
        InvalidArgument (EINVAL) for a non-hex character, Overflow (EOVERFLOW)
        for a group of more than 8 digits, for more groups than
        ``ceil(nr_cpu_ids / 32)``, or, when every chunk is given, for a bit at
        or above ``nr_cpu_ids`` (``"ffffffff"`` fits 33 CPUs, not 31).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        nr = _check_nr(nr_cpu_ids)
        return _make(_parse(text, nr), nr)

    @classmethod
    def full(cls, nr_cpu_ids: int | None = None) -> Cpumask:
        """Every CPU in ``[0, nr_cpu_ids)`` (``cpumask_setall()``)."""
        nr = _check_nr(nr_cpu_ids)
        return _make((1 << nr) - 1, nr)

    @classmethod
    def empty(cls, nr_cpu_ids: int | None = None) -> Cpumask:
        """No CPU (``cpumask_clear()``)."""
        return _make(0, _check_nr(nr_cpu_ids))

    @classmethod
    def possible(cls, nr_cpu_ids: int | None = None) -> Cpumask:
        """The possible CPUs (``cpu_possible_mask``).

        The current domain's when a domain is current (a simulated domain has
        simulated CPUs), else this machine's ``/sys/devices/system/cpu/possible``.
        Raises RangeError if ``nr_cpu_ids`` is given and too small for them.
        """
        dom = _peek_domain()
        if dom is not None:
            return cls(dom.possible, dom.nr_cpu_ids if nr_cpu_ids is None else nr_cpu_ids)
        cpus = _machine_possible()
        return cls(cpus, cpus[-1] + 1 if nr_cpu_ids is None else nr_cpu_ids)

    @classmethod
    def online(cls, nr_cpu_ids: int | None = None) -> Cpumask:
        """The online CPUs (``cpu_online_mask``).

        The current domain's (a snapshot taken when it was created) when a
        domain is current, else ``/sys/devices/system/cpu/online`` read now.
        """
        dom = _peek_domain()
        if dom is not None:
            return cls(dom.online, dom.nr_cpu_ids if nr_cpu_ids is None else nr_cpu_ids)
        try:
            cpus = _read_machine_list("online")
        except (OSError, ValueError):
            cpus = _machine_possible()
        return cls(cpus, _machine_nr_cpu_ids() if nr_cpu_ids is None else nr_cpu_ids)

    @classmethod
    def of_process(cls, pid: int = 0, nr_cpu_ids: int | None = None) -> Cpumask:
        """The CPUs process ``pid`` (0: the caller) may run on: ``sched_getaffinity(2)``.

        On Linux this is the affinity of the thread whose id is ``pid`` (the
        main thread of that process); the kernel reports ``cpus_mask &
        cpu_active_mask``.

        Context: one system call; may be called from any thread.
        Raises NoDevice (ENODEV) when the affinity names a CPU that is not
        possible in the current domain, or on this machine when no domain is
        current (with ``nr_cpu_ids`` given: at or above it), and the
        percpu error of the system call's errno otherwise (ESRCH: no such
        process, EPERM).
        """
        try:
            cpus = os.sched_getaffinity(pid)
        except OSError as e:
            raise from_errno(e.errno or _errno.EINVAL, f"sched_getaffinity({pid}) failed: {e.strerror}") from e
        if nr_cpu_ids is None:
            dom = _peek_domain()
            nr = dom.nr_cpu_ids if dom is not None else _machine_nr_cpu_ids()
            allowed = frozenset(dom.possible if dom is not None else _machine_possible())
        else:
            nr = _check_nr(nr_cpu_ids)
            allowed = frozenset(range(nr))
        outside = sorted(c for c in cpus if c not in allowed)
        if outside:
            raise NoDevice(
                f"the affinity of {pid or os.getpid()} ({_cpulist(cpus)}) includes CPU {outside[0]}, "
                f"not possible here (possible: {_cpulist(allowed)})"
            )
        return cls(cpus, nr)

    @classmethod
    def of_thread(cls, tid: int, nr_cpu_ids: int | None = None) -> Cpumask:
        """The CPUs thread ``tid`` (``threading.get_native_id()``) may run on.

        The same system call as :meth:`of_process`, which see.
        """
        return cls.of_process(tid, nr_cpu_ids)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, nr_cpu_ids: int | None = None) -> Cpumask:
        """The mask stored in kernel layout: native ``unsigned long`` words.

        Mirrors ``bpf_cpumask_populate()``: ``data`` must hold at least
        ``bitmap_size(nr_cpu_ids)`` bytes; the bytes after them are ignored, and
        so are the bits at or above ``nr_cpu_ids`` in the last word (the
        kernel copies them but no cpumask call reads them).

        Raises InvalidArgument (EINVAL) if ``data`` is too short.
        """
        nr = _check_nr(nr_cpu_ids)
        size = bitmap_size(nr)
        raw = bytes(memoryview(data).cast("B")[:size])
        if len(raw) < size:
            raise InvalidArgument(f"{len(raw)} bytes hold no cpumask of {nr} CPUs (bitmap_size is {size})")
        if sys.byteorder == "little":
            bits = int.from_bytes(raw, "little")
        else:  # pragma: no cover - big-endian hosts
            bits = 0
            for w in range(size // 8):
                bits |= int.from_bytes(raw[8 * w : 8 * w + 8], "big") << (64 * w)
        return _make(bits & ((1 << nr) - 1), nr)

    # ---- accessors ---------------------------------------------------------------

    @property
    def bits(self) -> int:
        """The bitmap as an int: bit ``n`` set when CPU ``n`` is in the mask."""
        return self._bits

    @property
    def nr_cpu_ids(self) -> int:
        """The width of the mask: CPUs are in ``[0, nr_cpu_ids)``."""
        return self._nr

    def to_bytes(self) -> bytes:
        """``bitmap_size(nr_cpu_ids)`` bytes of native ``unsigned long`` words, tail bits zero.

        The layout ``bpf_cpumask_populate()`` and ``sched_setaffinity(2)`` read.
        """
        size = bitmap_size(self._nr)
        if sys.byteorder == "little":
            return self._bits.to_bytes(size, "little")
        return b"".join(  # pragma: no cover - big-endian hosts
            ((self._bits >> (64 * w)) & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big") for w in range(size // 8)
        )

    def weight(self) -> int:
        """The number of CPUs in the mask (``cpumask_weight()``)."""
        return self._bits.bit_count()

    def first(self) -> int:
        """The lowest CPU in the mask, or ``nr_cpu_ids`` if it is empty (``cpumask_first()``)."""
        b = self._bits
        return (b & -b).bit_length() - 1 if b else self._nr

    def next(self, cpu: int) -> int:
        """The lowest CPU in the mask above ``cpu``, or ``nr_cpu_ids`` (``cpumask_next()``).

        ``next(-1)`` is ``first()``.
        """
        start = cpu + 1
        if start <= 0:
            return self.first()
        if start >= self._nr:
            return self._nr
        x = self._bits >> start
        return start + (x & -x).bit_length() - 1 if x else self._nr

    def first_zero(self) -> int:
        """The lowest CPU not in the mask, or ``nr_cpu_ids`` (``cpumask_first_zero()``)."""
        x = ~self._bits & ((1 << self._nr) - 1)
        return (x & -x).bit_length() - 1 if x else self._nr

    def first_and(self, other: Cpumask) -> int:
        """The lowest CPU in both masks, or ``nr_cpu_ids`` (``cpumask_first_and()``)."""
        x = self._bits & self._other(other)
        return (x & -x).bit_length() - 1 if x else self._nr

    def intersects(self, other: Cpumask) -> bool:
        """True if some CPU is in both masks (``cpumask_intersects()``)."""
        return bool(self._bits & self._other(other))

    # ---- formats -----------------------------------------------------------------

    def format_list(self) -> str:
        """The list format, ``0-3,8``: ascending, runs of two or more as ``a-b``, empty ``""``.

        Mirrors ``%*pbl`` (``bitmap_list_string()``).
        """
        b = self._bits
        if not b:
            return ""
        spans = map(_span, _RUNS.finditer(format(b, "b")[::-1]))
        return ",".join([f"{a}-{e - 1}" if e - a > 1 else str(a) for a, e in spans])

    def format_mask(self, nbits: int | None = None) -> str:
        """The hex mask format, ``ff,00000001``, of the low ``nbits`` bits (default ``nr_cpu_ids``).

        Mirrors ``%*pb`` (``bitmap_string()``): 32-bit chunks from the most
        significant, comma separated, lowercase; the first chunk zero-padded to
        ``ceil((nbits % 32 or 32) / 4)`` digits, the others to 8; ``nbits`` 0
        prints ``""``.  CPUs at or above ``nbits`` are not printed.
        """
        if nbits is None:
            nbits = self._nr
        elif not isinstance(nbits, int) or isinstance(nbits, bool) or nbits < 0:
            raise InvalidArgument(f"nbits must be an int >= 0, not {nbits!r}")
        if nbits == 0:
            return ""
        first_bits = nbits % 32 or 32
        first_w = (first_bits + 3) // 4
        nchunks = -(-nbits // 32)
        digits = format(self._bits & ((1 << nbits) - 1), "x").zfill(first_w + 8 * (nchunks - 1))
        if nchunks == 1:
            return digits
        return ",".join([digits[:first_w], *(digits[i : i + 8] for i in range(first_w, len(digits), 8))])

    def __str__(self) -> str:
        return self.format_list()

    def __repr__(self) -> str:
        return f"Cpumask({self.format_list()!r}, nr_cpu_ids={self._nr})"

    # ---- container protocol --------------------------------------------------------

    def __len__(self) -> int:
        return self._bits.bit_count()

    def __bool__(self) -> bool:
        return self._bits != 0

    def __contains__(self, cpu: object) -> bool:
        return isinstance(cpu, int) and 0 <= cpu < self._nr and (self._bits >> cpu) & 1 == 1

    def __iter__(self) -> Iterator[int]:
        digits = format(self._bits, "b").encode("ascii").translate(_BIN_TO_BOOL)
        return itertools.compress(itertools.count(), reversed(digits))

    def __hash__(self) -> int:
        return hash((self._bits, self._nr))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Cpumask):
            return NotImplemented
        return self._bits == other._bits and self._nr == other._nr

    # ---- algebra -------------------------------------------------------------------

    def _other(self, other: Cpumask) -> int:
        if not isinstance(other, Cpumask):
            raise TypeError(f"expected a Cpumask, not {type(other).__name__}")
        if other._nr != self._nr:
            raise _mismatch(self, other)
        return other._bits

    def __or__(self, other: object) -> Cpumask:
        if not isinstance(other, Cpumask):
            return NotImplemented
        if other._nr != self._nr:
            raise _mismatch(self, other)
        return _make(self._bits | other._bits, self._nr)

    def __and__(self, other: object) -> Cpumask:
        if not isinstance(other, Cpumask):
            return NotImplemented
        if other._nr != self._nr:
            raise _mismatch(self, other)
        return _make(self._bits & other._bits, self._nr)

    def __xor__(self, other: object) -> Cpumask:
        if not isinstance(other, Cpumask):
            return NotImplemented
        if other._nr != self._nr:
            raise _mismatch(self, other)
        return _make(self._bits ^ other._bits, self._nr)

    def __sub__(self, other: object) -> Cpumask:
        if not isinstance(other, Cpumask):
            return NotImplemented
        if other._nr != self._nr:
            raise _mismatch(self, other)
        return _make(self._bits & ~other._bits, self._nr)

    def __invert__(self) -> Cpumask:
        return _make(~self._bits & ((1 << self._nr) - 1), self._nr)

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Cpumask):
            return NotImplemented
        return self._bits & ~self._other(other) == 0

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Cpumask):
            return NotImplemented
        o = self._other(other)
        return self._bits & ~o == 0 and self._bits != o

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Cpumask):
            return NotImplemented
        return self._other(other) & ~self._bits == 0

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Cpumask):
            return NotImplemented
        o = self._other(other)
        return o & ~self._bits == 0 and self._bits != o

    # ---- affinity ------------------------------------------------------------------

    def apply_to(self, pid: int = 0) -> None:
        """Let process ``pid`` (0: the calling thread) run only on these CPUs: ``sched_setaffinity(2)``.

        On Linux ``pid`` names one thread (a TID); other threads of a process
        keep their affinity.  The CPUs must exist on this machine: a mask of a
        simulated domain is refused before the system call, not truncated.

        Context: one system call; the caller may migrate during it.
        Raises InvalidArgument (EINVAL) for an empty mask, NoDevice (ENODEV)
        naming the first CPU not possible on this machine, and the percpu error
        of the system call's errno otherwise (EINVAL: none of the CPUs is
        allowed, by cpuset or because all are offline; EPERM; ESRCH).
        """
        if not self._bits:
            raise InvalidArgument(f"sched_setaffinity({pid}): empty CPU mask")
        bad = self._bits & ~_machine_possible_bits()
        if bad:
            cpu = (bad & -bad).bit_length() - 1
            raise NoDevice(
                f"CPU {cpu} of {self} is not possible on this machine (possible: {_cpulist(_machine_possible())})"
            )
        try:
            os.sched_setaffinity(pid, list(self))
        except OSError as e:
            raise from_errno(
                e.errno or _errno.EINVAL, f"sched_setaffinity({pid}, {self}) failed: {e.strerror}"
            ) from e


_new_object = object.__new__
_SET_BITS = Cpumask.__dict__["_bits"].__set__
_SET_NR = Cpumask.__dict__["_nr"].__set__


def _make(bits: int, nr: int) -> Cpumask:
    """A mask from bits already known to lie in ``[0, nr)``: no checks."""
    m: Cpumask = _new_object(Cpumask)
    _SET_BITS(m, bits)
    _SET_NR(m, nr)
    return m


def _mismatch(a: Cpumask, b: Cpumask) -> InvalidArgument:
    return InvalidArgument(f"masks of {a.nr_cpu_ids} and {b.nr_cpu_ids} CPUs do not combine")


def _cpulist(cpus: Iterable[int]) -> str:
    bits = 0
    for c in cpus:
        bits |= 1 << c
    return _make(bits, max(bits.bit_length(), 1)).format_list()


def _checked_bits(bits: int, nr: int) -> int:
    if bits < 0:
        raise RangeError(f"negative bitmap {bits} has CPUs below 0")
    if bits >> nr:
        raise RangeError(f"CPU {bits.bit_length() - 1} is >= nr_cpu_ids {nr}")
    return bits


def _bits_of(cpus: Iterable[int], nr: int) -> int:
    buf = bytearray((nr + 7) >> 3)
    for cpu in cpus:
        if not isinstance(cpu, int) or isinstance(cpu, bool):
            raise TypeError(f"CPU numbers must be ints, not {type(cpu).__name__} ({cpu!r})")
        if not 0 <= cpu < nr:
            raise RangeError(f"CPU {cpu} is outside [0, nr_cpu_ids {nr})")
        buf[cpu >> 3] |= 1 << (cpu & 7)
    return int.from_bytes(buf, "little")
