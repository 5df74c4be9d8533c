"""Exceptions of percpu, one class per kernel errno.

A kernel call that returns ``-errno`` raises the matching class here; every
instance carries ``.errno`` (they are :class:`OSError` subclasses, so
``except OSError`` and ``e.errno`` work as for any system call).  Classes for
argument errors are also :class:`ValueError`, and ``NoEntry`` is also a
:class:`LookupError`, so ordinary Python handlers catch them too.

The C core raises through :func:`from_errno`; nothing else maps errno values.
"""

from __future__ import annotations

import errno as _errno
import os

__all__ = [
    "PercpuError",
    "InvalidArgument",
    "OutOfMemory",
    "RangeError",
    "Overflow",
    "AccessDenied",
    "Busy",
    "NoSpace",
    "NoEntry",
    "Exists",
    "TooBig",
    "NoDevice",
    "NotPermitted",
    "Deadlock",
    "TimedOut",
    "Corrupted",
    "ProtocolError",
    "errno_name",
    "from_errno",
]


class PercpuError(OSError):
    """Base class: an error of a percpu operation, with the kernel's ``errno``."""

    default_errno: int = _errno.EIO

    def __init__(self, message: str = "", errno: int | None = None) -> None:
        code = self.default_errno if errno is None else errno
        super().__init__(code, message or os.strerror(code))

    def __str__(self) -> str:
        return f"[{errno_name(self.errno or 0)}] {self.strerror}"


class InvalidArgument(PercpuError, ValueError):
    """EINVAL: an argument the kernel would refuse."""

    default_errno = _errno.EINVAL


class OutOfMemory(PercpuError, MemoryError):
    """ENOMEM: the arena or an accounting group has no room."""

    default_errno = _errno.ENOMEM


class RangeError(PercpuError, ValueError):
    """ERANGE: a value outside the allowed range (a CPU >= nr_cpu_ids, say)."""

    default_errno = _errno.ERANGE


class Overflow(PercpuError, ValueError):
    """EOVERFLOW: a value too large for its field."""

    default_errno = _errno.EOVERFLOW


class AccessDenied(PercpuError):
    """EACCES: the request is refused (a source smaller than the mask it fills, say)."""

    default_errno = _errno.EACCES


class Busy(PercpuError):
    """EBUSY: the resource is held (a trylock that failed, an object in use)."""

    default_errno = _errno.EBUSY


class NoSpace(PercpuError):
    """ENOSPC: a bounded queue or table is full."""

    default_errno = _errno.ENOSPC


class NoEntry(PercpuError, LookupError):
    """ENOENT: no such object (an unknown domain or registry name)."""

    default_errno = _errno.ENOENT


class Exists(PercpuError):
    """EEXIST: the name or key is taken."""

    default_errno = _errno.EEXIST


class TooBig(PercpuError, ValueError):
    """E2BIG: beyond a size limit."""

    default_errno = _errno.E2BIG


class NoDevice(PercpuError, ValueError):
    """ENODEV: a CPU that is not possible in this domain."""

    default_errno = _errno.ENODEV


class NotPermitted(PercpuError):
    """EPERM: the caller may not do this (unlink by a non-owner, unlock by a non-holder)."""

    default_errno = _errno.EPERM


class Deadlock(PercpuError):
    """EDEADLK: the calling thread already holds the lock it asks for."""

    default_errno = _errno.EDEADLK


class TimedOut(PercpuError):
    """ETIMEDOUT: a bounded wait ran out."""

    default_errno = _errno.ETIMEDOUT


class Corrupted(PercpuError):
    """EUCLEAN: a shared structure failed its consistency check."""

    default_errno = _errno.EUCLEAN


class ProtocolError(PercpuError):
    """EPROTO: the arena was made by an incompatible version."""

    default_errno = _errno.EPROTO


_BY_ERRNO: dict[int, type[PercpuError]] = {
    cls.default_errno: cls
    for cls in (
        InvalidArgument,
        OutOfMemory,
        RangeError,
        Overflow,
        AccessDenied,
        Busy,
        NoSpace,
        NoEntry,
        Exists,
        TooBig,
        NoDevice,
        NotPermitted,
        Deadlock,
        TimedOut,
        Corrupted,
        ProtocolError,
    )
}


# Linux aliases one number to two names; the kernel's own spelling wins.
_CANONICAL = {_errno.EDEADLK: "EDEADLK", _errno.EAGAIN: "EAGAIN", _errno.ENOTSUP: "EOPNOTSUPP"}


def errno_name(code: int) -> str:
    """The symbolic name of an errno value as the kernel spells it (35 -> ``EDEADLK``)."""
    code = abs(code)
    return _CANONICAL.get(code) or _errno.errorcode.get(code, str(code))


def from_errno(code: int, message: str = "") -> PercpuError:
    """Return the exception for a kernel-style error code (``-EINVAL`` or ``EINVAL``)."""
    code = abs(code)
    cls = _BY_ERRNO.get(code, PercpuError)
    return cls(message, code)
