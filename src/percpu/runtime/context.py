"""Execution contexts: task and NMI.

Counterpart of ``in_nmi()`` / ``in_task()`` and of the kernel's rule that
code running in NMI context may interrupt anything, including a holder of the
lock it wants, and therefore must never spin on a lock (the per-CPU freelist
and the BPF memory allocator have trylock-only NMI paths for this).

In Python the "interrupt" is a signal handler: it runs in the main thread
between two bytecodes of whatever that thread was doing.  A thread is in NMI
context inside ``with nmi():`` or inside a handler installed with
:func:`signal` (which wraps the handler in ``nmi()``).  The state is per
thread and nests.
"""

from __future__ import annotations

import signal as _signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from percpu import _core

__all__ = ["in_nmi", "in_task", "nmi", "signal"]

Handler = Callable[[int, FrameType | None], Any]


#: True inside :func:`nmi` or a handler installed by :func:`signal`.
#: Counterpart of ``in_nmi()``.  The depth is a C thread-local, so the C fast
#: paths (the freelist's trylock-only paths) see it without a call back here.
in_nmi = _core.in_nmi


def in_task() -> bool:
    """True outside NMI context.  Counterpart of ``in_task()``."""
    return not _core.in_nmi()


@contextmanager
def nmi() -> Iterator[None]:
    """Run the block in NMI context (nestable): trylock-only paths apply."""
    _core.nmi_enter()
    try:
        yield
    finally:
        _core.nmi_exit()


def signal(signum: int, handler: Handler) -> Any:
    """Install ``handler`` for ``signum`` so that it runs in NMI context.

    Like :func:`signal.signal` (main thread only; returns the previous
    handler), but the handler is wrapped in :func:`nmi`, so library calls it
    makes take their must-not-block paths.
    """
    if not callable(handler):
        raise TypeError("handler must be callable")

    def _nmi_handler(signo: int, frame: FrameType | None) -> Any:
        with nmi():
            return handler(signo, frame)

    _nmi_handler.__wrapped__ = handler  # type: ignore[attr-defined]
    return _signal.signal(signum, _nmi_handler)
