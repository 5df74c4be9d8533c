"""Typed per-CPU variables, counters, define_per_cpu, the Prometheus collector."""

from __future__ import annotations

import pytest

import percpu
from percpu import PerCpu, PerCpuCounter, define_per_cpu
from percpu import kernel as K
from percpu.errors import Exists, InvalidArgument, NoEntry, NoSpace


def test_counter_adds_on_this_cpu_and_sums(domain64: percpu.Domain) -> None:
    c = PerCpuCounter("hits")
    for cpu in (0, 5, 63):
        with percpu.on_cpu(cpu):
            c.add()
            c.add(10)
    with percpu.on_cpu(5):
        c.add(-3)
    assert c.sum() == c.value == 30
    per = c.per_cpu()
    assert len(per) == 64 and per[0] == 11 and per[5] == 8 and per[63] == 11
    assert c.read(5) == 8
    with pytest.raises(InvalidArgument):
        c.read(64)
    d = PerCpuCounter.attach("hits")
    assert d.ptr == c.ptr and d.sum() == 30
    c.free()
    with pytest.raises(ValueError):
        c.add()
    with pytest.raises(InvalidArgument):  # the other handle sees the area is gone
        d.sum()
    with pytest.raises(NoEntry):
        PerCpuCounter.attach("hits")
    domain64.check()


def test_counter_handles_64bit_wrap(domain: percpu.Domain) -> None:
    c = PerCpuCounter()
    c.add(2**63 - 1)
    c.add(1)
    assert c.sum() == -(2**63)  # int64, like a long counter
    c.free()


def test_percpu_struct_values(domain: percpu.Domain) -> None:
    v = PerCpu("qd", name="lat")
    assert v.size == 16 and v.ptr % 8 == 0
    with percpu.on_cpu(2):
        v.set((3, 1.5))
        assert v.get() == (3, 1.5)
    assert dict(v.items()) == {0: (0, 0.0), 1: (0, 0.0), 2: (3, 1.5), 3: (0, 0.0)}
    v.on(1).set((7, 0.5))
    assert v.values()[1] == (7, 0.5)
    mv = v.on(3).view()
    mv[:8] = (9).to_bytes(8, "little")
    assert v.on(3).get() == (9, 0.0)
    w = PerCpu.attach("lat")
    assert w.format == "st:qd" and w.on(2).get() == (3, 1.5)
    with pytest.raises(Exists):
        PerCpu("q", name="lat")
    v.free()
    with pytest.raises(InvalidArgument):
        w.get()
    domain.check()


def test_percpu_single_field_and_bytes(domain: percpu.Domain) -> None:
    a = PerCpu("i")
    a.set(-5)
    assert a.get() == -5
    b = PerCpu(13)  # raw bytes
    assert b.size == 13
    b.set(b"x" * 13)
    assert b.get() == b"x" * 13
    with pytest.raises(InvalidArgument):
        PerCpu("not a format!")
    with pytest.raises(InvalidArgument):
        PerCpu(40000)
    with pytest.raises(InvalidArgument):
        PerCpu(0)


def test_percpu_numpy_dtype(domain64: percpu.Domain) -> None:
    np = pytest.importorskip("numpy")
    dt = np.dtype([("n", "i8"), ("t", "f8")])
    v = PerCpu(dt, name="stats")
    with percpu.on_cpu(7):
        v.set((2, 0.5))
    arr = v.as_array()
    assert arr.shape == (64,) and arr["n"].sum() == 2
    arr["n"] += 1  # writes every CPU's copy through the strided view
    assert v.on(7).get()["n"] == 3 and v.on(0).get()["n"] == 1
    w = PerCpu.attach("stats")
    assert w.on(7).get()["t"] == 0.5
    s = PerCpu(np.int32)
    s.on(3).view()[()] = 42
    assert s.on(3).get() == 42


def test_define_per_cpu_static_area(make_domain) -> None:
    dom = percpu.Domain.create(size=8 << 20, nr_cpus=2, pcpu_static_size=64)
    try:
        with dom:
            a = define_per_cpu("a", "q")
            a.set(5)
            again = define_per_cpu("a", "q")  # another declaration of the same variable
            assert again.ptr == a.ptr and again.get() == 5
            with pytest.raises(Exists):
                define_per_cpu("a", "i")
            b = define_per_cpu("b", 40)
            assert b.ptr >= a.ptr + 8
            with pytest.raises(NoSpace):
                define_per_cpu("c", 32)
            with pytest.raises(InvalidArgument):
                a.free()
            first = percpu.pcpu.info()["first_block"]
            assert first <= a.ptr < first + 64  # in the static region, before reserved
    finally:
        dom.close()
        dom.unlink()


def test_prometheus_collector_exports_cpu_labels(domain: percpu.Domain) -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest

    from percpu.pcpu.prometheus import PerCpuCollector

    c = PerCpuCounter("requests")
    with percpu.on_cpu(1):
        c.add(4)
    with percpu.on_cpu(3):
        c.add(2)
    reg = CollectorRegistry()
    reg.register(PerCpuCollector({"app_requests": c}, documentation={"app_requests": "requests served"}))
    text = generate_latest(reg).decode()
    assert '# HELP app_requests_total requests served' in text
    assert 'app_requests_total{cpu="1"} 4.0' in text
    assert 'app_requests_total{cpu="3"} 2.0' in text
    assert 'app_requests_total{cpu="0"} 0.0' in text
    c.add(1)  # read at scrape time
    assert generate_latest(reg).decode().count("app_requests_total{") == 4


def test_facade_alloc_percpu_natural_alignment(domain: percpu.Domain) -> None:
    p = K.alloc_percpu(8)
    q = K.alloc_percpu(12)
    assert p % 8 == 0 and q % 4 == 0
    assert K.alloc_percpu_gfp(16, K.GFP_NOWAIT) is not None
    K.free_percpu(p)
    K.free_percpu(q)
