"""``percpu map show | list | dump | lookup | getnext | update | delete``: bpftool's grammar, output and JSON.

Most runs go through click's CliRunner in this process, on a domain made
here and named with ``-d`` (other tests' domains may hold maps of the same
names).  One test runs ``python -m percpu`` in a child process to check that
an update made there is what this process's handles see.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from percpu.cli.main import cli
from percpu.maps import (
    BPF_F_NO_PREALLOC,
    BPF_F_RDONLY,
    BPF_F_WRONLY,
    ArrayMap,
    HashMap,
    PercpuArrayMap,
    PercpuHashMap,
    maps,
)

pytestmark = pytest.mark.timeout(120)

SHOW_KEYS = {"id", "type", "name", "flags", "bytes_key", "bytes_value", "max_entries", "bytes_memlock", "frozen",
             "domain"}


@dataclass
class Res:
    code: int
    out: str
    err: str


def run(*args: str) -> Res:
    r = CliRunner().invoke(cli, list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return Res(r.exit_code, r.stdout, r.stderr)


def ok(*args: str) -> str:
    r = run(*args)
    assert r.code == 0, (args, r.out, r.err)
    return r.out


def jok(*args: str):
    return json.loads(ok("-j", *args))


def error(*args: str, errno: str) -> str:
    """Run a failing command in both modes; return the message (plain ``Error: ...`` == JSON ``error``)."""
    r = run(*args)
    assert r.code == 1, (args, r.out, r.err)
    assert r.out == "" and r.err.startswith("Error: ") and r.err.endswith("\n"), (r.out, r.err)
    msg = r.err[len("Error: "):-1]
    rj = run("-j", *args)
    assert rj.code == 1
    assert json.loads(rj.out) == {"error": msg, "errno": errno}, rj.out
    return msg


def hx(*bs: int) -> list[str]:
    return [f"0x{b:02x}" for b in bs]


def u32(v: int) -> list[str]:
    return hx(*v.to_bytes(4, "little"))


def u64(v: int) -> list[str]:
    return hx(*v.to_bytes(8, "little"))


@pytest.fixture
def dom(make_domain):
    return make_domain(size=16 << 20, nr_cpus=4)


@pytest.fixture
def m(dom):
    """One map of each type, with a few elements."""
    arr = ArrayMap(4, 8, 3, name="t_arr")
    parr = PercpuArrayMap(value="<I", max_entries=2, name="t_parr")
    h = HashMap(4, 8, 4, name="t_h")
    ph = PercpuHashMap(key="<I", value="<Q", max_entries=8, map_flags=BPF_F_NO_PREALLOC, name="t_ph")
    arr.update(1, (7).to_bytes(8, "little"))
    parr.update(0, [1, 2, 3, 4])
    h.update(b"\x01\x00\x00\x00", (5).to_bytes(8, "little"))
    ph.update(2, [10, 20, 30, 40])
    d = dom.name
    return SimpleNamespace(arr=arr, parr=parr, h=h, ph=ph, d=d)


# ---- show / list ---------------------------------------------------------------------------


def test_show_plain(dom, m):
    out = ok("map", "show", "-d", m.d)
    d = m.d
    assert out == (
        f"{m.arr.id}: array  name t_arr  flags 0x0  domain {d}\n"
        f"\tkey 4B  value 8B  max_entries 3  memlock {m.arr.memlock()}B\n"
        f"{m.parr.id}: percpu_array  name t_parr  flags 0x0  domain {d}\n"
        f"\tkey 4B  value 4B  max_entries 2  memlock {m.parr.memlock()}B\n"
        f"\tkey_format -  value_format struct:<I\n"
        f"{m.h.id}: hash  name t_h  flags 0x0  domain {d}\n"
        f"\tkey 4B  value 8B  max_entries 4  memlock {m.h.memlock()}B\n"
        f"{m.ph.id}: percpu_hash  name t_ph  flags 0x1  domain {d}\n"
        f"\tkey 4B  value 8B  max_entries 8  memlock {m.ph.memlock()}B\n"
        f"\tkey_format struct:<I  value_format struct:<Q\n"
    )
    assert ok("map", "list", "-d", m.d) == out
    assert "\x1b[" not in out


def test_show_json(dom, m):
    rows = jok("map", "show", "-d", m.d)
    assert [r["name"] for r in rows] == ["t_arr", "t_parr", "t_h", "t_ph"]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    by = {r["name"]: r for r in rows}
    assert by["t_arr"] == {"id": m.arr.id, "type": "array", "name": "t_arr", "flags": 0, "bytes_key": 4,
                           "bytes_value": 8, "max_entries": 3, "bytes_memlock": m.arr.memlock(), "frozen": 0,
                           "domain": m.d}
    assert set(by["t_h"]) == SHOW_KEYS
    assert by["t_ph"]["type"] == "percpu_hash" and by["t_ph"]["flags"] == BPF_F_NO_PREALLOC
    assert by["t_ph"]["key_format"] == "struct:<I" and by["t_ph"]["value_format"] == "struct:<Q"
    assert by["t_parr"]["type"] == "percpu_array" and "key_format" not in by["t_parr"]
    for r in rows:  # the same fields as the Python API's info()
        mm = getattr(m, r["name"][2:])
        assert {k: v for k, v in r.items() if k not in ("frozen", "domain")} == mm.info()
    assert jok("map", "list", "-d", m.d) == rows
    # one map asked for: an object, as bpftool; -j/-p also after the command
    assert jok("map", "show", "name", "t_h", "-d", m.d) == by["t_h"]
    assert json.loads(ok("map", "show", "id", str(m.h.id), "-d", m.d, "-j")) == by["t_h"]
    pretty = ok("map", "show", "i", str(m.ph.id), "-d", m.d, "-p")
    assert pretty.startswith("{\n  ") and json.loads(pretty) == by["t_ph"]


def test_show_unnamed_map_and_empty_domain(make_domain):
    d = make_domain(size=8 << 20, nr_cpus=2)
    assert ok("map", "show", "-d", d.name) == ""
    assert jok("map", "show", "-d", d.name) == []
    h = HashMap(4, 4, 2)
    out = ok("map", "show", "-d", d.name)
    assert out.startswith(f"{h.id}: hash  flags 0x0  domain {d.name}\n")  # bpftool leaves out an empty name
    row = jok("map", "show", "id", str(h.id), "-d", d.name)
    assert "name" not in row and row["id"] == h.id


def test_show_cpumap(dom, m):
    from percpu.cpumap import CpuMap

    cm = CpuMap(2, name="t_cm")
    try:
        row = jok("map", "show", "name", "t_cm", "-d", m.d)
        assert row["type"] == "cpumap" and row["id"] == cm.id and row["name"] == "t_cm"
        assert (row["bytes_key"], row["bytes_value"], row["max_entries"], row["flags"]) == (4, 8, 2, 0)
        assert [r["type"] for r in jok("map", "show", "-d", m.d)][-1] == "cpumap"
        # empty slots: bpftool's print_entry_error() for each, none counted
        assert ok("map", "dump", "name", "t_cm", "-d", m.d) == (
            "key: 00 00 00 00  value: <no entry>\n"
            "key: 01 00 00 00  value: <no entry>\n"
            "Found 0 elements\n"
        )
        assert jok("map", "dump", "id", str(cm.id), "-d", m.d) == [
            {"key": u32(0), "value": {"error": "No such file or directory"}},
            {"key": u32(1), "value": {"error": "No such file or directory"}},
        ]
        assert error("map", "lookup", "name", "t_cm", "key", "0", "0", "0", "0", "-d", m.d,
                     errno="ENOENT") == "lookup failed: No such file or directory"
        assert jok("map", "getnext", "name", "t_cm", "-d", m.d) == {"key": None, "next_key": u32(0)}
        msg = error("map", "update", "name", "t_cm", "key", "0", "0", "0", "0", "value", *["0"] * 8,
                    "-d", m.d, errno="EOPNOTSUPP")
        assert msg.startswith("update failed: Operation not supported")
        msg = error("map", "delete", "name", "t_cm", "key", "0", "0", "0", "0", "-d", m.d, errno="EOPNOTSUPP")
        assert msg.startswith("delete failed: Operation not supported")
        assert cm.lookup(0) is None
    finally:
        cm.free()


# ---- dump ----------------------------------------------------------------------------------


def test_dump_array(dom, m):
    assert ok("map", "dump", "name", "t_arr", "-d", m.d) == (
        "key: 00 00 00 00  value: 00 00 00 00 00 00 00 00\n"
        "key: 01 00 00 00  value: 07 00 00 00 00 00 00 00\n"
        "key: 02 00 00 00  value: 00 00 00 00 00 00 00 00\n"
        "Found 3 elements\n"
    )
    assert jok("map", "dump", "id", str(m.arr.id), "-d", m.d) == [
        {"key": u32(0), "value": u64(0)}, {"key": u32(1), "value": u64(7)}, {"key": u32(2), "value": u64(0)},
    ]


def test_dump_hash(dom, m):
    m.h.update(b"\x02\x01\x00\x00", b"\xff" * 8)
    out = ok("map", "dump", "name", "t_h", "-d", m.d)
    lines = out.splitlines()
    assert lines[-1] == "Found 2 elements"
    assert sorted(lines[:-1]) == ["key: 01 00 00 00  value: 05 00 00 00 00 00 00 00",
                                  "key: 02 01 00 00  value: ff ff ff ff ff ff ff ff"]
    entries = jok("map", "dump", "name", "t_h", "-d", m.d)
    assert sorted(entries, key=lambda e: e["key"]) == [
        {"key": u32(1), "value": u64(5)}, {"key": u32(0x102), "value": hx(*[0xFF] * 8)},
    ]
    m.h.delete(b"\x01\x00\x00\x00")
    m.h.delete(b"\x02\x01\x00\x00")
    assert ok("map", "dump", "name", "t_h", "-d", m.d) == "Found 0 elements\n"
    assert jok("map", "dump", "name", "t_h", "-d", m.d) == []


def test_dump_percpu_array(dom, m):
    assert ok("map", "dump", "name", "t_parr", "-d", m.d) == (
        "key:\n00 00 00 00\n"
        "value (CPU 00): 01 00 00 00\n"
        "value (CPU 01): 02 00 00 00\n"
        "value (CPU 02): 03 00 00 00\n"
        "value (CPU 03): 04 00 00 00\n"
        "key:\n01 00 00 00\n"
        "value (CPU 00): 00 00 00 00\n"
        "value (CPU 01): 00 00 00 00\n"
        "value (CPU 02): 00 00 00 00\n"
        "value (CPU 03): 00 00 00 00\n"
        "Found 2 elements\n"
    )
    entries = jok("map", "dump", "name", "t_parr", "-d", m.d)
    assert entries[0] == {
        "key": u32(0),
        "values": [{"cpu": c, "value": u32(c + 1)} for c in range(4)],
        "formatted": {"key": 0, "values": [{"cpu": c, "value": c + 1} for c in range(4)]},
    }
    assert [v["cpu"] for v in entries[1]["values"]] == list(dom.possible)


def test_dump_percpu_hash_json(dom, m):
    entries = jok("map", "dump", "name", "t_ph", "-d", m.d)
    assert entries == [{
        "key": u32(2),
        "values": [{"cpu": c, "value": u64(10 * (c + 1))} for c in dom.possible],
        "formatted": {"key": 2, "values": [{"cpu": c, "value": 10 * (c + 1)} for c in dom.possible]},
    }]
    out = ok("map", "dump", "name", "t_ph", "-d", m.d)
    assert out == ("key:\n02 00 00 00\n"
                   + "".join(f"value (CPU {c:02d}): {10 * (c + 1):02x} 00 00 00 00 00 00 00\n" for c in range(4))
                   + "Found 1 element\n")


def test_dump_numpy_struct_formatted(dom):
    dt = np.dtype([("pkts", "<u8"), ("bytes", "<u8")])
    st = HashMap(key="<I", value=dt, max_entries=4, name="t_st")
    st.update(3, (10, 1500))
    assert jok("map", "dump", "name", "t_st", "-d", dom.name) == [{
        "key": u32(3),
        "value": u64(10) + u64(1500),
        "formatted": {"key": 3, "value": {"pkts": 10, "bytes": 1500}},
    }]
    # plain stays bpftool's hex (16 bytes: a double space after the 8th)
    assert ok("map", "dump", "name", "t_st", "-d", dom.name) == (
        "key: 03 00 00 00  value: 0a 00 00 00 00 00 00 00  dc 05 00 00 00 00 00 00\nFound 1 element\n"
    )
    row = jok("map", "show", "name", "t_st", "-d", dom.name)
    assert row["value_format"].startswith("numpy:") and row["bytes_value"] == 16


def test_dump_wide_values_break_lines(dom):
    """bpftool's layout: key or value > 16 bytes -> names on their own line, a newline every 16 bytes."""
    w = HashMap(4, 20, 2, name="t_wide")
    w.update(b"\x01\x00\x00\x00", bytes(range(1, 21)))
    assert ok("map", "dump", "name", "t_wide", "-d", dom.name) == (
        "key:\n01 00 00 00\n"
        "value:\n01 02 03 04 05 06 07 08  09 0a 0b 0c 0d 0e 0f 10\n11 12 13 14\n"
        "Found 1 element\n"
    )
    pw = PercpuArrayMap(4, 20, 1, name="t_pwide")
    pw.update(0, bytes(range(20)))
    out = ok("map", "dump", "name", "t_pwide", "-d", dom.name)
    assert out.startswith("key:\n00 00 00 00\nvalue (CPU 00):\n00 01 02 03 04 05 06 07  08 09 0a 0b 0c 0d 0e 0f\n"
                          "10 11 12 13\nvalue (CPU 01):\n")
    # key + value <= 24: one line (12 + 12); more (12 + 16): two lines, the names on the same line
    mid = HashMap(12, 12, 1, name="t_mid")
    mid.update(bytes(12), bytes(12))
    assert ok("map", "dump", "name", "t_mid", "-d", dom.name) == (
        "key: 00 00 00 00 00 00 00 00  00 00 00 00  value: 00 00 00 00 00 00 00 00  00 00 00 00\n"
        "Found 1 element\n"
    )
    two = HashMap(12, 16, 1, name="t_two")
    two.update(bytes(12), bytes(16))
    assert ok("map", "dump", "name", "t_two", "-d", dom.name) == (
        "key: 00 00 00 00 00 00 00 00  00 00 00 00\nvalue: 00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00\n"
        "Found 1 element\n"
    )


# ---- lookup --------------------------------------------------------------------------------


def test_lookup_bytes_decimal_hex_octal(dom, m):
    line = "key: 01 00 00 00  value: 05 00 00 00 00 00 00 00\n"
    assert ok("map", "lookup", "name", "t_h", "key", "1", "0", "0", "0", "-d", m.d) == line
    assert ok("map", "lookup", "name", "t_h", "key", "0x1", "0", "00", "0x0", "-d", m.d) == line
    assert ok("map", "lookup", "name", "t_h", "key", "hex", "01", "0", "0", "0x00", "-d", m.d) == line
    assert ok("map", "lookup", "name", "t_h", "k", "h", "1", "0", "0", "0", "-d", m.d) == line  # abbreviations
    assert ok("map", "lookup", "name", "t_h", "key", "01", "0", "0", "0", "-d", m.d) == line  # octal 01
    m.h.update(b"\x08\x10\x00\x00", (1).to_bytes(8, "little"))
    # strtoul base 0: "010" is octal 8, "16" decimal; in hex mode "10" is 16
    assert ok("map", "lookup", "name", "t_h", "key", "010", "16", "0", "0", "-d", m.d).startswith("key: 08 10 ")
    assert ok("map", "lookup", "name", "t_h", "key", "hex", "8", "10", "0", "0", "-d", m.d).startswith("key: 08 10")
    assert jok("map", "lookup", "name", "t_h", "key", "1", "0", "0", "0", "-d", m.d) == {
        "key": u32(1), "value": u64(5)}


def test_lookup_per_cpu_and_missing(dom, m):
    assert jok("map", "lookup", "name", "t_ph", "key", "2", "0", "0", "0", "-d", m.d) == {
        "key": u32(2),
        "values": [{"cpu": c, "value": u64(10 * (c + 1))} for c in dom.possible],
        "formatted": {"key": 2, "values": [{"cpu": c, "value": 10 * (c + 1)} for c in dom.possible]},
    }
    assert ok("map", "lookup", "name", "t_parr", "key", "0", "0", "0", "0", "-d", m.d).splitlines()[2] == (
        "value (CPU 00): 01 00 00 00")
    for name in ("t_h", "t_ph"):
        assert error("map", "lookup", "name", name, "key", "9", "0", "0", "0", "-d", m.d,
                     errno="ENOENT") == "lookup failed: No such file or directory"
    # an array index past max_entries: ENOENT too
    assert error("map", "lookup", "name", "t_arr", "key", "3", "0", "0", "0", "-d", m.d,
                 errno="ENOENT") == "lookup failed: No such file or directory"


# ---- update / delete ----------------------------------------------------------------------


def test_update_flags_and_python_sees_it(dom, m):
    key = ["key", "7", "0", "0", "0"]
    val = ["value", "hex", "2a", "0", "0", "0", "0", "0", "0", "0"]
    assert error("map", "update", "name", "t_h", *key, *val, "exist", "-d", m.d,
                 errno="ENOENT") == "update failed: No such file or directory"
    assert ok("map", "update", "name", "t_h", *key, *val, "noexist", "-d", m.d) == ""
    assert m.h.lookup(b"\x07\x00\x00\x00") == (42).to_bytes(8, "little")
    assert error("map", "update", "name", "t_h", *key, *val, "noexist", "-d", m.d,
                 errno="EEXIST") == "update failed: File exists"
    # any order, abbreviated flags, JSON null on success
    r = run("-j", "map", "update", "name", "t_h", "v", "9", "0", "0", "0", "0", "0", "0", "0", "e", *key, "-d", m.d)
    assert r.code == 0 and json.loads(r.out) is None
    assert m.h.lookup(b"\x07\x00\x00\x00") == (9).to_bytes(8, "little")
    assert ok("map", "update", "name", "t_h", *key, *val, "any", "-d", m.d) == ""
    assert m.h.lookup(b"\x07\x00\x00\x00") == (42).to_bytes(8, "little")
    # fill the map (4 entries): a new key is E2BIG, replacing one still works
    for k in (11, 12):
        ok("map", "update", "name", "t_h", "key", str(k), "0", "0", "0", *val, "-d", m.d)
    assert len(m.h) == 4
    assert error("map", "update", "name", "t_h", "key", "13", "0", "0", "0", *val, "-d", m.d,
                 errno="E2BIG") == "update failed: Argument list too long"
    ok("map", "update", "name", "t_h", "key", "12", "0", "0", "0", "value", *["255"] * 8, "exist", "-d", m.d)
    assert m.h.lookup(b"\x0c\x00\x00\x00") == b"\xff" * 8
    assert m.h.check() == {"elements": 4, "leaked": 0}


def test_update_array(dom, m):
    val = ["value", "1", "2", "3", "4", "5", "6", "7", "8"]
    ok("map", "update", "name", "t_arr", "key", "2", "0", "0", "0", *val, "-d", m.d)
    assert m.arr.lookup(2) == bytes(range(1, 9))
    assert error("map", "update", "name", "t_arr", "key", "2", "0", "0", "0", *val, "noexist", "-d", m.d,
                 errno="EEXIST") == "update failed: File exists"
    assert error("map", "update", "name", "t_arr", "key", "3", "0", "0", "0", *val, "-d", m.d,
                 errno="E2BIG") == "update failed: Argument list too long"
    assert error("map", "delete", "name", "t_arr", "key", "0", "0", "0", "0", "-d", m.d,
                 errno="EINVAL") == "delete failed: Invalid argument"


def test_update_per_cpu_copies_the_value_to_every_cpu(dom, m):
    """bpftool's fill_per_cpu_value(): one value, written to every possible CPU."""
    ok("map", "update", "name", "t_ph", "key", "5", "0", "0", "0", "value", "3", "0", "0", "0", "0", "0", "0", "1",
       "noexist", "-d", m.d)
    assert m.ph.lookup(5) == [(1 << 56) | 3] * 4
    ok("map", "update", "name", "t_parr", "key", "1", "0", "0", "0", "value", "hex", "ff", "0", "0", "0", "-d", m.d)
    assert m.parr.per_cpu(1) == {c: 255 for c in dom.possible}
    # a per-CPU value is value_size bytes, not one per CPU
    assert error("map", "update", "name", "t_parr", "key", "1", "0", "0", "0", "value", *["1"] * 16, "-d", m.d,
                 errno="EINVAL") == "expected key or value, got: 1"
    assert m.ph.check() == {"elements": 2, "leaked": 0}


def test_delete(dom, m):
    assert ok("map", "delete", "name", "t_h", "key", "1", "0", "0", "0", "-d", m.d) == ""
    assert m.h.get(b"\x01\x00\x00\x00") is None and len(m.h) == 0
    assert error("map", "delete", "name", "t_h", "key", "1", "0", "0", "0", "-d", m.d,
                 errno="ENOENT") == "delete failed: No such file or directory"
    r = run("-j", "map", "delete", "name", "t_ph", "key", "2", "0", "0", "0", "-d", m.d)
    assert r.code == 0 and json.loads(r.out) is None
    assert m.ph.get(2) is None
    assert m.h.check() == {"elements": 0, "leaked": 0} and m.ph.check() == {"elements": 0, "leaked": 0}


# ---- getnext -------------------------------------------------------------------------------


def test_getnext_hash(dom, m):
    m.h.update(b"\x02\x00\x00\x00", bytes(8))
    order = list(m.h.keys())
    assert sorted(order) == [b"\x01\x00\x00\x00", b"\x02\x00\x00\x00"]
    first, second = order
    out = ok("map", "getnext", "name", "t_h", "-d", m.d)
    assert out == f"key: None\nnext key:\n{' '.join(f'{b:02x}' for b in first)}\n"
    assert jok("map", "getnext", "name", "t_h", "-d", m.d) == {"key": None, "next_key": hx(*first)}
    assert jok("map", "getnext", "name", "t_h", "key", *map(str, first), "-d", m.d) == {
        "key": hx(*first), "next_key": hx(*second)}
    out = ok("map", "getnext", "name", "t_h", "key", *map(str, first), "-d", m.d)
    assert out == (f"key:\n{' '.join(f'{b:02x}' for b in first)}\n"
                   f"next key:\n{' '.join(f'{b:02x}' for b in second)}\n")
    assert error("map", "getnext", "name", "t_h", "key", *map(str, second), "-d", m.d,
                 errno="ENOENT") == "can't get next key: No such file or directory"
    # a key that is not in the map: the first key, as the kernel does
    assert jok("map", "getnext", "name", "t_h", "key", "9", "9", "9", "9", "-d", m.d)["next_key"] == hx(*first)


def test_getnext_array(dom, m):
    assert jok("map", "getnext", "name", "t_arr", "-d", m.d)["next_key"] == u32(0)
    assert jok("map", "getnext", "name", "t_arr", "key", "1", "0", "0", "0", "-d", m.d)["next_key"] == u32(2)
    assert jok("map", "getnext", "name", "t_arr", "key", "7", "0", "0", "0", "-d", m.d)["next_key"] == u32(0)
    assert error("map", "getnext", "name", "t_arr", "key", "2", "0", "0", "0", "-d", m.d,
                 errno="ENOENT") == "can't get next key: No such file or directory"


# ---- errors --------------------------------------------------------------------------------

K = ["key", "1", "0", "0", "0"]
V = ["value", *["0"] * 8]


@pytest.mark.parametrize(
    ("args", "message", "errno"),
    [
        (["lookup", "name", "nope", *K], "no map with name nope found", "ENOENT"),
        (["lookup", "id", "9999", *K], "get map by id (9999): No such file or directory", "ENOENT"),
        (["dump", "name", "nope"], "no map with name nope found", "ENOENT"),
        (["show", "id", "9999"], "get map by id (9999): No such file or directory", "ENOENT"),
        (["lookup", "pinned", "/x", *K], "expected 'id' or 'name', got: 'pinned'?", "EINVAL"),
        (["lookup", "id", "x1", *K], "can't parse x1 as ID", "EINVAL"),
        (["lookup", "name", "a_name_of_16_chr", *K], "can't parse name", "EINVAL"),
        (["dump"], "expected 'id' or 'name', got nothing (MAP := id MAP_ID | name MAP_NAME)", "EINVAL"),
        (["dump", "name", "t_h", "extra"], "what is 'extra'?", "EINVAL"),
        (["show", "name", "t_h", "extra"], "what is 'extra'?", "EINVAL"),
        (["lookup", "name", "t_h", "key", "1", "0", "0", "zz"], "error parsing byte: zz", "EINVAL"),
        (["lookup", "name", "t_h", "key", "1", "0", "0", "256"], "error parsing byte: 256", "EINVAL"),
        (["lookup", "name", "t_h", "key", "1", "0", "0", "-1"], "error parsing byte: -1", "EINVAL"),
        (["lookup", "name", "t_h", "key", "1", "0", "0", "08"], "error parsing byte: 08", "EINVAL"),
        (["lookup", "name", "t_h", "key", "1", "0", "0", "0x"], "error parsing byte: 0x", "EINVAL"),
        (["lookup", "name", "t_h", "key", "hex", "1", "0", "0", "g1"], "error parsing byte: g1", "EINVAL"),
        (["lookup", "name", "t_h", "key", "1", "0", "0"], "key expected 4 bytes got 3", "EINVAL"),
        (["lookup", "name", "t_h", "key", "1", "0", "0", "0", "5"], "expected key or value, got: 5", "EINVAL"),
        (["lookup", "name", "t_h"], "did not find key", "EINVAL"),
        (["lookup", "name", "t_h", *K, *V], "unnecessary value", "EINVAL"),
        (["lookup", "name", "t_h", *K, "any"], "flags specified multiple times: any", "EINVAL"),
        (["lookup", "name", "t_h", *K, *K], "duplicate key", "EINVAL"),
        (["update", "name", "t_h", *K], "did not find value", "EINVAL"),
        (["update", "name", "t_h", *V], "did not find key", "EINVAL"),
        (["update", "name", "t_h", *K, "value", "1", "2"], "value expected 8 bytes got 2", "EINVAL"),
        (["update", "name", "t_h", *K, *V, *V], "duplicate value", "EINVAL"),
        (["update", "name", "t_h", *K, *V, "any", "exist"], "flags specified multiple times: exist", "EINVAL"),
        (["update", "name", "t_h", *K, "value", "key", *["0"] * 7], "error parsing byte: key", "EINVAL"),
        (["delete", "name", "t_h", "key", "1"], "key expected 4 bytes got 1", "EINVAL"),
        (["delete", "name", "t_h", *K, *V], "unnecessary value", "EINVAL"),
    ],
)
def test_errors(dom, m, args, message, errno):
    assert error("map", *args, "-d", m.d, errno=errno) == message


def test_errors_leave_the_map_alone(dom, m):
    error("map", "update", "name", "t_h", "key", "1", "0", "0", "0", "value", "1", "2", "-d", m.d, errno="EINVAL")
    assert m.h.lookup(b"\x01\x00\x00\x00") == (5).to_bytes(8, "little") and len(m.h) == 1


def test_unknown_domain(dom):
    r = run("-j", "map", "show", "-d", "no-such-domain-xyz")
    assert r.code == 1 and json.loads(r.out)["errno"] == "ENOENT"


def test_rdonly_and_wronly_maps(dom):
    ro = HashMap(4, 4, 2, BPF_F_RDONLY, name="t_ro")
    wo = HashMap(4, 4, 2, BPF_F_WRONLY, name="t_wo")
    assert error("map", "update", "name", "t_ro", "key", "1", "0", "0", "0", "value", "1", "0", "0", "0",
                 "-d", dom.name, errno="EPERM") == "update failed: Operation not permitted"
    assert ok("map", "dump", "name", "t_ro", "-d", dom.name) == "Found 0 elements\n"
    ok("map", "update", "name", "t_wo", "key", "1", "0", "0", "0", "value", "1", "0", "0", "0", "-d", dom.name)
    assert error("map", "lookup", "name", "t_wo", "key", "1", "0", "0", "0", "-d", dom.name,
                 errno="EPERM") == "lookup failed: Operation not permitted"
    assert error("map", "dump", "name", "t_wo", "-d", dom.name,
                 errno="EPERM") == "can't get next key: Operation not permitted"
    assert error("map", "delete", "name", "t_ro", "key", "1", "0", "0", "0", "-d", dom.name,
                 errno="EPERM") == "delete failed: Operation not permitted"
    assert len(wo) == 1 and len(ro) == 0


# ---- several domains ------------------------------------------------------------------------


def test_every_domain_is_searched_and_ambiguity_is_an_error(make_domain):
    name = "u" + os.urandom(6).hex()  # 13 characters: unique among the other tests' domains
    d1 = make_domain(size=8 << 20, nr_cpus=2)
    d2 = make_domain(size=8 << 20, nr_cpus=2, current=False)
    a = HashMap(4, 4, 2, name=name, domain=d1)
    b = HashMap(4, 4, 2, name=name, domain=d2)
    only1 = HashMap(4, 4, 2, name=name[:-1] + "z", domain=d1)
    a.update(1, 11)
    b.update(1, 22)
    rows = jok("map", "show", "name", name)  # several: a list, as bpftool
    assert sorted((r["domain"], r["id"]) for r in rows) == sorted([(d1.name, a.id), (d2.name, b.id)])
    msg = error("map", "lookup", "name", name, *K, errno="EINVAL")
    assert msg.startswith("several maps match this handle") and d1.name in msg and d2.name in msg
    error("map", "update", "name", name, *K, "value", "0", "0", "0", "0", errno="EINVAL")
    assert jok("map", "lookup", "name", name, *K, "-d", d2.name)["value"] == u32(22)
    ok("map", "update", "name", name, *K, "value", "33", "0", "0", "0", "-d", d2.name)
    assert b.lookup(1) == (33).to_bytes(4, "little") and a.lookup(1) == (11).to_bytes(4, "little")
    # a name in one domain only is found without -d
    ok("map", "update", "name", only1.name, *K, "value", "44", "0", "0", "0")
    assert only1.lookup(1) == (44).to_bytes(4, "little")
    # dump of a name in several domains: each map with its header, as bpftool
    both = jok("map", "dump", "name", name)
    assert sorted((x["domain"], x["elements"][0]["value"]) for x in both) == sorted(
        [(d1.name, u32(11)), (d2.name, u32(33))])
    assert all(set(x) == {"id", "type", "name", "flags", "domain", "elements"} for x in both)
    plain = ok("map", "dump", "name", name)
    assert plain.count("Found 1 element\n") == 2 and f"name {name}  flags 0x0  domain {d2.name}" in plain


# ---- another process ----------------------------------------------------------------------


def test_update_from_another_process_is_seen_here(dom, m):
    def percpu_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "percpu", *args], capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, NO_COLOR="1"))

    r = percpu_cli("map", "update", "name", "t_h", "key", "hex", "ab", "0", "0", "0", "value", *["7"] * 8,
                   "noexist", "-d", m.d)
    assert r.returncode == 0 and r.stdout == "", r.stderr
    assert m.h.lookup(b"\xab\x00\x00\x00") == b"\x07" * 8
    r = percpu_cli("-j", "map", "update", "name", "t_ph", "key", "6", "0", "0", "0", "value", "6", *["0"] * 7,
                   "-d", m.d)
    assert r.returncode == 0 and json.loads(r.stdout) is None, r.stderr
    assert m.ph.per_cpu(6) == {c: 6 for c in dom.possible}
    r = percpu_cli("map", "delete", "name", "t_ph", "key", "2", "0", "0", "0", "-d", m.d)
    assert r.returncode == 0, r.stderr
    assert m.ph.get(2) is None
    r = percpu_cli("-j", "map", "update", "name", "t_h", "key", "hex", "ab", "0", "0", "0", "value", *["7"] * 8,
                   "noexist", "-d", m.d)
    assert r.returncode == 1 and json.loads(r.stdout) == {"error": "update failed: File exists", "errno": "EEXIST"}
    assert m.h.check() == {"elements": 2, "leaked": 0} and m.ph.check() == {"elements": 1, "leaked": 0}


# ---- a map with a numpy scalar format is listed (a regression) --------------------------------


def test_map_with_a_numpy_scalar_dtype_is_listed(dom):
    HashMap(key="<I", value=np.uint64, max_entries=2, name="t_npq")
    assert [x.name for x in maps(dom)] == ["t_npq"]
    assert jok("map", "show", "name", "t_npq", "-d", dom.name)["value_format"] == "numpy:<u8"
