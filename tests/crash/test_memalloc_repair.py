"""A holder killed between writing the staging record and detaching the chain (found in review).

``free_bulk`` moves a chain from a cache into its ``tgt`` under ``move_lock``:
it writes the staging record, then detaches the chain from ``free_llist``.  A
process killed between the two left the chain on ``free_llist``; the next
allocation handed its head out, and a later repair of ``move_lock`` took the
head for detached and spliced the allocated object into ``tgt``'s list (two
holders, a list through a live object).  The repair of the cache's lock now
forgets a staged move whose chain is still on its source.  The dead holder's
state is built by hand in a forked child (the exact stores of ``move_to_tgt``
up to that point), which then SIGKILLs itself holding both locks.
"""

from __future__ import annotations

import os
import signal

import pytest

import percpu
from percpu.memalloc import BpfMemAlloc

# struct pk_ma (csrc/memalloc.h): move_lock, then the staging record
MOVE_LOCK, ST_HEAD, ST_N, ST_SRC, ST_TGT, ST_SRCLIST = 56, 64, 72, 80, 88, 96
FREE_LLIST = 8  # struct pk_ma_cache: after the lock
PK_MA_L_FREE = 1


@pytest.mark.crash
def test_a_staged_move_cut_before_its_detach_is_forgotten(make_domain):
    dom = make_domain(size=16 << 20, nr_cpus=2)
    a = dom.arena
    ma = BpfMemAlloc(48)
    assert a.load(ma.off + 40) == next(c["cache"] for c in ma.info()["caches"] if c["cpu"] == 0)  # layout guard
    c0 = next(c["cache"] for c in ma.info()["caches"] if c["cpu"] == 0)
    head = a.load(c0 + FREE_LLIST)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child dies by SIGKILL
        dom.lock_at(ma.off + MOVE_LOCK).lock()
        dom.lock_at(c0).lock()
        a.store(ma.off + ST_SRC, c0)
        a.store(ma.off + ST_TGT, c0)
        a.store(ma.off + ST_SRCLIST, PK_MA_L_FREE)  # and st_done = 0
        a.store(ma.off + ST_N, 1)
        a.store(ma.off + ST_HEAD, head)  # killed right here, before the detach
        os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    with percpu.on_cpu(0):
        p = ma.cache_alloc()  # takes the dead holder's cache lock over and pops the head
        assert p == head + 8
        chk = ma.check()  # takes move_lock over: the staging repair
        assert chk["outstanding"] == 1
        assert ma.obj_cache(p) == c0  # still ours, not spliced anywhere
        got = [ma.cache_alloc() for _ in range(150)]
        assert p not in got and None not in got and len(set(got)) == 150
        ma.cache_free(p)
        for q in got:
            ma.cache_free(q)
    chk = ma.check()
    assert chk["outstanding"] == 0 and chk["created"] - chk["released"] == chk["cached"] + chk["in_flight"]
    ma.destroy(wait=True)
    dom.check()
