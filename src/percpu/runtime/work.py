"""irq_work: deferred work run soon by this process's work thread.

Counterpart of ``include/linux/irq_work.h``.  The kernel raises a
self-interrupt so the callback runs right after the current context ends;
here every process has one daemon thread (started on first use, restarted in
a forked child) that sleeps on a queue and runs each queued item as soon as
it arrives.  The BPF memory allocator refills and trims its caches here, the
per-CPU allocator runs its balance work here, and ``call_rcu`` callbacks run
here.

Semantics kept from the kernel: a work item is queued at most once at a time
(:meth:`IrqWork.queue` returns False while it is pending), and it may queue
itself again from its own callback.  A callback that raises is reported with
:mod:`logging` and counted; the thread goes on.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable

__all__ = ["IrqWork", "irq_work_queue", "irq_work_sync", "flush", "stats"]

log = logging.getLogger("percpu.irq_work")

_STOP = object()


class IrqWork:
    """A callback that can be queued to the work thread (``struct irq_work``)."""

    __slots__ = ("func", "_pending", "_busy", "_cond")

    def __init__(self, func: Callable[[], object]) -> None:
        if not callable(func):
            raise TypeError("irq_work needs a callable")
        self.func = func
        self._pending = False
        self._busy = False
        self._cond = threading.Condition()

    @property
    def pending(self) -> bool:
        return self._pending

    def queue(self) -> bool:
        """Queue the work; False if it was already pending.  Counterpart of ``irq_work_queue()``."""
        with self._cond:
            if self._pending:
                return False
            self._pending = True
        _runner().put(self)
        return True

    def sync(self, timeout: float | None = None) -> bool:
        """Wait until the work is neither pending nor running.  Counterpart of ``irq_work_sync()``."""
        if threading.current_thread() is _runner().thread:
            return not self._pending  # called from a callback: waiting would deadlock
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def _run(self, r: _Runner) -> None:
        with self._cond:
            self._pending = False
            self._busy = True
        try:
            self.func()
        except Exception:  # noqa: BLE001 - a work item's failure must not kill the thread
            r.errors += 1
            log.exception("irq_work %r raised", self.func)
        finally:
            r.runs += 1
            with self._cond:
                self._busy = False
                self._cond.notify_all()


class _Runner:
    def __init__(self) -> None:
        self.q: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.runs = 0
        self.errors = 0
        self.idle = threading.Condition()
        self.outstanding = 0
        self.thread = threading.Thread(target=self._loop, name="percpu-irq_work", daemon=True)
        self.thread.start()

    def put(self, item: object) -> None:
        with self.idle:
            self.outstanding += 1
        self.q.put(item)

    def _loop(self) -> None:
        while True:
            item = self.q.get()
            if item is _STOP:
                return
            try:
                if isinstance(item, IrqWork):
                    item._run(self)
                else:
                    try:
                        item()  # type: ignore[operator]
                    except Exception:  # noqa: BLE001
                        self.errors += 1
                        log.exception("queued work %r raised", item)
                    finally:
                        self.runs += 1
            finally:
                with self.idle:
                    self.outstanding -= 1
                    if self.outstanding == 0:
                        self.idle.notify_all()


_runner_obj: _Runner | None = None
_runner_lock = threading.Lock()


def _runner() -> _Runner:
    global _runner_obj
    r = _runner_obj
    if r is not None:
        return r
    with _runner_lock:
        if _runner_obj is None:
            _runner_obj = _Runner()
        return _runner_obj


def _after_fork_child() -> None:
    global _runner_obj, _runner_lock
    _runner_obj = None  # the thread did not survive fork; start anew on first use
    _runner_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_child)


def irq_work_queue(work: IrqWork | Callable[[], object]) -> bool:
    """Queue an :class:`IrqWork` (False if pending) or a plain callable (always queued)."""
    if isinstance(work, IrqWork):
        return work.queue()
    if not callable(work):
        raise TypeError("irq_work_queue needs an IrqWork or a callable")
    _runner().put(work)
    return True


def irq_work_sync(work: IrqWork, timeout: float | None = None) -> bool:
    """Wait for ``work`` to finish.  Counterpart of ``irq_work_sync()``."""
    return work.sync(timeout)


def flush(timeout: float | None = None) -> bool:
    """Wait until everything queued so far in this process has run."""
    r = _runner()
    if threading.current_thread() is r.thread:
        return r.outstanding == 0
    with r.idle:
        return r.idle.wait_for(lambda: r.outstanding == 0, timeout)


def stats() -> dict[str, int]:
    """Runs and failures of this process's work thread."""
    r = _runner_obj
    if r is None:
        return {"runs": 0, "errors": 0, "pending": 0}
    return {"runs": r.runs, "errors": r.errors, "pending": r.outstanding}
