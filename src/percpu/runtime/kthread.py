"""Kernel threads bound to a CPU, as worker processes.

Counterpart of ``kthread_run_on_cpu()``, ``kthread_should_stop()`` and
``kthread_stop()``.  Python threads do not run in parallel, so a "kthread"
here is a process: started with an explicit :mod:`multiprocessing` start
method (``fork`` or ``spawn``; never the interpreter's default, which changed
in 3.14), pinned to one real CPU with ``sched_setaffinity``, named like the
kernel's threads with ``prctl(PR_SET_NAME)`` (``ps``/``top`` show
``cpumap/3/map:1``), and attached to the domain, in which it *is* its CPU:
``smp_processor_id()`` returns the domain CPU it was started for, also when
that CPU is simulated and the process runs on real CPU ``cpu % nr_real``.

Each kthread has a small control block in the arena::

    +0  should_stop   set by kthread_stop(), polled by kthread_should_stop()
    +8  started       set by the worker once pinned, named and attached
    +16 pid           the worker's pid

The parent's supervisor thread waits on every worker's sentinel.  A worker
that exits with a non-zero code or a signal without being asked to stop is
reported (logged, counted, and passed
to ``on_death``) and, with ``restart=True``, started again up to
``max_restarts`` times.  ``kthread_stop()`` returns the worker's exit code: the
int its function returned (0 for None, 1 for an exception, ``-signal`` when
killed).
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from percpu import _core
from percpu.errors import InvalidArgument, TimedOut
from percpu.runtime import cpu as _cpu
from percpu.runtime.domain import Domain, current_domain, set_current_domain

__all__ = [
    "Kthread",
    "get_start_method",
    "kthread_run_on_cpu",
    "kthread_should_stop",
    "kthread_stop",
    "set_start_method",
]

log = logging.getLogger("percpu.kthread")

START_METHODS = ("fork", "spawn", "forkserver")
_start_method = os.environ.get("PERCPU_START_METHOD", "spawn")
_OFF_STOP, _OFF_STARTED, _OFF_PID = 0, 8, 16
_CTRL_SIZE = 64


def set_start_method(method: str) -> None:
    """Choose how kthreads start: ``fork``, ``spawn`` (default) or ``forkserver``."""
    global _start_method
    if method not in START_METHODS:
        raise InvalidArgument(f"start method must be one of {START_METHODS}, not {method!r}")
    _start_method = method


def get_start_method() -> str:
    return _start_method


# ---- the worker side -------------------------------------------------------

_self: tuple[Domain, int] | None = None
_fork_domains: dict[str, Domain] = {}


def kthread_should_stop() -> bool:
    """True once :func:`kthread_stop` was called for the calling worker.

    Counterpart of ``kthread_should_stop()``; False outside a kthread.
    """
    me = _self
    return me is not None and me[0].arena.load(me[1] + _OFF_STOP) != 0


def _bootstrap(
    domain_name: str,
    ctrl: int,
    cpu: int,
    real_cpu: int,
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> None:
    global _self
    dom = _fork_domains.get(domain_name)
    if dom is None or dom.closed:
        dom = Domain.attach(domain_name)
    set_current_domain(dom)
    os.sched_setaffinity(0, {real_cpu})
    _core.set_task_name(name)
    _cpu.set_pinned_cpu(cpu)
    _self = (dom, ctrl)
    dom.arena.store(ctrl + _OFF_PID, os.getpid())
    dom.arena.store(ctrl + _OFF_STARTED, 1)
    rc = fn(*args)
    if rc is not None and not isinstance(rc, int):
        raise TypeError(f"a kthread function returns an int or None, not {type(rc).__name__}")
    sys.exit(rc or 0)


# ---- the parent side -------------------------------------------------------


class Kthread:
    """A worker process bound to one CPU of a domain (``struct task_struct``)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        cpu: int,
        name: str,
        args: tuple[Any, ...] = (),
        *,
        domain: Domain | None = None,
        method: str | None = None,
        restart: bool = False,
        max_restarts: int = 3,
        on_death: Callable[[Kthread], object] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError("kthread function must be callable")
        self.domain = domain or current_domain()
        self.cpu = self.domain.check_cpu(cpu)
        self.real_cpu = self.domain.real_cpu(cpu)
        self.name = name
        self.fn = fn
        self.args = tuple(args)
        self.method = method or _start_method
        if self.method not in START_METHODS:
            raise InvalidArgument(f"start method must be one of {START_METHODS}, not {self.method!r}")
        if self.method != "fork":
            try:
                pickle.dumps((fn, tuple(args)))
            except Exception as e:  # noqa: BLE001 - any pickling failure means the same thing
                raise TypeError(
                    f"kthread {name!r}: with the {self.method!r} start method the function and its "
                    f"arguments must be picklable (a module-level function), or use method='fork': {e}"
                ) from None
        self.restart = restart
        self.max_restarts = max_restarts
        self.on_death = on_death
        self.restarts = 0
        self.deaths: list[int | None] = []
        self._proc: Any = None
        # Process.join/is_alive call waitpid(); two threads doing so at once can make
        # one of them see ECHILD and report "no exit code yet".  Reap under a lock.
        self._reap_lock = threading.Lock()
        self._stopping = False
        self._stopped = False
        ctrl = self.domain.kzalloc(_CTRL_SIZE)
        if ctrl is None:
            from percpu.errors import OutOfMemory

            raise OutOfMemory("no room in the domain for a kthread control block")
        self._ctrl = ctrl

    # lifecycle

    def start(self, timeout: float = 60.0) -> Kthread:
        """Start the worker and wait until it runs (pinned, named, attached)."""
        arena = self.domain.arena
        arena.store(self._ctrl + _OFF_STARTED, 0)
        arena.store(self._ctrl + _OFF_STOP, 0)
        ctx: Any = multiprocessing.get_context(self.method)
        if self.method == "fork":
            _fork_domains[self.domain.name] = self.domain
        proc = ctx.Process(
            target=_bootstrap,
            args=(self.domain.name, self._ctrl, self.cpu, self.real_cpu, self.name, self.fn, self.args),
            name=self.name,
            daemon=True,
        )
        proc.start()
        self._proc = proc
        deadline = time.monotonic() + timeout
        while not arena.load(self._ctrl + _OFF_STARTED):
            if not proc.is_alive():
                proc.join()
                if arena.load(self._ctrl + _OFF_STARTED):
                    break  # ran and already finished
                raise RuntimeError(
                    f"kthread {self.name} died while starting (exit code {proc.exitcode})"
                )
            if time.monotonic() > deadline:
                proc.kill()
                proc.join()
                raise TimedOut(f"kthread {self.name} did not start within {timeout} s")
            time.sleep(0.001)
        _supervisor().watch(self)
        return self

    def stop(self, timeout: float = 10.0) -> int:
        """Ask the worker to stop, wait, and return its exit code.  Counterpart of ``kthread_stop()``.

        The worker sees :func:`kthread_should_stop` turn True.  One that has
        not exited after ``timeout`` seconds gets SIGTERM, then SIGKILL.
        """
        if self._stopped:
            raise InvalidArgument(f"kthread {self.name} was already stopped")
        self._stopping = True
        proc = self._proc
        self.domain.arena.store(self._ctrl + _OFF_STOP, 1)
        if self._wait(timeout) is None:
            log.warning("kthread %s (pid %s) ignored stop; terminating", self.name, proc.pid)
            proc.terminate()
            if self._wait(2.0) is None:
                proc.kill()
                self._wait(None)
        self._stopped = True
        _supervisor().forget(self)
        if not self.domain.closed:
            self.domain.kfree(self._ctrl)
        return int(proc.exitcode)

    # state

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def alive(self) -> bool:
        if self._proc is None:
            return False
        with self._reap_lock:
            return bool(self._proc.is_alive())

    @property
    def exitcode(self) -> int | None:
        return None if self._proc is None else self._proc.exitcode

    @property
    def sentinel(self) -> int:
        return int(self._proc.sentinel)

    def join(self, timeout: float | None = None) -> int | None:
        """Wait for the worker to exit by itself; its exit code, or None on timeout."""
        return self._wait(timeout)

    def _wait(self, timeout: float | None) -> int | None:
        if not multiprocessing.connection.wait([self._proc.sentinel], timeout):
            return None
        with self._reap_lock:
            self._proc.join()  # the sentinel is ready: this only reaps
            return self._proc.exitcode  # type: ignore[no-any-return]

    def _died(self) -> None:
        code = self._wait(None)
        if code == 0:
            return  # the function returned: kthread_stop() will collect the result
        self.deaths.append(code)
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        log.warning("kthread %s (pid %s) on CPU %d died with %s", self.name, self._proc.pid, self.cpu, how)
        if self.on_death is not None:
            try:
                self.on_death(self)
            except Exception:  # noqa: BLE001
                log.exception("on_death callback of kthread %s raised", self.name)
        if self.restart and self.restarts < self.max_restarts and not self._stopping:
            self.restarts += 1
            log.warning("restarting kthread %s (%d/%d)", self.name, self.restarts, self.max_restarts)
            try:
                self.start()
            except Exception:  # noqa: BLE001
                log.exception("restart of kthread %s failed", self.name)

    def __repr__(self) -> str:
        state = "running" if self.alive else f"exited({self.exitcode})"
        return f"<Kthread {self.name} cpu={self.cpu} pid={self.pid} {state} restarts={self.restarts}>"


class _Supervisor:
    """Waits on the sentinels of this process's kthreads; reports and restarts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[int, Kthread] = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._thread = threading.Thread(target=self._loop, name="percpu-kthreadd", daemon=True)
        self._thread.start()

    def watch(self, kt: Kthread) -> None:
        with self._lock:
            self._threads[kt.sentinel] = kt
        os.write(self._wake_w, b"x")

    def forget(self, kt: Kthread) -> None:
        with self._lock:
            for s, k in list(self._threads.items()):
                if k is kt:
                    del self._threads[s]
        os.write(self._wake_w, b"x")

    def _loop(self) -> None:
        while True:
            with self._lock:
                sentinels = list(self._threads)
            ready = multiprocessing.connection.wait([self._wake_r, *sentinels], timeout=1.0)
            for s in ready:
                if s == self._wake_r:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                    continue
                with self._lock:
                    kt = self._threads.pop(int(s), None)  # type: ignore[arg-type]
                if kt is not None and not kt._stopping:
                    kt._died()


_supervisor_obj: _Supervisor | None = None
_supervisor_lock = threading.Lock()


def _supervisor() -> _Supervisor:
    global _supervisor_obj
    with _supervisor_lock:
        if _supervisor_obj is None:
            _supervisor_obj = _Supervisor()
        return _supervisor_obj


def _after_fork_child() -> None:
    global _supervisor_obj, _supervisor_lock
    _supervisor_obj = None
    _supervisor_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_child)


def kthread_run_on_cpu(
    fn: Callable[..., Any],
    cpu: int,
    namefmt: str,
    *args: Any,
    method: str | None = None,
    restart: bool = False,
    domain: Domain | None = None,
) -> Kthread:
    """Start a worker bound to ``cpu`` running ``fn(*args)``.  Counterpart of ``kthread_run_on_cpu()``.

    ``namefmt`` is formatted with the CPU as the kernel does (``"ksoftirqd/%u"``
    becomes ``ksoftirqd/3``; a name without ``%`` is used as is) and truncated
    to 15 bytes by ``prctl``.  With ``spawn``, ``fn`` and ``args`` must be
    picklable.  Returns once the worker runs.
    Errors: :class:`~percpu.errors.NoDevice` for a CPU that is not possible.
    """
    name = namefmt.replace("%u", "%d") % cpu if "%" in namefmt else namefmt
    return Kthread(fn, cpu, name, args, domain=domain, method=method, restart=restart).start()


def kthread_stop(task: Kthread) -> int:
    """Stop ``task`` and return its exit code.  Counterpart of ``kthread_stop()``."""
    return task.stop()
