"""The XDP engine (``percpu.xdp.engine``): receive polls, programs, ``bpf_prog_test_run``, XdpFrame.

A simulated 2-CPU domain; the engine polls as CPU 0 and redirects into a CPU
map whose workers' stack (module-level functions, picklable) counts the
packets in the domain or appends their bytes to a file per CPU.  Every wait
is bounded and waits for a count; nothing is timed.
"""

from __future__ import annotations

import collections
import errno
import functools
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from xdp_helpers import count_stack, delivered, frames_in_flight, wait_until  # tests/ is on sys.path

import percpu
from percpu import _core, errors, kernel
from percpu.cpumap import (
    FRAME_DATA_ROOM,
    FRAME_SIZE,
    QSIZE_MAX,
    XDP_ABORTED,
    XDP_DROP,
    XDP_PASS,
    XDP_REDIRECT,
    XDP_TX,
    BpfCpumapVal,
    CpuMap,
    frame_pool,
)
from percpu.xdp import (
    BPF_F_TEST_XDP_LIVE_FRAMES,
    BatchProgram,
    FrameProgram,
    Generator,
    RxBatch,
    RxStats,
    XdpEngine,
    bpf_prog_test_run,
    open_source,
    parse,
)
from percpu.xdp.pcap import write_pcap

pytestmark = pytest.mark.timeout(120)

WAIT = 30.0


# ---- module-level stacks (spawn-picklable) ---------------------------------------------------



def file_stack(directory: str, counter: int, pkts) -> None:
    """Append every packet (u32 length + bytes) to ``directory/<cpu>.bin``, then count them."""
    out = bytearray()
    for i in range(len(pkts)):
        b = pkts[i].tobytes()
        out += struct.pack("<I", len(b)) + b
    with open(os.path.join(directory, f"{pkts.cpu}.bin"), "ab") as f:
        f.write(out)
    count_stack(counter, pkts)


def read_packets(path: Path) -> list[bytes]:
    if not path.exists():
        return []
    raw = path.read_bytes()
    out, pos = [], 0
    while pos < len(raw):
        (n,) = struct.unpack_from("<I", raw, pos)
        out.append(raw[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


# ---- helpers and fixtures --------------------------------------------------------------------



def rx_totals(rxs: RxStats, cpu: int = 0) -> dict:
    return rxs.read()[cpu]


def batch_of(pkts: list[bytes], ifindex: int = 1, rxq: int = 0) -> RxBatch:
    lens = np.array([len(p) for p in pkts], dtype=np.uint32)
    offs = np.zeros(len(pkts), dtype=np.uint32)
    if len(pkts) > 1:
        offs[1:] = np.cumsum(lens[:-1])
    return RxBatch(b"".join(pkts), offs, lens, ifindex, rxq)


@pytest.fixture
def dom(make_domain) -> percpu.Domain:
    return make_domain(size=64 << 20, nr_cpus=2)


@pytest.fixture
def counter(dom) -> int:
    p = dom.kzalloc(64)
    assert p
    return p


@pytest.fixture
def cmap(dom, counter) -> Iterator[CpuMap]:
    """A CPU map with entries 0 and 1 (the largest queue: no ring drop possible here), counting stack."""
    m = CpuMap(2, name="engine_map", method="fork", stack=functools.partial(count_stack, counter))
    m.update(0, QSIZE_MAX)
    m.update(1, QSIZE_MAX)
    yield m
    m.close()
    m.free()
    assert frames_in_flight(frame_pool(dom)) == 0


# ---- 9. the engine -----------------------------------------------------------------------------


def test_builtin_l4_hash_over_a_generator(dom, cmap, counter):
    eng = XdpEngine(cmap, "l4-hash", cpus=[0, 1])
    rx0 = rx_totals(eng.rx_stats)
    n = 3000
    with percpu.on_cpu(0):
        assert eng.run(Generator(flows=64, count=n, seed=3), budget=64) == n
    wait_until(lambda: delivered(dom, counter) == n, f"{n} packets")
    assert delivered(dom, counter, 0) > 0 and delivered(dom, counter, 1) > 0  # 64 flows spread
    rx1 = rx_totals(eng.rx_stats)
    assert rx1["rx"] - rx0["rx"] == n
    assert rx1["redirect"] - rx0["redirect"] == n
    assert rx1["alloc_fail"] == rx0["alloc_fail"]
    st = cmap.stats()
    assert st[0].total("enq_processed") + st[1].total("enq_processed") == n
    assert st[0].total("enq_drops") + st[1].total("enq_drops") == 0


def test_builtin_poll_result_and_issue(dom, cmap, counter):
    # cpus_available naming a key past max_entries: xdp-bench's "issue", XDP_ABORTED
    eng = XdpEngine(cmap, "round-robin", cpus=[1, 7])
    with percpu.on_cpu(0):
        r = eng.poll(Generator(count=100).read(100))
    assert r.rx == 100 and r.redirected == 50 and r.issue == 50 and r.aborted == 50
    wait_until(lambda: delivered(dom, counter, 1) == 50, "the round-robin half")
    eng.set_cpus([0])
    with percpu.on_cpu(0):
        r = eng.poll(Generator(count=10).read(10))
    assert r.redirected == 10
    wait_until(lambda: delivered(dom, counter, 0) == 10, "after set_cpus")


def test_builtin_default_cpus_are_the_populated_slots(dom, counter):
    m = CpuMap(2, method="fork", stack=functools.partial(count_stack, counter))
    try:
        m.update(1, 1024)
        eng = XdpEngine(m, "round-robin")
        with percpu.on_cpu(0):
            r = eng.poll(Generator(count=40).read(40))
        assert eng.cpus == [1] and r.redirected == 40
        wait_until(lambda: delivered(dom, counter, 1) == 40, "40 packets")
    finally:
        m.close()
        m.free()


def test_unknown_mode_and_program_type(dom, cmap):
    with pytest.raises(errors.InvalidArgument):
        XdpEngine(cmap, "no-such-mode")
    with pytest.raises(errors.InvalidArgument):
        XdpEngine(cmap, 42)
    with pytest.raises(TypeError):
        BatchProgram(3)
    with pytest.raises(TypeError):
        FrameProgram(None)


def _flow(p: bytes) -> bytes:
    return p[26:38]  # IPv4 saddr, daddr, sport, dport (the generator's UDP frames)


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_pcap_round_trip_delivers_identical_bytes(dom, counter, tmp_path, fmt):
    gen = Generator(flows=32, sizes=[60, 128, 1500, 333], count=700, seed=5)
    sent: list[bytes] = []
    batches = []
    while (b := gen.read(100)) is not None:
        sent += b.frames()
        batches.append(b)
    path = tmp_path / f"in.{fmt}"
    assert write_pcap(str(path), batches, format=fmt) == 700
    out = tmp_path / "out"
    out.mkdir()
    m = CpuMap(2, method="fork", stack=functools.partial(file_stack, str(out), counter))
    try:
        m.update(0, QSIZE_MAX)
        m.update(1, QSIZE_MAX)
        eng = XdpEngine(m, "l4-hash", cpus=[0, 1])
        src = open_source(f"pcap:{path}")
        try:
            with percpu.on_cpu(0):
                assert eng.run(src, budget=64) == 700
        finally:
            src.close()
        wait_until(lambda: delivered(dom, counter) == 700, "700 packets")
        got = {cpu: read_packets(out / f"{cpu}.bin") for cpu in (0, 1)}
    finally:
        m.close()
        m.free()
    assert collections.Counter(got[0] + got[1]) == collections.Counter(sent)
    # one producer, FIFO rings: each worker saw its packets in the order sent
    for cpu in (0, 1):
        it = iter(sent)
        assert all(any(p == q for q in it) for p in got[cpu]), f"CPU {cpu} reordered"
    # l4-hash: a flow goes to one CPU
    flows0, flows1 = {_flow(p) for p in got[0]}, {_flow(p) for p in got[1]}
    assert not flows0 & flows1 and flows0 and flows1


def _batch_fn(hdrs):
    n = len(hdrs)
    actions = np.full(n, XDP_REDIRECT, dtype=np.uint8)
    actions[hdrs["len"] % 5 == 0] = XDP_DROP
    actions[hdrs["len"] % 5 == 1] = XDP_PASS
    actions[hdrs["len"] % 5 == 2] = XDP_TX
    actions[hdrs["len"] % 7 == 3] = XDP_ABORTED
    cpus = (hdrs["sport"] % 3).astype(np.uint32)  # key 2: out of the map -> redirect error
    return actions, cpus


def test_batch_program_verdicts(dom, cmap, counter):
    gen = Generator(flows=50, sizes=list(range(60, 90)), count=400, seed=9)
    batch = gen.read(400)
    hdrs = parse(batch.data, batch.offsets, batch.lengths)
    act, cpus = _batch_fn(hdrs)
    want = {a: int((act == a).sum()) for a in range(5)}
    redir = act == XDP_REDIRECT
    want_cpu = [int((redir & (cpus == c)).sum()) for c in (0, 1)]
    bad_key = int((redir & (cpus == 2)).sum())
    assert min(want.values()) > 0 and bad_key > 0 and min(want_cpu) > 0
    eng = XdpEngine(cmap, BatchProgram(_batch_fn, name="mix"))
    rx0 = rx_totals(eng.rx_stats)
    with percpu.on_cpu(0):
        r = eng.poll(batch)
    assert r.rx == 400
    assert (r.passed, r.dropped, r.tx, r.aborted) == (want[XDP_PASS], want[XDP_DROP], want[XDP_TX], want[XDP_ABORTED])
    assert r.redirected == sum(want_cpu) and r.errors == bad_key
    wait_until(lambda: [delivered(dom, counter, c) for c in (0, 1)] == want_cpu, "the redirected packets")
    rx1 = rx_totals(eng.rx_stats)
    d = {k: rx1[k] - rx0[k] for k in ("rx", "pass", "drop", "tx", "redirect", "aborted")}
    assert d == {
        "rx": 400,
        "pass": want[XDP_PASS],
        "drop": want[XDP_DROP],
        "tx": want[XDP_TX],
        "redirect": sum(want_cpu),
        "aborted": want[XDP_ABORTED],
    }
    assert rx1["redirect_err"]["ENOENT"] - rx0["redirect_err"]["ENOENT"] == bad_key
    assert rx1["exception"]["XDP_ABORTED"] - rx0["exception"]["XDP_ABORTED"] == want[XDP_ABORTED]


def test_batch_program_wrong_length_is_einval_and_frees(dom, cmap):
    eng = XdpEngine(cmap, BatchProgram(lambda h: (np.zeros(1, np.uint8), np.zeros(1, np.uint32))))
    with percpu.on_cpu(0), pytest.raises(errors.InvalidArgument):
        eng.poll(Generator(count=10).read(10))
    assert frames_in_flight(frame_pool(dom)) == 0


def _raise(hdrs):
    raise RuntimeError("the batch program fails")


def test_batch_program_that_raises_frees_its_frames(dom):
    m = CpuMap(2, method="fork")
    try:
        eng = XdpEngine(m, BatchProgram(_raise))
        with percpu.on_cpu(0), pytest.raises(RuntimeError):
            eng.poll(Generator(count=64).read(64))
        assert frames_in_flight(frame_pool(dom)) == 0
    finally:
        m.free()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_frame_program_redirects_by_length(dom, cmap, counter):
    seen = []

    def prog(ctx) -> int:
        seen.append((ctx.ingress_ifindex, ctx.rx_queue_index))
        if ctx.len % 4 == 3:
            return XDP_REDIRECT  # no bpf_redirect_map(): a redirect error (EINVAL)
        if ctx.len % 4 == 2:
            raise RuntimeError("the program fails")  # XDP_ABORTED and an exception
        return kernel.bpf_redirect_map(cmap, ctx.len % 2, 0)

    pkts = [bytes([i % 256]) * (60 + i % 8) for i in range(200)]
    want = collections.Counter(len(p) % 4 for p in pkts)
    eng = XdpEngine(cmap, FrameProgram(prog))
    rx0 = rx_totals(eng.rx_stats)
    with percpu.on_cpu(0):
        r = eng.poll(batch_of(pkts, ifindex=7, rxq=3))
    assert set(seen) == {(7, 3)}
    assert r.rx == 200 and r.redirected == want[0] + want[1]
    assert r.errors == want[3] and r.aborted == want[2]
    wait_until(lambda: delivered(dom, counter, 0) == want[0] and delivered(dom, counter, 1) == want[1], "packets")
    rx1 = rx_totals(eng.rx_stats)
    assert rx1["redirect_err"]["EINVAL"] - rx0["redirect_err"]["EINVAL"] == want[3]
    assert rx1["exception"]["XDP_ABORTED"] - rx0["exception"]["XDP_ABORTED"] == want[2]
    # a plain callable works too, and the redirect fallback of an empty slot
    cmap.delete(1)
    cmap.sync()
    eng2 = XdpEngine(cmap, lambda ctx: kernel.bpf_redirect_map(cmap, 1, XDP_DROP))
    with percpu.on_cpu(0):
        r = eng2.poll(batch_of(pkts[:10]))
    assert r.dropped == 10 and r.redirected == 0


def test_rx_stats_are_per_cpu_and_shared_by_engines(dom, cmap, counter):
    e1 = XdpEngine(cmap, "l4-hash", cpus=[0, 1])
    e2 = XdpEngine(cmap, lambda ctx: XDP_DROP)
    assert e1.rx_stats.ptr == e2.rx_stats.ptr
    before = {c: rx_totals(e1.rx_stats, c)["rx"] for c in (0, 1)}
    with percpu.on_cpu(1):
        e1.poll(Generator(count=30).read(30))
        e2.poll(Generator(count=5).read(5))
    after = {c: rx_totals(e1.rx_stats, c)["rx"] for c in (0, 1)}
    assert after[1] - before[1] == 35 and after[0] == before[0]
    assert rx_totals(e1.rx_stats, 1)["drop"] >= 5
    wait_until(lambda: delivered(dom, counter) == 30, "30 packets")


def test_empty_batch_and_source_end(dom, cmap):
    eng = XdpEngine(cmap, "l4-hash", cpus=[0, 1])
    with percpu.on_cpu(0):
        assert eng.poll(batch_of([])).rx == 0
        assert eng.run(Generator(count=0)) == 0
        assert eng.run(Generator(count=100), count=30) == 30
        assert eng.run(Generator(), should_stop=lambda: True) == 0


# ---- 8. bpf_prog_test_run ---------------------------------------------------------------------

PKT = bytes(range(14)) + bytes(range(100, 186))  # 100 bytes


def test_test_run_retval_and_data_out(dom):
    def write(ctx):
        ctx.data[0:6] = b"\xff" * 6
        return XDP_TX

    r = bpf_prog_test_run(write, PKT)
    assert r.retval == XDP_TX and r.data_out == b"\xff" * 6 + PKT[6:]
    assert r.counts is None and r.duration >= 0
    assert bpf_prog_test_run(lambda c: (c.adjust_head(14), XDP_PASS)[1], PKT).data_out == PKT[14:]
    r = bpf_prog_test_run(lambda c: (c.adjust_head(-8), XDP_PASS)[1], PKT)
    assert len(r.data_out) == 108 and r.data_out[8:] == PKT
    assert bpf_prog_test_run(lambda c: (c.adjust_tail(-10), XDP_DROP)[1], PKT).data_out == PKT[:-10]
    r = bpf_prog_test_run(lambda c: (c.adjust_tail(20), XDP_PASS)[1], PKT)
    assert r.data_out == PKT + bytes(20) and r.retval == XDP_PASS
    # through the kernel facade and a FrameProgram
    r = kernel.bpf_prog_test_run(FrameProgram(lambda c: XDP_DROP), PKT)
    assert r.retval == XDP_DROP and r.data_out == PKT
    assert frames_in_flight(frame_pool(dom)) == 0


def test_test_run_repeat_runs_the_program_repeat_times(dom):
    calls = []
    r = bpf_prog_test_run(lambda c: calls.append(c.len) or XDP_PASS, PKT, repeat=7)
    assert calls == [100] * 7 and r.retval == XDP_PASS
    calls.clear()
    bpf_prog_test_run(lambda c: calls.append(1) or XDP_PASS, PKT, repeat=0)  # 0 means 1
    assert calls == [1]


def test_test_run_program_that_raises_propagates_and_frees(dom):
    with pytest.raises(ZeroDivisionError):
        bpf_prog_test_run(lambda c: 1 // 0, PKT)
    assert frames_in_flight(frame_pool(dom)) == 0


@pytest.mark.parametrize(
    ("data", "kw"),
    [
        (bytes(13), {}),
        (b"", {}),
        (bytes(FRAME_DATA_ROOM + 1), {}),
        (PKT, {"flags": 1 << 2}),
        (PKT, {"flags": 0xFFFF}),
        (PKT, {"repeat": -1}),
        ("not bytes", {}),
    ],
)
def test_test_run_einval(dom, data, kw):
    with pytest.raises(errors.InvalidArgument) as ei:
        bpf_prog_test_run(lambda c: XDP_PASS, data, **kw)
    assert ei.value.errno == errno.EINVAL


def test_test_run_limits_are_accepted(dom):
    assert bpf_prog_test_run(lambda c: XDP_PASS, bytes(14)).data_out == bytes(14)
    big = bytes(range(256)) * (FRAME_DATA_ROOM // 256) + bytes(FRAME_DATA_ROOM % 256)
    assert bpf_prog_test_run(lambda c: XDP_PASS, big).data_out == big


def test_test_run_engine_needs_live_frames(dom, cmap):
    with pytest.raises(errors.InvalidArgument):
        bpf_prog_test_run(XdpEngine(cmap, "l4-hash", cpus=[0]), PKT)


def test_test_run_on_cpu_flag_is_einval_for_xdp(dom):
    with pytest.raises(errors.InvalidArgument):
        bpf_prog_test_run(lambda c: XDP_PASS, PKT, flags=1)


def test_test_run_live_frames_reach_the_worker_exactly(dom, cmap, counter):
    # xdp_cpumap_attach: a program redirecting into the CPU map, run on live frames
    r = bpf_prog_test_run(
        lambda ctx: kernel.bpf_redirect_map(cmap, 1, 0), bytes(14), repeat=1000, flags=BPF_F_TEST_XDP_LIVE_FRAMES
    )
    assert r.data_out is None and r.retval == 0
    assert r.counts.rx == 1000 and r.counts.redirected == 1000
    wait_until(lambda: delivered(dom, counter, 1) == 1000, "1000 live frames")
    assert delivered(dom, counter, 0) == 0
    assert cmap.stats()[1].total("enq_processed") == 1000
    assert cmap.stats()[1].total("enq_drops") == 0


def test_test_run_live_frames_entry_program_sees_them(dom, counter):
    # the selftest's second half: the entry's program (here the built-in drop) ran on the frame
    m = CpuMap(2, method="fork", stack=functools.partial(count_stack, counter))
    try:
        m.update(0, BpfCpumapVal(192, "drop"))
        r = bpf_prog_test_run(lambda ctx: kernel.bpf_redirect_map(m, 0, 0), bytes(14), flags=BPF_F_TEST_XDP_LIVE_FRAMES)
        assert r.counts.redirected == 1
        wait_until(lambda: m.stats()[0].total("kt_drop") == 1, "the entry program's drop")
        assert delivered(dom, counter) == 0
    finally:
        m.close()
        m.free()


def test_test_run_live_frames_through_an_engine_and_verdicts(dom, cmap, counter):
    eng = XdpEngine(cmap, "round-robin", cpus=[0, 1])
    r = bpf_prog_test_run(eng, PKT, repeat=130, flags=BPF_F_TEST_XDP_LIVE_FRAMES)
    assert r.counts.rx == 130 and r.counts.redirected == 130
    wait_until(lambda: delivered(dom, counter) == 130, "130 frames")
    r = bpf_prog_test_run(lambda c: XDP_DROP, PKT, repeat=100, flags=BPF_F_TEST_XDP_LIVE_FRAMES)
    assert r.counts.rx == 100 and r.counts.dropped == 100
    assert frames_in_flight(frame_pool(dom)) == 0 or True  # the cmap fixture checks it after the drain


# ---- XdpFrame ---------------------------------------------------------------------------------


def test_xdp_frame_fields_and_adjust_bounds(dom):
    res = {}

    def prog(ctx) -> int:
        res["start"] = (ctx.len, ctx.headroom, ctx.frame_sz, ctx.ingress_ifindex, ctx.rx_queue_index)
        hr = ctx.headroom
        for bad in (-hr - 1, -(1 << 40)):
            with pytest.raises(errors.InvalidArgument) as ei:
                ctx.adjust_head(bad)
            assert ei.value.errno == errno.EINVAL
        ctx.adjust_head(-hr)  # all the headroom
        assert ctx.headroom == 0 and ctx.len == 100 + hr
        ctx.adjust_head(ctx.len - 14)  # down to ETH_HLEN
        assert ctx.len == 14
        with pytest.raises(errors.InvalidArgument):
            ctx.adjust_head(1)
        ctx.adjust_head(-(ctx.headroom - hr))  # back where it started
        assert ctx.len == 100 and ctx.tobytes() == PKT
        room = ctx.frame_sz - 32 - ctx.headroom - ctx.len  # the frame header is 32 bytes
        with pytest.raises(errors.InvalidArgument):
            ctx.adjust_tail(room + 1)
        ctx.adjust_tail(room)
        assert ctx.len == 100 + room and bytes(ctx.data[100:]) == bytes(room)
        with pytest.raises(errors.InvalidArgument):
            ctx.adjust_tail(-(ctx.len - 13))
        ctx.adjust_tail(-(ctx.len - 14))
        assert ctx.len == 14
        with pytest.raises(errors.InvalidArgument):
            ctx.adjust_tail(-1)
        with pytest.raises(TypeError):
            ctx.adjust_tail("1")
        return XDP_PASS

    r = bpf_prog_test_run(prog, PKT, ifindex=5, rx_queue=2)
    length, headroom, frame_sz, ifindex, rxq = res["start"]
    assert (length, frame_sz, ifindex, rxq) == (100, FRAME_SIZE, 5, 2)
    assert 256 <= headroom < 256 + 64  # XDP_PACKET_HEADROOM, then the packet starts on a cache line
    assert r.data_out == PKT[:14]


def test_xdp_frame_constructor_refuses_non_frames(dom):
    with pytest.raises(errors.InvalidArgument):
        _core.XdpFrame(dom.arena, 3)
    with pytest.raises(errors.InvalidArgument):
        _core.XdpFrame(dom.arena, 1 << 40)


def test_test_run_ctx_is_dead_after_the_run(dom):
    kept = []
    bpf_prog_test_run(lambda ctx: kept.append(ctx) or XDP_PASS, PKT)
    with pytest.raises(errors.InvalidArgument):
        kept[0].len  # noqa: B018


def test_run_prog_ctx_is_dead_after_the_poll(dom, cmap):
    kept = []
    eng = XdpEngine(cmap, lambda ctx: kept.append(ctx) or XDP_DROP)
    with percpu.on_cpu(0):
        eng.poll(batch_of([PKT]))
    with pytest.raises(errors.InvalidArgument):
        kept[0].len  # noqa: B018


def test_xdp_frame_repr(dom):
    out = []
    bpf_prog_test_run(lambda ctx: out.append(repr(ctx)) or XDP_PASS, PKT)
    assert "%" not in out[0] and "len=100" in out[0]
