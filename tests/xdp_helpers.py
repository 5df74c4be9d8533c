"""Helpers shared by the CPU map and XDP tests (importable by spawned workers: tests/ is on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import percpu

WAIT = 30.0  # seconds: the bound of every wait for a worker


def count_stack(counter: int, pkts: Any) -> None:
    """The stack: add the packets to ``counter[pkts.cpu]`` (u64 per CPU)."""
    percpu.current_domain().arena.fetch_add(counter + 8 * pkts.cpu, len(pkts))


def wait_until(pred: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def frames_in_flight(pool: Any) -> int:
    """Frames out of the allocator that are not in the pool (magazines, freelist): held by someone."""
    c = pool.ma.check()
    return int(c["created"] - c["released"] - c["cached"] - c["in_flight"] - pool.free_frames())


def delivered(dom: percpu.Domain, counter: int, cpu: int | None = None) -> int:
    """Packets the count_stack of CPU ``cpu`` (or of CPUs 0 and 1) counted."""
    a = dom.arena
    if cpu is None:
        return int(a.load(counter)) + int(a.load(counter + 8))
    return int(a.load(counter + 8 * cpu))
