"""The XDP engine: a driver's receive poll, the programs it runs, ``bpf_prog_test_run``.

One :meth:`XdpEngine.poll` is one NAPI poll of a driver with an XDP program:
the packets of an :class:`~percpu.xdp.sources.RxBatch` get frames from the
domain's frame pool (a fixed-size BPF memory allocator; the RX refill), the
program decides per frame, the verdicts are applied -- ``XDP_REDIRECT`` into
the CPU map's bulk queues, the rest back to the pool -- and ``xdp_do_flush()``
ends the poll, all inside one RCU read-side section.  Three kinds of
program:

* a built-in mode of ``xdp-bench redirect-cpu --program-mode`` (``"l4-hash"``
  ...), run in C per frame like the BPF program (``_core.CpuMapCore.rx_builtin``);
* a :class:`BatchProgram`: a function of a numpy array of parsed headers
  (:data:`percpu.xdp.programs.HDR_DTYPE`) returning ``(actions, cpus)``, two
  arrays: the verdict and, for ``XDP_REDIRECT``, the target CPU (the map key);
* a :class:`FrameProgram` (or any callable): ``prog(ctx) -> action`` per
  frame, with ``ctx`` an :class:`percpu._core.XdpFrame` (the ``xdp_md``:
  ``data``, ``len``, ``ingress_ifindex``, ``rx_queue_index``, ``adjust_head``,
  ``adjust_tail``) and :func:`percpu.kernel.bpf_redirect_map` to redirect.

The receive counters (``RxStats``) are per CPU in the per-CPU allocator:
what xdp-bench's ``receive total`` row, its redirect-error rows and its
``xdp_exception`` rows read.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from percpu import _core
from percpu.cpumap import XDP_ABORTED, XDP_REDIRECT, CpuMap, frame_pool
from percpu.errors import Exists, InvalidArgument, NoEntry, OutOfMemory
from percpu.runtime import rcu
from percpu.runtime.domain import Domain, current_domain
from percpu.xdp import programs as _programs
from percpu.xdp.sources import RxBatch

__all__ = [
    "BPF_F_TEST_XDP_LIVE_FRAMES",
    "BatchProgram",
    "FrameProgram",
    "PollResult",
    "RxStats",
    "TestRunResult",
    "XdpEngine",
    "bpf_prog_test_run",
]

BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
_L = _core.cpumap_layout()
RX_FIELDS = ("rx", "pass", "drop", "tx", "redirect", "aborted", "issue", "alloc_fail")
REDIRECT_ERRNOS = ("EINVAL", "ENETDOWN", "EMSGSIZE", "EOPNOTSUPP", "ENOSPC", "ENOENT", "other")
EXCEPTION_ACTIONS = ("XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_TX", "XDP_REDIRECT", "unknown")
_RX = struct.Struct("<24Q")
_RX_NAME = "xdp_rx_stats"


class BatchProgram:
    """A program over a batch: ``fn(hdrs) -> (actions, cpus)`` (numpy arrays).

    ``hdrs`` is a numpy array of :data:`percpu.xdp.programs.HDR_DTYPE`
    records, one per packet; ``actions`` is uint8 (``XDP_*``) and ``cpus``
    uint32, the CPU-map key of each ``XDP_REDIRECT``.
    """

    def __init__(self, fn: Callable[[Any], tuple[Any, Any]], name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError("a batch program is a callable hdrs -> (actions, cpus)")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "batch")

    def __call__(self, hdrs: Any) -> tuple[Any, Any]:
        return self.fn(hdrs)


class FrameProgram:
    """A program per frame: ``fn(ctx) -> action``; redirect with ``bpf_redirect_map``."""

    def __init__(self, fn: Callable[[Any], int], name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError("a frame program is a callable ctx -> action")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "frame")

    def __call__(self, ctx: Any) -> int:
        return self.fn(ctx)


def builtin_program(mode: str, cpus: list[int]) -> BatchProgram:
    """xdp-bench's ``--program-mode`` as a numpy batch program with ``cpus_available = cpus``.

    The keys it returns are indexes into ``cpus``, resolved here to CPUs; an
    index past the configured CPUs is xdp-bench's "issue" (``XDP_ABORTED``).
    """
    inner = _programs.batch_program(mode, len(cpus))
    table = np.array(list(cpus) + [0xFFFFFFFF], dtype=np.uint32)

    def run(hdrs: Any) -> tuple[Any, Any]:
        actions, keys = inner(hdrs)
        keys = np.minimum(keys, len(cpus))
        # xdp-bench: a CPU index past the configured ones is an "issue" and XDP_ABORTED
        actions = np.where((actions == XDP_REDIRECT) & (keys >= len(cpus)), XDP_ABORTED, actions).astype(np.uint8)
        return actions, table[keys]

    return BatchProgram(run, name=mode)


class RxStats:
    """The engine's per-CPU receive counters (``struct pk_xdp_rx_stats`` in the per-CPU area).

    One block per domain, registered as ``xdp_rx_stats``: every engine of the
    domain adds to it, as every driver fires the same tracepoints.
    """

    def __init__(self, domain: Domain | None = None) -> None:
        dom = domain or current_domain()
        self.domain = dom
        try:
            self.ptr = dom.lookup(_RX_NAME).offset
        except NoEntry:
            p = dom.arena.pcpu_alloc(_L["rx_stats_size"], 64)
            if not p:
                raise OutOfMemory("no per-CPU memory for the XDP receive counters") from None
            try:
                dom.register(_RX_NAME, "pcpu", int(p), _L["rx_stats_size"])
                self.ptr = int(p)
            except Exists:
                dom.arena.pcpu_free(p)
                self.ptr = dom.lookup(_RX_NAME).offset

    def read(self) -> dict[int, dict[str, Any]]:
        """``{cpu: {field: n, "redirect_err": {errno: n}, "exception": {action: n}}}``."""
        out: dict[int, dict[str, Any]] = {}
        arena = self.domain.arena
        for cpu in self.domain.possible:
            v = _RX.unpack(bytes(self.domain.mem(int(arena.pcpu_ptr(self.ptr, cpu)), _RX.size)))
            d: dict[str, Any] = dict(zip(RX_FIELDS, v[:8]))
            d["redirect_err"] = dict(zip(REDIRECT_ERRNOS, v[8:15]))
            d["exception"] = dict(zip(EXCEPTION_ACTIONS, v[16:22]))
            out[cpu] = d
        return out


@dataclass
class PollResult:
    """What one poll did (the counts of this poll, not cumulative)."""

    rx: int = 0
    passed: int = 0
    dropped: int = 0
    tx: int = 0
    redirected: int = 0
    aborted: int = 0
    errors: int = 0
    issue: int = 0
    no_frame: int = 0


@dataclass
class XdpEngine:
    """A receive loop with one XDP program redirecting into one CPU map.

    ``program``: a mode name of xdp-bench (run in C), a :class:`BatchProgram`,
    a :class:`FrameProgram` or a plain callable (per frame).  ``cpus``: the
    ``cpus_available`` of the built-in modes (default: every populated slot
    of the map at the first poll).
    """

    map: CpuMap
    program: Any = "l4-hash"
    cpus: list[int] | None = None
    rx_stats: RxStats | None = None
    _state: dict[tuple[int, int, int], Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.domain = self.map.domain
        self.pool = frame_pool(self.domain)
        if self.rx_stats is None:
            self.rx_stats = RxStats(self.domain)
        if isinstance(self.program, str):
            self.mode = _programs.mode_number(self.program)
        elif isinstance(self.program, BatchProgram | FrameProgram) or callable(self.program):
            self.mode = -1
        else:
            raise InvalidArgument(f"an XDP program is a mode name, a BatchProgram or a callable, not {self.program!r}")

    def set_cpus(self, cpus: list[int]) -> None:
        """Change ``cpus_available`` (the built-in modes' CPU list)."""
        self.cpus = list(cpus)
        arr = np.array(self.cpus or [0], dtype=np.uint32).tobytes()
        for q in self._state.values():
            q.set_cpus(arr)

    def rx_queue(self, ifindex: int = 1, rx_queue: int = 0) -> _core.XdpRxQueue:
        """The receive queue of this CPU with the built-in program bound (``queue.poll(data[, offs, lens])``).

        The fastest way in: one short C call per poll, no Python in between.
        """
        if self.mode < 0:
            raise InvalidArgument("rx_queue() is for the built-in program modes")
        if self.cpus is None:
            self.cpus = [e.key for e in self.map.entries()]
        assert self.rx_stats is not None
        key = (_core.smp_processor_id(), ifindex, rx_queue)
        q = self._state.get(key)
        if q is None:
            cpus = np.array(self.cpus or [0], dtype=np.uint32).tobytes()
            q = self._state[key] = _core.XdpRxQueue(self.map._core, self.mode, cpus, ifindex, rx_queue,
                                                    self.rx_stats.ptr)
        return q

    def poll(self, batch: RxBatch) -> PollResult:
        """One NAPI poll over ``batch``: frames, program, verdicts, ``xdp_do_flush()``."""
        assert self.rx_stats is not None
        rxs = self.rx_stats.ptr
        n = len(batch)
        if n == 0:
            return PollResult()
        if self.mode >= 0:
            q = self._state.get((_core.smp_processor_id(), batch.ifindex, batch.rx_queue))
            if q is None:
                q = self.rx_queue(batch.ifindex, batch.rx_queue)
            rx, p, d, r, a, issue, nf = q.poll(batch.data, batch.offsets, batch.lengths)
            return PollResult(rx, p, d, 0, r, a, 0, issue, nf)
        frames = _core.xdp_frames_alloc(
            self.pool, batch.data, batch.offsets, batch.lengths, batch.ifindex, batch.rx_queue, batch.timestamps
        )
        got = len(frames) // 8
        if got < n:  # the pool had no frame for the rest: not received
            arena = self.domain.arena
            arena.fetch_add(int(arena.pcpu_ptr(rxs, _core.smp_processor_id())) + 8 * RX_FIELDS.index("alloc_fail"),
                            n - got)
        prog = self.program
        if isinstance(prog, BatchProgram):
            hdrs = _programs.parse(batch.data, batch.offsets[:got], batch.lengths[:got])
            if not hdrs.flags.writeable:  # pragma: no cover - parse() returns writable records
                hdrs = np.frombuffer(bytearray(hdrs.tobytes()), dtype=hdrs.dtype)
            hdrs["ifindex"] = batch.ifindex
            hdrs["rxq"] = batch.rx_queue
            try:
                actions, cpus = prog(hdrs)
                actions = np.ascontiguousarray(actions, dtype=np.uint8)
                cpus = np.ascontiguousarray(cpus, dtype=np.uint32)
            except BaseException:
                _core.xdp_frames_free(self.pool, frames)  # the program failed: no verdicts, frames back
                raise
            if len(actions) != got or len(cpus) != got:
                _core.xdp_frames_free(self.pool, frames)
                raise InvalidArgument(f"batch program {prog.name!r} returned {len(actions)} verdicts for {got} frames")
            _core.rcu_read_lock()
            try:
                p, d, t, r, a, e = self.map._core.apply(frames, actions, cpus, rxs)
            finally:
                _core.xdp_do_flush()  # what was enqueued goes out before the section ends, error or not
                _core.rcu_read_unlock()
        else:
            fn = prog.fn if isinstance(prog, FrameProgram) else prog
            _core.rcu_read_lock()
            try:
                p, d, t, r, a, e = _core.xdp_run_prog(self.pool, fn, frames, rxs)
            finally:
                _core.xdp_do_flush()
                _core.rcu_read_unlock()
        return PollResult(got, p, d, t, r, a, e, 0, n - got)

    def run(
        self,
        source: Any,
        *,
        budget: int = 64,
        duration: float | None = None,
        count: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> int:
        """Poll ``source`` (``read(budget)``) until it ends, ``duration`` passes, ``count`` packets or stop."""
        t_end = None if duration is None else time.monotonic() + duration
        total = 0
        while True:
            if should_stop is not None and should_stop():
                break
            if t_end is not None and time.monotonic() >= t_end:
                break
            want = budget if count is None else min(budget, count - total)
            if want <= 0:
                break
            b = source.read(want)
            if b is None:
                break
            if len(b) == 0:
                continue
            total += self.poll(b).rx
        return total


@dataclass
class TestRunResult:
    """``bpf_prog_test_run`` output: ``retval``, ``data_out``, ``duration`` (ns per run) and, live, the counts."""

    retval: int
    data_out: bytes | None
    duration: int
    counts: PollResult | None = None


def bpf_prog_test_run(
    prog: Any,
    data: bytes,
    repeat: int = 1,
    flags: int = 0,
    *,
    ifindex: int = 1,
    rx_queue: int = 0,
    domain: Domain | None = None,
) -> TestRunResult:
    """``BPF_PROG_TEST_RUN`` for XDP programs (``bpf_prog_test_run_xdp``).

    Without flags: ``prog`` (a per-frame callable) runs ``repeat`` times on a
    frame holding ``data``; the result is the last verdict, the frame's bytes
    afterwards and the mean time per run; a redirect is not carried out.
    With ``BPF_F_TEST_XDP_LIVE_FRAMES`` (what xdp-trafficgen uses): the
    program runs on ``repeat`` fresh copies of the packet, in batches of 64,
    and its verdicts really happen -- ``XDP_REDIRECT`` goes through the CPU
    map's bulk queues, with ``xdp_do_flush()`` after each batch; ``data_out``
    is None and ``counts`` says what happened.  ``prog`` may also be a
    built-in mode name bound to a map: pass an :class:`XdpEngine`.
    Errors: ``EINVAL`` for unknown flags, a packet shorter than ETH_HLEN or
    longer than a frame's room.
    """
    if flags & ~BPF_F_TEST_XDP_LIVE_FRAMES:  # bpf_prog_test_run_xdp() refuses the rest, RUN_ON_CPU too
        raise InvalidArgument(f"bpf_prog_test_run: unknown flags {flags:#x}")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidArgument("bpf_prog_test_run: data must be bytes")
    data = bytes(data)
    from percpu.cpumap import FRAME_DATA_ROOM

    if len(data) < 14 or len(data) > FRAME_DATA_ROOM:
        raise InvalidArgument(f"bpf_prog_test_run: a packet of {len(data)} bytes (ETH_HLEN..{FRAME_DATA_ROOM})")
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 0:
        raise InvalidArgument(f"bpf_prog_test_run: repeat must be an int >= 0, not {repeat!r}")
    repeat = repeat or 1
    dom = domain or current_domain()
    pool = frame_pool(dom)
    one = np.zeros(1, dtype=np.uint32)
    ln = np.array([len(data)], dtype=np.uint32)
    if not flags & BPF_F_TEST_XDP_LIVE_FRAMES:
        if isinstance(prog, XdpEngine):
            raise InvalidArgument("bpf_prog_test_run: an engine runs live frames only")
        fn = prog.fn if isinstance(prog, FrameProgram) else prog
        frames = _core.xdp_frames_alloc(pool, data, one, ln, ifindex, rx_queue)
        if not frames:
            raise OutOfMemory("bpf_prog_test_run: no frame")
        f = int.from_bytes(frames, "little")
        ctx = _core.XdpFrame(dom.arena, f)
        retval = XDP_ABORTED
        t0 = time.perf_counter_ns()
        try:
            with rcu.read_lock():  # type: ignore[misc]  # the C entry points as __enter__/__exit__
                for _ in range(repeat):
                    retval = int(fn(ctx))
            t = time.perf_counter_ns() - t0
            out = ctx.tobytes()
        finally:
            ctx._release()  # a handle the program kept refuses use from now on
            _core.xdp_frames_free(pool, frames)
        return TestRunResult(retval, out, t // repeat)
    # live frames: batches of 64 (the kernel's default batch_size)
    total = PollResult()
    t0 = time.perf_counter_ns()
    left = repeat
    while left:
        k = min(64, left)
        b = RxBatch(data * k, np.arange(k, dtype=np.uint32) * len(data), np.full(k, len(data), np.uint32),
                    ifindex, rx_queue)
        if isinstance(prog, XdpEngine):
            r = prog.poll(b)
        else:
            eng = _live_engines.get(id(dom))
            if eng is None or eng.dom is not dom:
                eng = _live_engines[id(dom)] = _LiveRunner(dom)
            r = eng.poll(prog, b)
        for k2 in vars(total):
            setattr(total, k2, getattr(total, k2) + getattr(r, k2))
        left -= k
    t = time.perf_counter_ns() - t0
    return TestRunResult(0, None, t // repeat, total)


class _LiveRunner:
    """Live-frames test runs of a per-frame program (no map of its own: it redirects where it says)."""

    def __init__(self, dom: Domain) -> None:
        self.dom = dom
        self.pool = frame_pool(dom)
        self.rx = RxStats(dom)

    def poll(self, prog: Any, b: RxBatch) -> PollResult:
        fn = prog.fn if isinstance(prog, FrameProgram) else prog
        frames = _core.xdp_frames_alloc(self.pool, b.data, b.offsets, b.lengths, b.ifindex, b.rx_queue)
        got = len(frames) // 8
        _core.rcu_read_lock()
        try:
            p, d, t, r, a, e = _core.xdp_run_prog(self.pool, fn, frames, self.rx.ptr)
        finally:
            _core.xdp_do_flush()
            _core.rcu_read_unlock()
        return PollResult(got, p, d, t, r, a, e, 0, len(b) - got)


_live_engines: dict[int, _LiveRunner] = {}

