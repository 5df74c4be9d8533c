"""Packet sources of the XDP runtime: the generator, pcap/pcapng files, open_source().

Frames are checked with a small parser written here from the RFCs (not the
module's code), and cross-checked with dpkt when it is installed.  The rate
limit is tested on a fake clock: no timing assertion.
"""

from __future__ import annotations

import io
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from percpu.errors import InvalidArgument, NoDevice
from percpu.xdp.pcap import PcapngWriter, PcapSource, PcapWriter, sniff_format, write_pcap
from percpu.xdp.sources import IMIX, Generator, RxBatch, TokenBucket, header_length, open_source

# -- an independent parser -------------------------------------------------------------------


def csum_ok(data: bytes) -> bool:
    """RFC 1071: the one's-complement sum over data (with its checksum field) is 0xffff."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return bool(s == 0xFFFF)


def parse(frame: bytes) -> tuple[int, int, bytes, bytes, int, int]:
    """(ip version, l4 proto, saddr, daddr, sport/id, dport/seq) of a generated frame; asserts validity."""
    (etype,) = struct.unpack_from("!H", frame, 12)
    if etype == 0x0800:
        ip = frame[14:]
        assert ip[0] == 0x45
        (tot_len,) = struct.unpack_from("!H", ip, 2)
        assert tot_len == len(frame) - 14
        assert csum_ok(ip[:20])
        proto, saddr, daddr = ip[9], ip[12:16], ip[16:20]
        l4 = ip[20:tot_len]
        pseudo = saddr + daddr + struct.pack("!BBH", 0, proto, len(l4))
        version = 4
    else:
        assert etype == 0x86DD
        ip = frame[14:]
        assert ip[0] >> 4 == 6
        (plen,) = struct.unpack_from("!H", ip, 4)
        assert plen == len(frame) - 54
        proto, saddr, daddr = ip[6], ip[8:24], ip[24:40]
        l4 = ip[40 : 40 + plen]
        pseudo = saddr + daddr + struct.pack("!IxxxB", len(l4), proto)
        version = 6
    if proto == 17:
        sport, dport, ulen, ck = struct.unpack_from("!HHHH", l4)
        assert ulen == len(l4) and ck != 0
        assert csum_ok(pseudo + l4)
    elif proto == 6:
        sport, dport = struct.unpack_from("!HH", l4)
        assert l4[12] >> 4 == 5
        assert csum_ok(pseudo + l4)
    elif proto == 1:
        assert l4[0] == 8 and csum_ok(l4)
        sport, dport = struct.unpack_from("!HH", l4, 4)
    else:
        assert proto == 58 and l4[0] == 128
        assert csum_ok(pseudo + l4)
        sport, dport = struct.unpack_from("!HH", l4, 4)
    return version, proto, saddr, daddr, sport, dport


def drain(src: object, n: int = 1000) -> list[RxBatch]:
    out = []
    while (b := src.read(n)) is not None:  # type: ignore[attr-defined]
        out.append(b)
    return out


def frames_of(batches: list[RxBatch]) -> list[bytes]:
    return [f for b in batches for f in b.frames()]


# -- generator ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"proto": "tcp"},
        {"proto": "icmp", "ipv6": 1.0},
        {"proto": {"udp": 2, "tcp": 1, "icmp": 1}, "ipv6": 0.5, "sizes": "imix"},
        {"proto": "udp,tcp,icmp", "ipv6": 0.3, "sizes": [60, 61, 127, 1514, 9000]},
    ],
)
def test_generator_frames_are_valid(kw: dict[str, object]) -> None:
    g = Generator(flows=97, seed=3, **kw)  # type: ignore[arg-type]
    b = g.read(g.cycle)
    assert b is not None and len(b) == g.cycle
    for f in b.frames():
        parse(f)


def test_generator_flows_are_distinct_5_tuples() -> None:
    g = Generator(flows=500, proto="udp,tcp,icmp", ipv6=0.5, seed=1)
    tuples = [parse(f) for f in g.read(500).frames()]  # type: ignore[union-attr]
    assert len(set(tuples)) == 500
    versions = {t[0] for t in tuples}
    assert versions == {4, 6}
    assert {t[1] for t in tuples} == {1, 6, 17, 58}
    # one cycle later the same flows come again, in the same order
    assert [parse(f) for f in g.read(500).frames()] == tuples  # type: ignore[union-attr]
    # addresses spread: many distinct IPv4 pairs in the benchmarking range 198.18.0.0/15
    v4 = [t for t in tuples if t[0] == 4]
    assert all(t[2][:2] == b"\xc6\x12" and t[3][:2] == b"\xc6\x13" for t in v4)
    assert len({t[2] for t in v4}) > len(v4) // 2


def test_generator_single_flow_and_udp_dport() -> None:
    g = Generator(flows=1, udp_dport=9)
    tuples = {parse(f) for f in g.read(10).frames()}  # type: ignore[union-attr]
    assert len(tuples) == 1 and next(iter(tuples))[5] == 9


def test_generator_sizes_cycle_and_clamp() -> None:
    g = Generator(flows=3, sizes=[64, 100, 1518, 30])
    b = g.read(24)
    assert b is not None
    assert list(b.lengths) == [64, 100, 1518, 42] * 6
    assert Generator(sizes="imix", flows=1).sizes == list(IMIX)
    g = Generator(flows=4, sizes=60, proto="tcp", ipv6=1.0)
    assert set(g.read(8).lengths) == {header_length(6, 6)} == {74}  # type: ignore[union-attr]


def test_generator_stream_matches_cycle_for_any_batch_sizes() -> None:
    g = Generator(flows=7, sizes=[64, 65, 66], seed=5)
    ref = g.read(g.cycle).frames()  # type: ignore[union-attr]
    g2 = Generator(flows=7, sizes=[64, 65, 66], seed=5)
    got: list[bytes] = []
    for n in [1, 5, 21, 3, 100, 4000, 2, 0, 17]:  # 4000 grows the contiguous span
        b = g2.read(n)
        assert b is not None and len(b) == n
        assert not b.offsets.flags.writeable and not b.lengths.flags.writeable
        assert b.timestamps is None and b.ifindex == 1 and b.rx_queue == 0
        got += b.frames()
    assert got == [ref[j % len(ref)] for j in range(len(got))]


def test_generator_seed_and_count() -> None:
    a = Generator(flows=16, seed=1).read(16).frames()  # type: ignore[union-attr]
    assert a == Generator(flows=16, seed=1).read(16).frames()  # type: ignore[union-attr]
    assert a != Generator(flows=16, seed=2).read(16).frames()  # type: ignore[union-attr]
    g = Generator(count=1000, ifindex=4, rx_queue=2)
    batches = drain(g, 64)
    assert sum(len(b) for b in batches) == 1000 == g.sent
    assert [len(b) for b in batches][-1] == 1000 % 64
    assert all(b.ifindex == 4 and b.rx_queue == 2 for b in batches)
    assert g.read(1) is None
    g = Generator()
    g.close()
    assert g.read(1) is None
    assert Generator(count=0).read(5) is None


@pytest.mark.parametrize(
    "kw",
    [
        {"flows": 0},
        {"flows": (1 << 20) + 1},
        {"sizes": []},
        {"sizes": 0},
        {"sizes": 70000},
        {"sizes": "big"},
        {"proto": "sctp"},
        {"proto": {"udp": 0}},
        {"proto": {"udp": -1}},
        {"ipv6": 1.5},
        {"count": -1},
        {"rate": 0},
        {"rate": float("inf")},
        {"udp_dport": 70000},
    ],
)
def test_generator_rejects_bad_parameters(kw: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        Generator(**kw)  # type: ignore[arg-type]


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        assert s > 0
        self.sleeps.append(s)
        self.t += s


def test_token_bucket_on_a_fake_clock() -> None:
    clk = FakeClock()
    tb = TokenBucket(1000.0, burst=10, clock=clk, sleep=clk.sleep)
    assert tb.take(64) == 10  # a grant never exceeds the burst
    assert clk.sleeps == []  # the bucket starts full
    assert tb.take(5) == 5
    assert clk.sleeps == [pytest.approx(0.005)]
    clk.t += 1.0  # idle: the bucket refills to the burst only
    assert tb.take(10) == 10 and len(clk.sleeps) == 1
    assert tb.take(10) == 10 and clk.sleeps[-1] == pytest.approx(0.010)
    # an oversleep is made up: the next grant is immediate
    clk.t += 0.004
    assert tb.take(4) == 4 and len(clk.sleeps) == 2
    with pytest.raises(InvalidArgument):
        TokenBucket(10, burst=0.5)


def test_generator_rate_on_a_fake_clock() -> None:
    clk = FakeClock()
    g = Generator(rate=10_000, count=5000, clock=clk, sleep=clk.sleep)  # burst = 100 frames
    t0 = clk.t
    sizes = [len(b) for b in drain(g, 64)]
    assert sum(sizes) == 5000 and max(sizes) == 64
    # the first 100 frames ride the initial burst; the rest come at exactly the rate
    assert clk.t - t0 == pytest.approx((5000 - 100) / 10_000)
    g = Generator(rate=10_000, count=500, clock=clk, sleep=clk.sleep)
    assert {len(b) for b in drain(g, 1000)} == {100}  # a read never takes more than the burst


# -- pcap and pcapng ------------------------------------------------------------------------


def gen_batches(n: int, ifindex: int = 1, t0: float = 1_000_000.0, step: float = 0.5) -> list[RxBatch]:
    g = Generator(flows=13, sizes=[60, 64, 1514, 300], proto="udp,tcp,icmp", ipv6=0.3, count=n, ifindex=ifindex)
    out = []
    k = 0
    while (b := g.read(37)) is not None:
        b.timestamps = np.asarray(t0 + step * np.arange(k, k + len(b)), dtype=np.float64)
        k += len(b)
        out.append(b)
    return out


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
@pytest.mark.parametrize("byteorder", ["little", "big"])
@pytest.mark.parametrize("nanosecond", [False, True])
def test_capture_round_trip(tmp_path: Path, fmt: str, byteorder: str, nanosecond: bool) -> None:
    path = tmp_path / f"x.{fmt}"
    batches = gen_batches(200)
    assert write_pcap(path, batches, format=fmt, byteorder=byteorder, nanosecond=nanosecond) == 200
    with PcapSource(path) as src:
        assert src.format == fmt and src.byteorder == byteorder and src.name == f"pcap:{path}"
        got = drain(src, 64)
    assert frames_of(got) == frames_of(batches)
    ts = np.concatenate([b.timestamps for b in got])
    assert np.array_equal(ts, 1_000_000.0 + 0.5 * np.arange(200))
    assert all(b.ifindex == 1 and b.timestamps is not None for b in got)


@pytest.mark.parametrize("nanosecond", [False, True])
def test_capture_timestamps_to_the_tick(tmp_path: Path, nanosecond: bool) -> None:
    ts = [1_700_000_000.123456, 1_700_000_001.999999, 0.000001, 1_700_000_000.5]
    for fmt in ("pcap", "pcapng"):
        path = tmp_path / f"t.{fmt}"
        write_pcap(path, [(t, b"\x00" * 60) for t in ts], format=fmt, nanosecond=nanosecond)
        got = drain(PcapSource(path))
        assert got[0].timestamps == pytest.approx(ts, abs=1e-6, rel=0)


def test_pcapng_interfaces_become_ifindexes(tmp_path: Path) -> None:
    path = tmp_path / "multi.pcapng"
    a, b, c = gen_batches(50, ifindex=1), gen_batches(30, ifindex=3), gen_batches(20, ifindex=2)
    with PcapngWriter(path, nanosecond=True) as w:
        for x in (a, b, c, a[:1]):
            w.write_all(x)
    got = drain(PcapSource(path), 1000)
    # a batch holds one interface's frames: a run ends where the interface changes
    assert [(x.ifindex, len(x)) for x in got] == [(1, 50), (3, 30), (2, 20), (1, 37)]
    assert frames_of(got) == frames_of(a + b + c + a[:1])
    assert [x.ifindex for x in drain(PcapSource(path, ifindex=9), 1000)] == [9, 9, 9, 9]


def test_pcapng_sections_blocks_and_byte_orders(tmp_path: Path) -> None:
    """Two sections of opposite byte order, an unknown block, SPB and the obsolete PB."""
    first = io.BytesIO()
    with PcapngWriter(first, byteorder="little") as w:
        w.write(b"A" * 60, 1.0, ifindex=2)  # interfaces 0 and 1 of section 1 -> ifindex 1, 2
    second = io.BytesIO()
    with PcapngWriter(second, byteorder="big") as w:
        w.write(b"B" * 61, 2.0, ifindex=1)  # interface 0 of section 2 -> ifindex 3
    o = ">"

    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack(o + "II", btype, len(body) + 12) + body + struct.pack(o + "I", len(body) + 12)

    extra = block(0x0BAD, b"junk")  # unknown: skipped
    extra += block(3, struct.pack(o + "I", 62) + b"C" * 62)  # SPB: interface 0, no timestamp
    extra += block(2, struct.pack(o + "HHIIII", 0, 0, 0, 3_000_000, 63, 63) + b"D" * 63)  # obsolete PB
    path = tmp_path / "sections.pcapng"
    path.write_bytes(first.getvalue() + second.getvalue() + extra)
    got = drain(PcapSource(path))
    assert [(x.ifindex, x.frames()) for x in got] == [
        (2, [b"A" * 60]),
        (3, [b"B" * 61]),
        (3, [b"C" * 62, b"D" * 63]),  # simple and obsolete packet blocks of one interface: one batch
    ]
    ts = [float(t) for x in got for t in x.timestamps]  # type: ignore[union-attr]
    assert ts[:2] == [1.0, 2.0] and np.isnan(ts[2]) and ts[3] == 3.0


def test_pcapng_tsresol_power_of_two_and_tsoffset(tmp_path: Path) -> None:
    o = "<"

    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack(o + "II", btype, len(body) + 12) + body + struct.pack(o + "I", len(body) + 12)

    shb = block(0x0A0D0D0A, struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    opts = struct.pack(o + "HHB3x", 9, 1, 0x80 | 10)  # if_tsresol 2^-10
    opts += struct.pack(o + "HHq", 14, 8, 100)  # if_tsoffset 100 s
    opts += struct.pack(o + "HH", 0, 0)
    idb = block(1, struct.pack(o + "HHI", 1, 0, 0) + opts)
    ticks = 5 * 1024 + 512  # 5.5 s
    epb = block(6, struct.pack(o + "IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, 60, 60) + b"E" * 60)
    path = tmp_path / "res.pcapng"
    path.write_bytes(shb + idb + epb)
    (got,) = drain(PcapSource(path))
    assert got.timestamps is not None and got.timestamps[0] == 105.5


def test_other_link_types_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "raw.pcap"
    with PcapWriter(path, linktype=101) as w:
        w.write(b"\x45" + b"\0" * 19, 1.0)
    with pytest.raises(InvalidArgument, match="LINKTYPE_RAW"):
        PcapSource(path)
    path = tmp_path / "raw.pcapng"
    with PcapngWriter(path, linktype=113) as w:
        w.write(b"\0" * 20, 1.0)
    with PcapSource(path) as src, pytest.raises(InvalidArgument, match="LINKTYPE_LINUX_SLL"):
        src.read(10)


def test_fcs_is_stripped(tmp_path: Path) -> None:
    path = tmp_path / "fcs.pcap"
    with PcapWriter(path, linktype=1 | 0x10000000 | (2 << 29)) as w:  # FCS present, 2 x 16 bits
        w.write(b"F" * 64, 1.0)
    assert drain(PcapSource(path))[0].frames() == [b"F" * 60]


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_truncated_and_corrupt_files(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"t.{fmt}"
    batches = gen_batches(10)
    write_pcap(path, batches, format=fmt)
    data = path.read_bytes()
    frames = frames_of(batches)
    # cut inside the last frame: the nine before it come first, then the error names the record's offset
    last = len(data) - len(frames[-1]) - (16 if fmt == "pcap" else 32 + (-len(frames[-1]) % 4))
    path.write_bytes(data[:-5])
    with PcapSource(path) as src:
        got = src.read(100)
        assert got is not None and got.frames() == frames[:9]
        with pytest.raises(InvalidArgument, match=f"byte offset {last}"):
            src.read(100)
    # cut inside a record header
    path.write_bytes(data[: last + 7])
    with PcapSource(path) as src:
        assert len(src.read(100)) == 9  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match=f"byte offset {last}"):
            src.read(100)
    # a corrupt length field
    bad = bytearray(data)
    if fmt == "pcap":
        struct.pack_into(sys.byteorder[0] == "l" and "<I" or ">I", bad, last + 8, 1 << 30)
    else:
        struct.pack_into(sys.byteorder[0] == "l" and "<I" or ">I", bad, last + 4, 7)
    path.write_bytes(bytes(bad))
    with PcapSource(path) as src:
        assert len(src.read(100)) == 9  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="byte offset"):
            src.read(100)


def test_not_a_capture(tmp_path: Path) -> None:
    for content in (b"", b"GIF89a...", b"\xd4\xc3\xb2\xa1\x02\x00"):
        path = tmp_path / "x.bin"
        path.write_bytes(content)
        with pytest.raises(InvalidArgument, match="byte offset 0"):
            PcapSource(path)
    with pytest.raises(InvalidArgument):
        sniff_format(b"\0\0\0\0")
    with pytest.raises(FileNotFoundError):
        PcapSource(tmp_path / "missing.pcap")


def test_loop_restarts_at_the_first_frame(tmp_path: Path) -> None:
    for fmt in ("pcap", "pcapng"):
        path = tmp_path / f"l.{fmt}"
        batches = gen_batches(10)
        write_pcap(path, batches, format=fmt)
        src = PcapSource(path, loop=True)
        got = []
        for _ in range(7):
            b = src.read(4)
            assert b is not None
            got += b.frames()
        assert got == frames_of(batches)[:10] + frames_of(batches)[:10] + frames_of(batches)[: len(got) - 20]
        src.close()
        assert src.read(4) is None


def test_dpkt_interoperates(tmp_path: Path) -> None:
    dpkt = pytest.importorskip("dpkt")
    batches = gen_batches(50, t0=1_600_000_000.0, step=0.001)
    frames = frames_of(batches)
    tss = [float(t) for b in batches for t in b.timestamps]  # type: ignore[union-attr]
    # dpkt writes, we read
    for nano in (False, True):
        path = tmp_path / "dpkt.pcap"
        with open(path, "wb") as f:
            w = dpkt.pcap.Writer(f, nano=nano)
            for t, fr in zip(tss, frames):
                w.writepkt(fr, ts=t)
        got = drain(PcapSource(path))
        assert frames_of(got) == frames
        assert np.concatenate([b.timestamps for b in got]) == pytest.approx(tss, abs=1e-6, rel=0)
    path = tmp_path / "dpkt.pcapng"
    with open(path, "wb") as f:
        w = dpkt.pcapng.Writer(f)
        for t, fr in zip(tss, frames):
            w.writepkt(fr, ts=t)
    got = drain(PcapSource(path))
    assert frames_of(got) == frames
    assert np.concatenate([b.timestamps for b in got]) == pytest.approx(tss, abs=1e-6, rel=0)
    # we write, dpkt reads
    for fmt, reader in (("pcap", dpkt.pcap.Reader), ("pcapng", dpkt.pcapng.Reader)):
        path = tmp_path / f"ours.{fmt}"
        write_pcap(path, batches, format=fmt)
        with open(path, "rb") as f:
            theirs = list(reader(f))
        assert [bytes(b) for _, b in theirs] == frames
        assert [float(t) for t, _ in theirs] == pytest.approx(tss, abs=1e-6, rel=0)
    # and dpkt parses every generated frame the way our parser does
    for fr in frames:
        eth = dpkt.ethernet.Ethernet(fr)
        assert len(bytes(eth)) == len(fr)


# -- open_source ----------------------------------------------------------------------------


def test_open_source_specs(tmp_path: Path) -> None:
    assert isinstance(open_source("gen"), Generator)
    assert isinstance(open_source(), Generator)
    g = open_source("generator:flows=4,sizes=64/128,proto=udp/tcp,ipv6=0.5,count=10,seed=2", rx_queue=3)
    assert isinstance(g, Generator)
    assert (g.flows, g.sizes, g.count, g.seed, g.rx_queue) == (4, [64, 128], 10, 2, 3)
    assert open_source("gen:size=imix").sizes == list(IMIX)  # type: ignore[attr-defined]
    for fmt in ("pcap", "pcapng"):
        path = tmp_path / f"s.{fmt}"
        write_pcap(path, gen_batches(5), format=fmt)
        with open_source(f"pcap:{path}", loop=True) as src:
            assert isinstance(src, PcapSource) and src.format == fmt
            assert src.name == f"pcap:{path}"
    for bad in ("nonsense", "pcap:", "iface:", "gen:flows", "gen:colour=red", "gen:flows=x"):
        with pytest.raises(InvalidArgument):
            open_source(bad)
    with pytest.raises(NoDevice):
        open_source("iface:pk-no-such0")


def test_afpacket_argument_checks() -> None:
    from percpu.xdp.afpacket import AfPacketSource, send

    with pytest.raises(InvalidArgument):
        AfPacketSource("lo", block_size=1000)
    with pytest.raises(InvalidArgument):
        AfPacketSource("lo", frame_size=100)
    with pytest.raises(InvalidArgument):
        AfPacketSource("lo", fanout=1, fanout_mode="nope")
    with pytest.raises(NoDevice):
        AfPacketSource("pk-no-such0")
    with pytest.raises(NoDevice):
        send("pk-no-such0", [b"\0" * 60])
