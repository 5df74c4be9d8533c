"""``_core.XdpRxQueue``: a receive queue with a built-in program bound, and ``XdpEngine.rx_queue()``.

A simulated 2-CPU domain and a CPU map of 4 slots: slots 0 and 1 populated
(a worker each, whose stack -- a module-level function -- counts the frames
it receives per CPU in a domain word), slots 2 and 3 empty.  The queue polls
as CPU 0.  ``poll`` returns ``(rx, pass, drop, redirect, aborted, issue,
alloc_fail)``.  Every wait is bounded and waits for a count; nothing is timed.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterator

import numpy as np
import pytest
from xdp_helpers import count_stack, delivered, frames_in_flight, wait_until  # tests/ is on sys.path

import percpu
from percpu import _core, errors
from percpu.cpumap import XDP_PASS, CpuMap, frame_pool
from percpu.xdp import BatchProgram, FrameProgram, Generator, RxStats, XdpEngine
from percpu.xdp.programs import MODES, mode_number

pytestmark = pytest.mark.timeout(120)

WAIT = 30.0
NO_TOUCH, TOUCH, ROUND_ROBIN = mode_number("no-touch"), mode_number("touch"), mode_number("round-robin")



# ---- helpers and fixtures --------------------------------------------------------------------



def cpus(*c: int) -> bytes:
    return np.array(c, dtype=np.uint32).tobytes()


def packets(n: int, seed: int = 0) -> tuple[bytes, np.ndarray, np.ndarray]:
    """``n`` generator frames (UDP over IPv4): ``(data, offsets, lengths)``."""
    b = Generator(flows=16, count=n, seed=seed).read(n)
    assert b is not None and len(b) == n
    offs = np.ascontiguousarray(b.offsets, dtype=np.uint32)
    lens = np.ascontiguousarray(b.lengths, dtype=np.uint32)
    base = int(offs[0])
    end = int(offs[-1]) + int(lens[-1])
    return bytes(b.data[base:end]), offs - base, lens


def one_packet(ethertype: int = 0x0800, size: int = 60) -> bytes:
    return bytes(6) + bytes.fromhex("020000000001") + struct.pack("!H", ethertype) + bytes(size - 14)


def rx0(rxs: RxStats) -> dict:
    d = rxs.read()[0]
    return {k: v for k, v in d.items() if not isinstance(v, dict)} | {"exception": dict(d["exception"])}


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
    """4 slots, 0 and 1 populated; closed, freed and the pool checked after the test."""
    m = CpuMap(4, method="fork", stack=functools.partial(count_stack, counter))
    m.update(0, 1024)
    m.update(1, 1024)
    yield m
    m.close()
    m.sync()
    m.free()
    # every frame went back: rings, bulk queues and batches are all empty
    assert frames_in_flight(frame_pool(dom)) == 0


@pytest.fixture
def rxs(dom) -> RxStats:
    return RxStats(dom)


# ---- poll: one packet and a batch ------------------------------------------------------------


def test_one_packet_and_a_batch_are_delivered(dom, cmap, counter, rxs):
    q = _core.XdpRxQueue(cmap._core, NO_TOUCH, cpus(1), 1, 0, rxs.ptr)
    data, offs, lens = packets(100)
    with percpu.on_cpu(0):
        assert q.poll(data[: lens[0]]) == (1, 0, 0, 1, 0, 0, 0)
        assert q.poll(bytearray(data), offs, lens) == (100, 0, 0, 100, 0, 0, 0)
        assert q.poll(memoryview(data), offs[:0], lens[:0]) == (0, 0, 0, 0, 0, 0, 0)  # an empty poll
    wait_until(lambda: delivered(dom, counter, 1) == 101, "101 frames on CPU 1")
    assert delivered(dom, counter, 0) == 0
    st = cmap.stats()[1]
    assert st.per_cpu[0]["enq_processed"] == 101 and st.total("enq_drops") == 0
    wait_until(lambda: cmap.stats()[1].total("kt_processed") == 101, "kthread counters")
    r = rx0(rxs)
    assert (r["rx"], r["redirect"], r["aborted"], r["issue"]) == (101, 101, 0, 0)


def test_empty_slot_is_aborted_and_past_max_entries_is_an_issue(dom, cmap, counter, rxs):
    data, offs, lens = packets(20)
    with percpu.on_cpu(0):
        empty = _core.XdpRxQueue(cmap._core, NO_TOUCH, cpus(3), 1, 0, rxs.ptr)  # slot 3: nothing there
        assert empty.poll(data, offs, lens) == (20, 0, 0, 0, 20, 0, 0)
        past = _core.XdpRxQueue(cmap._core, NO_TOUCH, cpus(7), 1, 0, rxs.ptr)  # 7 >= max_entries 4
        assert past.poll(data, offs, lens) == (20, 0, 0, 0, 20, 20, 0)
        assert past.poll(data[: lens[0]]) == (1, 0, 0, 0, 1, 1, 0)
    r = rx0(rxs)
    assert (r["rx"], r["redirect"], r["aborted"], r["issue"]) == (41, 0, 41, 21)
    assert r["exception"]["XDP_ABORTED"] == 41
    assert cmap.stats()[1].total("enq_processed") == 0
    assert delivered(dom, counter) == 0


def test_touch_drops_802_3_lengths_and_aborts_runts(dom, cmap, counter, rxs):
    q = _core.XdpRxQueue(cmap._core, TOUCH, cpus(0), 1, 0, rxs.ptr)
    pkts = [one_packet(0x0800), one_packet(0x0100), one_packet(0x05FF), one_packet(0x0600), one_packet(0x86DD)]
    lens = np.array([len(p) for p in pkts], dtype=np.uint32)
    offs = np.concatenate(([0], np.cumsum(lens[:-1]))).astype(np.uint32)
    with percpu.on_cpu(0):
        assert q.poll(one_packet(0x0042)) == (1, 0, 1, 0, 0, 0, 0)
        assert q.poll(b"".join(pkts), offs, lens) == (5, 0, 2, 3, 0, 0, 0)
        assert q.poll(bytes(10)) == (1, 0, 0, 0, 1, 0, 0)  # shorter than ETH_HLEN: XDP_ABORTED
    wait_until(lambda: delivered(dom, counter, 0) == 3, "the 3 Ethernet II frames")
    r = rx0(rxs)
    assert (r["rx"], r["drop"], r["redirect"], r["aborted"]) == (7, 3, 3, 1)


def test_round_robin_iterator_and_set_cpus(dom, cmap, counter):
    q = _core.XdpRxQueue(cmap._core, ROUND_ROBIN, cpus(0, 1))
    data, offs, lens = packets(10)
    assert q.rr_iter == 0
    with percpu.on_cpu(0):
        for i in range(3):
            assert q.poll(data[: lens[0]]) == (1, 0, 0, 1, 0, 0, 0)
            assert q.rr_iter == (i + 1) % 2
        # 0 -> CPU 0, 1 -> CPU 1, 2 -> CPU 0
        wait_until(lambda: (delivered(dom, counter, 0), delivered(dom, counter, 1)) == (2, 1), "2 + 1 frames")
        assert q.poll(data, offs, lens) == (10, 0, 0, 10, 0, 0, 0)  # starts at CPU 1: 5 and 5
        assert q.rr_iter == 1
        wait_until(lambda: (delivered(dom, counter, 0), delivered(dom, counter, 1)) == (7, 6), "+5 each")
        q.poll(data[: lens[0]])  # back to iterator 0
        wait_until(lambda: delivered(dom, counter, 1) == 7, "one more on CPU 1")
        assert q.rr_iter == 0
        q.set_cpus(cpus(1, 1, 1))
        assert q.rr_iter == 0
        assert q.poll(data, offs, lens) == (10, 0, 0, 10, 0, 0, 0)
        assert q.rr_iter == 10 % 3
    wait_until(lambda: delivered(dom, counter, 1) == 17, "every frame of the new list on CPU 1")
    assert delivered(dom, counter, 0) == 7


def test_rx_stats_move_only_when_given(dom, cmap, counter, rxs):
    data, offs, lens = packets(8)
    before = rx0(rxs)
    with percpu.on_cpu(0):
        silent = _core.XdpRxQueue(cmap._core, NO_TOUCH, cpus(0))  # rx_stats=0: no counters
        assert silent.poll(data, offs, lens)[0] == 8
        assert rx0(rxs) == before
        counted = _core.XdpRxQueue(cmap._core, NO_TOUCH, cpus(0), 3, 2, rxs.ptr)
        assert counted.poll(data, offs, lens)[3] == 8
    after = rx0(rxs)
    assert after["rx"] - before["rx"] == 8 and after["redirect"] - before["redirect"] == 8
    assert rxs.read()[1]["rx"] == 0  # CPU 0 polled: only its counters moved
    wait_until(lambda: delivered(dom, counter, 0) == 16, "16 frames")


# ---- bad inputs raise and change nothing ---------------------------------------------------------


def test_bad_poll_arguments_raise_and_change_nothing(dom, cmap, counter, rxs):
    q = _core.XdpRxQueue(cmap._core, ROUND_ROBIN, cpus(0, 1), 1, 0, rxs.ptr)
    data, offs, lens = packets(4)
    pool = frame_pool(dom)
    with percpu.on_cpu(0):
        q.poll(data[: lens[0]])
        assert q.rr_iter == 1
        # the worker has the frame back in the pool: nothing moves behind the snapshot
        wait_until(lambda: frames_in_flight(pool) == 0, "the first frame back in the pool")
        before = (rx0(rxs), q.rr_iter, frames_in_flight(pool), cmap.stats()[0].total("enq_processed"))
        with pytest.raises(ValueError, match="differ"):
            q.poll(data, offs, lens[:3])
        bad = offs.copy()
        bad[2] = len(data)  # starts at the end of the data: outside
        with pytest.raises(ValueError, match="outside"):
            q.poll(data, bad, lens)
        big = lens.copy()
        big[3] += 1  # one byte past the end
        with pytest.raises(ValueError, match="outside"):
            q.poll(data, offs, big)
        with pytest.raises(ValueError):
            q.poll(data, offs.tobytes()[:-1], lens)  # not whole u32s
        with pytest.raises(TypeError):
            q.poll()
        with pytest.raises(TypeError):
            q.poll(data, offs)
        with pytest.raises(TypeError):
            q.poll(data, offs, lens, lens)
        with pytest.raises(TypeError):
            q.poll(42)
        with pytest.raises(errors.InvalidArgument):
            q.set_cpus(b"")
        after = (rx0(rxs), q.rr_iter, frames_in_flight(pool), cmap.stats()[0].total("enq_processed"))
        assert after == before
        assert q.poll(data, offs, lens) == (4, 0, 0, 4, 0, 0, 0)  # still the old 2-CPU list
    wait_until(lambda: delivered(dom, counter) == 5, "5 frames")
    assert (delivered(dom, counter, 0), delivered(dom, counter, 1)) == (3, 2)


def test_bad_constructor_arguments(dom, cmap):
    with pytest.raises(errors.InvalidArgument):
        _core.XdpRxQueue(cmap._core, len(MODES), cpus(0))
    with pytest.raises(errors.InvalidArgument):
        _core.XdpRxQueue(cmap._core, -1, cpus(0))
    with pytest.raises(errors.InvalidArgument):
        _core.XdpRxQueue(cmap._core, NO_TOUCH, b"")
    with pytest.raises(ValueError):
        _core.XdpRxQueue(cmap._core, NO_TOUCH, b"\x00\x00\x00")  # not whole u32s
    with pytest.raises(TypeError):
        _core.XdpRxQueue(object(), NO_TOUCH, cpus(0))
    with pytest.raises(TypeError):
        _core.XdpRxQueue(cmap._core, NO_TOUCH)
    with pytest.raises(TypeError):
        _core.XdpRxQueue(cmap._core, "no-touch", cpus(0))


# ---- XdpEngine.rx_queue() -----------------------------------------------------------------------


def test_engine_rx_queue_is_one_per_cpu_ifindex_rxq(dom, cmap, counter):
    eng = XdpEngine(cmap, "round-robin", cpus=[0, 1])
    with percpu.on_cpu(0):
        q = eng.rx_queue()
        assert isinstance(q, _core.XdpRxQueue)
        assert eng.rx_queue() is q and eng.rx_queue(1, 0) is q
        other_if, other_rxq = eng.rx_queue(2, 0), eng.rx_queue(1, 3)
        assert len({id(q), id(other_if), id(other_rxq)}) == 3
        data, offs, lens = packets(6)
        assert q.poll(data, offs, lens) == (6, 0, 0, 6, 0, 0, 0)
    with percpu.on_cpu(1):
        q1 = eng.rx_queue()
        assert q1 is not q and eng.rx_queue() is q1
    with percpu.on_cpu(0):
        assert eng.rx_queue() is q
        eng.set_cpus([1])  # reaches every queue already made
        assert q.rr_iter == 0
        assert q.poll(data, offs, lens) == (6, 0, 0, 6, 0, 0, 0)
    wait_until(lambda: (delivered(dom, counter, 0), delivered(dom, counter, 1)) == (3, 9), "3 + 9 frames")
    r = eng.rx_stats.read()[0]
    assert r["rx"] == 12 and r["redirect"] == 12  # the engine's RxStats are bound to its queues


def test_engine_rx_queue_defaults_to_populated_slots(dom, cmap, counter):
    eng = XdpEngine(cmap, "no-touch")
    with percpu.on_cpu(0):
        q = eng.rx_queue()
        assert eng.cpus == [0, 1]
        data, offs, lens = packets(5)
        assert q.poll(data, offs, lens) == (5, 0, 0, 5, 0, 0, 0)
    wait_until(lambda: delivered(dom, counter, 0) == 5, "5 frames on CPU 0 (no-touch: index 0)")


@pytest.mark.parametrize(
    "program",
    [
        BatchProgram(lambda h: (np.full(len(h), XDP_PASS, np.uint8), np.zeros(len(h), np.uint32))),
        FrameProgram(lambda ctx: XDP_PASS),
        lambda ctx: XDP_PASS,
    ],
    ids=["batch", "frame", "callable"],
)
def test_engine_rx_queue_refuses_other_programs(dom, cmap, program):
    eng = XdpEngine(cmap, program)
    with percpu.on_cpu(0), pytest.raises(errors.InvalidArgument):
        eng.rx_queue()
    assert eng._state == {}
