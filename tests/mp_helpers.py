"""Worker functions for the multi-process tests (module-level: spawn pickles them by name)."""

from __future__ import annotations

import os
import random
import signal
import time

import percpu
from percpu.runtime.kthread import kthread_should_stop


def count_under_lock(counter: int, lock_off: int, rounds: int) -> int:
    """Increment a plain counter under the shared lock ``rounds`` times."""
    dom = percpu.current_domain()
    lock = dom.lock_at(lock_off)
    word = dom.mem(counter, 8).cast("Q")
    for _ in range(rounds):
        lock.lock()
        v = word[0]
        word[0] = v + 1  # read-modify-write in two steps: only the lock protects it
        lock.unlock()
    return 0


def hold_lock_forever(lock_off: int, ready_fd: int) -> None:
    """Take the lock, tell the parent, and hang (the parent SIGKILLs us)."""
    dom = percpu.current_domain()
    dom.lock_at(lock_off).lock()
    os.write(ready_fd, b"L")
    while True:
        time.sleep(60)


def wait_for_lock(lock_off: int, result_fd: int) -> None:
    """Block on the lock; report whether we recovered it from a dead owner."""
    dom = percpu.current_domain()
    recovered = dom.lock_at(lock_off).lock()
    os.write(result_fd, b"R" if recovered else b"N")
    os._exit(0)


def read_and_write_back(name: str, off: int, size: int, expect: bytes) -> int:
    """Attach by name (spawned), check the bytes, write their complement."""
    dom = percpu.Domain.attach(name)
    try:
        view = dom.mem(off, size)
        if bytes(view) != expect:
            return 3
        view[:] = bytes(b ^ 0xFF for b in expect)
        view.release()
        return 0
    finally:
        dom.close()


def report_identity(result_off: int) -> int:
    """Write pid, smp_processor_id and the affinity of this worker into the arena."""
    dom = percpu.current_domain()
    words = dom.mem(result_off, 32).cast("Q")
    words[0] = os.getpid()
    words[1] = percpu.smp_processor_id()
    aff = os.sched_getaffinity(0)
    words[2] = sum(1 << c for c in aff)
    words[3] = 1
    return 0


def loop_until_stopped(counter: int) -> int:
    """A well-behaved kthread: count until kthread_should_stop(), then return 7."""
    dom = percpu.current_domain()
    while not kthread_should_stop():
        dom.arena.fetch_add(counter, 1)
        time.sleep(0.001)
    return 7


def exit_with(code: int) -> int:
    return code


def die_by_signal(sig: int) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(10)


def churn_kmalloc(seed: int) -> None:
    """Allocate and free forever, at random sizes, until SIGKILLed mid-operation."""
    dom = percpu.current_domain()
    rng = random.Random(seed)
    live: list[int] = []
    sizes = (8, 24, 64, 100, 200, 512, 2000, 4096, 5000, 9000)
    while True:
        if live and (len(live) > 64 or rng.random() < 0.5):
            dom.kfree(live.pop(rng.randrange(len(live))))
        else:
            p = dom.kmalloc(rng.choice(sizes))
            if p is not None:
                live.append(p)


def ignore_sigterm_and_spin() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(0.01)
