"""A holder that is alive but stopped (SIGSTOP) must not freeze the other threads of a waiter.

Internal locks (kmalloc classes, freelist heads, RCU slots) are waited for with
the GIL released once the waiter sleeps on the futex.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import mp_helpers
import pytest

import percpu
from percpu.freelist import PcpuFreelist


@pytest.mark.crash
@pytest.mark.timeout(60)
def test_waiting_on_a_stopped_holder_keeps_the_process_alive(make_domain):
    dom = make_domain(size=8 << 20, nr_cpus=2)
    s = PcpuFreelist.create()
    buf = dom.kzalloc(64 * 4)
    s.populate(buf, 64, 4)
    head0 = s.offset + 64 * 2
    p = mp_helpers.start_holder([head0], stop=True)
    try:
        got = []

        def popper() -> None:
            with percpu.on_cpu(0):
                got.append(s.pop())  # blocks: CPU 0's head is held by a stopped process

        t = threading.Thread(target=popper, daemon=True)
        t.start()
        beats = 0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # this thread must keep running meanwhile
            time.sleep(0.01)
            beats += 1
        assert beats > 20, "the process froze while a thread waited for an internal lock"
        assert t.is_alive() and not got
        os.kill(p.pid, signal.SIGKILL)  # now the holder is dead: the waiter takes the lock over
        t.join(10)
        assert got == [buf + 64]
    finally:
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
        p.join()
