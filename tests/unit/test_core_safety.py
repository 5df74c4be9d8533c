"""Regressions for memory-safety and robustness bugs found by review of the C core.

Each test was a crash (SIGSEGV/SIGFPE), a corruption or a leak before its fix;
the raw-arena ones run in a subprocess so that a regression fails the test
instead of killing the test run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import percpu
from percpu import errors
from percpu.freelist import PcpuFreelist

PRELUDE = """
import os, tempfile, threading, time
from percpu import _core
SIZE = 4 << 20
def raw_arena(possible=b'\\x0f', nr=4):
    fd, path = tempfile.mkstemp(prefix="pk-safety.", dir="/dev/shm")
    os.unlink(path)
    os.ftruncate(fd, SIZE)
    a = _core.Arena(fd, SIZE)
    a.format(nr_cpu_ids=nr, possible=possible, online=possible, owner=os.getpid(),
             classes=[8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096], registry_max=64, registry_entry=64)
    return fd, a
"""


def _run(body: str) -> subprocess.CompletedProcess[str]:
    code = PRELUDE + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_rcu_read_lock_after_the_current_arena_was_closed():
    out = _run("""
        fd, a = raw_arena()
        _core.rcu_set_current(a)
        _core.rcu_read_lock(); _core.rcu_read_unlock()   # caches the slot in TLS
        a.close()
        fd2, b = raw_arena()
        _core.rcu_set_current(b)
        _core.rcu_read_lock(); _core.rcu_read_unlock()   # must use a new slot in b
        print("ok", b.rcu_info()["hiwater"])
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", "1"]


def test_lock_released_when_its_arena_is_closed_during_the_wait():
    out = _run("""
        fd, a1 = raw_arena()
        a2 = _core.Arena(fd, SIZE)
        off = a2.kzalloc(8)
        holder, waiter = _core.Lock(a2, off), _core.Lock(a1, off)
        holder.lock()
        res = {}
        def w():
            try:
                waiter.lock()
            except ValueError as e:
                res["err"] = str(e)
        t = threading.Thread(target=w); t.start()
        time.sleep(0.2)
        a1.close()
        holder.unlock()
        t.join(10)
        print(res.get("err", "none"), "|", holder.owner, holder.trylock())
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "arena closed while waiting for a lock | 0 True"


def test_arena_lock_and_freelist_cannot_be_initialised_twice():
    out = _run("""
        fd, a = raw_arena()
        for obj, args in ((a, (fd, SIZE)), (_core.Lock(a, a.kzalloc(8)), (a, a.kzalloc(8)))):
            try:
                obj.__init__(*args)
            except TypeError as e:
                print("refused")
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["refused", "refused"]


def test_format_needs_a_possible_cpu():
    out = _run("""
        try:
            raw_arena(possible=b'\\x00')
        except ValueError as e:
            print("refused", e.errno)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["refused", "22"]


def test_freelist_on_a_closed_arena_and_in_the_meta_pages(make_domain):
    dom = make_domain(size=2 << 20)
    with pytest.raises(errors.InvalidArgument):
        percpu._core.Freelist(dom.arena, 4096, True)  # the registry
    out = _run("""
        fd, a = raw_arena()
        a.close()
        try:
            _core.Freelist(a, 1 << 20)
        except ValueError:
            print("refused")
    """)
    assert out.returncode == 0 and out.stdout.strip() == "refused", out.stderr


def test_pop_bulk_with_a_huge_count(make_domain):
    dom = make_domain(size=2 << 20, nr_cpus=2)
    s = PcpuFreelist.create()
    buf = dom.kzalloc(64 * 16)
    s.populate(buf, 64, 16)
    got = s.pop_bulk(2**61 + 1)  # 8 * n would wrap to 8 bytes
    assert sorted(got) == [buf + 64 * i for i in range(16)]
    s.push_bulk(got)
    assert s.check() == 16


def test_percpu_add_offset_cannot_wrap_to_the_header(make_domain):
    dom = make_domain(size=2 << 20)
    with pytest.raises(errors.InvalidArgument):
        dom.arena.percpu_add(2**64 - 64, 1, 1)
    dom.arena.validate()  # the header is intact


def test_llist_del_first_refuses_a_garbage_list(make_domain):
    dom = make_domain(size=2 << 20)
    head = dom.kzalloc(8)
    dom.arena.store(head, 2**63)
    with pytest.raises(errors.Corrupted):
        dom.arena.llist_del_first(head)


def test_freelist_counts_do_not_leak(make_domain):
    import gc
    import tracemalloc

    make_domain(size=4 << 20, nr_cpus=256)
    s = PcpuFreelist.create()
    s.per_cpu()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(100):
        s.per_cpu()
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 64 << 10, f"{grown} bytes still held after 100 calls"


def test_acquire_timeout_limits(make_domain):
    dom = make_domain(size=2 << 20)
    lk = dom.lock_at(dom.kzalloc(8))
    with pytest.raises(OverflowError):
        lk.acquire(timeout=1e20)
    with pytest.raises(errors.InvalidArgument):
        lk.acquire(timeout=float("nan"))
    assert lk.acquire(timeout=0.01)
    lk.release()
