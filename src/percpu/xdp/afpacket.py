"""A live interface as a packet source: an AF_PACKET socket with a TPACKET_V3 receive ring.

The counterpart of libpcap's Linux capture (``pcap-linux.c``,
``pcap_read_linux_mmap_v3()``) over the kernel's ``net/packet/af_packet.c``
(``tpacket_rcv()``, ``prb_retire_current_block()``): the kernel copies every
frame of the interface into blocks of a ring shared with user space, and
hands a block over when it is full or its timer (``tp_retire_blk_tov``) fires.
The XDP program of a real interface would see the frame earlier (in the
driver, before the stack); here it sees the same bytes, copied out of the ring::

    mmap'ed ring = nr_blocks blocks of block_size bytes
    +--------------------------------+--------------------------------+----
    | tpacket_block_desc             | block 1 ...                    |
    |  version, offset_to_priv       |                                |
    |  hdr.bh1: block_status ------- TP_STATUS_KERNEL (0): the kernel fills it
    |           num_pkts                               TP_STATUS_USER (1): ours to read
    |           offset_to_first_pkt --+                                |
    |  ...                            |                               |
    |  tpacket3_hdr  <----------------+  tp_next_offset --+           |
    |   tp_sec tp_nsec tp_snaplen tp_len tp_status        |           |
    |   tp_mac (frame offset from this header) ...        |           |
    |   sockaddr_ll (sll_pkttype at +58)                  |           |
    |   frame bytes at tp_mac                             |           |
    |  tpacket3_hdr  <------------------------------------+           |
    +--------------------------------+--------------------------------+----

``read(n)`` walks the blocks the kernel has retired, in ring order, copies up
to ``n`` frames into one ``bytearray`` (with their ``tp_sec``/``tp_nsec``
timestamps), and gives each fully read block back (``block_status =
TP_STATUS_KERNEL``).  With nothing ready it ``poll()`` s for ``poll_timeout_ms``
and returns an empty batch if still nothing came (the caller's idle loop).
Frames the host sends (``PACKET_OUTGOING``) are skipped, as XDP sees only
ingress; a VLAN tag the NIC stripped (``TP_STATUS_VLAN_VALID``) is put back
into the frame, as libpcap does.

Memory ordering: the kernel publishes a block with ``smp_wmb()`` before the
status store (``prb_flush_block()``/``prb_close_block()``) and reads the status
we store back.  Python reads the status word with an ordinary load before
reading the block, and stores ``TP_STATUS_KERNEL`` after its last read of the
block; on x86-64 (TSO) loads are not reordered with loads nor stores with
earlier loads, which is the acquire/release pair libpcap writes with
``__atomic_load_n(..., __ATOMIC_ACQUIRE)``/``__atomic_store_n(..., __ATOMIC_RELEASE)``.
On weakly ordered CPUs this module would need the C core's atomics.

Synchronization: one reader per ring (the socket's owner); with ``fanout`` several
sockets, each with its own ring, share an interface's traffic (``PACKET_FANOUT``).
"""

from __future__ import annotations

import errno as _errno
import mmap
import select
import socket
import struct
from collections.abc import Iterable
from types import TracebackType
from typing import Self

import numpy as np

from percpu.errors import InvalidArgument, NoDevice, NotPermitted, from_errno
from percpu.xdp.sources import RxBatch

__all__ = ["AfPacketSource", "send", "ETH_P_ALL"]

# include/uapi/linux/if_packet.h, include/uapi/linux/if_ether.h
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_VERSION = 10
PACKET_FANOUT = 18
PACKET_IGNORE_OUTGOING = 23
PACKET_MR_PROMISC = 1
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1 << 0
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
PACKET_OUTGOING = 4
TPACKET_ALIGNMENT = 16
FANOUT_MODES = {"hash": 0, "lb": 1, "cpu": 2, "rollover": 3, "rnd": 4, "qm": 5}

# struct tpacket_block_desc { __u32 version; __u32 offset_to_priv; struct tpacket_hdr_v1 bh1; }
# struct tpacket_hdr_v1 { __u32 block_status, num_pkts, offset_to_first_pkt, blk_len; __aligned_u64 seq_num; ... }
_BLOCK_STATUS = 8
_BLOCK = struct.Struct("=III")  # block_status, num_pkts, offset_to_first_pkt (at +8)
# struct tpacket3_hdr { __u32 tp_next_offset, tp_sec, tp_nsec, tp_snaplen, tp_len, tp_status;
#                       __u16 tp_mac, tp_net; struct tpacket_hdr_variant1 { __u32 tp_rxhash, tp_vlan_tci;
#                       __u16 tp_vlan_tpid, tp_padding; }; __u8 tp_padding[8]; }   (48 bytes)
_PKT = struct.Struct("=IIIIIIHHIIH")
_SLL_PKTTYPE = 48 + 10  # TPACKET_ALIGN(sizeof(struct tpacket3_hdr)) + offsetof(struct sockaddr_ll, sll_pkttype)
_REQ3 = struct.Struct("=IIIIIII")  # struct tpacket_req3


def _ifindex(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise NoDevice(f"no network interface {ifname!r} (if_nametoindex failed)", _errno.ENODEV) from None


def _packet_socket(proto: int) -> socket.socket:
    try:
        return socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
    except PermissionError:
        raise NotPermitted(
            "an AF_PACKET socket needs CAP_NET_RAW (run as root or grant the capability: "
            "setcap cap_net_raw+ep on the interpreter)",
            _errno.EPERM,
        ) from None


class AfPacketSource:
    """Receive an interface's frames from a TPACKET_V3 mmap ring; libpcap's live capture on Linux.

    The counterpart of ``pcap_activate()`` with ``PACKET_RX_RING`` /
    ``TPACKET_V3`` (``pcap-linux.c``).  The ring is ``nr_blocks`` blocks of
    ``block_size`` bytes (a multiple of the page size), each holding frames of
    up to ``frame_size`` bytes (a multiple of 16); a block is handed over when
    full or after ``timeout_ms``.  ``promisc`` adds a ``PACKET_MR_PROMISC``
    membership (dropped with the socket); ``fanout`` joins fanout group
    ``fanout`` with ``fanout_mode`` (``hash``, ``lb``, ``cpu``, ``rollover``,
    ``rnd``, ``qm``).  ``rx_queue`` is what batches report (a packet socket does
    not see the NIC queue).

    Context: process context; ``read`` may sleep in ``poll()`` up to
    ``poll_timeout_ms``.  Raises :class:`NoDevice` for an unknown interface,
    :class:`NotPermitted` without CAP_NET_RAW, :class:`InvalidArgument` for ring
    geometry the kernel refuses, and other percpu errors for other failures.
    """

    def __init__(
        self,
        ifname: str,
        block_size: int = 1 << 20,
        nr_blocks: int = 16,
        frame_size: int = 2048,
        timeout_ms: int = 10,
        promisc: bool = False,
        fanout: int | None = None,
        fanout_mode: str = "hash",
        poll_timeout_ms: int = 100,
        rx_queue: int = 0,
    ) -> None:
        page = mmap.PAGESIZE
        if block_size <= 0 or block_size % page:
            raise InvalidArgument(f"block_size {block_size} must be a positive multiple of the page size {page}")
        if frame_size < 64 or frame_size % TPACKET_ALIGNMENT or frame_size > block_size:
            raise InvalidArgument(f"frame_size {frame_size} must be a multiple of 16 in 64..block_size")
        if nr_blocks <= 0 or timeout_ms < 0 or poll_timeout_ms < 0:
            raise InvalidArgument("nr_blocks must be positive, timeouts >= 0")
        if fanout is not None and (fanout_mode not in FANOUT_MODES or not 0 <= fanout <= 0xFFFF):
            raise InvalidArgument(f"fanout group {fanout} / mode {fanout_mode!r} invalid ({', '.join(FANOUT_MODES)})")
        self.ifname = ifname
        self.name = ifname
        self.ifindex = _ifindex(ifname)
        self.rx_queue = rx_queue
        self.block_size = block_size
        self.nr_blocks = nr_blocks
        self.poll_timeout_ms = poll_timeout_ms
        self.dropped_outgoing = 0
        self._closed = False
        self._block = 0  # the ring block to read next
        self._pkt_left = 0  # frames of self._block not yet read (when it is partly read)
        self._pkt_off = 0  # offset in the ring of the next frame of self._block
        # protocol 0: receive nothing until the ring exists, then bind to the interface (as libpcap does)
        self._sock = _packet_socket(0)
        try:
            self._setup(frame_size, timeout_ms, promisc, fanout, fanout_mode)
        except BaseException:
            self._sock.close()
            raise

    def _setsockopt(self, opt: int, value: int | bytes, what: str) -> None:
        try:
            self._sock.setsockopt(SOL_PACKET, opt, value)
        except OSError as e:
            code = e.errno or _errno.EIO
            raise from_errno(code, f"setsockopt(SOL_PACKET, {what}) on {self.ifname}: {e.strerror}") from None

    def _setup(self, frame_size: int, timeout_ms: int, promisc: bool, fanout: int | None, fanout_mode: str) -> None:
        self._setsockopt(PACKET_VERSION, TPACKET_V3, "PACKET_VERSION")
        frames = (self.block_size // frame_size) * self.nr_blocks
        req = _REQ3.pack(self.block_size, self.nr_blocks, frame_size, frames, timeout_ms, 0, 0)
        self._setsockopt(PACKET_RX_RING, req, "PACKET_RX_RING")
        try:
            self._setsockopt(PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING")
        except OSError:  # before Linux 4.20: read() skips them by sll_pkttype
            pass
        self._ring = mmap.mmap(
            self._sock.fileno(), self.block_size * self.nr_blocks, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
        )
        self._sock.bind((self.ifname, ETH_P_ALL))
        if promisc:
            # struct packet_mreq { int mr_ifindex; unsigned short mr_type, mr_alen; unsigned char mr_address[8]; }
            mreq = struct.pack("=iHH8s", self.ifindex, PACKET_MR_PROMISC, 0, b"")
            self._setsockopt(PACKET_ADD_MEMBERSHIP, mreq, "PACKET_ADD_MEMBERSHIP")
        if fanout is not None:
            self._setsockopt(PACKET_FANOUT, fanout | (FANOUT_MODES[fanout_mode] << 16), "PACKET_FANOUT")
        self._poller = select.poll()
        self._poller.register(self._sock.fileno(), select.POLLIN | select.POLLERR)

    def fileno(self) -> int:
        """The socket's descriptor (for the caller's own ``poll``/``epoll``)."""
        return self._sock.fileno()

    def _gather(self, n: int, out: bytearray, lens: list[int], ts: list[float]) -> None:
        ring = self._ring
        unpack_pkt = _PKT.unpack_from
        while len(lens) < n:
            base = self._block * self.block_size
            if self._pkt_left == 0:
                status, num, first = _BLOCK.unpack_from(ring, base + _BLOCK_STATUS)
                if not status & TP_STATUS_USER:
                    return
                if num == 0:
                    self._release(base)
                    continue
                self._pkt_left = num
                self._pkt_off = base + first
            while self._pkt_left and len(lens) < n:
                off = self._pkt_off
                nxt, sec, nsec, snap, _len, status, mac, _net, _hash, tci, tpid = unpack_pkt(ring, off)
                self._pkt_left -= 1
                self._pkt_off = off + nxt
                if ring[off + _SLL_PKTTYPE] == PACKET_OUTGOING:
                    self.dropped_outgoing += 1
                    continue
                start = off + mac
                if status & TP_STATUS_VLAN_VALID and snap >= 12:
                    tpid = tpid if status & TP_STATUS_VLAN_TPID_VALID else 0x8100
                    out += ring[start : start + 12]
                    out += struct.pack("!HH", tpid, tci)
                    out += ring[start + 12 : start + snap]
                    lens.append(snap + 4)
                else:
                    out += ring[start : start + snap]
                    lens.append(snap)
                ts.append(sec + nsec * 1e-9)
            if self._pkt_left == 0:
                self._release(base)

    def _release(self, base: int) -> None:
        """Give the block back: ``block_status = TP_STATUS_KERNEL`` (after the last read of it)."""
        struct.pack_into("=I", self._ring, base + _BLOCK_STATUS, TP_STATUS_KERNEL)
        self._block = (self._block + 1) % self.nr_blocks

    def read(self, max_frames: int) -> RxBatch | None:
        """Copy up to ``max_frames`` received frames out of the ring; an empty batch if none came in time.

        The counterpart of ``pcap_read_linux_mmap_v3()``.  Returns ``None``
        once closed.  Context: process context; sleeps in ``poll()`` up to
        ``poll_timeout_ms`` when no block is ready.  Raises :class:`NoDevice`
        when the interface went away (``POLLERR``/``ENETDOWN``).
        """
        if self._closed:
            return None
        out = bytearray()
        lens: list[int] = []
        ts: list[float] = []
        if max_frames > 0:
            self._gather(max_frames, out, lens, ts)
            if not lens and self.poll_timeout_ms:
                events = self._poller.poll(self.poll_timeout_ms)
                if any(ev & select.POLLERR for _, ev in events):
                    try:
                        err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    except OSError:
                        err = _errno.EIO
                    if err:
                        raise NoDevice(f"{self.ifname}: socket error {_errno.errorcode.get(err, err)}", err)
                self._gather(max_frames, out, lens, ts)
        lengths = np.array(lens, dtype=np.uint32)
        offsets = np.zeros(len(lens), dtype=np.uint32)
        if len(lens) > 1:
            np.cumsum(lengths[:-1], out=offsets[1:])
        return RxBatch(out, offsets, lengths, self.ifindex, self.rx_queue, np.array(ts, dtype=np.float64))

    def stats(self) -> tuple[int, int]:
        """``(packets, drops)`` since the last call: ``getsockopt(PACKET_STATISTICS)`` (``tpacket_stats_v3``)."""
        raw = self._sock.getsockopt(SOL_PACKET, 6, 12)  # PACKET_STATISTICS
        packets, drops, _freeze = struct.unpack("=III", raw)
        return packets, drops

    def close(self) -> None:
        """Unmap the ring and close the socket; later reads return ``None``."""
        if self._closed:
            return
        self._closed = True
        try:
            self._ring.close()
        finally:
            self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AfPacketSource({self.ifname!r}, ifindex={self.ifindex}, blocks={self.nr_blocks}x{self.block_size})"


def send(ifname: str, frames: Iterable[bytes | bytearray | memoryview]) -> int:
    """Transmit raw Ethernet frames on ``ifname``; the counterpart of ``packet_sendmsg()`` on a SOCK_RAW socket.

    Each frame goes out as given (the kernel adds no header; a frame shorter
    than the interface's minimum is padded by the driver, if at all).  Returns
    the number of frames sent.  Context: process context; blocks while the
    device queue is full.  Raises :class:`NoDevice`, :class:`NotPermitted` as
    :class:`AfPacketSource` does.
    """
    _ifindex(ifname)
    sock = _packet_socket(0)
    n = 0
    with sock:
        sock.bind((ifname, 0))
        for frame in frames:
            sock.send(frame)
            n += 1
    return n
