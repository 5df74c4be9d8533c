"""The CPU-selection programs of ``xdp-bench redirect-cpu``, as numpy batch programs.

Mirrors xdp-tools ``xdp-bench/xdp_redirect_cpumap.bpf.c`` (``cpumap_no_touch``
... ``cpumap_l4_dport``, the ``--program-mode`` values) and the SuperFastHash of
``xdp-bench/hash_func01.h``.  The C core has the same programs
(``csrc/xdpparse.c``, run per frame by the engine); the functions here are
their vectorised twins, tested equal to them frame for frame, and the examples
to copy for a program of one's own.

A frame is parsed once, in C, into a 32-byte record (:data:`HDR_DTYPE`, the C
``struct pk_xdp_hdr``); a batch program maps an array of records to an action
and a ``cpus_available`` index per frame::

    RxBatch(data, offsets, lengths)
        | parse()                                 _core.xdp_parse, C
        v
    hdrs: ndarray[HDR_DTYPE], one record per frame
        | batch_program("l4-hash", cpus_count)    numpy, whole batch at once
        v
    actions: ndarray[uint8]  XDP_REDIRECT / XDP_DROP / XDP_PASS / XDP_ABORTED
    keys:    ndarray[uint32] index into cpus_available (REDIRECT only, else 0)

    record (little-endian, host-order values)
    +0 len u32 | +4 eth_proto u16 | +6 ip_proto u8 | +7 flags u8
    +8 saddr u32 | +12 daddr u32 | +16 cpu_hash_in u32
    +20 sport u16 | +22 dport u16 | +24 ifindex u32 | +28 rxq u32

The caller resolves ``cpu = cpus_available[key]``; a ``cpu >= nr_cpus`` counts
an ``issue`` and becomes ``XDP_ABORTED`` (xdp-bench's error/s column); an
``XDP_DROP`` here is the program's own drop (the ``dropped`` of ``rx_cnt``).

Quirks of the BPF source that are kept: the programs look at the first two
VLAN tags only and at the fixed IPv6 header (no extension headers); an IPv4 or
IPv6 header cut short counts as protocol 0; ``l4-proto``/``l4-filter`` send ARP
and other non-IP frames to index 1 (``ip_proto`` starts as ``IPPROTO_UDP`` and
only IP frames overwrite it); a frame ``parse_eth()`` refuses (shorter than 14
bytes, EtherType below 0x600, a cut VLAN tag) is ``XDP_PASS``; ``x % 0`` is
``x`` (``BPF_MOD``).

Deviations, all deliberate (the record does not keep the bytes those quirks
read, and each only changes frames no sane stack sends):

- IPv4 ports are read after ``ihl * 4`` bytes; the BPF reads them at offset 20,
  inside the options when there are any.
- ``l4-sport``/``l4-dport`` use TCP ports over IPv6 too; the BPF's
  ``get_port_ipv6_tcp()`` tests ``nexthdr == IPPROTO_UDP``, so there every IPv6
  TCP frame maps to port 0.
- ``l4-filter`` drops UDP port 9 of IPv4 only; the BPF also runs its IPv4
  port reader over IPv6 and non-IP frames, reading address bytes as a protocol.
- ``round-robin`` wraps with ``>=`` (the later xdp-tools fix), not ``==``.

Synchronization: none; a batch program is called by one RX thread (the
round-robin iterator in its closure is that RX CPU's ``cpus_iterator`` slot).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from percpu import _core
from percpu.errors import InvalidArgument

__all__ = [
    "F_ETH",
    "F_IPV4",
    "F_IPV6",
    "F_PORTS",
    "HASH_INITVAL",
    "HDR_DTYPE",
    "MODES",
    "REMOTE_ACTIONS",
    "XDP_ABORTED",
    "XDP_DROP",
    "XDP_PASS",
    "XDP_REDIRECT",
    "XDP_TX",
    "BatchProgram",
    "batch_program",
    "mode_number",
    "parse",
    "super_fast_hash_np",
]

#: ``struct pk_xdp_hdr`` of ``csrc/xdpparse.h``: one parsed frame.
HDR_DTYPE: Final = np.dtype(
    [
        ("len", "<u4"),
        ("eth_proto", "<u2"),
        ("ip_proto", "u1"),
        ("flags", "u1"),
        ("saddr", "<u4"),
        ("daddr", "<u4"),
        ("cpu_hash_in", "<u4"),
        ("sport", "<u2"),
        ("dport", "<u2"),
        ("ifindex", "<u4"),
        ("rxq", "<u4"),
    ]
)
assert HDR_DTYPE.itemsize == 32

#: ``xdp-bench redirect-cpu --program-mode`` values; the index is the C mode number.
MODES: Final = ("no-touch", "touch", "round-robin", "l4-proto", "l4-filter", "l4-hash", "l4-sport", "l4-dport")
#: ``--remote-action`` values: the second program installed in every cpumap entry.
REMOTE_ACTIONS: Final = ("disabled", "drop", "pass", "redirect")

# enum xdp_action
XDP_ABORTED: Final = 0
XDP_DROP: Final = 1
XDP_PASS: Final = 2
XDP_TX: Final = 3
XDP_REDIRECT: Final = 4

# HDR_DTYPE["flags"]
F_ETH: Final = 0x01  #: parse_eth() succeeded
F_IPV4: Final = 0x02  #: a whole 20-byte IPv4 header
F_IPV6: Final = 0x04  #: a whole 40-byte IPv6 header
F_PORTS: Final = 0x08  #: a whole TCP (20 bytes) or UDP (8 bytes) header: sport/dport valid

#: ``INITVAL`` of the BPF source, the hash seed before ``+ protocol``.
HASH_INITVAL: Final = 15485863

_ETH_P_802_3_MIN = 0x0600
_ETH_P_IP = 0x0800
_ETH_P_IPV6 = 0x86DD
_ETH_HLEN = 14
_IPPROTO_ICMP = 1
_IPPROTO_UDP = 17
_IPPROTO_ICMPV6 = 58
_PKTGEN_PORT = 9  # the "DDoS" l4-filter drops: UDP discard, pktgen's default

Actions = NDArray[np.uint8]
Keys = NDArray[np.uint32]
Hdrs = NDArray[Any]  # of HDR_DTYPE

#: ``hdrs -> (actions, keys)``: what :func:`batch_program` returns.
BatchProgram = Callable[[Hdrs], tuple[Actions, Keys]]


def mode_number(mode: str) -> int:
    """The C number of a ``--program-mode`` name (0 ``no-touch`` ... 7 ``l4-dport``).

    Raises InvalidArgument for a name xdp-bench does not know.
    """
    try:
        return MODES.index(mode)
    except ValueError:
        raise InvalidArgument(f"unknown program mode {mode!r} (one of {', '.join(MODES)})") from None


def parse(data: Any, offsets: ArrayLike, lengths: ArrayLike) -> Hdrs:
    """Parse every frame of a batch into one :data:`HDR_DTYPE` record each.

    What xdp-bench's ``parse_eth()``, ``get_proto_ipv4/6()`` and ``get_port_*()``
    read, done once per frame in C (``_core.xdp_parse``).  ``data`` is any
    contiguous buffer holding the frames; ``offsets``/``lengths`` locate frame
    ``i`` (converted to uint32).  ``ifindex``/``rxq`` are 0 (the caller's).

    Context: any thread; releases the GIL for batches of 64 frames or more.
    Raises InvalidArgument if a frame lies outside ``data`` or the two arrays
    differ in length.
    """
    off = np.ascontiguousarray(offsets, dtype=np.uint32)
    lens = np.ascontiguousarray(lengths, dtype=np.uint32)
    # a bytearray: the records are writable (the engine fills ifindex/rxq) without numpy's
    # field-by-field copy of a record array
    return np.frombuffer(bytearray(_core.xdp_parse(data, off.data, lens.data)), dtype=HDR_DTYPE)


def super_fast_hash_np(values: ArrayLike, initval: ArrayLike) -> NDArray[np.uint32]:
    """SuperFastHash of 4-byte inputs, elementwise: ``SuperFastHash((char *)&v, 4, initval)``.

    Mirrors ``hash_func01.h`` of xdp-bench for ``len == 4``: one round of the
    main loop over the two native 16-bit halves (little-endian host), no tail,
    then the avalanche.  ``initval`` broadcasts against ``values``; the result
    is at least one-dimensional (uint32 arrays wrap silently, scalars would warn).
    """
    v = np.array(values, dtype=np.uint32, ndmin=1)
    # main loop, one round: hash += get16bits(data); tmp = get16bits(data + 2) << 11 ^ hash; ...
    h = np.array(initval, dtype=np.uint32, ndmin=1) + (v & np.uint32(0xFFFF))
    tmp = ((v >> np.uint32(16)) << np.uint32(11)) ^ h
    h = (h << np.uint32(16)) ^ tmp
    h += h >> 11
    # force "avalanching" of final 127 bits
    h ^= h << 3
    h += h >> 5
    h ^= h << 4
    h += h >> 17
    h ^= h << 25
    h += h >> 6
    return h


def _bpf_mod(x: NDArray[np.uint32], n: int) -> NDArray[np.uint32]:
    """``x % n`` as BPF_MOD computes it: ``x % 0`` leaves ``x``."""
    return x % np.uint32(n) if n else x


def _redirect(eth_ok: NDArray[np.bool_], keys: NDArray[np.uint32]) -> tuple[Actions, Keys]:
    """XDP_REDIRECT to ``keys`` where parse_eth() succeeded, XDP_PASS ("just skip") elsewhere."""
    actions = np.where(eth_ok, np.uint8(XDP_REDIRECT), np.uint8(XDP_PASS))
    return actions, np.where(eth_ok, keys, np.uint32(0))


def _no_touch(hdrs: Hdrs) -> tuple[Actions, Keys]:
    """cpumap_no_touch: every frame to cpus_available[0], the data never read."""
    n = len(hdrs)
    return np.full(n, XDP_REDIRECT, dtype=np.uint8), np.zeros(n, dtype=np.uint32)


def _touch(hdrs: Hdrs) -> tuple[Actions, Keys]:
    """cpumap_touch_data: cpus_available[0], dropping non-802.3 EtherTypes (< 0x600)."""
    actions = np.full(len(hdrs), XDP_REDIRECT, dtype=np.uint8)
    # parse_eth() refused the frame and eth_proto kept its outer EtherType
    actions[((hdrs["flags"] & F_ETH) == 0) & (hdrs["eth_proto"] < _ETH_P_802_3_MIN)] = XDP_DROP
    actions[hdrs["len"] < _ETH_HLEN] = XDP_ABORTED  # "Validate packet length is minimum Eth header size"
    return actions, np.zeros(len(hdrs), dtype=np.uint32)


# The "Choose CPU based on L4 protocol" switch of cpumap_l4_proto as a table: protocol -> index.
_L4_PROTO_INDEX = np.zeros(256, dtype=np.uint32)  # TCP and the rest: 0
_L4_PROTO_INDEX[_IPPROTO_UDP] = 1
_L4_PROTO_INDEX[[_IPPROTO_ICMP, _IPPROTO_ICMPV6]] = 2


def _l4_proto_keys(hdrs: Hdrs) -> tuple[NDArray[np.uint8], NDArray[np.uint32]]:
    """The protocol cpumap_l4_proto switches on, and the index it picks."""
    is_ip = (hdrs["eth_proto"] == _ETH_P_IP) | (hdrs["eth_proto"] == _ETH_P_IPV6)
    proto = np.where(is_ip, hdrs["ip_proto"], np.uint8(_IPPROTO_UDP))  # ip_proto = IPPROTO_UDP initially
    return proto, _L4_PROTO_INDEX[proto]


def _l4_proto(hdrs: Hdrs) -> tuple[Actions, Keys]:
    """cpumap_l4_proto: TCP and unknown to index 0, UDP (and non-IP) to 1, ICMP/ICMPv6 to 2."""
    _, keys = _l4_proto_keys(hdrs)
    return _redirect((hdrs["flags"] & F_ETH) != 0, keys)


def _l4_filter(hdrs: Hdrs) -> tuple[Actions, Keys]:
    """cpumap_l4_filter: as l4-proto, and XDP_DROP for UDP destination port 9 (pktgen)."""
    proto, keys = _l4_proto_keys(hdrs)
    flags = hdrs["flags"]
    actions, keys = _redirect((flags & F_ETH) != 0, keys)
    pktgen = (
        (actions == XDP_REDIRECT)
        & (proto == _IPPROTO_UDP)
        & ((flags & (F_IPV4 | F_PORTS)) == (F_IPV4 | F_PORTS))
        & (hdrs["dport"] == _PKTGEN_PORT)
    )
    actions[pktgen] = XDP_DROP
    keys[pktgen] = 0
    return actions, keys


def _l4_hash(cpus_count: int) -> BatchProgram:
    def l4_hash(hdrs: Hdrs) -> tuple[Actions, Keys]:
        """cpumap_l4_hash: SuperFastHash(saddr + daddr, INITVAL + protocol) % cpus_count.

        Symmetric in source and destination; ARP, non-IP and cut IP headers hash to 0.
        """
        seeds = hdrs["ip_proto"] + np.uint32(HASH_INITVAL)
        hashes = super_fast_hash_np(hdrs["cpu_hash_in"], seeds)
        hashes[(hdrs["flags"] & (F_IPV4 | F_IPV6)) == 0] = 0  # ARP, non-IP, cut IP header
        return _redirect((hdrs["flags"] & F_ETH) != 0, _bpf_mod(hashes, cpus_count))

    return l4_hash


def _l4_port(cpus_count: int, field: str) -> BatchProgram:
    def l4_port(hdrs: Hdrs) -> tuple[Actions, Keys]:
        """cpumap_l4_sport / cpumap_l4_dport: the TCP or UDP port % cpus_count (no port: 0)."""
        has_ports = (hdrs["flags"] & F_PORTS) != 0
        ports = np.where(has_ports, hdrs[field], np.uint16(0)).astype(np.uint32)
        return _redirect((hdrs["flags"] & F_ETH) != 0, _bpf_mod(ports, cpus_count))

    return l4_port


def _round_robin(cpus_count: int, rr_iter: int) -> BatchProgram:
    it = rr_iter

    def round_robin(hdrs: Hdrs) -> tuple[Actions, Keys]:
        """cpumap_round_robin: index = the iterator, which then steps and wraps at cpus_count."""
        nonlocal it
        n = len(hdrs)
        step = np.arange(n, dtype=np.uint64)
        if n == 0:
            keys = np.zeros(0, dtype=np.uint64)
        elif it < cpus_count:
            keys = (it + step) % cpus_count
            it = (it + n) % cpus_count
        else:  # the iterator is past cpus_count (which shrank, or is 0): it once, then 0, 1, ...
            keys = np.zeros(n, dtype=np.uint64)
            keys[0] = it
            if cpus_count:
                keys[1:] = step[: n - 1] % cpus_count
            it = (n - 1) % cpus_count if cpus_count else 0
        return np.full(n, XDP_REDIRECT, dtype=np.uint8), keys.astype(np.uint32)

    return round_robin


def batch_program(mode: str, cpus_count: int, *, rr_iter: int = 0) -> BatchProgram:
    """The ``xdp-bench redirect-cpu --program-mode`` program ``mode`` as a batch program.

    Mirrors ``cpumap_no_touch`` ... ``cpumap_l4_dport`` of
    ``xdp-bench/xdp_redirect_cpumap.bpf.c``; equal, frame for frame, to the C
    built-in (``_core.xdp_builtin_run``).  The result maps an array of
    :data:`HDR_DTYPE` records to ``(actions uint8, keys uint32)``, ``keys``
    indexing ``cpus_available`` (0 unless the action is ``XDP_REDIRECT``).
    ``cpus_count`` is the number of ``--cpu`` entries (the ``cpus_count`` map);
    ``round-robin`` keeps its iterator, starting at ``rr_iter``, in the closure.

    Context: a program is called by one thread at a time (round-robin mutates
    its iterator).  Raises InvalidArgument for an unknown mode or a count or
    iterator outside ``0..2**32-1``.
    """
    number = mode_number(mode)
    if not 0 <= cpus_count <= 0xFFFFFFFF or not 0 <= rr_iter <= 0xFFFFFFFF:
        raise InvalidArgument("cpus_count and rr_iter are u32 values")
    programs: tuple[Callable[[], BatchProgram], ...] = (
        lambda: _no_touch,
        lambda: _touch,
        lambda: _round_robin(cpus_count, rr_iter),
        lambda: _l4_proto,
        lambda: _l4_filter,
        lambda: _l4_hash(cpus_count),
        lambda: _l4_port(cpus_count, "sport"),
        lambda: _l4_port(cpus_count, "dport"),
    )
    return programs[number]()
