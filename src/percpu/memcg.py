"""Accounting groups: the memcg analogue for per-CPU memory and object caches.

A group has a name and a limit in bytes and lives in the domain, so every
process charges the same counters.  While a group is active for a thread
(``with group:`` or :meth:`Group.activate`), the per-CPU allocations the
thread makes are charged ``pcpu_obj_full_size(size)`` (the size on every
possible CPU plus 8 bytes per 4, the kernel's ``obj_cgroup`` pointers) and
fail with ``None`` (the facade) or :class:`~percpu.errors.OutOfMemory` (the
classes) past the limit; a free returns the charge to the group that paid,
whichever thread frees.  The BPF memory allocator charges the group that was
active when it was created.

Deviation: the kernel charges only ``__GFP_ACCOUNT`` allocations of a task in
a cgroup; here an active group is charged for every per-CPU allocation of the
thread.  The charge is taken under ``pcpu_lock`` instead of before it, so a
crashed process's charges are recomputed exactly (``docs/design/pcpu.md``).

    >>> g = Group("tenant-a", limit=1 << 20)          # doctest: +SKIP
    >>> with g:
    ...     c = PerCpuCounter()
    >>> g.usage
    16
"""

from __future__ import annotations

import threading
from typing import Any

from percpu import _core
from percpu.errors import InvalidArgument
from percpu.runtime.domain import Domain, current_domain

__all__ = ["Group", "active", "groups"]

_tls = threading.local()


class Group:
    """A named accounting group of a domain (``struct mem_cgroup``, the percpu part)."""

    def __init__(self, name: str, limit: int, *, domain: Domain | None = None, exist_ok: bool = False) -> None:
        """Create the group ``name`` with ``limit`` bytes.

        Errors: :class:`~percpu.errors.Exists` (unless ``exist_ok``, which
        attaches and sets the limit), :class:`~percpu.errors.NoSpace` (63
        groups per domain), :class:`~percpu.errors.InvalidArgument` (a name of
        0 or more than 31 bytes, a negative limit).
        """
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise InvalidArgument(f"limit must be a non-negative int of bytes, not {limit!r}")
        self.domain = current_domain() if domain is None else domain
        if not isinstance(name, str) or "\0" in name:
            raise InvalidArgument(f"bad group name {name!r}")
        from percpu.errors import Exists

        try:
            self.id: int = self.domain.arena.memcg_create(name, limit)
        except Exists:
            if not exist_ok:
                raise
            self.id = self.domain.arena.memcg_lookup(name)
            self.domain.arena.memcg_set_limit(self.id, limit)
        self.name = name

    @classmethod
    def attach(cls, name: str, domain: Domain | None = None) -> Group:
        """The existing group ``name``; :class:`~percpu.errors.NoEntry` if none."""
        self = cls.__new__(cls)
        self.domain = current_domain() if domain is None else domain
        self.id = self.domain.arena.memcg_lookup(name)
        self.name = name
        return self

    def info(self) -> dict[str, Any]:
        """``limit``, ``usage`` (bytes), ``max_usage``, ``failcnt``, ``nr_pcpu_objs``..."""
        d = dict(self.domain.arena.memcg_info(self.id))
        d["usage"] = d["usage_pcpu"] + d["usage_other"]
        return d

    @property
    def usage(self) -> int:
        """Bytes charged now (``memory.stat``'s ``percpu`` plus other allocators)."""
        return int(self.info()["usage"])

    @property
    def limit(self) -> int:
        return int(self.info()["limit"])

    @limit.setter
    def limit(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidArgument(f"limit must be a non-negative int of bytes, not {value!r}")
        self.domain.arena.memcg_set_limit(self.id, value)

    @property
    def failcnt(self) -> int:
        """Charges refused because of the limit."""
        return int(self.info()["failcnt"])

    def charge(self, nbytes: int) -> bool:
        """Charge ``nbytes`` from another allocator; False (and ``failcnt``+1) past the limit."""
        return bool(self.domain.arena.memcg_charge(self.id, nbytes))

    def uncharge(self, nbytes: int) -> None:
        """Return a :meth:`charge`."""
        self.domain.arena.memcg_uncharge(self.id, nbytes)

    def remove(self) -> None:
        """Delete the group; :class:`~percpu.errors.Busy` while anything is charged to it."""
        self.domain.arena.memcg_remove(self.id)

    def activate(self) -> Any:
        """Charge the calling thread's allocations here until :meth:`deactivate`-ed.

        ``set_active_memcg()``; returns a token for :func:`restore`.
        """
        stack = _stack()
        token = _core.memcg_set_active(self.domain.arena, self.id)
        stack.append((self, token))
        return token

    def deactivate(self) -> None:
        """Undo the latest :meth:`activate` of this group in this thread."""
        stack = _stack()
        for i in range(len(stack) - 1, -1, -1):
            if stack[i][0] is self:
                _core.memcg_restore(stack[i][1])
                del stack[i]
                return
        raise InvalidArgument(f"group {self.name!r} is not active in this thread")

    def __enter__(self) -> Group:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def __repr__(self) -> str:
        i = self.info()
        return f"<Group {self.name} usage={i['usage']} limit={i['limit']}>"


def _stack() -> list[tuple[Group, Any]]:
    s = getattr(_tls, "stack", None)
    if s is None:
        s = _tls.stack = []
    return s


def active() -> Group | None:
    """The group charged for the calling thread's allocations, if any."""
    s = _stack()
    return s[-1][0] if s else None


def groups(domain: Domain | None = None) -> list[Group]:
    """Every group of the domain."""
    dom = current_domain() if domain is None else domain
    out = []
    for gid in dom.arena.memcg_ids():
        g = Group.__new__(Group)
        g.domain, g.id = dom, gid
        g.name = dom.arena.memcg_info(gid)["name"]
        out.append(g)
    return out
