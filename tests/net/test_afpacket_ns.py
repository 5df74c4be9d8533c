"""AF_PACKET TPACKET_V3 source on a veth pair inside a private network namespace.

Root only: each test creates its own namespace ``pk<pid><n>`` holding a veth
pair, runs the receiving (and sending) side in a child under ``ip netns exec``
(Python 3.11 has no ``os.setns``), and deletes the namespace afterwards.  No
frame leaves the namespace.  Only frames of a private EtherType (0x88b5, IEEE
802 local experimental) are counted, so neighbour discovery and the like do not
matter.  Every child is bounded by a timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from itertools import count

import pytest

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root (netns, AF_PACKET)"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2's ip"),
    pytest.mark.timeout(120),
]

_seq = count()

CHILD = r"""
import json, socket, struct, sys, time
from percpu.xdp.afpacket import AfPacketSource, send
from percpu.xdp.sources import Generator

a, b, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
PRIVATE = 0x88B5
BCAST, SRC = b"\xff" * 6, bytes.fromhex("020000000099")

def private(i, size=64):
    body = struct.pack("!I", i)
    return BCAST + SRC + struct.pack("!H", PRIVATE) + body + bytes(size - 18)

def ours(f):
    if len(f) >= 18 and f[12:14] == b"\x81\x00":
        return f[16:18] == struct.pack("!H", PRIVATE)
    return f[12:14] == struct.pack("!H", PRIVATE)

def collect(srcs, want, deadline=20.0):
    got = [[] for _ in srcs]
    meta = []
    end = time.monotonic() + deadline
    while time.monotonic() < end and sum(map(len, got)) < want:
        for k, src in enumerate(srcs):
            bt = src.read(16)
            assert bt is not None
            for i in range(len(bt)):
                f = bt.frame(i)
                if ours(f) or f == udp:
                    got[k].append(f.hex())
                    meta.append((bt.ifindex, bt.rx_queue, float(bt.timestamps[i])))
    return got, meta

g = Generator(flows=1, sizes=128, seed=7, udp_dport=9)
udp = g.read(1).frame(0)
udp = BCAST + udp[6:]
vlan = BCAST + SRC + struct.pack("!HHH", 0x8100, 5, PRIVATE) + struct.pack("!I", 0xFFFF) + bytes(44)
frames = [private(i, 64 + (i % 7) * 100) for i in range(n)] + [udp, vlan]
out = {"ifindex_b": socket.if_nametoindex(b), "sent": [f.hex() for f in frames]}

with AfPacketSource(b, block_size=1 << 16, nr_blocks=8, timeout_ms=5, poll_timeout_ms=20, rx_queue=3) as src, \
        AfPacketSource(a, block_size=1 << 16, nr_blocks=4, timeout_ms=5, poll_timeout_ms=20) as on_a:
    first = src.read(64)
    out["first"] = [first.frame(i).hex() for i in range(len(first)) if ours(first.frame(i))]
    out["first_len"] = len(first)
    out["n_sent"] = send(a, frames)
    (got,), meta = collect([src], len(frames))
    out["got"], out["meta"] = got, meta
    # the sender's own frames are outgoing on a: an XDP source must not see them
    (seen_on_a,), _ = collect([on_a], 1, deadline=0.3)
    out["seen_on_a"] = seen_on_a
    out["stats"] = src.stats()
out["closed_read"] = src.read(1) is None

# fanout: two rings in one group share the frames, each frame exactly once
with AfPacketSource(b, block_size=1 << 16, nr_blocks=4, timeout_ms=5, poll_timeout_ms=10, fanout=4242,
                    fanout_mode="lb") as s1, \
        AfPacketSource(b, block_size=1 << 16, nr_blocks=4, timeout_ms=5, poll_timeout_ms=10, fanout=4242,
                       fanout_mode="lb") as s2:
    send(a, frames[:n])
    got2, _ = collect([s1, s2], n)
    out["fanout"] = got2
print(json.dumps(out))
"""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


@pytest.fixture
def veth_ns() -> Iterator[tuple[str, str, str]]:
    """A namespace with a veth pair (a, b), both up, IPv6 off; deleted afterwards."""
    k = next(_seq)
    ns, a, b = f"pk{os.getpid()}n{k}", f"pk{os.getpid()}a{k}", f"pk{os.getpid()}b{k}"
    try:
        _ip("netns", "add", ns)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot create a network namespace: {getattr(e, 'stderr', e)}")
    try:
        for key in ("all", "default"):  # no router solicitations / DAD on the pair (counted or not)
            _ip("netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1", check=False)
        try:
            _ip("-n", ns, "link", "add", a, "type", "veth", "peer", "name", b)
        except subprocess.CalledProcessError as e:
            pytest.skip(f"cannot create a veth pair: {e.stderr}")
        for dev in (a, b, "lo"):
            _ip("-n", ns, "link", "set", dev, "up")
        yield ns, a, b
    finally:
        _ip("netns", "del", ns, check=False)


def test_afpacket_receives_veth_frames(veth_ns: tuple[str, str, str]) -> None:
    ns, a, b = veth_ns
    n = 200
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", CHILD, a, b, str(n)],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    sent = out["sent"]
    assert out["n_sent"] == n + 2
    assert out["first"] == []  # nothing of ours before sending: an empty (or unrelated) batch, not None
    # every frame once, in order, byte for byte; the VLAN tag the stack took off is back in place
    assert out["got"] == sent
    meta = out["meta"]
    assert {(m[0], m[1]) for m in meta} == {(out["ifindex_b"], 3)}
    ts = [m[2] for m in meta]
    assert ts == sorted(ts) and ts[0] > 1e9
    assert out["seen_on_a"] == []
    packets, drops = out["stats"]
    assert packets >= n + 2 and drops == 0
    assert out["closed_read"]
    s1, s2 = out["fanout"]
    assert sorted(s1 + s2) == sorted(sent[:n])
