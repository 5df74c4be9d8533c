"""RCU across the processes of a domain.

Counterpart of ``include/linux/rcupdate.h`` (``rcu_read_lock``,
``synchronize_rcu``, ``call_rcu``, ``rcu_barrier``, the polled-cookie API) and
of RCU Tasks Trace (``rcu_read_lock_trace`` ...), the flavour sleepable BPF
programs use.  The mechanism is liburcu's "memb" flavour with a 64-bit
grace-period counter, in the domain's shared memory (``csrc/rcu.h`` has the
protocol and its memory ordering):

* every reader thread owns a slot; the outermost ``rcu_read_lock()`` stores
  the grace-period counter in it and issues a full barrier, the outermost
  ``rcu_read_unlock()`` clears it with a release store: no lock, no system
  call, nestable, safe in NMI context (a signal handler);
* a grace period is a number; it is complete once no slot shows a section that
  began before it.  Any process that waits for one advances it by scanning the
  slots: there is no daemon to start;
* a reader that died inside a section counts as quiescent: a waiter blocked
  for 10 ms probes the owners of the slots holding it back and frees the slots
  of dead ones;
* a live reader that holds a grace period back longer than
  :func:`stall_timeout` is reported (the kernel's RCU CPU stall warning), with
  its pid, tid and the CPU it is on, once per section.

Callbacks (``call_rcu``) are Python callables, so they belong to the process
that queued them: a per-process thread waits for their grace periods and hands
the ready ones to the process's irq_work thread, which runs them in order.
``rcu_barrier()`` waits for every callback this process queued before it.

Reclaim in shared memory goes through cookies: :class:`DeferFreeList` keeps
retired objects on an ``llist`` in the arena with the cookie of the grace
period that must end before they are freed, and any process may reclaim.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from percpu import _core
from percpu.errors import Deadlock, InvalidArgument, TimedOut
from percpu.runtime.domain import Domain, current_domain
from percpu.runtime.work import irq_work_queue

__all__ = [
    "RCU",
    "TASKS_TRACE",
    "DeferFreeList",
    "Stall",
    "barrier",
    "call",
    "get_state",
    "on_stall",
    "poll_state",
    "read_lock",
    "read_lock_held",
    "read_lock_trace",
    "set_stall_timeout",
    "stall_timeout",
    "start_poll",
    "synchronize",
]

log = logging.getLogger("percpu.rcu")

RCU = 0
TASKS_TRACE = 1
_NAMES = ("rcu", "rcu_tasks_trace")

#: A waiter blocked this long probes the owners of the blocking slots.
DEAD_PROBE_S = 0.010
_stall_timeout = float(os.environ.get("PERCPU_RCU_STALL_TIMEOUT", "21"))
_stall_hooks: list[Callable[[Stall], object]] = []


def set_stall_timeout(seconds: float) -> None:
    """Report a reader that holds a grace period back longer than this (default 21 s)."""
    global _stall_timeout
    if not seconds > 0:
        raise InvalidArgument(f"stall timeout must be positive, not {seconds!r}")
    _stall_timeout = float(seconds)


def stall_timeout() -> float:
    return _stall_timeout


@dataclass(frozen=True)
class Stall:
    """One RCU stall report: a live reader holding grace period ``gp`` back."""

    domain: str
    flavour: str
    pid: int
    tid: int
    cpu: int | None
    slot: int
    gp: int
    seconds: float


def on_stall(hook: Callable[[Stall], object]) -> Callable[[], None]:
    """Call ``hook(stall)`` for every stall report; returns a function that removes it."""
    _stall_hooks.append(hook)
    return lambda: _stall_hooks.remove(hook)


# ---- read side -----------------------------------------------------------------


class _ReadSection:
    """``with rcu.read_lock():`` -- the C entry points themselves, no Python frame."""

    __slots__ = ()
    __enter__ = _core.rcu_read_lock
    __exit__ = _core.rcu_read_unlock_exit


class _ReadSectionTrace:
    __slots__ = ()
    __enter__ = _core.rcu_read_lock_trace
    __exit__ = _core.rcu_read_unlock_trace_exit


_READ = _ReadSection()
_READ_TRACE = _ReadSectionTrace()


def read_lock() -> _ReadSection:
    """A read-side section of the current domain: ``with rcu.read_lock(): ...``.

    Counterpart of ``rcu_read_lock()``/``rcu_read_unlock()``.  Nests; never
    blocks; allowed in NMI context.  The section belongs to the domain that was
    current when it began: do not switch domains inside it.
    """
    return _READ


def read_lock_trace() -> _ReadSectionTrace:
    """A Tasks Trace read-side section (``rcu_read_lock_trace()``); may sleep inside."""
    return _READ_TRACE


def read_lock_held(flavour: int = RCU) -> bool:
    """True inside a read-side section of the current domain (``rcu_read_lock_held()``)."""
    return bool(_core.rcu_nesting(flavour))


# ---- grace periods -------------------------------------------------------------


def _check_flavour(flavour: int) -> int:
    if flavour not in (RCU, TASKS_TRACE):
        raise InvalidArgument(f"RCU flavour is RCU (0) or TASKS_TRACE (1), not {flavour!r}")
    return flavour


def get_state(flavour: int = RCU, domain: Domain | None = None) -> int:
    """A cookie for :func:`poll_state`.  Counterpart of ``get_state_synchronize_rcu()``.

    The cookie names the next grace period, which waits for every reader that
    exists now.  Like the kernel's, this does not start it; :func:`poll_state`,
    :func:`cond_synchronize` and every waiter do.  Updaters that take a cookie
    before that grace period starts share it.
    """
    dom = domain or current_domain()
    return int(dom.arena.rcu_get_state(_check_flavour(flavour)))


def start_poll(flavour: int = RCU, domain: Domain | None = None) -> int:
    """Take a cookie and start its grace period (``start_poll_synchronize_rcu()``)."""
    dom = domain or current_domain()
    f = _check_flavour(flavour)
    cookie = int(dom.arena.rcu_get_state(f))
    dom.arena.rcu_start_gp(f, cookie)
    return cookie


def poll_state(cookie: int, flavour: int = RCU, domain: Domain | None = None) -> bool:
    """True once a full grace period has passed since ``cookie`` was taken.

    Counterpart of ``poll_state_synchronize_rcu()``.  Never blocks; it scans
    the reader slots once, so polling is what drives the grace period.
    """
    dom = domain or current_domain()
    a = dom.arena
    f = _check_flavour(flavour)
    if not isinstance(cookie, int) or isinstance(cookie, bool) or cookie <= 0:
        raise InvalidArgument(f"bad RCU cookie {cookie!r}")
    if a.rcu_gp_done(f) >= cookie:
        return True
    a.rcu_start_gp(f, cookie)  # EINVAL for a cookie get_state never returned
    return bool(a.rcu_advance(f) >= cookie)


class _Waiter:
    """The blocking part of a grace period: scan, back off, probe, report stalls."""

    def __init__(self, dom: Domain, f: int, target: int) -> None:
        self.dom, self.f, self.target = dom, f, target
        dom.arena.rcu_start_gp(f, target)
        self.start = time.monotonic()
        self.last_probe = self.start
        self.reported: set[tuple[int, int, int]] = set()

    def step(self) -> bool:
        """One scan; True when the grace period is complete."""
        a = self.dom.arena
        if a.rcu_advance(self.f) >= self.target:
            return True
        now = time.monotonic()
        if now - self.last_probe >= DEAD_PROBE_S:
            self.last_probe = now
            blockers = a.rcu_blockers(self.f, self.target)
            if any(not _core.task_alive(tid) for _, tid, _, _ in blockers):
                if a.rcu_reclaim_dead():
                    return bool(a.rcu_advance(self.f) >= self.target)
            if now - self.start >= _stall_timeout:
                for slot, tid, pid, seq in blockers:
                    key = (slot, tid, seq)
                    if key not in self.reported:
                        self.reported.add(key)
                        self._report(slot, tid, pid, now - self.start)
        return False

    def _report(self, slot: int, tid: int, pid: int, seconds: float) -> None:
        stall = Stall(self.dom.name, _NAMES[self.f], pid, tid, _task_cpu(tid), slot, self.target, seconds)
        self.dom.arena.rcu_stat_add("stalls", self.f, 1)
        log.warning(
            "INFO: %s detected stall in domain %s: reader pid %d tid %d on CPU %s has held "
            "grace period %d back for %.1f s",
            stall.flavour, stall.domain, pid, tid, "?" if stall.cpu is None else stall.cpu,
            self.target, seconds,
        )
        for hook in list(_stall_hooks):
            try:
                hook(stall)
            except Exception:  # noqa: BLE001 - a hook must not break the grace period
                log.exception("RCU stall hook %r raised", hook)

    def wait(self, timeout: float | None = None) -> None:
        delay = 20e-6
        while not self.step():
            if timeout is not None and time.monotonic() - self.start > timeout:
                raise TimedOut(f"grace period {self.target} not complete after {timeout} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.002)


def _task_cpu(tid: int) -> int | None:
    try:
        with open(f"/proc/{tid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[36])
    except (OSError, IndexError, ValueError):
        return None


def synchronize(flavour: int = RCU, domain: Domain | None = None, timeout: float | None = None) -> None:
    """Wait for a full grace period.  Counterpart of ``synchronize_rcu()``.

    Every read-side section of any process of the domain that began before the
    call has ended when it returns.  Blocks (sleeping, GIL released); must not
    be called inside a read-side section of the same flavour (:class:`Deadlock`).
    """
    dom = domain or current_domain()
    f = _check_flavour(flavour)
    if _core.rcu_nesting(f) and (domain is None or domain is current_domain()):
        raise Deadlock(f"synchronize_{_NAMES[f]}() inside a read-side section would never return")
    _Waiter(dom, f, int(dom.arena.rcu_get_state(f))).wait(timeout)  # the waiter starts it


def cond_synchronize(cookie: int, flavour: int = RCU, domain: Domain | None = None) -> None:
    """Wait until ``cookie`` has expired (``cond_synchronize_rcu()``)."""
    dom = domain or current_domain()
    _Waiter(dom, _check_flavour(flavour), cookie).wait()


# ---- callbacks -------------------------------------------------------------------


class _Callbacks:
    """This process's call_rcu callbacks and the thread that waits for their grace periods."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.queues: tuple[deque[tuple[Domain, int, Callable[[], object]]], ...] = (deque(), deque())
        self.queued = [0, 0]
        self.invoked = [0, 0]
        self.thread = threading.Thread(target=self._loop, name="percpu-rcu_gp", daemon=True)
        self.thread.start()

    def add(self, dom: Domain, f: int, fn: Callable[[], object]) -> None:
        cookie = int(dom.arena.rcu_get_state(f))  # the gp thread starts it
        dom.arena.rcu_stat_add("cbs_queued", f, 1)
        with self.cond:
            self.queues[f].append((dom, cookie, fn))
            self.queued[f] += 1
            self.cond.notify_all()

    def _ready(self, f: int) -> list[tuple[Domain, Callable[[], object]]]:
        """Pop the callbacks of flavour f whose grace period is complete, in order."""
        q = self.queues[f]
        out: list[tuple[Domain, Callable[[], object]]] = []
        done: dict[int, int] = {}
        while q:
            dom, cookie, fn = q[0]
            if dom.closed:
                q.popleft()
                out.append((dom, fn))  # its domain is gone: nothing can still read
                continue
            g = done.get(id(dom))
            if g is None:
                g = done[id(dom)] = int(dom.arena.rcu_advance(f))
            if g < cookie:
                break
            q.popleft()
            out.append((dom, fn))
        return out

    def _loop(self) -> None:
        delay = 20e-6
        waiters: dict[tuple[int, int], _Waiter] = {}
        while True:
            with self.cond:
                while not (self.queues[0] or self.queues[1]):
                    waiters.clear()
                    self.cond.wait()
                    delay = 20e-6
                heads = [(f, self.queues[f][0]) for f in (0, 1) if self.queues[f]]
            progressed = False
            for f, (dom, cookie, _) in heads:
                if dom.closed:
                    progressed = True
                else:
                    w = waiters.get((id(dom), f))
                    if w is None:
                        w = waiters[(id(dom), f)] = _Waiter(dom, f, cookie)
                    if w.target != cookie:
                        w.target = cookie
                        dom.arena.rcu_start_gp(f, cookie)
                    progressed |= w.step()
                with self.cond:
                    batch = self._ready(f)
                if batch:
                    progressed = True
                    irq_work_queue(functools.partial(self._invoke, f, batch))
            if progressed:
                delay = 20e-6
                continue
            time.sleep(delay)
            delay = min(delay * 2, 0.002)

    def _invoke(self, f: int, batch: list[tuple[Domain, Callable[[], object]]]) -> None:
        try:
            for dom, fn in batch:
                try:
                    fn()
                except Exception:  # noqa: BLE001 - one callback's failure must not stop the rest
                    log.exception("%s callback %r raised", _NAMES[f], fn)
                if not dom.closed:
                    dom.arena.rcu_stat_add("cbs_invoked", f, 1)
        finally:
            with self.cond:
                self.invoked[f] += len(batch)
                self.cond.notify_all()

    def barrier(self, f: int, timeout: float | None) -> None:
        if threading.current_thread().name == "percpu-irq_work":
            raise Deadlock("rcu_barrier() from an RCU callback would wait for itself")
        with self.cond:
            target = self.queued[f]
            if not self.cond.wait_for(lambda: self.invoked[f] >= target, timeout):
                raise TimedOut(f"rcu_barrier: callbacks still pending after {timeout} s")

    def pending(self, f: int) -> int:
        with self.cond:
            return self.queued[f] - self.invoked[f]


_cbs: _Callbacks | None = None
_cbs_lock = threading.Lock()


def _callbacks() -> _Callbacks:
    global _cbs
    with _cbs_lock:
        if _cbs is None:
            _cbs = _Callbacks()
        return _cbs


def _after_fork_child() -> None:
    global _cbs, _cbs_lock
    _cbs = None  # the parent's callbacks are the parent's to run
    _cbs_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_child)


def call(fn: Callable[[], object], flavour: int = RCU, domain: Domain | None = None) -> None:
    """Run ``fn()`` after a grace period, in this process's irq_work thread.

    Counterpart of ``call_rcu()``.  Never blocks.  Callbacks of one flavour
    run in the order they were queued.
    """
    if not callable(fn):
        raise TypeError("call_rcu() needs a callable")
    _callbacks().add(domain or current_domain(), _check_flavour(flavour), fn)


def barrier(flavour: int = RCU, timeout: float | None = None) -> None:
    """Wait until every callback this process queued so far has run (``rcu_barrier()``)."""
    _callbacks().barrier(_check_flavour(flavour), timeout)


def pending_callbacks(flavour: int = RCU) -> int:
    """Callbacks this process queued that have not run yet."""
    return 0 if _cbs is None else _cbs.pending(_check_flavour(flavour))


# ---- deferred free in shared memory ------------------------------------------------


class DeferFreeList:
    """Retired objects waiting for a grace period, on an ``llist`` in the arena.

    Counterpart of ``kfree_rcu(ptr, rhf)`` with the kernel's ``rcu_head``: each
    object embeds a 16-byte head at ``head_offset`` (the llist link, then the
    cookie).  Readers may go on reading the object until the grace period ends,
    so the head must be bytes they never read (a trailer, or a field that is
    dead once the object is unpublished).  Any process of the domain may
    :meth:`defer` (lock-free) and :meth:`reclaim` (under the list's lock, so
    one reclaimer at a time walks the list).

    Control block (40 bytes, kzalloc'd)::

        +0  head         llist head: offset of the newest deferred rcu_head
        +8  lock         the reclaim lock (percpu._core.Lock)
        +16 deferred     objects ever deferred
        +24 freed        objects ever freed by reclaim
        +32 head_offset  where the rcu_head sits in each object

    Crash: a reclaimer killed between unlinking an object and freeing it leaks
    that one object; nothing is ever freed twice or freed early.
    """

    SIZE = 40

    def __init__(self, domain: Domain, offset: int, flavour: int = RCU, name: str | None = None) -> None:
        self.domain = domain
        self.offset = offset
        self.flavour = _check_flavour(flavour)
        self.name = name
        self.head_offset = int(domain.arena.load(offset + 32))
        self._lock = domain.lock_at(offset + 8)

    @classmethod
    def create(
        cls,
        domain: Domain | None = None,
        name: str | None = None,
        flavour: int = RCU,
        head_offset: int = 0,
    ) -> DeferFreeList:
        """Allocate a list in the domain, registered under ``name`` when given.

        ``head_offset``: where the 16-byte ``rcu_head`` sits in every object
        (a multiple of 8).
        """
        dom = domain or current_domain()
        if not isinstance(head_offset, int) or head_offset < 0 or head_offset % 8:
            raise InvalidArgument(f"rcu_head offset must be a non-negative multiple of 8, not {head_offset!r}")
        off = dom.kzalloc(cls.SIZE)
        if off is None:
            from percpu.errors import OutOfMemory

            raise OutOfMemory("no room for a deferred-free list")
        dom.arena.store(off + 32, head_offset)
        if name is not None:
            try:
                dom.register(name, f"rcu_defer{flavour}", off, cls.SIZE)
            except BaseException:
                dom.kfree(off)
                raise
        return cls(dom, off, flavour, name)

    @classmethod
    def attach(cls, name: str, domain: Domain | None = None) -> DeferFreeList:
        """The list registered as ``name`` (from any process of the domain)."""
        dom = domain or current_domain()
        e = dom.lookup(name)
        if not e.kind.startswith("rcu_defer"):
            raise InvalidArgument(f"{name!r} is a {e.kind}, not a deferred-free list")
        return cls(dom, e.offset, int(e.kind[-1]), name)

    def defer(self, obj: int, cookie: int | None = None) -> int:
        """Retire ``obj``: a :meth:`reclaim` frees it after the grace period ``cookie``.

        ``cookie`` defaults to a new one (:func:`get_state`; the next
        :meth:`reclaim` starts its grace period).  Returns the cookie.
        Counterpart of ``kfree_rcu()``; never blocks.
        """
        a = self.domain.arena
        if not isinstance(obj, int) or obj <= 0 or obj % 8:
            raise InvalidArgument(f"bad object offset {obj!r}")
        if cookie is None:
            cookie = int(a.rcu_get_state(self.flavour))
        node = obj + self.head_offset
        a.store(node + 8, cookie)
        a.llist_add(self.offset, node)
        a.fetch_add(self.offset + 16, 1)
        return cookie

    def reclaim(self, free: Callable[[int], Any] | None = None) -> int:
        """Free every object whose grace period is complete; returns how many.

        ``free(obj)`` defaults to ``kfree``.  Never waits for a grace period (it
        scans once, which may complete one); waits only for another reclaimer.
        """
        a = self.domain.arena
        free = free or self.domain.kfree
        head, hoff = self.offset, self.head_offset
        freed = 0
        self._lock.lock()  # a dead reclaimer's half-done unlink is a single store: nothing to repair
        try:
            # Start the grace period of the newest cookie (one increment per reclaim,
            # not per defer), then scan once.
            a.rcu_start_gp(self.flavour, a.rcu_get_state(self.flavour))
            done = int(a.rcu_advance(self.flavour))
            prev = 0
            node = a.load(head)
            while node:
                nxt = a.load(node)
                if a.load(node + 8) <= done:
                    if prev == 0 and a.cmpxchg(head, node, nxt) != node:
                        prev = a.load(head)  # new objects were pushed: find node's predecessor
                        while a.load(prev) != node:
                            prev = a.load(prev)
                    if prev:
                        a.store(prev, nxt)
                    free(node - hoff)
                    freed += 1
                else:
                    prev = node
                node = nxt
            a.fetch_add(self.offset + 24, freed)
        finally:
            self._lock.unlock()
        return freed

    def pending(self) -> int:
        """Objects deferred and not yet freed."""
        a = self.domain.arena
        return int(a.load(self.offset + 16) - a.load(self.offset + 24))

    def destroy(self, wait: bool = True) -> None:
        """Wait for the grace periods, free everything, free the list (and its name)."""
        if wait:
            while self.pending():
                synchronize(self.flavour, self.domain)
                self.reclaim()
        if self.name is not None:
            self.domain.unregister(self.name)
        self.domain.kfree(self.offset)

    def __repr__(self) -> str:
        return f"<DeferFreeList {self.name or hex(self.offset)} {_NAMES[self.flavour]} pending={self.pending()}>"
