"""A process SIGKILLed in the middle of a hash map operation leaves the map consistent.

A pinned victim loops inserts, replacements, deletes and lookups on a hash map
(preallocated or not, plain or per-CPU) and is SIGKILLed at a random moment --
sometimes inside a bucket lock, with a crash record (``pend_new`` /
``pend_old``) half written -- while a second, live process keeps operating on
the same map.  After each kill:

* nothing is deadlocked: this process looks up and updates every key within a
  timeout, and the live process keeps making progress (the dead owner's bucket
  lock is taken over and its bucket repaired);
* ``check()`` passes (no ``Corrupted``), a second ``check()`` reports nothing
  leaked (the first took back what the dead process held), and for a
  preallocated map every element is in the map or on one of the freelists;
* the contents are a state some sequence of whole operations produces: every
  key once, every value a whole stamp of its key, and the keys that are only
  ever replaced (never deleted) all present.

Every value is a stamp (key, writer, sequence) repeated over the value; the
per-CPU maps' program-side updates stamp one CPU's copy (and zero the others
on an insert), so there each copy is a whole stamp or zero.

With large values most of an operation is a copy under its bucket lock, so
kills land there: the repair test kills until one did (``repairs`` counts the
buckets taken over), and a per-CPU update of an existing key -- written in
place -- must leave one whole update's value after a kill.

Two tests set up the exact state of a process killed mid-operation (it waits
for a freelist lock held by a third process, with its bucket lock held, and is
killed there): a live process blocked on that bucket lock finishes, and what
the killed operation did not commit is not in the map.
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
    PercpuHashMap,
    attach,
    bpf_map_delete_elem,
    bpf_map_update_elem,
)
from percpu.runtime.kthread import kthread_run_on_cpu, kthread_should_stop

SEED = int(os.environ.get("PERCPU_SEED", "7"))
SCALE = float(os.environ.get("PERCPU_STRESS_SCALE", "1"))
KILLS = max(3, int(12 * SCALE))
UNDER_ASAN = bool(os.environ.get("PERCPU_UNDER_ASAN"))
OPS_TIMEOUT = 20.0  # generous: other test runs share the two CPUs
STAMP = struct.Struct("<IIQ")  # key, writer, sequence
CHURN = 20  # keys 0..19 come and go
PERM = tuple(range(100, 104))  # keys only ever replaced (BPF_EXIST), never deleted
MAX_ENTRIES = 20  # < CHURN + len(PERM): the map is full at times (E2BIG, replacements from fl_extra)

# live process control block: +0 pause request, +8 paused, +16 bad values, +24 perm key missing,
# +32 perm replace E2BIG, +40 ops
C_PAUSE, C_PAUSED, C_BAD, C_MISSING, C_E2BIG, C_OPS = (8 * i for i in range(6))

# Under ASan a worker forked from the busy pytest process can hang before it starts when a
# BpfMemAlloc is in use (see tests/crash/test_memalloc_crash.py): skip the no-prealloc maps there.
no_prealloc_asan = pytest.mark.skipif(UNDER_ASAN, reason="BpfMemAlloc + fork of the pytest process under ASan")
# The whole file forks victims out of the pytest process, which can hang under ASan (as the
# CPU map's crash tests): the sanitizer run covers the maps through the unit and property tests.
pytestmark = pytest.mark.skipif(UNDER_ASAN, reason="fork of the pytest process under ASan")


# ---- stamps ----------------------------------------------------------------------------------


def stamp(key: int, wid: int, seq: int, size: int) -> bytes:
    return STAMP.pack(key, wid, seq) * (size // STAMP.size)


def stamp_ok(raw: bytes, key: int, size: int) -> bool:
    raw = bytes(raw)
    head = raw[: STAMP.size]
    k, wid, _ = STAMP.unpack(head)
    return len(raw) == size and raw == head * (size // STAMP.size) and k == key and wid != 0


def value_ok(m, raw, key: int, strict: bool = False) -> bool:  # type: ignore[no-untyped-def]
    """A whole stamp of ``key``; per-CPU: each copy a whole stamp or zero (``strict``: all one stamp)."""
    if not m.percpu:
        return stamp_ok(raw, key, m.value_size)
    if strict:
        return all(c == raw[0] for c in raw) and stamp_ok(raw[0], key, m.value_size)
    zero = bytes(m.value_size)
    return any(c != zero for c in raw) and all(c == zero or stamp_ok(c, key, m.value_size) for c in raw)


def _say(what: str, key: int, raw) -> None:  # type: ignore[no-untyped-def]
    sys.stderr.write(f"[pid {os.getpid()}] {what}: key {key} value {raw!r:.200}\n")


# ---- module-level workers ------------------------------------------------------------------


def _one_op(m, rng: random.Random, wid: int, seq: int, counts: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    """One random operation on the map (the victim's and the live process's loop body)."""
    vs = m.value_size
    r = rng.random()
    if r < 0.12:
        k = rng.choice(PERM)
        try:
            if m.percpu and rng.random() < 0.3:
                bpf_map_update_elem(m, k, stamp(k, wid, seq, vs), BPF_EXIST)
            else:
                m.update(k, stamp(k, wid, seq, vs), BPF_EXIST)
        except NoEntry:
            counts["missing"] += 1
            _say("a key that is never deleted is missing", k, None)
        except TooBig:
            counts["e2big"] += 1  # an extra element lost with a killed process, until check() takes it back
        return
    k = rng.randrange(CHURN)
    if r < 0.45:
        flags = rng.choice((BPF_ANY, BPF_NOEXIST, BPF_EXIST))
        try:
            if m.percpu and rng.random() < 0.3:
                bpf_map_update_elem(m, k, stamp(k, wid, seq, vs), flags)
            else:
                m.update(k, stamp(k, wid, seq, vs), flags)
        except (Exists, NoEntry, TooBig):
            pass
    elif r < 0.60:
        try:
            if rng.random() < 0.3:
                bpf_map_delete_elem(m, k)
            else:
                m.delete(k)
        except NoEntry:
            pass
    elif r < 0.70:
        try:
            v = m.lookup_and_delete(k)
            if not value_ok(m, v, k):
                counts["bad"] += 1
                _say("lookup_and_delete: not a whole stamp", k, v)
        except NoEntry:
            pass
    elif r < 0.97:
        v = m.get(k)
        if v is not None and not value_ok(m, v, k):
            counts["bad"] += 1
            _say("lookup: not a whole stamp", k, v)
    else:
        b = m.lookup_batch(64)
        for bk, bv in zip(b.keys, b.values, strict=True):
            if not value_ok(m, bv, bk):
                counts["bad"] += 1
                _say("lookup_batch: not a whole stamp", bk, bv)


def victim(name: str, wid: int, seed: int, prog: int) -> None:
    """Operate on the map forever (until SIGKILLed), counting operations at ``prog``."""
    a = percpu.current_domain().arena
    m = attach(name)
    rng = random.Random(seed)
    counts = {"bad": 0, "missing": 0, "e2big": 0}
    seq = 0
    while True:
        seq += 1
        _one_op(m, rng, wid, seq, counts)
        a.store(prog, seq)


def live(name: str, wid: int, seed: int, ctl: int) -> int:
    """Operate on the map until stopped; pause when asked (between operations, holding no lock)."""
    a = percpu.current_domain().arena
    m = attach(name)
    rng = random.Random(seed)
    counts = {"bad": 0, "missing": 0, "e2big": 0}
    seq = 0
    while not kthread_should_stop():
        if a.load(ctl + C_PAUSE):
            a.store(ctl + C_PAUSED, 1)
            while a.load(ctl + C_PAUSE) and not kthread_should_stop():
                time.sleep(0.0005)
            a.store(ctl + C_PAUSED, 0)
            continue
        seq += 1
        _one_op(m, rng, wid, seq, counts)
        a.store(ctl + C_OPS, seq)
        a.store(ctl + C_BAD, counts["bad"])
        a.store(ctl + C_MISSING, counts["missing"])
        a.store(ctl + C_E2BIG, counts["e2big"])
    return 0


def big_victim(name: str, wid: int, seed: int, prog: int, nkeys: int) -> None:
    """Replace, insert, look up and delete large values forever (the copies take the lock a while)."""
    a = percpu.current_domain().arena
    m = attach(name)
    rng = random.Random(seed)
    seq = 0
    while True:
        seq += 1
        k = rng.randrange(nkeys)
        r = rng.random()
        if r < 0.6:
            m.update(k, stamp(k, wid, seq, m.value_size))
        elif r < 0.9:
            m.get(k)
        else:
            try:
                m.delete(k)
            except NoEntry:
                pass
        a.store(prog, seq)


def update_and_report(name: str, key: int, flags: int, done: int) -> int:
    """One update (it blocks: a freelist lock is held); ``done`` says it returned."""
    m = attach(name)
    m.update(key, stamp(key, 9, 99, m.value_size), flags)
    percpu.current_domain().arena.store(done, 1)
    return 0


def ops_on_every_key(name: str, keys: list[int], rounds: int, done: int) -> int:
    """Look up every key and replace the present ones, ``rounds`` times; ``done`` counts the rounds."""
    a = percpu.current_domain().arena
    m = attach(name)
    for r in range(rounds):
        for k in keys:
            v = m.get(k)
            if v is not None:
                if not value_ok(m, v, k):
                    return 5
                m.update(k, stamp(k, 8, r + 1, m.value_size), BPF_EXIST)
        a.store(done, r + 1)
    return 0


# ---- helpers of the parent -------------------------------------------------------------------


def _wait(pred, what: str, timeout: float = OPS_TIMEOUT) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


def _in_thread(dom: percpu.Domain, fn, what: str, timeout: float = OPS_TIMEOUT):  # type: ignore[no-untyped-def]
    """Run ``fn`` in a thread; fail if it does not finish in time (a lock never taken over)."""
    out: list[object] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            with dom:
                out.append(fn())
        except BaseException as e:  # noqa: BLE001 - reported below
            err.append(e)

    t = threading.Thread(target=run, name="maps-crash-ops", daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"{what}: blocked for {timeout} s (a lock of the dead process not taken over?)"
    if err:
        raise err[0]
    return out[0]


def _touch_every_key(m, wid: int, seq: int) -> int:  # type: ignore[no-untyped-def]
    """A lookup of every key, a replacement of every present one; values checked."""
    n = 0
    for k in (*range(CHURN), *PERM):
        v = m.get(k)
        if v is None:
            continue
        assert value_ok(m, v, k), f"key {k}: {v!r:.200}"
        try:
            m.update(k, stamp(k, wid, seq, m.value_size), BPF_EXIST)
            n += 1
        except (NoEntry, TooBig):
            pass  # deleted by the live process meanwhile; or an extra element died with the victim
    return n


def _check_map(m, extras: int, strict: bool = False) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """check() twice, then the contents; nothing else may run on the map meanwhile."""
    first = m.check()
    second = m.check()
    assert second["leaked"] == 0, f"the first check() did not take everything back: {first} {second}"
    assert second["elements"] == first["elements"]
    n = second["elements"]
    keys = list(m.keys())
    assert len(keys) == len(set(keys)), f"a key is listed twice: {sorted(keys)}"
    assert len(keys) == n == len(m), (len(keys), n, len(m))
    for k in keys:
        v = m.lookup(k)
        assert value_ok(m, v, k, strict), f"key {k} holds {v!r:.300}"
    if m.prealloc:
        assert m.freelist_extra.count() == extras, m.freelist_extra.per_cpu()
        assert n + m.freelist.count() + m.freelist_extra.count() == m.max_entries + extras
    return first


# ---- 1 and 3: random kills while a live process works ----------------------------------------

CASES = [
    pytest.param(HashMap, 0, id="hash-prealloc"),
    pytest.param(HashMap, BPF_F_NO_PREALLOC, id="hash-noprealloc", marks=no_prealloc_asan),
    pytest.param(PercpuHashMap, 0, id="percpu-prealloc"),
    pytest.param(PercpuHashMap, BPF_F_NO_PREALLOC, id="percpu-noprealloc", marks=no_prealloc_asan),
]


@pytest.mark.crash
@pytest.mark.timeout(240)
@pytest.mark.parametrize("cls, flags", CASES)
def test_sigkill_mid_operation_leaves_the_map_consistent(make_domain, cls, flags):
    dom = make_domain(size=32 << 20, nr_cpus=2)
    a = dom.arena
    vsize = 32 if cls is PercpuHashMap else 64
    m = cls(key="<I", value_size=vsize, max_entries=MAX_ENTRIES, map_flags=flags, name="crash_map")
    extras = 0 if m.percpu else len(dom.possible)
    for k in PERM:
        m.update(k, stamp(k, 1, 0, vsize), BPF_NOEXIST)
    rng = random.Random(SEED + flags + 10 * m.percpu)
    ctl = dom.kzalloc(64)
    prog = dom.kzalloc(8)
    lv = kthread_run_on_cpu(live, 1, "maps_live/%u", "crash_map", 2, SEED, ctl, method="fork")
    leaked = 0
    try:
        for k in range(KILLS):
            a.store(prog, 0)
            kt = kthread_run_on_cpu(victim, k % 2, "maps_vict/%u", "crash_map", 10 + k, SEED * 1000 + k, prog,
                                    method="spawn" if k % 5 == 4 else "fork")
            try:
                target = rng.randint(1, 400)
                _wait(lambda target=target, kt=kt: a.load(prog) >= target or not kt.alive, "the victim's operations")
                time.sleep(rng.uniform(0, 0.01))
                os.kill(kt.pid, signal.SIGKILL)
            finally:
                if kt.alive:
                    os.kill(kt.pid, signal.SIGKILL)
                code = kt.stop()
            assert code == -signal.SIGKILL, f"the victim exited with {code} before the kill"
            # 3: the live process goes on; 1: so do this process's operations on every key
            before = a.load(ctl + C_OPS)
            _in_thread(dom, lambda k=k: _touch_every_key(m, 3, k + 1), f"kill {k}: ops on every key")
            _wait(lambda before=before: a.load(ctl + C_OPS) >= before + 20 or not lv.alive,
                  f"kill {k}: the live process's progress")
            assert lv.alive, f"the live process died: {lv.exitcode}"
            a.store(ctl + C_PAUSE, 1)
            _wait(lambda: a.load(ctl + C_PAUSED) == 1, f"kill {k}: the live process to pause")
            try:
                first = _in_thread(dom, lambda: _check_map(m, extras), f"kill {k}: check")
                leaked += first["leaked"]
                present = set(m.keys())
                missing = [p for p in PERM if p not in present]
                assert not missing, (
                    f"kill {k}: keys {missing} were only ever replaced (BPF_EXIST), never deleted, "
                    "and are gone"
                )
            finally:
                a.store(ctl + C_PAUSE, 0)
        assert a.load(ctl + C_BAD) == 0, "the live process saw a value that is not a whole stamp"
        assert a.load(ctl + C_MISSING) == 0, "the live process found a never-deleted key missing"
        ops = a.load(ctl + C_OPS)
    finally:
        code = lv.stop(30)
    assert code == 0, f"the live process exited with {code}"
    assert ops > 0
    print(f"{cls.__name__} flags {flags:#x}: {KILLS} kills, {m._core.repairs} buckets repaired, "
          f"{leaked} elements taken back by check(), live process: {ops} ops, "
          f"{a.load(ctl + C_E2BIG)} replacements refused while an extra element was lost")
    m.free()
    dom.check()


# ---- 2: the bucket of a dead lock holder is repaired -----------------------------------------

BIG_CASES = [
    pytest.param(0, id="prealloc-64k"),
    pytest.param(BPF_F_NO_PREALLOC, id="noprealloc-64k", marks=no_prealloc_asan),
]


def _kill_big_victims(m, nr_cpus: int, seed: int, min_kills: int, max_kills: int, after) -> int:  # type: ignore[no-untyped-def]
    """Start and SIGKILL big_victim processes: at least ``min_kills``, and more (up to ``max_kills``)
    until a kill landed inside a bucket lock; ``after(k)`` runs after each kill.  Returns the kills."""
    dom = m.domain
    a = dom.arena
    rng = random.Random(seed)
    prog = dom.kzalloc(8)
    nkeys = m.max_entries
    k = -1
    while k + 1 < min_kills or (m._core.repairs == 0 and k + 1 < max_kills):
        k += 1
        a.store(prog, 0)
        kt = kthread_run_on_cpu(big_victim, k % nr_cpus, "maps_big/%u", m.name, 10 + k, seed + k, prog, nkeys,
                                method="fork")
        try:
            target = rng.randint(1, 50)
            _wait(lambda target=target, kt=kt: a.load(prog) >= target or not kt.alive, "the victim's operations")
            time.sleep(rng.uniform(0, 0.005))
            os.kill(kt.pid, signal.SIGKILL)
        finally:
            if kt.alive:
                os.kill(kt.pid, signal.SIGKILL)
            code = kt.stop()
        assert code == -signal.SIGKILL, f"the victim exited with {code} before the kill"
        _in_thread(dom, lambda: [m.get(i) for i in range(nkeys)], f"kill {k}: a lookup of every key")
        after(k)
    dom.kfree(prog)
    return k + 1


@pytest.mark.crash
@pytest.mark.timeout(240)
@pytest.mark.parametrize("flags", BIG_CASES)
def test_dead_lock_holders_bucket_is_repaired(make_domain, flags):
    """Large values: most of an operation's time is a copy under the bucket lock, so kills land there.

    At least KILLS // 2 kills, and more (up to 40) until one landed inside a
    bucket lock (``repairs`` counts the buckets taken over and repaired).  An
    insert or replacement killed while copying its value into the new element
    is undone, so every value is one whole stamp.
    """
    dom = make_domain(size=64 << 20, nr_cpus=2)
    m = HashMap(key="<I", value_size=65536, max_entries=4, map_flags=flags, name="crash_big")
    leaked = []
    kills = _kill_big_victims(m, 2, SEED + flags, max(3, KILLS // 2), 40,
                              lambda k: leaked.append(_in_thread(dom, lambda: _check_map(m, 2, True), f"kill {k}")))
    print(f"flags {flags:#x}: {kills} kills, {m._core.repairs} buckets repaired, "
          f"{sum(c['leaked'] for c in leaked)} elements taken back by check()")
    assert m._core.repairs >= 1, f"no kill in {kills} landed inside a bucket lock"
    m.free()
    dom.check()


@pytest.mark.crash
@pytest.mark.timeout(240)
def test_percpu_update_killed_mid_copy_tears_at_most_that_value(make_domain):
    """A per-CPU update of an existing key writes the copies in place, under the bucket lock only,
    as the kernel's __htab_percpu_map_update_elem() does; a kill in the middle of the copy tears
    that one value (documented in docs/design/maps.md), and nothing else.

    The victim replaces 16 KiB per-CPU values (4 CPUs: 64 KiB copied under the lock)
    with one stamp on every copy.  After each kill: at most one key (the one the
    victim was writing) is not one whole stamp; the map's structure is intact; a
    new syscall update of that key makes it whole again.
    """
    dom = make_domain(size=64 << 20, nr_cpus=4)
    m = PercpuHashMap(key="<I", value_size=16384, max_entries=4, name="crash_pbig")
    torn_total = 0

    def after(k: int) -> None:
        nonlocal torn_total
        torn = []
        for key in m.keys():
            v = m.lookup(key)
            whole = [stamp_ok(c, key, m.value_size) for c in v]
            heads = {STAMP.unpack(c[: STAMP.size]) for c in v}
            if not (all(whole) and len(heads) == 1):
                torn.append(key)
        assert len(torn) <= 1, f"kill {k}: keys {torn} torn; only the key being written may be"
        torn_total += len(torn)
        for key in torn:  # the next update rewrites every copy
            m.update(key, _whole_value(m, key))
            v = m.lookup(key)
            assert all(stamp_ok(c, key, m.value_size) for c in v)
        _check_map(m, 0, strict=True)

    kills = _kill_big_victims(m, 4, SEED, 40, 40, after)
    print(f"{kills} kills, {torn_total} torn values, {m._core.repairs} buckets repaired")
    m.free()
    dom.check()


def _whole_value(m, key: int) -> list[bytes]:  # type: ignore[no-untyped-def]
    """One stamp (key, writer 999, seq 0) on every CPU's copy."""
    one = stamp(key, 999, 0, m.value_size)
    return [one] * len(m.possible)


# ---- the exact state of a process killed inside its bucket lock ------------------------------


def _fl_locks(fl, nr_cpus: int) -> list[int]:  # type: ignore[no-untyped-def]
    """The arena offsets of a PcpuFreelist's locks: the extra list, then one head per CPU."""
    return [fl.offset + 64] + [fl.offset + 128 + 64 * c for c in range(nr_cpus)]


def _bucket_owner(m, key: int) -> int:  # type: ignore[no-untyped-def]
    """The pid owning the lock of the bucket ``key`` is in (a word of the bucket), found by walking the chains."""
    dom = m.domain
    nb = 1 << (m.max_entries - 1).bit_length()
    for b in range(nb):
        off = int(dom.arena.load(m._parts["buckets"] + 32 * b + 8))
        while off:
            if struct.unpack("<I", bytes(dom.mem(off + 16, 4)))[0] == key:
                word = struct.unpack("<I", bytes(dom.mem(m._parts["buckets"] + 32 * b, 4)))[0]
                return int(word & 0x3FFFFFFF)  # FUTEX_TID_MASK
            off = int(dom.arena.load(off))
    return -1


@pytest.mark.crash
@pytest.mark.timeout(120)
def test_insert_killed_inside_its_bucket_lock_does_not_block_a_live_process(make_domain):
    """The victim inserts a new key and waits, inside its bucket lock, for a freelist lock a third process
    holds (where a preempted insert would be); a live process wants every bucket, that one included.
    Once the victim is SIGKILLed the live process takes the lock over and finishes its work -- while
    the freelist lock is still held -- and the new key is not in the map (the insert never committed).
    """
    dom = make_domain(size=16 << 20, nr_cpus=2)
    a = dom.arena
    m = HashMap(key="<I", value_size=64, max_entries=8, name="crash_ins")
    for k in range(6):
        m.update(k, stamp(k, 1, 1, 64))
    holder = mp_helpers.start_holder(_fl_locks(m.freelist, 2))
    done = dom.kzalloc(16)
    vic = lvp = None
    try:
        vic = kthread_run_on_cpu(update_and_report, 0, "maps_ins/%u", "crash_ins", 6, BPF_NOEXIST, done,
                                 method="fork")
        time.sleep(0.3)
        assert vic.alive and a.load(done) == 0, "the insert did not wait for the held freelist lock"
        lvp = kthread_run_on_cpu(ops_on_every_key, 1, "maps_ops/%u", "crash_ins", list(range(8)), 50, done + 8,
                                 method="fork")
        time.sleep(0.3)
        os.kill(vic.pid, signal.SIGKILL)
        assert vic.join(OPS_TIMEOUT) == -signal.SIGKILL
        assert lvp.join(OPS_TIMEOUT) == 0, "the live process did not finish after the lock holder died"
        assert a.load(done + 8) == 50
    finally:
        for kt in (vic, lvp):
            if kt is not None:
                if kt.alive:
                    os.kill(kt.pid, signal.SIGKILL)
                kt.stop()
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()
    assert m._core.repairs >= 1
    assert m.get(6) is None
    assert _check_map(m, 2)["leaked"] == 0
    assert sorted(m.keys()) == list(range(6))


@pytest.mark.crash
@pytest.mark.timeout(120)
def test_replace_killed_before_it_took_an_element_keeps_the_old_value(make_domain):
    """A replacement (BPF_EXIST) SIGKILLed inside its bucket lock before it has its new element.

    The victim waits for fl_extra's locks (held by a third process) after
    ``pend_old`` names the element it means to replace, before ``pend_new`` is
    written.  Nothing was committed: the key must keep its old value.  (A
    delete records ``pend_old`` alone too; the repair cannot tell the two apart.)
    """
    dom = make_domain(size=16 << 20, nr_cpus=2)
    a = dom.arena
    m = HashMap(key="<I", value_size=64, max_entries=8, name="crash_rep")
    old = stamp(1, 1, 1, 64)
    m.update(1, old)
    m.update(2, stamp(2, 1, 1, 64))
    holder = mp_helpers.start_holder(_fl_locks(m.freelist_extra, 2))
    done = dom.kzalloc(8)
    vic = None
    try:
        vic = kthread_run_on_cpu(update_and_report, 0, "maps_rep/%u", "crash_rep", 1, BPF_EXIST, done,
                                 method="fork")
        _wait(lambda: _bucket_owner(m, 1) == vic.pid, "the victim to hold key 1's bucket lock")
        time.sleep(0.1)
        assert vic.alive and a.load(done) == 0, "the replacement did not wait for the held freelist lock"
        os.kill(vic.pid, signal.SIGKILL)
        assert vic.join(OPS_TIMEOUT) == -signal.SIGKILL
    finally:
        if vic is not None:
            if vic.alive:
                os.kill(vic.pid, signal.SIGKILL)
            vic.stop()
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()
    got = _in_thread(dom, lambda: m.get(1), "a lookup of the key")
    assert m._core.repairs == 1
    assert got == old, f"the uncommitted replacement of key 1 left {got!r:.80} (expected its old value)"
    assert _check_map(m, 2)["leaked"] == 0
    assert sorted(m.keys()) == [1, 2]
