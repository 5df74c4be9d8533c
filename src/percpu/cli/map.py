"""``percpu map``: the BPF maps of the domains, in bpftool's grammar and JSON.

    percpu map { show | list } [MAP] [-d DOMAIN]   every map (or those MAP names), as bpftool
    percpu map dump    MAP [-d DOMAIN]              every element, hex bytes
    percpu map lookup  MAP key DATA [-d DOMAIN]
    percpu map getnext MAP [key DATA] [-d DOMAIN]
    percpu map update  MAP key DATA value VALUE [UPDATE_FLAGS] [-d DOMAIN]
    percpu map delete  MAP key DATA [-d DOMAIN]

    MAP := id MAP_ID | name MAP_NAME
    DATA := [hex] BYTES
    UPDATE_FLAGS := any | noexist | exist

As in bpftool: keywords may be abbreviated (``k`` for ``key``); a byte is
read like ``strtoul(s, NULL, 0)`` (decimal, ``0x`` hex, leading ``0``
octal), or as hex after the ``hex`` keyword; a per-CPU map's ``value`` is
one value that is copied to every possible CPU.  Plain output is bpftool's
hex dump (``key: 01 00 00 00  value: ...``, ``value (CPU 00): ...``,
``Found N elements``); ``-j`` gives bpftool's JSON (``"0x01"`` strings,
``"values": [{"cpu": N, "value": [...]}]`` for per-CPU maps) plus a
``formatted`` object decoded with the map's struct format or numpy dtype,
where bpftool would use BTF.

Map ids and names are per domain.  Without ``-d`` every domain of this user
is searched; a MAP must then match one map only (``several maps match this
handle``).  Registered CPU maps (``cpumap``) are listed, dumped and looked up
too; they cannot be updated from here (their entries own worker processes).

Differences from bpftool: ``lookup`` of a missing key is an error (``Error:
lookup failed: No such file or directory``, ENOENT) instead of ``Not found``
/ ``null``; a byte above 255 is an error instead of being truncated; the
plain output of a map with a format stays the hex dump (bpftool prints its
BTF dump instead).
"""

from __future__ import annotations

import abc
import contextlib
import errno as _errno
import math
import os
import re
import struct
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import click

from percpu.cli.render import Options, domain_names, emit, fail

__all__ = ["map_"]

BPF_OBJ_NAME_LEN = 16
_ARRAYS = ("array", "percpu_array", "cpumap")


# ---- bpftool's helpers ---------------------------------------------------------------------


def _is_prefix(tok: str, word: str) -> bool:
    """bpftool's ``is_prefix()``: ``tok`` abbreviates ``word``."""
    return 0 < len(tok) <= len(word) and word.startswith(tok)


_BASE0 = re.compile(r"^(?:0[xX](?P<hex>[0-9a-fA-F]+)|(?P<oct>0[0-7]*)|(?P<dec>[1-9][0-9]*))$")
_BASE16 = re.compile(r"^(?:0[xX])?(?P<hex>[0-9a-fA-F]+)$")


def _strtoul(s: str, base: int) -> int | None:
    """``strtoul(s, &end, base)`` with ``*end == 0`` required; None if it would stop early."""
    m = (_BASE16 if base == 16 else _BASE0).match(s)
    if m is None:
        return None
    if m.group("hex") is not None:
        return int(m.group("hex"), 16)
    if m.group("oct") is not None:
        return int(m.group("oct"), 8)
    return int(m.group("dec"), 10)


def _fprint_hex(data: bytes) -> str:
    """bpftool's ``fprint_hex(f, data, n, " ")``: a double space every 8 bytes, a newline every 16."""
    out = []
    for i, b in enumerate(data):
        if i and not i % 16:
            out.append("\n")
        elif i and not i % 8:
            out.append("  ")
        elif i:
            out.append(" ")
        out.append(f"{b:02x}")
    return "".join(out)


def _hex_json(data: bytes) -> list[str]:
    """bpftool's ``print_hex_data_json()``."""
    return [f"0x{b:02x}" for b in data]


def _strerror(code: int) -> str:
    return os.strerror(code)


def _jsonable(v: Any) -> Any:
    """A decoded key or value as JSON: numbers, lists, and objects for structured records."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return _hex_json(bytes(v))
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if type(v).__module__ == "numpy":
        dt = getattr(v, "dtype", None)
        if dt is not None and dt.names and getattr(v, "ndim", 0) == 0:
            return {n: _jsonable(v[n]) for n in dt.names}
        if getattr(v, "ndim", 0) >= 1:
            return [_jsonable(x) for x in v]
        return _jsonable(v.item())
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class _Err(Exception):
    """A map operation failed with ``errno`` (message as bpftool words it)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message, self.code = message, code


# ---- the maps of a domain ------------------------------------------------------------------


class _View(abc.ABC):
    """One map of one domain, seen as bpftool sees it: raw bytes in and out."""

    domain: str
    dom: Any
    id: int
    type: str
    name: str
    flags: int
    key_size: int
    value_size: int
    max_entries: int
    memlock: int
    percpu = False

    @property
    def possible(self) -> tuple[int, ...]:
        return tuple(self.dom.possible)

    def info(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.name:
            d["name"] = self.name
        d.update({"flags": self.flags, "bytes_key": self.key_size, "bytes_value": self.value_size,
                  "max_entries": self.max_entries, "bytes_memlock": self.memlock, "frozen": 0})
        d.update(self.formats())
        d["domain"] = self.domain
        return d

    def formats(self) -> dict[str, str]:
        return {}

    def formatted(self, key: bytes, raw: bytes) -> dict[str, Any] | None:
        return None

    @abc.abstractmethod
    def lookup(self, key: bytes) -> bytes | None:
        ...

    @abc.abstractmethod
    def next_key(self, key: bytes | None) -> bytes | None:
        ...

    @abc.abstractmethod
    def update(self, key: bytes, value: bytes, flags: int) -> None:
        ...

    @abc.abstractmethod
    def delete(self, key: bytes) -> None:
        ...


class _BpfView(_View):
    """A map of :mod:`percpu.maps`."""

    def __init__(self, dname: str, dom: Any, m: Any) -> None:
        self.domain, self.dom, self.m = dname, dom, m
        info = m.info()
        self.id, self.type, self.name, self.flags = info["id"], info["type"], info["name"], info["flags"]
        self.key_size, self.value_size = info["bytes_key"], info["bytes_value"]
        self.max_entries, self.memlock = info["max_entries"], info["bytes_memlock"]
        self._formats = {k: info[k] for k in ("key_format", "value_format") if k in info}
        self.percpu = bool(m.percpu)
        self.is_array = self.type in _ARRAYS

    def formats(self) -> dict[str, str]:
        return dict(self._formats)

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        from percpu.errors import PercpuError

        try:
            return fn(*args)
        except PercpuError as e:
            code = e.errno if isinstance(e.errno, int) else _errno.EINVAL
            raise _Err(f"{what}: {_strerror(code)}", code) from None

    def lookup(self, key: bytes) -> bytes | None:
        m = self.m

        def raw() -> bytes | None:
            # the raw copy (no decoding: a format may not round-trip every byte)
            m._check_user(False)
            r = m._core.lookup(m._key(key))
            return None if r is None else bytes(r)

        out: bytes | None = self._call("lookup failed", raw)
        return out

    def next_key(self, key: bytes | None) -> bytes | None:
        from percpu.errors import NoEntry

        m = self.m
        if self.is_array:
            try:
                nk = self._call("can't get next key", m.get_next_key, key)
            except _Err as e:
                if e.code == _errno.ENOENT:
                    return None
                raise
            return nk.to_bytes(4, "little") if isinstance(nk, int) else bytes(m.key_codec.encode(nk))

        def raw() -> bytes | None:
            m._check_user(False)
            try:
                nk = m._core.get_next_key(None if key is None else m._key(key))
            except NoEntry:
                return None
            return None if nk is None else bytes(nk)

        out: bytes | None = self._call("can't get next key", raw)
        return out

    def update(self, key: bytes, value: bytes, flags: int) -> None:
        if self.percpu:  # bpftool's fill_per_cpu_value(): the one value on every possible CPU
            pad = bytes(-self.value_size % 8)
            value = (value + pad) * len(self.possible)
        self._call("update failed", self.m.update, key, value, flags)

    def delete(self, key: bytes) -> None:
        self._call("delete failed", self.m.delete, key)

    def formatted(self, key: bytes, raw: bytes) -> dict[str, Any] | None:
        kc, vc = self.m.key_codec, self.m.value_codec
        if kc.kind == "bytes" and vc.kind == "bytes":
            return None
        out: dict[str, Any] = {}
        if kc.kind != "bytes":
            out["key"] = _jsonable(kc.decode(key))
        elif self.is_array:
            out["key"] = int.from_bytes(key, "little")

        def dec(b: bytes) -> Any:
            return _jsonable(vc.decode(b)) if vc.kind != "bytes" else _hex_json(b)

        if self.percpu:
            step = self.value_size + (-self.value_size % 8)
            out["values"] = [{"cpu": cpu, "value": dec(raw[i * step:i * step + self.value_size])}
                             for i, cpu in enumerate(self.possible)]
        else:
            out["value"] = dec(raw)
        return out


class _CpuMapView(_View):
    """A registered ``BPF_MAP_TYPE_CPUMAP`` (:class:`percpu.cpumap.CpuMap`): read-only here."""

    type = "cpumap"

    def __init__(self, dname: str, dom: Any, regname: str, off: int) -> None:
        from percpu.cpumap import _L

        self.domain, self.dom, self.regname = dname, dom, regname
        self.id, self.max_entries, self.value_size, self.flags = struct.unpack_from(
            "<IIII", bytes(dom.mem(off + 8, 16)))
        self.name = regname
        self.key_size = 4
        # cpu_map_mem_usage(): the map and one entry pointer per slot (here also the slot statistics)
        self.memlock = int(_L["map_size"]) + 16 * self.max_entries
        self._cm: Any = None

    def _map(self) -> Any:
        if self._cm is None:
            from percpu.cpumap import CpuMap

            self._cm = CpuMap.attach(self.regname, domain=self.dom)
        return self._cm

    def lookup(self, key: bytes) -> bytes | None:
        v = self._map().lookup(int.from_bytes(key, "little"))
        if v is None:
            return None
        return struct.pack("<II", v.qsize, v.prog_id)[:self.value_size]

    def next_key(self, key: bytes | None) -> bytes | None:
        from percpu.errors import NoEntry

        try:
            nk = self._map().get_next_key(None if key is None else int.from_bytes(key, "little"))
        except NoEntry:
            return None
        return int(nk).to_bytes(4, "little")

    def update(self, key: bytes, value: bytes, flags: int) -> None:
        raise _Err(f"update failed: {_strerror(_errno.EOPNOTSUPP)} (a CPU map's entries are updated by "
                   "the process that owns their workers)", _errno.EOPNOTSUPP)

    def delete(self, key: bytes) -> None:
        raise _Err(f"delete failed: {_strerror(_errno.EOPNOTSUPP)} (a CPU map's entries are deleted by "
                   "the process that owns their workers)", _errno.EOPNOTSUPP)


def _domain_maps(dname: str, dom: Any) -> list[_View]:
    from percpu.cpumap import KIND as CPUMAP_KIND
    from percpu.maps import maps

    out: list[_View] = [_BpfView(dname, dom, m) for m in maps(dom)]
    for e in dom.objects():
        if e.kind == CPUMAP_KIND:
            with contextlib.suppress(Exception):
                out.append(_CpuMapView(dname, dom, e.name, e.offset))
    return sorted(out, key=lambda v: v.id)


class _Session:
    """The domains a command looks at, attached for its duration."""

    def __init__(self, opts: Options, only: str | None) -> None:
        self.opts, self.only = opts, only
        self._open: list[Any] = []

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc: object) -> None:
        for dom in self._open:
            with contextlib.suppress(Exception):
                dom.close()

    def maps(self) -> Iterator[_View]:
        from percpu.runtime.domain import Domain

        try:
            names = domain_names(self.only)
        except OSError as e:
            fail(self.opts, str(e), e.errno)
        for dname in names:
            try:
                dom = Domain.attach(dname)
            except OSError as e:
                if self.only is not None:
                    fail(self.opts, str(e), e.errno)
                continue  # another user's, or gone meanwhile
            self._open.append(dom)
            yield from _domain_maps(dname, dom)


# ---- the grammar ---------------------------------------------------------------------------


def _opts(ctx: click.Context) -> Options:
    return ctx.find_object(Options) or Options()


def _bad(opts: Options, message: str) -> NoReturn:
    fail(opts, message, "EINVAL")


def _parse_map(opts: Options, argv: list[str]) -> tuple[str, Any, list[str]]:
    """``MAP := id MAP_ID | name MAP_NAME``: (``"id"`` or ``"name"``, the value, the rest)."""
    if not argv:
        _bad(opts, "expected 'id' or 'name', got nothing (MAP := id MAP_ID | name MAP_NAME)")
    if _is_prefix(argv[0], "id"):
        if len(argv) < 2:
            _bad(opts, "expected a map id after 'id'")
        v = _strtoul(argv[1], 0)
        if v is None or v > 0xFFFFFFFF:
            _bad(opts, f"can't parse {argv[1]} as ID")
        return "id", v, argv[2:]
    if _is_prefix(argv[0], "name"):
        if len(argv) < 2:
            _bad(opts, "expected a map name after 'name'")
        if len(argv[1]) > BPF_OBJ_NAME_LEN - 1:
            _bad(opts, "can't parse name")
        return "name", argv[1], argv[2:]
    _bad(opts, f"expected 'id' or 'name', got: '{argv[0]}'?")


def _matches(sess: _Session, how: str, what: Any) -> list[_View]:
    return [v for v in sess.maps() if (v.id if how == "id" else v.name) == what]


def _not_found(opts: Options, how: str, what: Any) -> NoReturn:
    if how == "id":
        fail(opts, f"get map by id ({what}): {_strerror(_errno.ENOENT)}", "ENOENT")
    fail(opts, f"no map with name {what} found", "ENOENT")


def _one(opts: Options, sess: _Session, argv: list[str]) -> tuple[_View, list[str]]:
    """bpftool's ``map_parse_fd()``: exactly one map matches."""
    how, what, rest = _parse_map(opts, argv)
    found = _matches(sess, how, what)
    if not found:
        _not_found(opts, how, what)
    if len(found) > 1:
        fail(opts, "several maps match this handle ("
             + ", ".join(f"id {v.id} in domain {v.domain}" for v in found) + "); use -d DOMAIN", "EINVAL")
    return found[0], rest


def _parse_bytes(opts: Options, argv: list[str], i: int, name: str, n: int) -> tuple[bytes, int]:
    """bpftool's ``parse_bytes()``: ``n`` bytes from ``argv[i:]``, after an optional ``hex``."""
    base = 0
    if i < len(argv) and _is_prefix(argv[i], "hex"):
        base = 16
        i += 1
    out = bytearray()
    while len(out) < n and i < len(argv):
        b = _strtoul(argv[i], base)
        if b is None or b > 0xFF:
            _bad(opts, f"error parsing byte: {argv[i]}")
        out.append(b)
        i += 1
    if len(out) != n:
        _bad(opts, f"{name} expected {n} bytes got {len(out)}")
    return bytes(out), i


def _parse_elem(opts: Options, argv: list[str], view: _View, *, key: bool, value: bool,
                flags: bool) -> tuple[bytes | None, bytes | None, int]:
    """bpftool's ``parse_elem()``: ``key DATA``, ``value VALUE`` and an update flag, in any order."""
    from percpu.maps import BPF_ANY, BPF_EXIST, BPF_NOEXIST

    k: bytes | None = None
    v: bytes | None = None
    fl = BPF_ANY
    fl_seen = not flags
    i = 0
    while i < len(argv):
        tok = argv[i]
        if _is_prefix(tok, "key"):
            if k is not None or not key:
                _bad(opts, "duplicate key" if k is not None else "unnecessary key")
            k, i = _parse_bytes(opts, argv, i + 1, "key", view.key_size)
        elif _is_prefix(tok, "value"):
            if v is not None or not value:
                _bad(opts, "duplicate value" if v is not None else "unnecessary value")
            v, i = _parse_bytes(opts, argv, i + 1, "value", view.value_size)
        elif _is_prefix(tok, "any") or _is_prefix(tok, "noexist") or _is_prefix(tok, "exist"):
            if fl_seen:
                _bad(opts, f"flags specified multiple times: {tok}")
            fl_seen = True
            fl = BPF_ANY if _is_prefix(tok, "any") else BPF_NOEXIST if _is_prefix(tok, "noexist") else BPF_EXIST
            i += 1
        else:
            _bad(opts, f"expected key or value, got: {tok}")
    if key and k is None:
        _bad(opts, "did not find key")
    if value and v is None:
        _bad(opts, "did not find value")
    return k, v, fl


def _no_more(opts: Options, rest: list[str]) -> None:
    if rest:
        _bad(opts, f"what is '{rest[0]}'?")


def _run(opts: Options, fn: Any, *args: Any) -> Any:
    """Run a map operation; report its failure bpftool's way."""
    from percpu.errors import PercpuError

    try:
        return fn(*args)
    except _Err as e:
        fail(opts, e.message, e.code)
    except PercpuError as e:
        fail(opts, str(e), e.errno if isinstance(e.errno, int) else None)


# ---- element output ------------------------------------------------------------------------


def _entry_plain(view: _View, key: bytes, raw: bytes) -> str:
    """bpftool's ``print_entry_plain()`` (without the final newline)."""
    ks, vs = view.key_size, view.value_size
    if not view.percpu:
        break_names = ks > 16 or vs > 16
        single_line = ks + vs <= 24 and not break_names
        sep = "\n" if break_names else " "
        return (f"key:{sep}{_fprint_hex(key)}" + ("  " if single_line else "\n")
                + f"value:{sep}{_fprint_hex(raw)}")
    step = vs + (-vs % 8)
    lines = ["key:", _fprint_hex(key)]
    for i, cpu in enumerate(view.possible):
        lines.append(f"value (CPU {cpu:02d}):{chr(10) if vs > 16 else ' '}"
                     + _fprint_hex(raw[i * step:i * step + vs]))
    return "\n".join(lines)


def _entry_json(view: _View, key: bytes, raw: bytes) -> dict[str, Any]:
    """bpftool's ``print_entry_json()``, with ``formatted`` when the map has a format."""
    d: dict[str, Any] = {"key": _hex_json(key)}
    if not view.percpu:
        d["value"] = _hex_json(raw)
    else:
        vs = view.value_size
        step = vs + (-vs % 8)
        d["values"] = [{"cpu": cpu, "value": _hex_json(raw[i * step:i * step + vs])}
                       for i, cpu in enumerate(view.possible)]
    f = view.formatted(key, raw)
    if f is not None:
        d["formatted"] = f
    return d


def _entry_error_plain(view: _View, key: bytes, msg: str) -> str:
    """bpftool's ``print_entry_error_msg()``."""
    break_names = view.key_size > 16 or len(msg) > 16
    single_line = view.key_size + len(msg) <= 24 and not break_names
    sep = "\n" if break_names else " "
    return f"key:{sep}{_fprint_hex(key)}" + ("  " if single_line else "\n") + f"value:{sep}{msg}"


def _dump(opts: Options, view: _View) -> tuple[list[dict[str, Any]], list[str], int]:
    """Walk the map with get_next_key, as bpftool's ``map_dump()``: JSON entries, plain lines, count."""
    entries: list[dict[str, Any]] = []
    lines: list[str] = []
    n = 0
    prev: bytes | None = None
    with view.dom:
        while True:
            key = _run(opts, view.next_key, prev)
            if key is None:
                break
            try:
                raw = view.lookup(key)
                code = _errno.ENOENT if raw is None else 0
            except _Err as e:
                raw, code = None, e.code
            if raw is None:
                # print_entry_error(): deleted meanwhile, or unreadable (a CPU map's empty slot)
                entries.append({"key": _hex_json(key), "value": {"error": _strerror(code)}})
                lines.append(_entry_error_plain(view, key, "<no entry>" if code == _errno.ENOENT
                                                else _strerror(code)))
            else:
                entries.append(_entry_json(view, key, raw))
                lines.append(_entry_plain(view, key, raw))
                n += 1
            prev = key
    return entries, lines, n


# ---- the commands --------------------------------------------------------------------------

_domain_opt = click.option("-d", "--domain", default=None, help="Only this domain (default: every domain).")
_F = TypeVar("_F", bound=Callable[..., Any])


def _args(metavar: str) -> Callable[[_F], _F]:
    deco: Callable[[_F], _F] = click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar=metavar)
    return deco


_ctx = {"ignore_unknown_options": True}


@click.group("map")
def map_() -> None:
    """BPF maps (hash, array and their per-CPU kinds; CPU maps) of the domains, as bpftool map."""


def _show(ctx: click.Context, args: tuple[str, ...], domain: str | None) -> None:
    opts = _opts(ctx)
    argv = list(args)
    with _Session(opts, domain) as sess:
        if argv:
            how, what, rest = _parse_map(opts, argv)
            _no_more(opts, rest)
            views = _matches(sess, how, what)
            if not views:
                _not_found(opts, how, what)
        else:
            views = list(sess.maps())
        rows = [v.info() for v in views]

    def plain() -> None:
        for r in rows:
            name = f"name {r['name']}  " if "name" in r else ""
            click.echo(f"{r['id']}: {r['type']}  {name}flags 0x{r['flags']:x}  domain {r['domain']}")
            click.echo(f"\tkey {r['bytes_key']}B  value {r['bytes_value']}B  max_entries {r['max_entries']}"
                       f"  memlock {r['bytes_memlock']}B")
            if "key_format" in r or "value_format" in r:
                click.echo(f"\tkey_format {r.get('key_format', '-')}  value_format {r.get('value_format', '-')}")

    # bpftool: one map asked for is an object, several (or all) a list
    emit(opts, rows[0] if argv and len(rows) == 1 else rows, plain)


@map_.command("show", context_settings=_ctx)
@_args("[MAP]")
@_domain_opt
@click.pass_context
def show(ctx: click.Context, args: tuple[str, ...], domain: str | None) -> None:
    """Show every map, or the map(s) MAP := id ID | name NAME."""
    _show(ctx, args, domain)


map_.add_command(show, "list")  # bpftool: list is show


@map_.command("dump", context_settings=_ctx)
@_args("MAP")
@_domain_opt
@click.pass_context
def dump(ctx: click.Context, args: tuple[str, ...], domain: str | None) -> None:
    """Dump every element of MAP (id ID | name NAME), in hex."""
    opts = _opts(ctx)
    with _Session(opts, domain) as sess:
        how, what, rest = _parse_map(opts, list(args))
        _no_more(opts, rest)
        views = _matches(sess, how, what)
        if not views:
            _not_found(opts, how, what)
        dumps = [(v, *_dump(opts, v)) for v in views]

    if len(dumps) == 1:
        data: Any = dumps[0][1]
    else:  # bpftool: several maps, each with its header and "elements"
        data = []
        for v, entries, _, _ in dumps:
            hdr = {k: x for k, x in v.info().items() if k in ("id", "type", "name", "flags", "domain")}
            data.append({**hdr, "elements": entries})

    def plain() -> None:
        for i, (v, _, lines, n) in enumerate(dumps):
            if len(dumps) > 1:
                name = f"name {v.name}  " if v.name else ""
                click.echo(f"{v.id}: {v.type}  {name}flags 0x{v.flags:x}  domain {v.domain}")
            for line in lines:
                click.echo(line)
            click.echo(f"Found {n} element{'s' if n != 1 else ''}")
            if i != len(dumps) - 1:
                click.echo("")

    emit(opts, data, plain)


@map_.command("lookup", context_settings=_ctx)
@_args("MAP key DATA")
@_domain_opt
@click.pass_context
def lookup(ctx: click.Context, args: tuple[str, ...], domain: str | None) -> None:
    """Look up a key; DATA := [hex] BYTES..."""
    opts = _opts(ctx)
    with _Session(opts, domain) as sess:
        view, rest = _one(opts, sess, list(args))
        key, _, _ = _parse_elem(opts, rest, view, key=True, value=False, flags=False)
        assert key is not None
        with view.dom:
            raw = _run(opts, view.lookup, key)
        if raw is None:
            fail(opts, f"lookup failed: {_strerror(_errno.ENOENT)}", "ENOENT")
        data = _entry_json(view, key, raw)
        text = _entry_plain(view, key, raw)
    emit(opts, data, text)


@map_.command("getnext", context_settings=_ctx)
@_args("MAP [key DATA]")
@_domain_opt
@click.pass_context
def getnext(ctx: click.Context, args: tuple[str, ...], domain: str | None) -> None:
    """The key after DATA (without it: the first key)."""
    opts = _opts(ctx)
    with _Session(opts, domain) as sess:
        view, rest = _one(opts, sess, list(args))
        key = None
        if rest:
            key, _, _ = _parse_elem(opts, rest, view, key=True, value=False, flags=False)
        with view.dom:
            nk = _run(opts, view.next_key, key)
        if nk is None:
            fail(opts, f"can't get next key: {_strerror(_errno.ENOENT)}", "ENOENT")
    data = {"key": None if key is None else _hex_json(key), "next_key": _hex_json(nk)}
    text = ("key: None" if key is None else f"key:\n{_fprint_hex(key)}") + f"\nnext key:\n{_fprint_hex(nk)}"
    emit(opts, data, text)


@map_.command("update", context_settings=_ctx)
@_args("MAP key DATA value VALUE [any|noexist|exist]")
@_domain_opt
@click.pass_context
def update(ctx: click.Context, args: tuple[str, ...], domain: str | None) -> None:
    """Update an element (default flag: any).

    DATA and VALUE := [hex] BYTES...  A per-CPU map's VALUE is given once and
    written to every possible CPU, as bpftool does.
    """
    opts = _opts(ctx)
    with _Session(opts, domain) as sess:
        view, rest = _one(opts, sess, list(args))
        key, value, flags = _parse_elem(opts, rest, view, key=True, value=True, flags=True)
        assert key is not None and value is not None
        with view.dom:
            _run(opts, view.update, key, value, flags)
    if opts.json_output:
        emit(opts, None, "")


@map_.command("delete", context_settings=_ctx)
@_args("MAP key DATA")
@_domain_opt
@click.pass_context
def delete(ctx: click.Context, args: tuple[str, ...], domain: str | None) -> None:
    """Delete an element; DATA := [hex] BYTES..."""
    opts = _opts(ctx)
    with _Session(opts, domain) as sess:
        view, rest = _one(opts, sess, list(args))
        key, _, _ = _parse_elem(opts, rest, view, key=True, value=False, flags=False)
        assert key is not None
        with view.dom:
            _run(opts, view.delete, key)
    if opts.json_output:
        emit(opts, None, "")
