"""Packet sources of the XDP runtime: what the NIC's RX ring is to ``xdp_do_redirect()``.

In the kernel a driver's NAPI poll pulls up to a budget of descriptors from an
RX ring and runs the XDP program on each ``xdp_buff``
(``drivers/net/veth.c`` ``veth_xdp_rcv()``, ``mlx5e_poll_rx_cq()``); the
traffic itself comes from a wire, often from ``pktgen``
(``net/core/pktgen.c``, ``samples/pktgen/``), which is what xdp-bench's
README uses to load ``redirect-cpu``.  Here a *source* stands in for ring and
wire together: ``read(max_frames)`` is one NAPI poll with ``budget =
max_frames`` and returns an :class:`RxBatch`, the frames of that poll laid out
back to back in one buffer::

    data     | frame 0 | frame 1 |   ...   | frame n-1 |     (any buffer; frames may have gaps between them)
               ^offsets[0] ^offsets[1]        ^offsets[n-1]
    lengths    len 0     len 1                len n-1          (captured length, uint32)
    ifindex, rx_queue                                          (xdp_md.ingress_ifindex / rx_queue_index)
    timestamps float64 seconds per frame, or None               (pcap, AF_PACKET; None for the generator)

Three sources exist (``open_source()`` picks one from a spec string):

============  ===================================  ==============================
spec          class                                stands in for
============  ===================================  ==============================
``gen``       :class:`Generator` (this module)     ``pktgen`` on the far end
``pcap:F``    :class:`percpu.xdp.pcap.PcapSource`  ``tcpreplay`` of a capture
``iface:N``   :class:`~percpu.xdp.afpacket.        a live NIC (TPACKET_V3 ring)
              AfPacketSource`
============  ===================================  ==============================

The generator builds one *cycle* of packets once, with numpy: valid
Ethernet / IPv4 or IPv6 / UDP, TCP or ICMP(v6) frames with correct length
fields and checksums (IPv4 header, UDP, TCP, ICMP, ICMPv6; the payload is
zeros, as pktgen's is apart from its 16-byte signature), one distinct
5-tuple per *flow*, addresses drawn from the benchmarking ranges
198.18.0.0/15 (RFC 2544) and 2001:2::/48 (RFC 5180) so that xdp-bench's
``l4-hash`` spreads them.  The cycle is followed in the buffer by a copy of
its first packets, so that any ``read(n)`` with ``n`` up to that span is a
contiguous run of the buffer: a read costs two numpy slices and one object,
whatever ``n`` is (tens of ns per frame for 64-frame batches).

Deviations from pktgen, all deliberate: no pktgen signature in the payload
(sequence numbers live in the engine's counters, not in the frames); a size
below the headers of a flow's protocol is raised to that minimum (pktgen
clamps to 14 + 20 + 8 the same way); the rate limit is a token bucket over
whole batches (pktgen spins per packet on ``delay``), see :class:`TokenBucket`.

Synchronization: none; a source belongs to the one thread that polls it (as a
NAPI context belongs to one CPU).  Batches returned by the generator share its
read-only buffer and read-only offset arrays; they stay valid after ``close()``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

import numpy as np
import numpy.typing as npt

from percpu.errors import InvalidArgument, TooBig

__all__ = [
    "RxBatch",
    "Source",
    "Generator",
    "TokenBucket",
    "open_source",
    "IMIX",
    "header_length",
]

U32Array = npt.NDArray[np.uint32]

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58

#: The "simple IMIX" of frame lengths (7:4:1 of 64, 594 and 1518 bytes, FCS included in the
#: usual statement; here they are lengths without FCS, as every size of this module).
IMIX: tuple[int, ...] = (64,) * 7 + (594,) * 4 + (1518,)

_PROTO_NAMES = {"udp": IPPROTO_UDP, "tcp": IPPROTO_TCP, "icmp": IPPROTO_ICMP}
_L4_LEN = {IPPROTO_UDP: 8, IPPROTO_TCP: 20, IPPROTO_ICMP: 8}
_MAX_FRAME = 65535
_MAX_FLOWS = 1 << 20
_CYCLE_BUDGET = 64 << 20  # bytes of one cycle before sizes stop being cycled independently of flows
_DEFAULT_SPAN = 1024  # frames a read may return contiguously before the buffer is grown

_SRC_MAC = bytes.fromhex("020000000001")  # locally administered, as pktgen's src_mac default is the device's
_DST_MAC = bytes.fromhex("020000000002")


@dataclass(slots=True)
class RxBatch:
    """The frames of one poll of a source, back to back in one buffer.

    The counterpart of the frames a driver's NAPI poll hands to the XDP program
    (``struct xdp_buff`` ``data``/``data_end``, ``xdp_md.ingress_ifindex``,
    ``xdp_md.rx_queue_index``).  ``offsets[i]`` and ``lengths[i]`` (uint32) locate
    frame ``i`` in ``data``; ``timestamps`` (float64 seconds) is ``None`` for the
    generator.  Treat every field as read-only: the generator's arrays are shared
    between batches (and flagged read-only).
    """

    data: bytes | bytearray | memoryview
    offsets: U32Array
    lengths: U32Array
    ifindex: int = 1
    rx_queue: int = 0
    timestamps: npt.NDArray[np.float64] | None = None

    def __len__(self) -> int:
        return len(self.offsets)

    def frame(self, i: int) -> bytes:
        """Frame ``i`` as bytes (a copy; for tests and printing, not for the fast path)."""
        off = int(self.offsets[i])
        return bytes(self.data[off : off + int(self.lengths[i])])

    def frames(self) -> list[bytes]:
        """Every frame as bytes (copies)."""
        return [self.frame(i) for i in range(len(self))]


class Source(Protocol):
    """What the engine polls: a generator, a capture file or a live interface."""

    name: str
    ifindex: int

    def read(self, max_frames: int) -> RxBatch | None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None: ...


class TokenBucket:
    """Pace batches to ``rate`` frames per second; the shaper of ``tc-tbf`` over whole batches.

    The kernel's ``net/sched/sch_tbf.c`` keeps ``tokens`` (here: frames) that
    refill at ``rate`` up to ``burst``; a packet leaves when enough tokens are
    there.  :meth:`take` asks for ``n`` frames, grants ``min(n, burst)`` and
    sleeps once until the bucket should hold that many; tokens go below zero
    only by a sleep cut short (the debt delays the next grant), and an
    overslept sleep is made up by the next batches and the long-run rate stays ``rate`` as long as
    the consumer keeps up.  ``clock`` and ``sleep`` are injectable so tests run
    on a fake clock.

    Context: process context; may sleep.  Not thread-safe (one per source).
    Raises :class:`InvalidArgument` for a rate or burst that is not positive.
    """

    __slots__ = ("rate", "burst", "_tokens", "_last", "_clock", "_sleep")

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not rate > 0 or math.isinf(rate):
            raise InvalidArgument(f"rate must be a positive number of frames/s, not {rate!r}")
        burst = max(1.0, rate * 0.01) if burst is None else float(burst)
        if not burst >= 1:
            raise InvalidArgument(f"burst must be at least one frame, not {burst!r}")
        self.rate = float(rate)
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = burst
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def take(self, n: int) -> int:
        """Grant up to ``n`` frames (at most ``burst``), sleeping until they are due; return the grant."""
        n = min(n, int(self.burst))
        if n <= 0:
            return 0
        self._refill()
        if self._tokens < n:
            # one sleep for the deficit; a sleep cut short leaves the bucket in debt, paid by the next take
            self._sleep((n - self._tokens) / self.rate)
            self._refill()
        self._tokens -= n
        return n


def header_length(version: int, proto: int) -> int:
    """Bytes of Ethernet + IP + L4 headers of a generated frame (``version`` 4 or 6, ``proto`` an IPPROTO_*)."""
    return 14 + (20 if version == 4 else 40) + _L4_LEN[IPPROTO_ICMP if proto == IPPROTO_ICMPV6 else proto]


def _parse_proto(proto: str | Mapping[str, float] | Sequence[str]) -> tuple[list[int], list[float]]:
    if isinstance(proto, str):
        items: list[tuple[str, float]] = [(p.strip(), 1.0) for p in proto.replace("/", ",").split(",") if p.strip()]
    elif isinstance(proto, Mapping):
        items = [(str(k), float(v)) for k, v in proto.items()]
    else:
        items = [(str(p), 1.0) for p in proto]
    if not items:
        raise InvalidArgument("proto: no protocol given")
    protos: list[int] = []
    weights: list[float] = []
    for name, w in items:
        key = name.lower()
        if key not in _PROTO_NAMES:
            raise InvalidArgument(f"proto: unknown protocol {name!r} (udp, tcp, icmp)")
        if not (w >= 0 and math.isfinite(w)):
            raise InvalidArgument(f"proto: weight of {name} must be a finite number >= 0, not {w!r}")
        protos.append(_PROTO_NAMES[key])
        weights.append(w)
    total = sum(weights)
    if total <= 0:
        raise InvalidArgument("proto: the weights sum to zero")
    return protos, [w / total for w in weights]


def _parse_sizes(sizes: int | str | Sequence[int]) -> list[int]:
    if isinstance(sizes, str):
        if sizes.strip().lower() == "imix":
            return list(IMIX)
        try:
            out = [int(s) for s in sizes.replace("/", ",").split(",") if s.strip()]
        except ValueError:
            raise InvalidArgument(f"sizes: {sizes!r} is not 'imix' or a list of integers") from None
    elif isinstance(sizes, int | np.integer):
        out = [int(sizes)]
    else:
        out = [int(s) for s in sizes]
    if not out:
        raise InvalidArgument("sizes: empty")
    for s in out:
        if not 1 <= s <= _MAX_FRAME:
            raise InvalidArgument(f"sizes: frame length {s} outside 1..{_MAX_FRAME}")
    return out


def _put16(rows: npt.NDArray[np.uint8], col: int, vals: npt.NDArray[Any] | int) -> None:
    v = np.asarray(vals, dtype=np.uint32)
    rows[:, col] = v >> 8
    rows[:, col + 1] = v & 0xFF


def _put32(rows: npt.NDArray[np.uint8], col: int, vals: npt.NDArray[Any]) -> None:
    _put16(rows, col, np.asarray(vals, dtype=np.uint64) >> 16)
    _put16(rows, col + 2, np.asarray(vals, dtype=np.uint64) & 0xFFFF)


def _wordsum(rows: npt.NDArray[np.uint8], a: int, b: int) -> npt.NDArray[np.uint64]:
    """Sum of the big-endian 16-bit words of ``rows[:, a:b]`` (``b - a`` even)."""
    hi = rows[:, a:b:2].astype(np.uint64)
    lo = rows[:, a + 1 : b : 2].astype(np.uint64)
    return np.asarray(((hi << 8) | lo).sum(axis=1, dtype=np.uint64), dtype=np.uint64)


def _csum(s: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """``csum_fold()``: fold a 64-bit one's-complement sum to 16 bits and invert it."""
    for _ in range(4):
        s = (s & 0xFFFF) + (s >> 16)
    return np.asarray((~s) & 0xFFFF, dtype=np.uint64)


class Generator:
    """Synthetic traffic: ``pktgen`` on the far end of the wire, one precomputed cycle replayed.

    The counterpart of ``net/core/pktgen.c`` driven by
    ``samples/pktgen/pktgen_sample05_flow_per_thread.sh``: ``flows`` distinct
    5-tuples sent round-robin (packet ``j`` of a cycle belongs to flow
    ``j % flows``), frame lengths cycling through ``sizes`` (without FCS;
    ``"imix"`` gives :data:`IMIX`), each flow's protocol drawn from ``proto``
    (``"udp"``, ``"udp,tcp"``, or weights ``{"udp": 3, "tcp": 1}``) and its IP
    version 6 with probability ``ipv6``.  ``udp_dport`` fixes the UDP destination
    port (pktgen's default 9 is the port xdp-bench ``l4-filter`` drops).
    ``rate`` limits to that many frames per second through a
    :class:`TokenBucket` (``read`` sleeps); ``count`` ends the stream after that
    many frames (``read`` then returns ``None``).  Same ``seed``, same frames.

    Context: process context; ``read`` sleeps only when ``rate`` is set; not
    thread-safe.  Raises :class:`InvalidArgument` for a bad parameter and
    :class:`TooBig` when one cycle would exceed 256 MiB.
    """

    def __init__(
        self,
        flows: int = 1024,
        sizes: int | str | Sequence[int] = 64,
        proto: str | Mapping[str, float] | Sequence[str] = "udp",
        ipv6: float = 0.0,
        rate: float | None = None,
        count: int | None = None,
        seed: int = 0,
        ifindex: int = 1,
        rx_queue: int = 0,
        udp_dport: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 1 <= int(flows) <= _MAX_FLOWS:
            raise InvalidArgument(f"flows must be in 1..{_MAX_FLOWS}, not {flows}")
        if not 0.0 <= float(ipv6) <= 1.0:
            raise InvalidArgument(f"ipv6 is a fraction in [0, 1], not {ipv6}")
        if count is not None and count < 0:
            raise InvalidArgument(f"count must be >= 0 or None, not {count}")
        if udp_dport is not None and not 0 <= udp_dport <= 0xFFFF:
            raise InvalidArgument(f"udp_dport must be in 0..65535, not {udp_dport}")
        if ifindex < 0 or rx_queue < 0:
            raise InvalidArgument("ifindex and rx_queue must be >= 0")
        self.name = "gen"
        self.flows = int(flows)
        self.sizes = _parse_sizes(sizes)
        self.protos, self.weights = _parse_proto(proto)
        self.ipv6 = float(ipv6)
        self.ifindex = int(ifindex)
        self.rx_queue = int(rx_queue)
        self.count = count
        self.seed = seed
        self.sent = 0
        self._closed = False
        self._bucket = TokenBucket(rate, clock=clock, sleep=sleep) if rate is not None else None
        self.rate = rate
        self._build(udp_dport)
        self._span = 0
        self._extend(_DEFAULT_SPAN)
        self._pos = 0

    # -- construction ---------------------------------------------------------------------------

    def _draw_flows(self, udp_dport: int | None) -> None:
        rng = np.random.default_rng(self.seed)
        n = self.flows
        self.flow_version = np.where(rng.random(n) < self.ipv6, 6, 4).astype(np.uint8)
        choice = rng.choice(len(self.protos), size=n, p=self.weights)
        self.flow_proto = np.asarray(self.protos, dtype=np.uint8)[choice]
        # 198.18.0.0/16 -> 198.19.0.0/16 for IPv4; the low 32 bits of 2001:2::/64 and 2001:2:0:1::/64 for IPv6
        saddr = rng.integers(0, 1 << 32, size=n, dtype=np.uint64)
        daddr = rng.integers(0, 1 << 32, size=n, dtype=np.uint64)
        sport = rng.integers(1024, 1 << 16, size=n, dtype=np.uint64)
        dport = rng.integers(1024, 1 << 16, size=n, dtype=np.uint64)
        if udp_dport is not None:
            dport[self.flow_proto == IPPROTO_UDP] = udp_dport
        v4 = self.flow_version == 4
        saddr[v4] = (0xC612 << 16) | (saddr[v4] & 0xFFFF)
        daddr[v4] = (0xC613 << 16) | (daddr[v4] & 0xFFFF)
        # distinct 5-tuples: redraw the source port (then address) of duplicates
        for _ in range(64):
            key = np.stack(
                [self.flow_version.astype(np.uint64), self.flow_proto.astype(np.uint64), saddr, daddr, sport, dport],
                axis=1,
            )
            rows = np.ascontiguousarray(key).view(np.dtype((np.void, key.shape[1] * 8))).ravel()
            _, first = np.unique(rows, return_index=True)
            dup = np.ones(n, dtype=bool)
            dup[first] = False
            if not dup.any():
                break
            k = int(dup.sum())
            sport[dup] = rng.integers(1024, 1 << 16, size=k, dtype=np.uint64)
            fresh = rng.integers(0, 1 << 32, size=k, dtype=np.uint64)
            saddr[dup] = np.where(v4[dup], (0xC612 << 16) | (fresh & 0xFFFF), fresh)
        self.flow_saddr = saddr
        self.flow_daddr = daddr
        self.flow_sport = sport
        self.flow_dport = dport

    def _build(self, udp_dport: int | None) -> None:
        self._draw_flows(udp_dport)
        nsz = len(self.sizes)
        hdr_min = (
            14 + np.where(self.flow_version == 4, 20, 40) + np.where(self.flow_proto == IPPROTO_TCP, 20, 8)
        ).astype(np.int64)
        mean = max(float(np.mean(self.sizes)), float(hdr_min.mean()))
        cycle = self.flows * nsz // math.gcd(self.flows, nsz)
        if cycle * mean > _CYCLE_BUDGET:
            cycle = max(self.flows, nsz)
        if cycle * mean > 4 * _CYCLE_BUDGET:
            raise TooBig(f"one cycle of {cycle} frames of ~{mean:.0f} bytes exceeds {4 * _CYCLE_BUDGET >> 20} MiB")
        j = np.arange(cycle)
        fi = j % self.flows
        size = np.maximum(np.asarray(self.sizes, dtype=np.int64)[j % nsz], hdr_min[fi])
        ends = np.cumsum(size)
        offs = ends - size
        buf = np.zeros(int(ends[-1]), dtype=np.uint8)
        ver = self.flow_version[fi]
        proto = self.flow_proto[fi]
        for v in (4, 6):
            for p in self.protos:
                idx = np.nonzero((ver == v) & (proto == p))[0]
                if len(idx) == 0:
                    continue
                rows = self._headers(v, p, fi[idx], size[idx])
                h = rows.shape[1]
                buf[offs[idx][:, None] + np.arange(h)] = rows
        self.cycle = cycle
        self._cycle_buf = buf
        self._cycle_offs = offs.astype(np.int64)
        self._cycle_lens = size.astype(np.uint32)

    def _headers(
        self, version: int, proto: int, fi: npt.NDArray[np.int64], size: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.uint8]:
        """Header bytes (Ethernet, IP, L4 with checksums) of the frames of flows ``fi``, lengths ``size``."""
        m = len(fi)
        l4proto = IPPROTO_ICMPV6 if (version == 6 and proto == IPPROTO_ICMP) else proto
        h = header_length(version, proto)
        rows = np.zeros((m, h), dtype=np.uint8)
        rows[:, 0:6] = np.frombuffer(_DST_MAC, dtype=np.uint8)
        rows[:, 6:12] = np.frombuffer(_SRC_MAC, dtype=np.uint8)
        saddr, daddr = self.flow_saddr[fi], self.flow_daddr[fi]
        sport, dport = self.flow_sport[fi], self.flow_dport[fi]
        size64 = size.astype(np.uint64)
        if version == 4:
            _put16(rows, 12, ETH_P_IP)
            l3, l4 = 14, 34
            rows[:, 14] = 0x45
            _put16(rows, 16, size64 - 14)  # tot_len
            rows[:, 20] = 0x40  # DF
            rows[:, 22] = 64  # ttl
            rows[:, 23] = l4proto
            _put32(rows, 26, saddr)
            _put32(rows, 30, daddr)
            _put16(rows, 24, _csum(_wordsum(rows, l3, l4)))
            pseudo = _wordsum(rows, 26, 34)
        else:
            _put16(rows, 12, ETH_P_IPV6)
            l3, l4 = 14, 54
            rows[:, 14] = 0x60
            _put16(rows, 18, size64 - 54)  # payload_len
            rows[:, 20] = l4proto
            rows[:, 21] = 64  # hop_limit
            rows[:, 22:24] = (0x20, 0x01)
            rows[:, 24:26] = (0x00, 0x02)
            _put32(rows, 34, saddr)
            rows[:, 38:40] = (0x20, 0x01)
            rows[:, 40:42] = (0x00, 0x02)
            rows[:, 46:48] = (0x00, 0x01)
            _put32(rows, 50, daddr)
            pseudo = _wordsum(rows, 22, 54)
        l4len = size64 - l4
        if proto == IPPROTO_UDP:
            _put16(rows, l4, sport)
            _put16(rows, l4 + 2, dport)
            _put16(rows, l4 + 4, l4len)
        elif proto == IPPROTO_TCP:
            _put16(rows, l4, sport)
            _put16(rows, l4 + 2, dport)
            _put32(rows, l4 + 4, (sport * 2654435761) & 0xFFFFFFFF)  # seq
            rows[:, l4 + 12] = 0x50  # doff 5
            rows[:, l4 + 13] = 0x10  # ACK
            _put16(rows, l4 + 14, 0xFFFF)  # window
        else:
            rows[:, l4] = 8 if version == 4 else 128  # echo request
            _put16(rows, l4 + 4, sport)  # identifier
            _put16(rows, l4 + 6, dport)  # sequence
        ck_col = {IPPROTO_UDP: 6, IPPROTO_TCP: 16}.get(proto, 2)
        s = _wordsum(rows, l4, h)  # the payload is zeros: it adds nothing
        if l4proto != IPPROTO_ICMP:  # ICMPv4 has no pseudo-header
            s = s + pseudo + (l4len >> 16) + (l4len & 0xFFFF) + l4proto
        ck = _csum(s)
        if proto == IPPROTO_UDP:
            ck = np.where(ck == 0, 0xFFFF, ck)  # RFC 768: a computed zero is sent as all ones
        _put16(rows, l4 + ck_col, ck)
        return rows

    def _extend(self, span: int) -> None:
        """Lay out the cycle followed by its first ``span`` frames (wrapping), so reads never split."""
        c = self.cycle
        reps, rest = divmod(span, c)
        total_bytes = int(self._cycle_buf.size)
        parts = [self._cycle_buf] * (1 + reps)
        tail_bytes = int(self._cycle_offs[rest]) if rest else 0
        parts.append(self._cycle_buf[:tail_bytes])
        data = np.concatenate(parts)
        k = np.arange(c + span)
        offs = self._cycle_offs[k % c] + (k // c) * total_bytes
        if offs[-1] + int(self._cycle_lens.max()) > 0xFFFFFFFF:
            raise TooBig("the generator buffer would exceed 4 GiB")
        offsets = offs.astype(np.uint32)
        lengths = self._cycle_lens[k % c]
        offsets.setflags(write=False)
        lengths.setflags(write=False)
        self._data = data.tobytes()
        self._offsets = offsets
        self._lengths = lengths
        self._span = span

    # -- the source interface -------------------------------------------------------------------

    def read(self, max_frames: int) -> RxBatch | None:
        """Return the next up to ``max_frames`` frames; ``None`` once ``count`` frames were produced.

        The counterpart of one NAPI poll of a ring that pktgen keeps full.
        Context: sleeps when ``rate`` is set (until the batch is due); else
        never blocks.  The batch shares the generator's read-only buffer.
        """
        if self._closed:
            return None
        n = max_frames
        if self.count is not None:
            left = self.count - self.sent
            if left <= 0:
                return None
            n = min(n, left)
        if n <= 0:
            return RxBatch(self._data, self._offsets[:0], self._lengths[:0], self.ifindex, self.rx_queue)
        if n > self._span:
            self._extend(n)
        if self._bucket is not None:
            n = self._bucket.take(n)
        pos = self._pos
        end = pos + n
        self._pos = end % self.cycle
        self.sent += n
        return RxBatch(self._data, self._offsets[pos:end], self._lengths[pos:end], self.ifindex, self.rx_queue)

    def close(self) -> None:
        """Stop the stream: every later ``read`` returns ``None``."""
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Generator(flows={self.flows}, sizes={self.sizes}, cycle={self.cycle}, rate={self.rate}, "
            f"count={self.count}, sent={self.sent})"
        )


_GEN_KEYS: dict[str, Callable[[str], Any]] = {
    "flows": int,
    "sizes": str,
    "size": str,
    "proto": str,
    "ipv6": float,
    "rate": float,
    "count": int,
    "seed": int,
    "ifindex": int,
    "rx_queue": int,
    "udp_dport": int,
}


def _parse_gen_options(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in _GEN_KEYS:
            raise InvalidArgument(f"gen option {item!r}: expected key=value with key one of {', '.join(_GEN_KEYS)}")
        try:
            out["sizes" if key == "size" else key] = _GEN_KEYS[key](value.strip())
        except ValueError:
            raise InvalidArgument(f"gen option {item!r}: bad value") from None
    return out


def open_source(spec: str = "gen", **kw: Any) -> Source:
    """Open the source a spec names: ``gen``/``generator``, ``pcap:FILE`` or ``iface:NAME``.

    The counterpart of choosing what feeds the interface xdp-bench attaches to
    (pktgen, tcpreplay, real traffic).  ``gen`` takes options inline too,
    ``gen:flows=16,sizes=64/1518,proto=udp/tcp,ipv6=0.5,rate=1e5,count=1000,seed=1``
    (list values separated by ``/``); keyword arguments go to the class and win
    over inline options.  A ``pcap:`` file is pcap or pcapng, told apart by its
    magic number.

    Context: process context; opening an interface needs CAP_NET_RAW.
    Raises :class:`InvalidArgument` for an unknown spec, and whatever the
    source's constructor raises.
    """
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind in ("gen", "generator"):
        opts = _parse_gen_options(arg)
        opts.update(kw)
        return Generator(**opts)
    if kind == "pcap":
        if not arg:
            raise InvalidArgument("pcap: source needs a file name (pcap:FILE)")
        from percpu.xdp.pcap import PcapSource

        return PcapSource(arg, **kw)
    if kind in ("iface", "if", "dev"):
        if not arg:
            raise InvalidArgument("iface: source needs an interface name (iface:NAME)")
        from percpu.xdp.afpacket import AfPacketSource

        return AfPacketSource(arg, **kw)
    raise InvalidArgument(f"unknown packet source {spec!r} (gen, pcap:FILE, iface:NAME)")
