"""BPF maps shared by several pinned processes.

* Per-CPU values: two workers pinned to CPU 0 and CPU 1 attach a per-CPU hash
  map and a per-CPU array by name and add to their CPU's copy through the
  program side (``bpf_map_lookup_elem``'s view, read-modify-write; and
  ``bpf_map_update_elem``); each CPU's copy ends at exactly N, the sum at 2N.
* Torn or freed values: 3-4 processes hammer a small key space with
  inserts, replacements, deletes, lookups, ``lookup_and_delete`` and the
  batches.  Every value written is a stamp (key, writer, sequence) repeated
  over the whole value -- and, in per-CPU maps, over every CPU's copy -- so a
  value copied while half written, or from an element freed and reused for
  another key, shows as a broken stamp or a foreign key.  The inserts and
  deletes each process saw succeed add up to the elements left.
* Full map: processes insert distinct keys into a map of ``max_entries`` M;
  exactly M inserts succeed, the others are ``E2BIG``, and replacing an
  existing key of the full map always succeeds -- also with more replacements
  under way at once than the map has extra elements (one per possible CPU).

Length: the hammering runs PERCPU_STRESS_SECONDS (default 2 s) per case; the
per-CPU counts scale with PERCPU_STRESS_SCALE.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import sys
import threading
import time

import mp_helpers
import pytest

import percpu
from percpu.errors import Exists, NoEntry, TooBig
from percpu.maps import (
    BPF_ANY,
    BPF_EXIST,
    BPF_F_NO_PREALLOC,
    BPF_NOEXIST,
    HashMap,
    PercpuArrayMap,
    PercpuHashMap,
    attach,
    bpf_map_lookup_elem,
    bpf_map_update_elem,
)
from percpu.runtime import rcu
from percpu.runtime.kthread import Kthread, kthread_run_on_cpu

SCALE = float(os.environ.get("PERCPU_STRESS_SCALE", "1"))
SECONDS = float(os.environ.get("PERCPU_STRESS_SECONDS", "2"))
JOIN = 120.0  # seconds a worker may take beyond its work before the test gives up on it

STAMP = struct.Struct("<IIQ")  # key, writer id, sequence: 16 bytes, repeated over the value
STATS_WORDS = 8  # per worker: see the S_* indexes
S_OPS, S_CREATED, S_DELETED, S_BAD, S_E2BIG, S_LAST, S_FAILS = range(7)


# ---- stamps ----------------------------------------------------------------------------------


def stamp(key: int, wid: int, seq: int, size: int) -> bytes:
    return STAMP.pack(key, wid, seq) * (size // STAMP.size)


def stamp_ok(raw: bytes, key: int, size: int) -> bool:
    """A whole stamp of ``key``: the same 16 bytes over the whole value, naming this key."""
    raw = bytes(raw)
    head = raw[: STAMP.size]
    k, wid, _ = STAMP.unpack(head)
    return len(raw) == size and raw == head * (size // STAMP.size) and k == key and wid != 0


def value_ok(m, raw, key: int) -> bool:  # type: ignore[no-untyped-def]
    """A map value (per-CPU: the list of copies) carrying one whole stamp of ``key``."""
    if m.percpu:
        return len(raw) == len(m.possible) and all(c == raw[0] for c in raw) and stamp_ok(raw[0], key, m.value_size)
    return stamp_ok(raw, key, m.value_size)


def _stats(dom: percpu.Domain, off: int, wid: int) -> list[int]:
    return [int(dom.arena.load(off + 8 * (wid * STATS_WORDS + i))) for i in range(STATS_WORDS)]


def _join_all(workers: list[Kthread], timeout: float = JOIN) -> list[int | None]:
    deadline = time.monotonic() + timeout
    codes = [w.join(max(0.1, deadline - time.monotonic())) for w in workers]
    for w in workers:
        if w.alive:
            w.stop(2)
        else:
            w.stop()
    return codes


# ---- module-level workers (spawn pickles them by name) ---------------------------------------


def pcpu_add(hname: str, aname: str, n: int) -> int:
    """Add 1 to this CPU's copy of hash keys 1 and 2 and array indexes 0 and 1, ``n`` times each.

    Key 1 and index 0 through the view (read-modify-write in place); key 2 and
    index 1 through bpf_map_update_elem of the value read.  Key 2 does not exist
    at the start: the first worker to insert it (BPF_NOEXIST) zeroes the other
    CPUs' copies, as pcpu_init_value() does -- before anyone added to them.
    """
    h = attach(hname)
    a = attach(aname)
    rd = rcu.read_lock
    for _ in range(n):
        with rd():
            v = bpf_map_lookup_elem(h, 1)
            q = v.cast("Q")
            q[0] += 1
            q.release()
            v.release()
        while True:
            with rd():
                v = bpf_map_lookup_elem(h, 2)
                cur = None if v is None else struct.unpack("<Q", v)[0]
                if v is not None:
                    v.release()
            try:
                bpf_map_update_elem(h, 2, (cur or 0) + 1, BPF_NOEXIST if cur is None else BPF_EXIST)
                break
            except Exists:
                continue  # the other worker inserted it first: our copy is 0 now, read it again
        v = bpf_map_lookup_elem(a, 0)
        q = v.cast("Q")
        q[0] += 1
        q.release()
        v.release()
        v = bpf_map_lookup_elem(a, 1)
        cur = struct.unpack("<Q", v)[0]
        v.release()
        bpf_map_update_elem(a, 1, cur + 1)
    return 0


def _report(what: str, key: int, raw) -> None:  # type: ignore[no-untyped-def]
    sys.stderr.write(f"[pid {os.getpid()}] {what}: key {key} value {raw!r:.300}\n")


def hammer(name: str, wid: int, seconds: float, nkeys: int, stats: int, seed: int) -> int:
    """Insert, replace, delete, look up (single, batch, and-delete) stamped values until the time is up."""
    dom = percpu.current_domain()
    a = dom.arena
    m = attach(name)
    rng = random.Random(seed)
    vs = m.value_size
    npos = len(m.possible)
    base = stats + 8 * wid * STATS_WORDS
    ops = created = deleted = bad = seq = 0
    deadline = time.monotonic() + seconds

    def val(k: int):  # type: ignore[no-untyped-def]
        s = stamp(k, wid, seq, vs)
        if not m.percpu:
            return s
        r = rng.random()
        return [s] * npos if r < 0.4 else (s * npos if r < 0.7 else s)  # list, raw copies, one for all

    while True:
        if (ops & 63) == 0 and time.monotonic() > deadline:
            break
        ops += 1
        seq += 1
        k = rng.randrange(nkeys)
        r = rng.random()
        if r < 0.22:
            try:
                m.update(k, val(k), BPF_NOEXIST)
                created += 1
            except Exists:
                pass
        elif r < 0.42:
            try:
                m.update(k, val(k), BPF_EXIST)
            except NoEntry:
                pass
        elif r < 0.52:
            try:
                m.delete(k)
                deleted += 1
            except NoEntry:
                pass
        elif r < 0.60:
            try:
                v = m.lookup_and_delete(k)
                deleted += 1
                if not value_ok(m, v, k):
                    bad += 1
                    _report("lookup_and_delete: torn or foreign", k, v)
            except NoEntry:
                pass
        elif r < 0.90:
            v = m.get(k)
            if v is not None and not value_ok(m, v, k):
                bad += 1
                _report("lookup: torn or foreign", k, v)
        elif r < 0.97:
            cursor = None
            while True:
                b = m.lookup_batch(64, cursor)
                if len(set(b.keys)) != len(b.keys):
                    bad += 1
                    _report("lookup_batch: a key twice", -1, b.keys)
                for bk, bv in zip(b.keys, b.values, strict=True):
                    if not value_ok(m, bv, bk):
                        bad += 1
                        _report("lookup_batch: torn or foreign", bk, bv)
                if b.next is None:
                    break
                cursor = b.next
        else:
            b = m.lookup_and_delete_batch(64, rng.randrange(4) or None)
            deleted += len(b.keys)
            for bk, bv in zip(b.keys, b.values, strict=True):
                if not value_ok(m, bv, bk):
                    bad += 1
                    _report("lookup_and_delete_batch: torn or foreign", bk, bv)
    for i, v in ((S_OPS, ops), (S_CREATED, created), (S_DELETED, deleted), (S_BAD, bad)):
        a.store(base + 8 * i, v)
    return 0


def fill_then_replace(name: str, wid: int, m_entries: int, nprocs: int, stats: int, barrier: int,
                      seconds: float) -> int:
    """Insert M distinct keys of our own (BPF_NOEXIST); once every worker is done, replace ours in turn."""
    dom = percpu.current_domain()
    a = dom.arena
    m = attach(name)
    vs = m.value_size
    base = stats + 8 * wid * STATS_WORDS
    mine: list[int] = []
    e2big = 0
    for j in range(m_entries):
        k = (wid << 16) | j
        try:
            m.update(k, stamp(k, wid, 1, vs), BPF_NOEXIST)
            mine.append(k)
        except TooBig:
            e2big += 1
    a.store(base + 8 * S_CREATED, len(mine))
    a.store(base + 8 * S_E2BIG, e2big)
    a.fetch_add(barrier, 1)
    deadline = time.monotonic() + 60
    while a.load(barrier) < nprocs:
        if time.monotonic() > deadline:
            return 3
        time.sleep(0.0005)
    fails = bad = 0
    seq = 1
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline or seq < 3:
        seq += 1
        for k in mine:
            try:
                m.update(k, stamp(k, wid, seq, vs), BPF_EXIST if seq % 2 else BPF_ANY)
            except TooBig:
                fails += 1  # a replacement in a full map must not need a free element
        k = (wid << 16) | 0xFFFF
        try:
            m.update(k, stamp(k, wid, seq, vs), BPF_NOEXIST)
            bad += 1  # a new key got into the full map
        except TooBig:
            pass
    a.store(base + 8 * S_FAILS, fails)
    a.store(base + 8 * S_BAD, bad)
    a.store(base + 8 * S_LAST, seq)
    return 0


def replace_one(name: str, key: int, done: int) -> int:
    """Replace ``key`` (BPF_EXIST) once and say so at ``done``."""
    m = attach(name)
    m.update(key, stamp(key, 7, 2, m.value_size), BPF_EXIST)
    percpu.current_domain().arena.store(done, 1)
    return 0


# ---- 1: per-CPU values -----------------------------------------------------------------------


@pytest.mark.stress
@pytest.mark.timeout(240)
@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("flags", [0, BPF_F_NO_PREALLOC], ids=["prealloc", "no-prealloc"])
def test_percpu_maps_summed_across_two_pinned_processes(make_domain, method, flags):
    dom = make_domain(size=32 << 20)  # the machine's real CPUs
    cpus = list(dom.possible)[:2]
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    n = int(20000 * SCALE)
    h = PercpuHashMap(key="<I", value="<Q", max_entries=4, map_flags=flags, name="mp_ph")
    arr = PercpuArrayMap(value="<Q", max_entries=2, name="mp_pa")
    h.update(1, 0)  # key 2 is inserted by a worker (program side)
    workers = [kthread_run_on_cpu(pcpu_add, cpu, "maps_add/%u", "mp_ph", "mp_pa", n, method=method)
               for cpu in cpus]
    assert _join_all(workers) == [0, 0]
    want = {cpu: n for cpu in dom.possible}
    for cpu in dom.possible:
        if cpu not in cpus:
            want[cpu] = 0
    for m, key in ((h, 1), (h, 2), (arr, 0), (arr, 1)):
        assert m.per_cpu(key) == want, f"{m!r} key {key}: each worker adds to its own CPU's copy"
        assert m.sum(key) == 2 * n
    assert h.check() == {"elements": 2, "leaked": 0}
    h.free()
    arr.free()
    dom.check()


# ---- 2: no torn or freed value ---------------------------------------------------------------

HAMMER_CASES = [
    # map class, flags, simulated CPUs (None: the real ones), worker CPUs (two processes may act as one CPU)
    (HashMap, 0, None, (0, 1, 0)),
    (HashMap, BPF_F_NO_PREALLOC, 4, (0, 1, 2, 3)),
    (PercpuHashMap, 0, 4, (0, 1, 2, 3)),
    (PercpuHashMap, BPF_F_NO_PREALLOC, None, (0, 1, 1)),
]


@pytest.mark.stress
@pytest.mark.timeout(240)
@pytest.mark.parametrize("cls, flags, nr_cpus, cpus", HAMMER_CASES,
                         ids=["hash-prealloc-real-3procs", "hash-noprealloc-4sim", "percpu-prealloc-4sim",
                              "percpu-noprealloc-real-3procs"])
def test_concurrent_ops_never_show_a_torn_or_freed_value(make_domain, cls, flags, nr_cpus, cpus):
    dom = make_domain(size=64 << 20, nr_cpus=nr_cpus)
    if max(cpus) >= len(dom.possible):
        cpus = tuple(c % len(dom.possible) for c in cpus)
    nkeys = 8
    vsize = 32 if cls is PercpuHashMap else 96
    m = cls(key="<I", value_size=vsize, max_entries=16, map_flags=flags, name="mp_hammer")
    stats = dom.kzalloc(8 * STATS_WORDS * (len(cpus) + 1))
    workers = [kthread_run_on_cpu(hammer, cpu, "maps_ham/%u", "mp_hammer", wid, SECONDS, nkeys, stats,
                                  1000 * wid + 17, method="fork")
               for wid, cpu in enumerate(cpus, 1)]
    assert _join_all(workers, SECONDS + JOIN) == [0] * len(cpus)
    st = [_stats(dom, stats, w) for w in range(1, len(cpus) + 1)]
    assert all(s[S_OPS] > 0 for s in st)
    assert sum(s[S_BAD] for s in st) == 0, "a lookup saw a torn value or another key's (see the captured stderr)"
    created = sum(s[S_CREATED] for s in st)
    deleted = sum(s[S_DELETED] for s in st)
    assert created > 0 and deleted > 0
    chk = m.check()
    assert chk["leaked"] == 0
    assert chk["elements"] == created - deleted == len(m), (chk, created, deleted, len(m))
    keys = list(m.keys())
    assert len(keys) == len(set(keys)) == chk["elements"]
    for k in keys:
        assert value_ok(m, m.lookup(k), k)
    if m.prealloc:
        extras = 0 if m.percpu else len(dom.possible)
        assert m.freelist_extra.count() == extras  # every replacement gave its extra element back
        assert chk["elements"] + m.freelist.count() + m.freelist_extra.count() == m.max_entries + extras
    print(f"{cls.__name__} flags {flags:#x}: {sum(s[S_OPS] for s in st)} ops, {created} inserts, "
          f"{deleted} deletes, {chk['elements']} left")
    m.free()
    dom.check()


# ---- 3: a full map -----------------------------------------------------------------------------

FULL_CASES = [
    (0, 4, (0, 1, 2, 3)),  # each process its own CPU
    (BPF_F_NO_PREALLOC, 4, (0, 1, 2, 3)),
    (0, None, (0, 1, 0, 1)),  # four processes on the two real CPUs: two act as each CPU
]


@pytest.mark.stress
@pytest.mark.timeout(240)
@pytest.mark.parametrize("flags, nr_cpus, cpus", FULL_CASES,
                         ids=["prealloc-4sim", "noprealloc-4sim", "prealloc-real-4procs"])
def test_full_map_under_concurrency(make_domain, flags, nr_cpus, cpus):
    dom = make_domain(size=32 << 20, nr_cpus=nr_cpus)
    if max(cpus) >= len(dom.possible):
        pytest.skip("needs two CPUs")
    size_m = 64
    m = HashMap(key="<I", value_size=64, max_entries=size_m, map_flags=flags, name="mp_full")
    stats = dom.kzalloc(8 * STATS_WORDS * (len(cpus) + 1))
    barrier = dom.kzalloc(8)
    workers = [kthread_run_on_cpu(fill_then_replace, cpu, "maps_full/%u", "mp_full", wid + 1, size_m, len(cpus),
                                  stats, barrier, SECONDS, method="fork")
               for wid, cpu in enumerate(cpus)]
    assert _join_all(workers, SECONDS + JOIN) == [0] * len(cpus)
    st = {wid + 1: _stats(dom, stats, wid + 1) for wid in range(len(cpus))}
    ok = sum(s[S_CREATED] for s in st.values())
    e2big = sum(s[S_E2BIG] for s in st.values())
    assert ok == size_m, f"{ok} inserts succeeded in a map of {size_m}"
    assert e2big == len(cpus) * size_m - size_m
    assert sum(s[S_BAD] for s in st.values()) == 0, "a new key got into the full map"
    fails = {wid: s[S_FAILS] for wid, s in st.items()}
    assert sum(fails.values()) == 0, f"replacing an existing key of the full map failed with E2BIG: {fails}"
    chk = m.check()
    assert chk == {"elements": size_m, "leaked": 0}
    assert len(m) == size_m
    keys = list(m.keys())
    assert len(keys) == len(set(keys)) == size_m
    for k in keys:
        wid = k >> 16
        assert m.lookup(k) == stamp(k, wid, st[wid][S_LAST], 64), "not the owner's last replacement"
    if m.prealloc:
        assert m.freelist.count() == 0
        assert m.freelist_extra.count() == len(dom.possible)
    m.free()
    dom.check()


@pytest.mark.stress
@pytest.mark.timeout(120)
def test_full_map_replace_with_more_replacers_than_extra_elements(make_domain):
    """Three replacements at once in a full preallocated map of a 2-CPU domain all succeed.

    The kernel keeps one extra element per CPU, enough because an update runs
    with its CPU's preemption off.  Here two processes act as CPU 1 (two
    kthreads of one CPU, or any two processes on one real CPU): each replaces a
    key and, after taking an extra element, waits for the lock of CPU 1's
    fl_extra head (held by a third process: what a preempted pusher does).
    Both extra elements are then out, and a replacement of a third key by this
    process -- a key of the full map, in a bucket of its own -- must still work.
    """
    dom = make_domain(size=16 << 20, nr_cpus=2)
    with percpu.on_cpu(0):
        m = HashMap(key="<I", value_size=64, max_entries=8, name="mp_fullx")
        for k in range(8):
            m.update(k, stamp(k, 1, 1, 64))
    flx = m.freelist_extra
    assert flx.per_cpu() == {0: 2, 1: 0, "extra": 0}
    # keys in three different buckets (the hash seed is random): walk the chains
    a = dom.arena
    nb = 8
    bucket_of = {}
    for b in range(nb):
        off = int(a.load(m._parts["buckets"] + 32 * b + 8))
        while off:
            bucket_of[struct.unpack("<I", bytes(dom.mem(off + 16, 4)))[0]] = b
            off = int(a.load(off))
    by_bucket: dict[int, int] = {}
    for k, b in sorted(bucket_of.items()):
        by_bucket.setdefault(b, k)
    if len(by_bucket) < 3:
        pytest.skip("fewer than three buckets in use with this hash seed")
    ka, kb, kc = list(by_bucket.values())[:3]
    holder = mp_helpers.start_holder([flx.offset + 128 + 64 * 1])  # CPU 1's fl_extra head, empty
    done = dom.kzalloc(16)
    reps = []
    result: list[object] = []
    try:
        reps = [kthread_run_on_cpu(replace_one, 1, "maps_rep/%u", "mp_fullx", k, done + 8 * i, method="fork")
                for i, k in enumerate((ka, kb))]
        deadline = time.monotonic() + 30
        while flx.count() > 0:  # both took an extra element and wait to push the old one back
            assert time.monotonic() < deadline, f"the replacers did not get their extra elements: {flx.per_cpu()}"
            time.sleep(0.005)

        def third() -> None:
            try:
                with dom, percpu.on_cpu(0):
                    m.update(kc, stamp(kc, 2, 2, 64), BPF_EXIST)
                result.append("ok")
            except BaseException as e:  # noqa: BLE001 - reported below
                result.append(e)

        t = threading.Thread(target=third, daemon=True)
        t.start()
        t.join(5)  # a replacement that waits for an extra element is fine too, once the holder goes
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()
        codes = _join_all(reps, 30)
    t.join(30)
    assert codes == [0, 0]
    assert result == ["ok"], f"replacing key {kc} of the full map while two replacements were under way: {result}"
    assert m.lookup(kc) == stamp(kc, 2, 2, 64)
    assert m.check() == {"elements": 8, "leaked": 0}
    assert flx.count() == 2
