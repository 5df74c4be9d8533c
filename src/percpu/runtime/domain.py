"""Domains: a small machine in one shared-memory file.

Every per-CPU structure of percpu lives in a *domain*: one sparse file under
``/dev/shm`` that every process of the domain maps ``MAP_SHARED``, each at its
own address, so nothing in it is a pointer; every reference is an offset from
the start of the file, and 0 is NULL.

::

    /dev/shm/percpu.<name>   (mode 0600, sparse, reserved at a fixed size)
    +--------+----------+--------+-------------+------------------------ ...
    | header | registry | bitmap | descriptors | pages: kmalloc slabs, page
    +--------+----------+--------+-------------+ blocks, component objects
     fixed fields, CPU masks,     "struct page"   populated when handed out,
     locks, size classes          per page        punched when freed

The C core (``csrc/arena.h``) owns the header, the page allocator and kmalloc;
this module decides names, sizes, the CPU set, ownership, and the registry of
named objects through which another process attaches to a freelist, a cache or
a map by name.

Lifetime follows ``shm_open``/``shm_unlink``, not ``multiprocessing``'s
resource tracker: the creator owns the domain and only it may ``unlink()`` it;
a child's exit never does (CPython gh-82300 is the bug this avoids).  A
domain's CPUs are the kernel's possible/online masks, or a simulated set of
``nr_cpus`` CPUs so that per-CPU layouts can be exercised at any size on a
small machine; a simulated CPU is run on real CPU ``cpu % len(real online)``.

Synchronization:
    registry entries      the registry lock (a :class:`percpu._core.Lock` in the header)
    pages, kmalloc        the C core's page lock and per-class locks
    current domain stack  process-local, under a ``threading.Lock``
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

from percpu import _core
from percpu.errors import (
    Exists,
    InvalidArgument,
    NoDevice,
    NoEntry,
    NotPermitted,
    ProtocolError,
    TooBig,
)
from percpu.runtime.topology import Topology, format_cpulist

__all__ = [
    "DEFAULT_SIZE",
    "KMALLOC_CLASSES",
    "MAX_SIZE",
    "MIN_SIZE",
    "SHM_DIR",
    "Domain",
    "DomainInfo",
    "RegistryEntry",
    "current_domain",
    "list_domains",
    "mem",
]

SHM_DIR = "/dev/shm"
PREFIX = "percpu."
PAGE_SIZE: int = _core.PAGE_SIZE
DEFAULT_SIZE = 256 << 20
MIN_SIZE = 1 << 20
MAX_SIZE = 16 << 30
#: kmalloc size classes (the kernel's kmalloc-8 ... kmalloc-4k caches, with 96 and 192).
KMALLOC_CLASSES = (8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096)
REGISTRY_MAX = 256
#: The per-CPU allocator's first-chunk defaults (``include/linux/percpu.h``).
PCPU_STATIC_SIZE = 4096
PERCPU_MODULE_RESERVE = _core.PERCPU_MODULE_RESERVE
PERCPU_DYNAMIC_RESERVE = _core.PERCPU_DYNAMIC_RESERVE
PCPU_MAX_REGION = 16 << 20
_ENTRY = struct.Struct("<64s16sQQiIQQ")  # name kind off size owner flags created gen
REGISTRY_ENTRY = 128
FLAG_SIMULATED = 1

# The CPUs this process may run on, taken before anything here pins it: a pinned
# worker that starts workers of its own must still spread them over all of them.
_REAL_CPUS: tuple[int, ...] = tuple(sorted(os.sched_getaffinity(0))) or (0,)

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidArgument(
            f"bad domain name {name!r}: 1-63 characters of [A-Za-z0-9_.-], not starting with . or -"
        )
    return name


def _path(name: str) -> str:
    return os.path.join(SHM_DIR, PREFIX + name)


def _mask_bytes(cpus: tuple[int, ...], nbytes: int) -> bytes:
    return sum(1 << c for c in cpus).to_bytes(nbytes, "little")


def _mask_cpus(raw: bytes, nr_cpu_ids: int) -> tuple[int, ...]:
    bits = int.from_bytes(raw, "little")
    return tuple(c for c in range(nr_cpu_ids) if bits >> c & 1)


@dataclass(frozen=True)
class RegistryEntry:
    """A named object in a domain: where it lives and who made it."""

    name: str
    kind: str
    offset: int
    size: int
    owner_pid: int
    flags: int
    created_ns: int


class Domain:
    """A shared-memory domain: arena, CPU set, allocators and named objects.

    Create one with :meth:`create`, join it from another process with
    :meth:`attach`.  ``with dom:`` makes ``dom`` the current domain of the
    calling process for the block (see :func:`current_domain`); it does not
    close it.  :meth:`close` unmaps (views handed out stay valid until
    released); :meth:`unlink` removes the name, owner only.

    Process-safety: every method may be called from any process and thread of
    the domain, except :meth:`unlink` (the creating process only).
    """

    def __init__(
        self,
        arena: _core.Arena,
        name: str,
        *,
        owner: bool,
        real_online: tuple[int, ...] | None = None,
    ) -> None:
        self._arena = arena
        self._name = name
        self._path = _path(name)
        hdr = arena.header()
        self._owner_pid = hdr["owner_pid"]
        self._creator = owner
        self._nr_cpu_ids: int = hdr["nr_cpu_ids"]
        self._possible = _mask_cpus(hdr["possible"], self._nr_cpu_ids)
        self._online = _mask_cpus(hdr["online"], self._nr_cpu_ids)
        self._possible_set = frozenset(self._possible)
        self._simulated = bool(hdr["flags"] & FLAG_SIMULATED)
        if real_online is None:
            real_online = _REAL_CPUS
        self._real_online = real_online
        self._view: memoryview | None = memoryview(arena)  # type: ignore[arg-type]  # Buffer is 3.12+
        self._registry_off: int = hdr["registry_off"]
        self._registry_lock = _core.Lock(arena, _core.REGISTRY_LOCK_OFF)
        self._unlinked = False
        # The allocator entry points are the C core's own bound methods: a Python
        # wrapper would double the cost of kmalloc+kfree (see benchmarks/runtime.py).
        self.kmalloc = arena.kmalloc  # type: ignore[method-assign,assignment]
        self.kzalloc = arena.kzalloc  # type: ignore[method-assign,assignment]
        self.kfree = arena.kfree  # type: ignore[method-assign,assignment]

    # ---- lifetime ---------------------------------------------------------

    @classmethod
    def create(
        cls,
        size: int = DEFAULT_SIZE,
        nr_cpus: int | None = None,
        name: str | None = None,
        *,
        online: tuple[int, ...] | list[int] | None = None,
        pcpu_static_size: int = PCPU_STATIC_SIZE,
        pcpu_reserved_size: int = PERCPU_MODULE_RESERVE,
        pcpu_dyn_size: int = PERCPU_DYNAMIC_RESERVE,
    ) -> Domain:
        """Create a domain of ``size`` bytes (reserved, populated on use).

        ``nr_cpus=N`` simulates N possible CPUs (``online`` defaults to all of
        them); by default the CPU masks are read from
        ``/sys/devices/system/cpu/{possible,online}``.  ``name`` defaults to an
        unguessable one; the file is created with ``O_EXCL`` and mode 0600.

        Errors: :class:`InvalidArgument` (size <= 0 or below 1 MiB, bad name,
        bad CPU count), :class:`TooBig` (size above 16 GiB), :class:`Exists`
        (the name is taken), :class:`OutOfMemory` (``/dev/shm`` full).
        """
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise InvalidArgument(f"domain size must be a positive integer, not {size!r}")
        if size > MAX_SIZE:
            raise TooBig(f"domain size {size} is above the maximum of {MAX_SIZE} bytes")
        size = -(-size // PAGE_SIZE) * PAGE_SIZE
        if size < MIN_SIZE:
            raise InvalidArgument(f"domain size {size} is below the minimum of {MIN_SIZE} bytes")
        flags = 0
        if nr_cpus is None:
            topo = Topology.read()
            possible, on = topo.possible, topo.online
        else:
            if not isinstance(nr_cpus, int) or isinstance(nr_cpus, bool):
                raise InvalidArgument(f"nr_cpus must be an integer, not {nr_cpus!r}")
            if not 1 <= nr_cpus <= _core.MAX_CPUS:
                raise InvalidArgument(f"nr_cpus must be in 1..{_core.MAX_CPUS}, not {nr_cpus}")
            possible = tuple(range(nr_cpus))
            on = possible
            flags |= FLAG_SIMULATED
        if online is not None:
            on = tuple(sorted(set(online)))
            bad = [c for c in on if c not in possible]
            if bad:
                raise NoDevice(f"online CPUs {format_cpulist(bad)} are not possible")
        for what, v in (("pcpu_static_size", pcpu_static_size), ("pcpu_reserved_size", pcpu_reserved_size),
                        ("pcpu_dyn_size", pcpu_dyn_size)):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= PCPU_MAX_REGION:
                raise InvalidArgument(f"{what} must be an integer in 0..{PCPU_MAX_REGION}, not {v!r}")
        if pcpu_reserved_size % 4:
            raise InvalidArgument(f"pcpu_reserved_size must be a multiple of 4, not {pcpu_reserved_size}")
        if not possible or possible[-1] >= _core.MAX_CPUS:
            raise InvalidArgument(f"possible CPUs {format_cpulist(possible)} out of range")
        nr_cpu_ids = possible[-1] + 1
        if name is None:
            name = f"{os.getpid()}-{secrets.token_hex(8)}"
        _check_name(name)
        path = _path(name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise Exists(f"domain {name!r} already exists ({path})") from None
        try:
            os.ftruncate(fd, size)
            arena = _core.Arena(fd, size)
            nbytes = (nr_cpu_ids + 7) // 8
            arena.format(
                nr_cpu_ids=nr_cpu_ids,
                possible=_mask_bytes(possible, nbytes),
                online=_mask_bytes(on, nbytes),
                owner=os.getpid(),
                classes=list(KMALLOC_CLASSES),
                registry_max=REGISTRY_MAX,
                registry_entry=REGISTRY_ENTRY,
                flags=flags,
                pcpu_static_size=pcpu_static_size,
                pcpu_reserved_size=pcpu_reserved_size,
                pcpu_dyn_size=pcpu_dyn_size,
            )
        except BaseException:
            os.unlink(path)
            raise
        finally:
            os.close(fd)
        return cls(arena, name, owner=True)

    @classmethod
    def attach(cls, name: str) -> Domain:
        """Map the existing domain ``name`` in this process.

        Errors: :class:`NoEntry` (no such domain), :class:`NotPermitted`
        (another user's), :class:`InvalidArgument` (not a percpu domain or not
        yet initialised), :class:`ProtocolError` (another layout version).
        """
        _check_name(name)
        path = _path(name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NoEntry(f"no domain named {name!r} ({path})") from None
        except PermissionError:
            raise NotPermitted(f"domain {name!r} belongs to another user") from None
        try:
            st = os.fstat(fd)
            if st.st_uid != os.geteuid():
                raise NotPermitted(f"domain {name!r} belongs to uid {st.st_uid}")
            if st.st_size < MIN_SIZE or st.st_size % PAGE_SIZE:
                raise InvalidArgument(f"{path} is not a percpu domain (size {st.st_size})")
            arena = _core.Arena(fd, st.st_size)
        finally:
            os.close(fd)
        try:
            arena.validate()
        except ProtocolError:
            arena.close()
            raise
        except InvalidArgument:
            arena.close()
            raise InvalidArgument(f"{path} is not an initialised percpu domain") from None
        return cls(arena, name, owner=False)

    def close(self) -> None:
        """Unmap this process's view; views from :meth:`mem` stay valid until released.

        Idempotent.  Other processes are not affected; the domain lives on
        until unlinked and unmapped everywhere.
        """
        if self._view is not None:
            self._view.release()
            self._view = None
        self._arena.close()
        _forget(self)

    def unlink(self) -> None:
        """Remove the domain's name (``shm_unlink``); mappings stay valid.

        Only the creating process may unlink, never a child that inherited the
        handle.  Errors: :class:`NotPermitted` (not the creator),
        :class:`NoEntry` (already unlinked).
        """
        if not self._creator or os.getpid() != self._owner_pid:
            raise NotPermitted(
                f"only the creator (pid {self._owner_pid}) may unlink domain {self._name!r}"
            )
        if self._unlinked:
            raise NoEntry(f"domain {self._name!r} was already unlinked")
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            self._unlinked = True
            raise NoEntry(f"domain {self._name!r} was already unlinked") from None
        self._unlinked = True

    def __enter__(self) -> Domain:
        if self.closed:
            raise ValueError(f"domain {self._name!r} is closed")
        _push(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _pop(self)

    # ---- identity and CPUs ------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def path(self) -> str:
        return self._path

    @property
    def closed(self) -> bool:
        return bool(self._arena.closed)

    @property
    def owner_pid(self) -> int:
        """PID of the creating process (the only one allowed to unlink)."""
        return int(self._owner_pid)

    @property
    def is_creator(self) -> bool:
        return self._creator and os.getpid() == self._owner_pid

    @property
    def nr_cpu_ids(self) -> int:
        """One more than the highest possible CPU (the kernel's ``nr_cpu_ids``)."""
        return self._nr_cpu_ids

    @property
    def possible(self) -> tuple[int, ...]:
        """The possible CPUs (``cpu_possible_mask``); per-CPU arrays are sized by these."""
        return self._possible

    @property
    def online(self) -> tuple[int, ...]:
        """The online CPUs (``cpu_online_mask``) when the domain was created."""
        return self._online

    @property
    def simulated(self) -> bool:
        """True if the CPU set was given by ``nr_cpus`` rather than read from sysfs."""
        return self._simulated

    @property
    def size(self) -> int:
        return int(self._arena.size)

    @property
    def arena(self) -> _core.Arena:
        """The C core's mapping (atomics, llist, allocators on offsets)."""
        return self._arena

    def check_cpu(self, cpu: int) -> int:
        """Return ``cpu`` if it is possible in this domain, else raise :class:`NoDevice`."""
        if not isinstance(cpu, int) or isinstance(cpu, bool) or cpu not in self._possible_set:
            raise NoDevice(
                f"CPU {cpu!r} is not possible in domain {self._name!r} "
                f"(possible: {format_cpulist(self._possible)})"
            )
        return cpu

    def real_cpu(self, cpu: int) -> int:
        """The real CPU a worker for domain CPU ``cpu`` is pinned to.

        Itself when it exists on this machine, else ``cpu % len(real online)``
        (a simulated domain of 64 CPUs runs on 2 real ones).
        """
        self.check_cpu(cpu)
        real = self._real_online
        return cpu if cpu in real else real[cpu % len(real)]

    def fold_cpu(self, real: int) -> int:
        """The domain CPU a thread running on real CPU ``real`` counts as."""
        if real in self._possible_set:
            return real
        return self._possible[real % len(self._possible)]

    # ---- memory -----------------------------------------------------------

    def mem(self, ptr: int, size: int) -> memoryview:
        """A writable view of ``size`` arena bytes at offset ``ptr``.

        Errors: :class:`InvalidArgument` for NULL, a size <= 0, or a range
        outside the arena.  The view stays valid after :meth:`close`.
        """
        view = self._view
        if view is None:
            raise ValueError(f"domain {self._name!r} is closed")
        if not isinstance(ptr, int) or not isinstance(size, int) or ptr <= 0 or size <= 0:
            raise InvalidArgument(f"bad range: ptr={ptr!r} size={size!r}")
        if ptr + size > len(view):
            raise InvalidArgument(
                f"range {ptr}+{size} is outside the arena of {len(view)} bytes"
            )
        return view[ptr : ptr + size]

    def kmalloc(self, size: int) -> int | None:
        """Allocate ``size`` bytes; return the offset, or None when out of memory.

        Counterpart of ``kmalloc()``.  Sizes up to a page come from the size
        classes in :data:`KMALLOC_CLASSES` (objects aligned to 8 bytes, to
        their size for powers of two), larger ones from whole pages.
        Returns None when the request could fit the arena but no room is free
        now.  Errors: :class:`InvalidArgument` for a size that is not a
        positive int, or larger than all the arena's data pages.
        Context: never sleeps long (short lock holds); process-safe.
        """
        return self._arena.kmalloc(size)

    def kzalloc(self, size: int) -> int | None:
        """Like :meth:`kmalloc`, zeroed.  Counterpart of ``kzalloc()``."""
        return self._arena.kmalloc(size, True)

    def kfree(self, ptr: int) -> None:
        """Free what :meth:`kmalloc` returned; ``kfree(0)`` does nothing.

        Errors: :class:`InvalidArgument` for a pointer that is not a live
        allocation (including a double free); nothing changes then.
        """
        self._arena.kfree(ptr)

    def ksize(self, ptr: int) -> int:
        """Usable bytes of an allocation (its size class).  Counterpart of ``ksize()``."""
        return int(self._arena.ksize(ptr))

    def alloc_pages(self, nr_pages: int) -> int | None:
        """Allocate ``nr_pages`` contiguous, zeroed, populated pages; None if out of memory."""
        return self._arena.alloc_pages(nr_pages)

    def free_pages(self, ptr: int) -> None:
        """Free a block from :meth:`alloc_pages`; its backing is punched out."""
        self._arena.free_pages(ptr)

    def lock_at(self, offset: int) -> _core.Lock:
        """A handle on the process-shared lock at ``offset`` (8 zeroed bytes = unlocked).

        Errors: :class:`InvalidArgument` for an offset that is not 8-aligned,
        lies in the meta pages (header, registry, RCU block, page map), or is
        outside the arena.
        """
        hdr = self._arena.header()
        if (not isinstance(offset, int) or isinstance(offset, bool) or offset % 8
                or offset < hdr["meta_pages"] * PAGE_SIZE or offset + 8 > self.size):
            raise InvalidArgument(f"no lock can live at offset {offset!r} (8-aligned, in the data pages)")
        return _core.Lock(self._arena, offset)

    def populated_pages(self) -> int:
        """Pages with backing, by the allocator's count: meta pages + pages handed out."""
        hdr = self._arena.header()
        return int(hdr["meta_pages"] + hdr["nr_used_pages"] - hdr["pcpu_unpopulated_pages"])

    def st_blocks_pages(self) -> int:
        """Pages with backing as the kernel counts them: ``fstat().st_blocks``."""
        return os.fstat(self._arena.fd).st_blocks * 512 // PAGE_SIZE

    def stats(self) -> dict[str, object]:
        """Memory and allocator figures (the ``percpu domain show`` numbers)."""
        hdr = self._arena.header()
        return {
            "size": hdr["size"],
            "pages": hdr["nr_pages"],
            "meta_pages": hdr["meta_pages"],
            "used_pages": hdr["nr_used_pages"],
            "populated_pages": hdr["meta_pages"] + hdr["nr_used_pages"] - hdr["pcpu_unpopulated_pages"],
            "st_blocks_pages": self.st_blocks_pages(),
            "page_allocs": hdr["nr_page_allocs"],
            "page_frees": hdr["nr_page_frees"],
            "generation": hdr["generation"],
            "kmalloc": self._arena.slab_stats(),
        }

    def check(self) -> None:
        """Verify pages, descriptors, every size class and the per-CPU allocator.

        Raises :class:`Corrupted` (``EUCLEAN``) with what is broken.
        """
        self._arena.check()
        self._arena.pcpu_check()

    # ---- registry ---------------------------------------------------------

    def _entry_off(self, i: int) -> int:
        return self._registry_off + i * REGISTRY_ENTRY

    def _read_entry(self, i: int) -> RegistryEntry | None:
        assert self._view is not None
        raw = _ENTRY.unpack_from(self._view, self._entry_off(i))
        name = raw[0].rstrip(b"\0").decode()
        if not name:
            return None
        return RegistryEntry(name, raw[1].rstrip(b"\0").decode(), raw[2], raw[3], raw[4], raw[5], raw[6])

    def _locked_registry(self) -> _RegistryGuard:
        if self._view is None:
            raise ValueError(f"domain {self._name!r} is closed")
        return _RegistryGuard(self._registry_lock)

    def register(self, name: str, kind: str, offset: int, size: int, flags: int = 0) -> RegistryEntry:
        """Name an object so other processes can find it.

        Errors: :class:`Exists` (the name is taken), :class:`InvalidArgument`
        (name empty or over 63 bytes, kind over 15 bytes),
        :class:`~percpu.errors.NoSpace` (the registry is full).
        """
        bname, bkind = name.encode(), kind.encode()
        if not 0 < len(bname) < 64 or b"\0" in bname or len(bkind) > 15:
            raise InvalidArgument(f"bad registry name {name!r} or kind {kind!r}")
        from percpu.errors import NoSpace

        with self._locked_registry():
            free = None
            for i in range(REGISTRY_MAX):
                e = self._read_entry(i)
                if e is None:
                    if free is None:
                        free = i
                elif e.name == name:
                    raise Exists(f"{name!r} is already registered in domain {self._name!r}")
            if free is None:
                raise NoSpace(f"the registry of domain {self._name!r} is full")
            entry = RegistryEntry(name, kind, offset, size, os.getpid(), flags, time.time_ns())
            assert self._view is not None
            _ENTRY.pack_into(
                self._view, self._entry_off(free), bname, bkind, offset, size, entry.owner_pid,
                flags, entry.created_ns, 0,
            )
        return entry

    def lookup(self, name: str) -> RegistryEntry:
        """The registry entry ``name``; :class:`NoEntry` if there is none."""
        with self._locked_registry():
            for i in range(REGISTRY_MAX):
                e = self._read_entry(i)
                if e is not None and e.name == name:
                    return e
        raise NoEntry(f"no object named {name!r} in domain {self._name!r}")

    def unregister(self, name: str) -> RegistryEntry:
        """Remove ``name`` from the registry and return its entry; :class:`NoEntry` if absent."""
        with self._locked_registry():
            for i in range(REGISTRY_MAX):
                e = self._read_entry(i)
                if e is not None and e.name == name:
                    assert self._view is not None
                    off = self._entry_off(i)
                    self._view[off : off + REGISTRY_ENTRY] = bytes(REGISTRY_ENTRY)
                    return e
        raise NoEntry(f"no object named {name!r} in domain {self._name!r}")

    def objects(self) -> list[RegistryEntry]:
        """Every registered object, in registry order."""
        with self._locked_registry():
            return [e for i in range(REGISTRY_MAX) if (e := self._read_entry(i)) is not None]

    def __repr__(self) -> str:
        if self.closed:
            return f"<Domain {self._name} closed>"
        hdr = self._arena.header()
        used = (hdr["meta_pages"] + hdr["nr_used_pages"] - hdr["pcpu_unpopulated_pages"]) * PAGE_SIZE
        sim = " simulated" if self._simulated else ""
        return (
            f"<Domain {self._name} cpus={format_cpulist(self._possible)}{sim} "
            f"size={_human(self.size)} populated={_human(used)} owner={self._owner_pid}>"
        )


class _RegistryGuard:
    __slots__ = ("_lock",)

    def __init__(self, lock: _core.Lock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._lock.lock()  # a dead holder leaves at worst one half-written entry

    def __exit__(self, *exc: object) -> None:
        self._lock.unlock()


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" or n == int(n) else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n}B"


# ---- the current domain ----------------------------------------------------

_stack: list[Domain] = []
_default: Domain | None = None
_stack_lock = threading.Lock()


def _sync_core() -> None:
    """Mirror the current domain into the C core (the RCU read side reads it there)."""
    cur = _stack[-1] if _stack else _default
    _core.rcu_set_current(cur.arena if cur is not None and not cur.closed else None)


def _push(dom: Domain) -> None:
    with _stack_lock:
        _stack.append(dom)
        _sync_core()


def _pop(dom: Domain) -> None:
    with _stack_lock:
        for i in range(len(_stack) - 1, -1, -1):
            if _stack[i] is dom:
                del _stack[i]
                break
        _sync_core()


def _forget(dom: Domain) -> None:
    global _default
    with _stack_lock:
        _stack[:] = [d for d in _stack if d is not dom]
        if _default is dom:
            _default = None
        _sync_core()


def _cleanup_default() -> None:
    dom = _default
    if dom is not None and dom.is_creator:
        try:
            dom.unlink()
        except OSError:
            pass


def set_current_domain(dom: Domain | None) -> None:
    """Make ``dom`` the process's current domain outside any ``with`` block."""
    global _default
    with _stack_lock:
        _default = dom
        _sync_core()


def current_domain() -> Domain:
    """The domain the calling process works in.

    The innermost ``with dom:`` block, else the process default.  When none
    was set, a default domain is created on first use (real CPU masks, default
    size) and unlinked when its creating process exits -- the one implicit
    unlink, because nobody else holds its name.
    """
    global _default
    if _stack:
        return _stack[-1]
    dom = _default
    if dom is not None and not dom.closed:
        return dom
    with _stack_lock:
        if _default is None or _default.closed:
            _default = Domain.create()
            atexit.register(_cleanup_default)
            _sync_core()
        return _default


def mem(ptr: int, size: int) -> memoryview:
    """A writable view of ``size`` bytes at offset ``ptr`` of the current domain."""
    return current_domain().mem(ptr, size)


# ---- listing ---------------------------------------------------------------


@dataclass(frozen=True)
class DomainInfo:
    """What ``percpu domain ls`` shows of one domain file."""

    name: str
    path: str
    size: int
    populated_pages: int
    owner_pid: int
    owner_alive: bool
    created_ns: int
    nr_cpu_ids: int
    possible: str
    simulated: bool
    objects: int
    error: str | None = None

    @property
    def stale(self) -> bool:
        """True when the creator is gone (or the file is not a usable domain)."""
        return not self.owner_alive or self.error is not None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "path": self.path,
            "bytes": self.size,
            "populated_pages": self.populated_pages,
            "owner_pid": self.owner_pid,
            "owner_alive": self.owner_alive,
            "created_ns": self.created_ns,
            "nr_cpu_ids": self.nr_cpu_ids,
            "possible": self.possible,
            "simulated": self.simulated,
            "objects": self.objects,
            "stale": self.stale,
            "error": self.error,
        }


def owner_alive(pid: int, created_ns: int) -> bool:
    """Is ``pid`` still the process that created a domain at ``created_ns``?

    A live PID that started after the domain was created is a reused PID.
    """
    if pid <= 0 or not _core.task_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start_ticks = int(fields[19])
        with open("/proc/stat", "rb") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith(b"btime"))
    except (OSError, IndexError, ValueError, StopIteration):
        return True
    started = btime + start_ticks / os.sysconf("SC_CLK_TCK")
    return started <= created_ns / 1e9 + 2.0


def _info(name: str) -> DomainInfo:
    path = _path(name)
    try:
        dom = Domain.attach(name)
    except OSError as e:
        try:
            st = os.stat(path)
            size, blocks = st.st_size, st.st_blocks * 512 // PAGE_SIZE
        except OSError:
            size, blocks = 0, 0
        return DomainInfo(name, path, size, blocks, 0, False, 0, 0, "", False, 0, str(e))
    try:
        hdr = dom.arena.header()
        return DomainInfo(
            name=name,
            path=path,
            size=dom.size,
            populated_pages=dom.st_blocks_pages(),
            owner_pid=dom.owner_pid,
            owner_alive=owner_alive(dom.owner_pid, hdr["created_ns"]),
            created_ns=hdr["created_ns"],
            nr_cpu_ids=dom.nr_cpu_ids,
            possible=format_cpulist(dom.possible),
            simulated=dom.simulated,
            objects=len(dom.objects()),
        )
    finally:
        dom.close()


def list_domains() -> Iterator[DomainInfo]:
    """Every domain file of this user under ``/dev/shm``, sorted by name."""
    try:
        names = sorted(os.listdir(SHM_DIR))
    except FileNotFoundError:
        return
    uid = os.geteuid()
    for fname in names:
        if not fname.startswith(PREFIX):
            continue
        try:
            if os.stat(os.path.join(SHM_DIR, fname)).st_uid != uid:
                continue
        except OSError:
            continue
        yield _info(fname[len(PREFIX) :])


def domain_info(name: str) -> DomainInfo:
    """:class:`DomainInfo` of one domain; :class:`NoEntry` if it does not exist."""
    _check_name(name)
    if not os.path.exists(_path(name)):
        raise NoEntry(f"no domain named {name!r} ({_path(name)})")
    return _info(name)


def remove(name: str) -> None:
    """Remove a domain file by name, whoever created it (``percpu domain rm``)."""
    _check_name(name)
    try:
        os.unlink(_path(name))
    except FileNotFoundError:
        raise NoEntry(f"no domain named {name!r}") from None
