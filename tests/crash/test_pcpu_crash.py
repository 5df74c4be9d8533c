"""A process SIGKILLed anywhere in the per-CPU allocator leaves it consistent.

The worker allocates, frees and runs the balance work in a loop, so kills land
inside pcpu_lock, inside pcpu_alloc_mutex while pages are populated or
punched, and while chunks are created or destroyed.  After each kill the
survivor is not blocked, the allocator's check passes, the survivor's own
areas keep their bytes on every CPU, and the file's backing equals the
allocator's page count.
"""

from __future__ import annotations

import os
import random
import signal
import time

import mp_helpers
import pytest

from percpu import pcpu
from percpu.runtime import work
from percpu.runtime.kthread import kthread_run_on_cpu


@pytest.mark.crash
@pytest.mark.timeout(300)
def test_sigkill_anywhere_in_the_allocator(make_domain):
    dom = make_domain(size=256 << 20, nr_cpus=2)
    a = dom.arena
    mine = {}
    for i in range(40):
        p = a.pcpu_alloc(16, 8)
        for cpu in dom.possible:
            a.store(a.pcpu_ptr(p, cpu), 0xC0DE0000 + i)
        mine[p] = 0xC0DE0000 + i
    rng = random.Random(int(os.environ.get("PERCPU_SEED", "11")))
    kills = int(20 * float(os.environ.get("PERCPU_STRESS_SCALE", "1")))
    k = -1
    # At least `kills` kills, and more (up to 60) until one has landed inside the
    # lock: with few kills (PERCPU_STRESS_SCALE under ASan) none may have.
    while k + 1 < kills or (pcpu.info()["recoveries"] == 0 and k + 1 < kills + 60):
        k += 1
        kt = kthread_run_on_cpu(mp_helpers.pcpu_churn_forever, k % 2, "pcpu_crash/%u", k, method="fork")
        time.sleep(rng.uniform(0.005, 0.05))
        os.kill(kt.pid, signal.SIGKILL)
        assert kt.stop() == -signal.SIGKILL
        t0 = time.monotonic()
        p = a.pcpu_alloc(64, 8)  # takes over whatever lock the dead process held
        assert p is not None and time.monotonic() - t0 < 5
        a.pcpu_free(p)
        pcpu.balance()  # and the mutex
        dom.check()
        for q, tag in mine.items():
            for cpu in dom.possible:
                assert a.load(a.pcpu_ptr(q, cpu)) == tag, "an area of the survivor changed"
        work.flush(10)
        assert dom.populated_pages() == dom.st_blocks_pages()
    assert pcpu.info()["recoveries"] >= 1
    for q in mine:
        a.pcpu_free(q)
    dom.check()
