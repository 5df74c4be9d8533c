"""The BPF CPU map (``kernel/bpf/cpumap.c``): redirect frames in bulk to workers pinned to CPUs.

An XDP program on the receiving CPU returns ``bpf_redirect_map(map, cpu, 0)``;
the frame goes into the bulk queue of 8 for (this CPU, entry ``cpu``); the
9th frame, or :func:`xdp_do_flush` at the end of the poll, moves the queue
into the entry's ring (a bounded MPSC ``ptr_ring`` of ``qsize`` offsets in the
arena) and the end-of-poll flush wakes the entry's worker: a process pinned to
``cpu`` and named ``cpumap/<cpu>/map:<id>``, the kernel's kthread.  The worker
dequeues up to 8 at a time, runs the entry's program (built-in ``"drop"``,
``"pass"``, ``"redirect"``, or a Python callable per frame), and hands the
passed frames to the map's *stack* handler in lists of up to 64, then returns
them to the frame pool in bulk.  Only offsets cross the ring.

::

    producer (CPU 0)                                  worker cpumap/1/map:3 (CPU 1)
    prog -> bpf_redirect_map(m, 1) ---+               +-> poll(): up to 8 per iteration
                                      v               |   entry program: PASS/DROP/REDIRECT
    bulk queue [cpu 0][entry 1]: 8 offsets            |   stack(PacketList of <= 64)
        | 9th frame / xdp_do_flush()                  |   release(): frames back to the pool
        v                                             |
    ring of entry 1 (qsize slots) --- wake (futex) ---+

Updates follow ``cpu_map_update_elem()`` check by check (see :meth:`CpuMap.update`):
every update builds a new ring and a new worker and returns once the worker
runs; the old entry is stopped after an RCU grace period, its worker drains
the ring first, so no frame already in the ring is lost.  A worker killed with
SIGKILL is noticed by the process that started it: the entry is marked dead,
the frames it held and the frames in its ring are freed and counted as
``died_drops``; producers keep enqueuing into it (and count ring-full drops)
until the entry is updated again.

Statistics are the fields of the tracepoints ``xdp:xdp_cpumap_enqueue``
(in the producer CPU's copy) and ``xdp:xdp_cpumap_kthread`` (in the worker
CPU's copy), accumulated per map slot in per-CPU counters from the per-CPU
allocator; see :meth:`CpuMap.stats`.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from percpu import _core
from percpu.errors import (
    Exists,
    InvalidArgument,
    NoDevice,
    NoEntry,
    OutOfMemory,
    Overflow,
    PercpuError,
    TooBig,
)
from percpu.freelist import PcpuFreelist
from percpu.memalloc import BpfMemAlloc
from percpu.runtime import rcu
from percpu.runtime.domain import Domain, current_domain
from percpu.runtime.kthread import Kthread

__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_F_NUMA_NODE",
    "BPF_NOEXIST",
    "CPUMAP_BATCH",
    "CPU_MAP_BULK_SIZE",
    "XDP_ABORTED",
    "XDP_DROP",
    "XDP_PASS",
    "XDP_REDIRECT",
    "XDP_TX",
    "BpfCpumapVal",
    "CpuMap",
    "EntryInfo",
    "FramePool",
    "SlotStats",
    "frame_pool",
]

log = logging.getLogger("percpu.cpumap")

BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
BPF_F_NUMA_NODE = 1 << 2
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = 0, 1, 2, 3, 4
ACTION_NAMES = ("ABORTED", "DROP", "PASS", "TX", "REDIRECT")
BPF_MAP_TYPE_CPUMAP = 16

_L = _core.cpumap_layout()
CPU_MAP_BULK_SIZE: int = _L["bulk_size"]
CPUMAP_BATCH: int = _L["batch"]
QSIZE_MAX: int = _L["qsize_max"]
NR_CPUS: int = _core.MAX_CPUS
# header 32 + XDP_PACKET_HEADROOM 256 (+ up to 63 to start the packet on a cache line) + 1792 bytes of data
FRAME_SIZE = 2144
FRAME_DATA_ROOM = 1792
KIND = "cpumap"
POOL_NAME = "xdp_frames"
MAG_CAP = 1024  # frames per CPU magazine of the frame pool

REMOTE_PROGS = {"drop": 1, "pass": 2, "redirect": 3}
_STATE_NAMES = ("new", "running", "stopping", "dead", "exited")
_ST_NEW, _ST_RUNNING, _ST_STOPPING, _ST_DEAD, _ST_EXITED = range(5)
_STATS = struct.Struct("<16Q")
STAT_FIELDS = (
    "enq_processed",
    "enq_drops",
    "enq_events",
    "kt_iters",
    "kt_processed",
    "kt_drops",
    "kt_sched",
    "kt_pass",
    "kt_drop",
    "kt_redirect",
    "kt_exceptions",
    "died_drops",
    "stack_errors",
)


class FramePool(_core.FramePool):
    """The domain's XDP frames: objects of a fixed-size BPF memory allocator, recycled per CPU.

    Every frame is one object of ``FRAME_SIZE`` bytes of the allocator
    ``xdp_frames`` (the ``xdp_frame`` header, ``XDP_PACKET_HEADROOM`` and
    room for 1792 bytes of packet).  A freed frame goes to its CPU's
    magazine (a stack of 1024 offsets, one lock per batch; the page_pool's
    alloc cache), the overflow to the per-CPU freelist ``xdp_frames_fl``; an
    allocation takes from this CPU's magazine, then the others', then the
    freelist -- as page_pool recycles a driver's pages -- and the allocator
    is asked only when all are empty.  So the pool grows to the frames in flight and
    stays there (see ``docs/design/xdp.md``).
    """

    ma: BpfMemAlloc
    freelist: PcpuFreelist
    domain: Domain

    @classmethod
    def open(cls, domain: Domain) -> FramePool:
        dom = domain
        for _ in range(10):
            try:
                ma = BpfMemAlloc.attach(POOL_NAME, domain=dom)
            except NoEntry:
                try:
                    ma = BpfMemAlloc(FRAME_SIZE, name=POOL_NAME, domain=dom)
                except Exists:
                    continue
            try:
                fl = PcpuFreelist.attach(POOL_NAME + "_fl", domain=dom)
            except NoEntry:
                try:
                    fl = PcpuFreelist.create(dom, POOL_NAME + "_fl")
                except Exists:
                    continue
            try:
                mags = dom.lookup(POOL_NAME + "_mag").offset
            except NoEntry:
                size = dom.nr_cpu_ids * (64 + 8 * MAG_CAP)
                p = dom.alloc_pages((size + 4095) // 4096)
                if p is None:
                    raise OutOfMemory("no room for the frame pool's magazines") from None
                try:
                    dom.register(POOL_NAME + "_mag", "frame_mags", p, size)
                except Exists:
                    dom.free_pages(p)
                    continue
                for cpu in range(dom.nr_cpu_ids):
                    dom.arena.store(p + cpu * (64 + 8 * MAG_CAP) + 8, MAG_CAP << 32)  # count 0, cap
                mags = p
            self = cls(ma, fl.offset, mags, MAG_CAP)
            self.ma, self.freelist, self.domain = ma, fl, dom
            return self
        raise Exists("the frame pool is being created and destroyed by others")

    def free_frames(self) -> int:
        """Frames ready for reuse: in the per-CPU magazines and on the freelist."""
        dom = self.domain
        base = dom.lookup(POOL_NAME + "_mag").offset
        in_mags = sum(
            int(dom.arena.load(base + cpu * (64 + 8 * MAG_CAP) + 8)) & 0xFFFFFFFF for cpu in range(dom.nr_cpu_ids)
        )
        return in_mags + sum(v for k, v in self.freelist.counts().items() if isinstance(k, int) or k == "extra")

    def __repr__(self) -> str:
        return f"<FramePool frames={self.ma.info()['created'] - self.ma.info()['released']} free={self.free_frames()}>"


def frame_pool(domain: Domain | None = None) -> FramePool:
    """The domain's :class:`FramePool` (created by the first caller in the domain, attached after)."""
    dom = domain or current_domain()
    cache = _pools.get(id(dom))
    if cache is not None and cache[0] is dom and not dom.closed:
        return cache[1]
    pool = FramePool.open(dom)
    _pools[id(dom)] = (dom, pool)
    return pool


_pools: dict[int, tuple[Domain, FramePool]] = {}


def _next_map_id(dom: Domain) -> int:
    name = "__bpf_map_ids"
    try:
        off = dom.lookup(name).offset
    except NoEntry:
        p = dom.kzalloc(8)
        if p is None:
            raise OutOfMemory("no room for the map id counter") from None
        try:
            dom.register(name, "counter", p, 8)
            off = p
        except Exists:
            dom.kfree(p)
            off = dom.lookup(name).offset
    return int(dom.arena.fetch_add(off, 1)) + 1


@dataclass(frozen=True)
class BpfCpumapVal:
    """``struct bpf_cpumap_val``: the queue size and the entry's program.

    ``prog`` is None (no program), one of the built-in remote actions
    ``"drop"``, ``"pass"``, ``"redirect"`` (xdp-bench ``-r``), or a callable
    ``prog(ctx) -> action`` run by the worker on each frame (for the spawn
    start method it must be picklable: a module-level function).  A lookup
    returns ``prog_id`` (0 without a program), as ``bpf_prog.id`` on read.
    """

    qsize: int
    prog: Callable[[Any], int] | str | None = None
    prog_id: int = 0


@dataclass(frozen=True)
class EntryInfo:
    """One populated slot: what ``bpftool map dump`` and the CLI show."""

    key: int
    cpu: int
    qsize: int
    prog_id: int
    state: str
    worker_pid: int
    queued: int
    entry: int


@dataclass
class SlotStats:
    """The tracepoint fields of one slot, per CPU (``{cpu: {field: count}}``)."""

    key: int
    per_cpu: dict[int, dict[str, int]]

    def total(self, field: str) -> int:
        return sum(c[field] for c in self.per_cpu.values())


def _default_stack(pkts: Any) -> None:
    """The stack that accepts every packet (the frames go back to the pool on release)."""


def _cpumap_kthread(entry: int, stack: Callable[[Any], object], prog: Any, spin_us: float) -> int:
    """``cpu_map_kthread_run()``: the worker of one entry, until stopped and drained."""
    dom = current_domain()
    pool = frame_pool(dom)
    w = _core.CpumapWorker(dom.arena, entry, pool, spin_us)
    arena = dom.arena
    w_cpu = int(arena.load(entry + 8)) & 0xFFFFFFFF
    arena.store(entry + _L["off_state"], _ST_RUNNING)
    py_prog = prog if callable(prog) else None

    def on_error(pkts: Any, exc: BaseException) -> None:
        log.error("cpumap worker on CPU %d: the stack handler raised; its packets are dropped",
                  w_cpu, exc_info=exc)

    # The loop itself is C (CpumapWorker.run): poll, program, stack, release.
    if w.run(stack, py_prog, on_error, os.getppid()) == 1:
        log.warning("cpumap worker on CPU %d: the process that owns the entry is gone; exiting", w_cpu)
    arena.store(entry + _L["off_state"], _ST_EXITED)
    return 0


class CpuMap:
    """``BPF_MAP_TYPE_CPUMAP``: ``cpu_map_alloc(attr)`` and its operations.

    ``CpuMap(max_entries, value_size=8, map_flags=0, *, name=None, stack=None)``.
    Checks in the kernel's order: ``max_entries == 0``, ``value_size`` not 4
    or 8, or flags other than ``BPF_F_NUMA_NODE`` -> ``EINVAL``;
    ``max_entries > NR_CPUS`` -> ``E2BIG``.  ``stack(pkts)`` runs in every
    worker with a :class:`percpu._core.PacketList` of passed packets (valid
    until it returns); the default accepts them.  ``method`` is the workers'
    start method (``fork`` or ``spawn``; with spawn, ``stack`` and programs
    must be picklable).  The process that updates an entry owns its worker.
    """

    def __init__(
        self,
        max_entries: int,
        value_size: int = 8,
        map_flags: int = 0,
        *,
        name: str | None = None,
        stack: Callable[[Any], object] | None = None,
        domain: Domain | None = None,
        method: str | None = None,
        spin_us: float = 50.0,
        _attach: int | None = None,
    ) -> None:
        dom = domain or current_domain()
        self.domain = dom
        self.stack = stack or _default_stack
        self.method = method
        self.spin_us = float(spin_us)
        self._workers: dict[int, Kthread] = {}
        self._freeing: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._reap_lock = threading.Lock()
        self.pool = frame_pool(dom)
        arena = dom.arena
        if _attach is not None:
            self._off = _attach
            self.id, self.max_entries, self.value_size, self.map_flags = struct.unpack_from(
                "<IIII", bytes(dom.mem(_attach + 8, 16))
            )
            self._entries, self._slot_stats = struct.unpack_from("<QQ", bytes(dom.mem(_attach + 24, 16)))
            self.name = name
            self._core = _core.CpuMapCore(arena, _attach, self.pool)
            return
        for what, v in (("max_entries", max_entries), ("value_size", value_size), ("map_flags", map_flags)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InvalidArgument(f"cpu_map_alloc: {what} must be an int >= 0, not {v!r}")
        # cpu_map_alloc(): key_size is 4 by construction here.
        if max_entries == 0 or value_size not in (4, 8) or map_flags & ~BPF_F_NUMA_NODE:
            raise InvalidArgument(
                "cpu_map_alloc: max_entries must be > 0, value_size 4 or 8 and map_flags only "
                f"BPF_F_NUMA_NODE (got {max_entries}, {value_size}, {map_flags:#x})"
            )
        if max_entries > NR_CPUS:
            raise TooBig(f"cpu_map_alloc: max_entries {max_entries} > NR_CPUS {NR_CPUS}")
        self.max_entries = max_entries
        self.value_size = value_size
        self.map_flags = map_flags
        self.id = _next_map_id(dom)
        self.name = name
        off = ents = slots = None
        try:
            off = dom.kzalloc(_L["map_size"])
            ents = dom.kzalloc(8 * max_entries)
            slots = dom.kzalloc(8 * max_entries)
            if off is None or ents is None or slots is None:
                raise OutOfMemory("cpu_map_alloc: no room in the domain")
            _core.cpumap_format(arena, off, self.id, max_entries, value_size, map_flags, ents, slots, self.pool.ma.off)
            if name is not None:
                dom.register(name, KIND, off, max_entries)
        except BaseException:
            for p in (off, ents, slots):
                if p is not None:
                    dom.kfree(p)
            raise
        self._off, self._entries, self._slot_stats = off, ents, slots
        self._core = _core.CpuMapCore(arena, off, self.pool)

    @classmethod
    def attach(cls, name: str, *, domain: Domain | None = None, stack: Callable[[Any], object] | None = None,
               method: str | None = None) -> CpuMap:
        """The map registered as ``name`` (from any process of the domain)."""
        dom = domain or current_domain()
        e = dom.lookup(name)
        if e.kind != KIND:
            raise InvalidArgument(f"{name!r} is a {e.kind}, not a CPU map")
        return cls(1, domain=dom, name=name, stack=stack, method=method, _attach=e.offset)

    # ---- the map operations ----------------------------------------------------------------

    def _slot(self, key: int) -> int:
        return int(self.domain.arena.load(self._entries + 8 * key))

    def _slot_stats_ptr(self, key: int, create: bool) -> int:
        arena = self.domain.arena
        p = int(arena.load(self._slot_stats + 8 * key))
        if p or not create:
            return p
        new = arena.pcpu_alloc(_L["stats_size"], 64)
        if not new:
            raise OutOfMemory("no per-CPU memory for the slot's statistics")
        old = int(arena.cmpxchg(self._slot_stats + 8 * key, 0, new))
        if old:
            arena.pcpu_free(new)
            return old
        return int(new)

    def update(self, key: int, value: int | BpfCpumapVal, flags: int = BPF_ANY) -> None:
        """``cpu_map_update_elem()``: checks in the kernel's order, then a new entry.

        ``flags > BPF_EXIST`` -> EINVAL; ``key >= max_entries`` -> E2BIG;
        ``BPF_NOEXIST`` -> EEXIST (always); ``qsize > 16384`` -> EOVERFLOW;
        ``key`` not a possible CPU -> ENODEV; ``qsize == 0`` deletes.  Otherwise
        a new ring and worker are built (even for an unchanged value) and the
        call returns once the worker runs; a bad program -> EBADF (not a
        program) or EINVAL (an unknown built-in).  The old entry is stopped
        after an RCU grace period, once its worker drained its ring.
        """
        if isinstance(value, BpfCpumapVal):
            val = value
        elif isinstance(value, int) and not isinstance(value, bool):
            val = BpfCpumapVal(value)
        else:
            raise InvalidArgument(f"cpu_map_update_elem: value must be a qsize or a BpfCpumapVal, not {value!r}")
        if self.value_size == 4:
            val = BpfCpumapVal(val.qsize)  # memcpy of 4 bytes: bpf_prog.fd = 0
        for what, v in (("key", key), ("flags", flags), ("qsize", val.qsize)):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 32:
                raise InvalidArgument(f"cpu_map_update_elem: {what} must be a u32, not {v!r}")
        if flags > BPF_EXIST:
            raise InvalidArgument(f"cpu_map_update_elem: flags {flags} > BPF_EXIST")
        if key >= self.max_entries:
            raise TooBig(f"cpu_map_update_elem: key {key} >= max_entries {self.max_entries}")
        if flags == BPF_NOEXIST:
            raise Exists("cpu_map_update_elem: BPF_NOEXIST is never accepted by a CPU map")
        if val.qsize > QSIZE_MAX:
            raise Overflow(f"cpu_map_update_elem: qsize {val.qsize} > {QSIZE_MAX}")
        if key >= self.domain.nr_cpu_ids or key not in self.domain.possible:
            raise NoDevice(f"cpu_map_update_elem: CPU {key} is not possible")
        new = 0 if val.qsize == 0 else self._entry_alloc(key, val)
        old = int(self.domain.arena.xchg(self._entries + 8 * key, new))
        if old:
            self._entry_free_later(old)

    def delete(self, key: int) -> None:
        """``cpu_map_delete_elem()``: ``key >= max_entries`` -> EINVAL; an empty slot is fine."""
        if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < 1 << 32:
            raise InvalidArgument(f"cpu_map_delete_elem: key must be a u32, not {key!r}")
        if key >= self.max_entries:
            raise InvalidArgument(f"cpu_map_delete_elem: key {key} >= max_entries {self.max_entries}")
        old = int(self.domain.arena.xchg(self._entries + 8 * key, 0))
        if old:
            self._entry_free_later(old)

    def lookup(self, key: int) -> BpfCpumapVal | None:
        """``cpu_map_lookup_elem()``: the slot's value, or None (empty or out of range)."""
        if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < self.max_entries:
            return None
        with rcu.read_lock():  # type: ignore[misc]  # the C entry points as __enter__/__exit__
            e = self._slot(key)
            if not e:
                return None
            qsize, prog_id = struct.unpack_from("<II", bytes(self.domain.mem(e + 16, 8)))
        return BpfCpumapVal(qsize, None, prog_id if self.value_size == 8 else 0)

    def get_next_key(self, key: int | None) -> int:
        """``cpu_map_get_next_key()``: array semantics; NoEntry (ENOENT) after the last index."""
        index = 0xFFFFFFFF if key is None else key
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise InvalidArgument(f"cpu_map_get_next_key: key must be a u32 or None, not {key!r}")
        if index >= self.max_entries:
            return 0
        if index == self.max_entries - 1:
            raise NoEntry("cpu_map_get_next_key: no key after the last one")
        return index + 1

    def keys(self) -> Iterator[int]:
        """Every index, populated or not (as get_next_key walks them)."""
        return iter(range(self.max_entries))

    def redirect(self, key: int, flags: int = 0) -> int:
        """``bpf_redirect_map(map, key, flags)``: XDP_REDIRECT, or the fallback in the low 2 bits of flags."""
        return int(self._core.redirect(key, flags))

    # ---- entries ---------------------------------------------------------------------------

    def _entry_alloc(self, key: int, val: BpfCpumapVal) -> int:
        """``__cpu_map_entry_alloc()``: ring, bulk queues, worker; returns once the worker runs."""
        prog = val.prog
        remote = 0
        prog_id = 0
        if prog is not None:
            if isinstance(prog, str):
                if prog not in REMOTE_PROGS:
                    raise InvalidArgument(
                        f"cpu_map_update_elem: unknown built-in program {prog!r} (one of {sorted(REMOTE_PROGS)})"
                    )
                remote = REMOTE_PROGS[prog]
                prog_id = remote
            elif callable(prog):
                name = f"{getattr(prog, '__module__', '')}.{getattr(prog, '__qualname__', repr(prog))}"
                prog_id = 0x100 + (zlib.crc32(name.encode()) & 0xFFFFFF)  # the same in every process
            else:
                raise PercpuError(f"cpu_map_update_elem: {prog!r} is not a program", _errno.EBADF)
        dom, arena = self.domain, self.domain.arena
        stats = self._slot_stats_ptr(key, create=True)
        ring = dom.alloc_pages((_L["ring_hdr"] + 8 * val.qsize + 4095) // 4096)
        entry = dom.kzalloc(_L["entry_size"])
        bulkq = arena.pcpu_alloc(_L["bulkq_size"], 64)
        kt: Kthread | None = None
        try:
            if ring is None or entry is None or not bulkq:
                raise OutOfMemory("cpu_map_update_elem: no room for the entry")
            name = f"cpumap/{key}/map:{self.id}"
            kt = Kthread(
                _cpumap_kthread,
                key,
                name,
                (entry, self.stack, prog, self.spin_us),
                domain=dom,
                method=self.method,
                on_death=self._on_death,
            )
            ctrl = kt._ctrl
            _core.cpumap_entry_format(
                arena, entry, ring, val.qsize, key, self.id, int(bulkq), stats, ctrl, remote, prog_id
            )
            kt.start()  # wait_for_completion(&rcpu->kthread_running)
            arena.store(entry + _L["off_pid"], int(kt.pid or 0))
            deadline = time.monotonic() + 30.0
            while int(arena.load(entry + _L["off_state"])) == _ST_NEW:  # the worker's loop runs
                if not kt.alive or time.monotonic() > deadline:
                    raise OutOfMemory(f"cpu_map_update_elem: the worker {name} did not start")
                time.sleep(0.0005)
        except BaseException:
            if kt is not None and kt.pid is not None:
                with contextlib.suppress(Exception):
                    kt.stop()
            for p, free in ((ring, dom.free_pages), (entry, dom.kfree)):
                if p is not None:
                    free(p)
            if bulkq:
                arena.pcpu_free(bulkq)
            raise
        with self._lock:
            self._workers[entry] = kt
        return int(entry)

    def _on_death(self, kt: Kthread) -> None:
        """A worker died without being stopped: reap what it held, then mark its entry dead."""
        with self._reap_lock:  # one reaper per entry at a time in this process (see _entry_free)
            with self._lock:
                entry = next((e for e, k in self._workers.items() if k is kt), None)
            if entry is None or self.domain.closed:
                return
            arena = self.domain.arena
            if int(arena.load(entry + _L["off_state"])) == _ST_EXITED:
                return
            n = self._core.dead_entry(entry)  # idempotent: held[] and the ring are emptied under the ring lock
            arena.store(entry + _L["off_state"], _ST_DEAD)  # after the reap: others wait for this
        cpu = int(arena.load(entry + 8)) & 0xFFFFFFFF
        log.warning(
            "cpumap map:%d entry for CPU %d: worker (pid %s) died with code %s; %d frames dropped "
            "(reason: worker died); update the entry to restart it",
            self.id, cpu, kt.pid, kt.exitcode, n,
        )

    def _entry_free_later(self, entry: int) -> None:
        t = threading.Thread(target=self._entry_free, args=(entry,), name="cpumap-free", daemon=True)
        with self._lock:
            self._freeing = [x for x in self._freeing if x.is_alive()]
            self._freeing.append(t)
        t.start()

    def _entry_free(self, entry: int) -> None:
        """``__cpu_map_entry_free()``: after a grace period stop the worker (it drains), then free.

        Never frees an entry whose worker may still run: if a worker of another
        process neither exits nor dies within the timeout, the entry is leaked
        (with a warning) rather than drained under it.
        """
        dom = self.domain
        try:
            rcu.synchronize(domain=dom)
            arena = dom.arena
            with self._reap_lock:  # _on_death either reaped already, or will not find the entry
                with self._lock:
                    kt = self._workers.pop(entry, None)
            ctrl = int(arena.load(entry + _L["off_ctrl"]))
            if int(arena.load(entry + _L["off_state"])) != _ST_DEAD:
                arena.store(entry + _L["off_state"], _ST_STOPPING)
            arena.store(ctrl, 1)  # kthread_stop(): should_stop, then wake the worker
            self._core.kick(entry)
            if kt is not None:
                kt.stop(timeout=30.0)  # the worker drains the ring, then exits (or is killed)
            elif not self._wait_exit(entry):
                log.warning("cpumap map:%d: the worker of entry %#x still runs; the entry is leaked, "
                            "not freed under it", self.id, entry)
                return
            # Frames a dead producer left in a bulk queue, or a dead worker in its ring.
            self._core.dead_entry(entry, True)
            ring = int(arena.load(entry + 24))
            bulkq = int(arena.load(entry + 32))
            arena.store(entry, 0)  # magic
            dom.free_pages(ring)
            arena.pcpu_free(bulkq)
            dom.kfree(entry)
        except Exception:  # noqa: BLE001 - a background free must not kill the process
            if not dom.closed:
                log.exception("cpumap map:%d: freeing entry %#x failed", self.id, entry)

    def _wait_exit(self, entry: int, timeout: float = 30.0) -> bool:
        """Wait for a worker this process does not own; False if it still runs after ``timeout``."""
        arena = self.domain.arena
        pid = int(arena.load(entry + _L["off_pid"]))
        deadline = time.monotonic() + timeout
        gone_at = None
        while True:
            state = int(arena.load(entry + _L["off_state"]))
            if state in (_ST_EXITED, _ST_DEAD):
                return True
            if pid and not _core.task_alive(pid):
                # Died: give its owner's supervisor a moment to reap it (state DEAD);
                # if the owner is gone too, reap here (dead_entry is idempotent).
                gone_at = gone_at or time.monotonic()
                if time.monotonic() - gone_at > 5.0:
                    return True
            elif time.monotonic() > deadline:
                return False
            time.sleep(0.005)

    def sync(self, timeout: float = 60.0) -> None:
        """Wait until every replaced or deleted entry is freed (its ring drained)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                pending = [t for t in self._freeing if t.is_alive()]
            if not pending:
                return
            for t in pending:
                t.join(max(0.0, deadline - time.monotonic()))
            if time.monotonic() > deadline:
                raise TimeoutError("cpumap: entries still being freed")

    # ---- inspection ------------------------------------------------------------------------

    def entries(self) -> list[EntryInfo]:
        """The populated slots."""
        out = []
        arena = self.domain.arena
        with rcu.read_lock():  # type: ignore[misc]  # the C entry points as __enter__/__exit__
            for key in range(self.max_entries):
                e = self._slot(key)
                if not e:
                    continue
                raw = bytes(self.domain.mem(e, 80))
                _magic, cpu, _mid, qsize, prog_id, _ring, _bq, _st, _ctrl, state, _remote, _pad, pid = (
                    struct.unpack_from("<QIIIIQQQQQIIQ", raw)
                )
                out.append(
                    EntryInfo(
                        key, cpu, qsize, prog_id, _STATE_NAMES[state] if state < 5 else str(state), pid,
                        int(self._core.ring_count(e)), e,
                    )
                )
        del arena
        return out

    def stats(self) -> dict[int, SlotStats]:
        """Per slot (that was ever populated) and per possible CPU: the tracepoint counters."""
        arena = self.domain.arena
        out: dict[int, SlotStats] = {}
        for key in range(self.max_entries):
            p = self._slot_stats_ptr(key, create=False)
            if not p:
                continue
            per_cpu = {}
            for cpu in self.domain.possible:
                vals = _STATS.unpack(bytes(self.domain.mem(int(arena.pcpu_ptr(p, cpu)), 128)))
                if any(vals):
                    per_cpu[cpu] = dict(zip(STAT_FIELDS, vals))
            out[key] = SlotStats(key, per_cpu)
        return out

    @property
    def off(self) -> int:
        return int(self._off)

    def close(self, timeout: float = 60.0) -> None:
        """Delete every entry this process populated, wait for them to be freed."""
        if self.domain.closed:
            return
        for key in range(self.max_entries):
            e = self._slot(key)
            with self._lock:
                mine = e in self._workers
            if e and mine:
                self.delete(key)
        self.sync(timeout)

    def free(self) -> None:
        """``cpu_map_free()``: delete every entry, wait, and free the map itself."""
        for key in range(self.max_entries):
            if self._slot(key):
                self.delete(key)
        self.sync()
        dom, arena = self.domain, self.domain.arena
        if self.name is not None:
            with contextlib.suppress(NoEntry):
                dom.unregister(self.name)
        arena.store(self._off, 0)
        for key in range(self.max_entries):
            p = self._slot_stats_ptr(key, create=False)
            if p:
                arena.pcpu_free(p)
        dom.kfree(self._entries)
        dom.kfree(self._slot_stats)
        dom.kfree(self._off)

    def __enter__(self) -> CpuMap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        n = sum(1 for k in range(self.max_entries) if self._slot(k)) if not self.domain.closed else 0
        return f"<CpuMap id={self.id} max_entries={self.max_entries} populated={n} name={self.name!r}>"


def bpf_redirect_map(map: CpuMap, key: int, flags: int = 0) -> int:
    """``bpf_redirect_map(map, key, flags)`` for a CPU map (see :meth:`CpuMap.redirect`)."""
    return int(map._core.redirect(key, flags))


def xdp_do_redirect(frame: int) -> None:
    """``xdp_do_redirect()``: enqueue ``frame`` where this thread's last ``bpf_redirect_map()`` pointed."""
    _core.xdp_do_redirect(frame)


def xdp_do_flush() -> None:
    """``xdp_do_flush()``: flush this thread's bulk queues into the rings and wake the workers."""
    _core.xdp_do_flush()
