"""The bpf_cpumask kfuncs through ``percpu.kernel``: the scenarios of the kernel's
``progs/cpumask_success.c`` (numbered as in the reference, section 4.1), the
runtime analogs of ``cpumask_failure.c`` (double release, use after release,
writing a read-only mask), refcounting and the RCU-deferred free across two
processes, and 64 and 4096 simulated CPUs.
"""

from __future__ import annotations

import os

import pytest

import percpu
from percpu import errors, rcu
from percpu import kernel as k
from percpu.bpf_cpumask import BpfCpumask, bpf_cpumask_ma
from percpu.cpumask import Cpumask


def _create() -> BpfCpumask:
    m = k.bpf_cpumask_create()
    assert m is not None  # err = 1
    assert k.bpf_cpumask_empty(m)  # err = 2
    return m


def test_1_alloc_free(domain):
    m = _create()
    k.bpf_cpumask_release(m)


def test_2_set_clear_cpu(domain):
    m = _create()
    k.bpf_cpumask_set_cpu(0, m)
    assert k.bpf_cpumask_test_cpu(0, m)
    k.bpf_cpumask_clear_cpu(0, m)
    assert not k.bpf_cpumask_test_cpu(0, m)
    k.bpf_cpumask_release(m)


def test_3_setall_clear(domain):
    m = _create()
    k.bpf_cpumask_setall(m)
    assert k.bpf_cpumask_full(m) and k.bpf_cpumask_weight(m) == domain.nr_cpu_ids
    k.bpf_cpumask_clear(m)
    assert k.bpf_cpumask_empty(m)
    k.bpf_cpumask_release(m)


def test_4_first_firstzero(domain):
    nr = domain.nr_cpu_ids
    m = _create()
    assert k.bpf_cpumask_first(m) == nr and k.bpf_cpumask_first_zero(m) == 0
    k.bpf_cpumask_set_cpu(0, m)
    assert k.bpf_cpumask_first(m) == 0 and k.bpf_cpumask_first_zero(m) == 1
    k.bpf_cpumask_setall(m)
    assert k.bpf_cpumask_first_zero(m) == nr
    k.bpf_cpumask_release(m)


def test_5_firstand_nocpu(domain):
    a, b = _create(), _create()
    k.bpf_cpumask_set_cpu(0, a)
    k.bpf_cpumask_set_cpu(1, b)
    assert k.bpf_cpumask_first_and(a, b) == domain.nr_cpu_ids
    k.bpf_cpumask_release(a)
    k.bpf_cpumask_release(b)


def test_6_test_and_set_clear(domain):
    m = _create()
    assert not k.bpf_cpumask_test_and_set_cpu(0, m)
    assert k.bpf_cpumask_test_and_set_cpu(0, m)
    assert k.bpf_cpumask_test_and_clear_cpu(0, m)
    assert not k.bpf_cpumask_test_and_clear_cpu(0, m)
    k.bpf_cpumask_release(m)


def test_7_and_or_xor(domain):
    m1, m2, dst1, dst2 = (_create() for _ in range(4))
    k.bpf_cpumask_set_cpu(0, m1)
    k.bpf_cpumask_set_cpu(1, m2)
    assert k.bpf_cpumask_and(dst1, m1, m2) is False and k.bpf_cpumask_empty(dst1)
    k.bpf_cpumask_or(dst1, m1, m2)
    assert k.bpf_cpumask_test_cpu(0, dst1) and k.bpf_cpumask_test_cpu(1, dst1)
    k.bpf_cpumask_xor(dst2, m1, m2)
    assert k.bpf_cpumask_equal(dst1, dst2)
    assert k.bpf_cpumask_and(dst2, dst1, m1) is True and dst2.cpumask() == Cpumask([0], domain.nr_cpu_ids)
    k.bpf_cpumask_and(dst1, dst1, m2)  # dst may alias a source
    assert list(dst1) == [1]
    for m in (m1, m2, dst1, dst2):
        k.bpf_cpumask_release(m)


def test_8_intersects_subset(domain):
    m1, m2, d = _create(), _create(), _create()
    k.bpf_cpumask_set_cpu(0, m1)
    k.bpf_cpumask_set_cpu(1, m2)
    assert not k.bpf_cpumask_intersects(m1, m2)
    k.bpf_cpumask_or(d, m1, m2)
    assert k.bpf_cpumask_subset(m1, d) and k.bpf_cpumask_subset(m2, d) and not k.bpf_cpumask_subset(d, m1)
    empty = Cpumask([], domain.nr_cpu_ids)
    assert k.bpf_cpumask_subset(empty, m1) and not k.bpf_cpumask_intersects(empty, d)
    for m in (m1, m2, d):
        k.bpf_cpumask_release(m)


def test_9_copy_any_anyand(domain):
    nr = domain.nr_cpu_ids
    m1, m2, dst = _create(), _create(), _create()
    k.bpf_cpumask_set_cpu(0, m1)
    assert k.bpf_cpumask_any_distribute(m1) == 0
    assert k.bpf_cpumask_any_distribute(dst) >= nr
    k.bpf_cpumask_set_cpu(1, m2)
    k.bpf_cpumask_or(dst, m1, m2)
    k.bpf_cpumask_copy(m2, dst)
    assert k.bpf_cpumask_equal(m2, dst)
    picks = {k.bpf_cpumask_any_distribute(dst) for _ in range(8)}
    assert picks == {0, 1}  # spreads across calls, only set CPUs
    assert k.bpf_cpumask_any_and_distribute(m1, Cpumask([1], nr)) == nr
    for m in (m1, m2, dst):
        k.bpf_cpumask_release(m)


def test_19_weight(domain):
    m = _create()
    assert k.bpf_cpumask_weight(m) == 0
    k.bpf_cpumask_set_cpu(0, m)
    assert k.bpf_cpumask_weight(m) == 1
    k.bpf_cpumask_set_cpu(1, m)
    assert k.bpf_cpumask_weight(m) == 2
    k.bpf_cpumask_clear(m)
    assert k.bpf_cpumask_weight(m) == 0
    k.bpf_cpumask_release(m)


def test_21_23_populate(domain64):
    m = _create()
    with pytest.raises(errors.AccessDenied) as ei:
        k.bpf_cpumask_populate(m, b"\xff")
    assert ei.value.errno == 13 and k.bpf_cpumask_empty(m)  # refused: nothing changed
    assert k.bpf_cpumask_populate(m, b"\xaa" * 8) == 0
    assert all(k.bpf_cpumask_test_cpu(i, m) == bool(i % 2) for i in range(64))
    k.bpf_cpumask_release(m)


def test_out_of_range_cpus_are_ignored_and_false(domain):
    nr = domain.nr_cpu_ids
    m = _create()
    for cpu in (nr, nr + 1, 1 << 20, -1):
        k.bpf_cpumask_set_cpu(cpu, m)
        assert not k.bpf_cpumask_test_cpu(cpu, m)
        assert not k.bpf_cpumask_test_and_set_cpu(cpu, m)
        assert not k.bpf_cpumask_test_and_clear_cpu(cpu, m)
        k.bpf_cpumask_clear_cpu(cpu, m)
    assert k.bpf_cpumask_empty(m)
    k.bpf_cpumask_release(m)


def test_failure_analogs_double_release_use_after_release_readonly_dst(domain):
    m = _create()
    other = k.bpf_cpumask_acquire(m)
    assert m.refcount == 2
    k.bpf_cpumask_release(m)
    with pytest.raises(ValueError, match="released twice"):
        k.bpf_cpumask_release(m)
    with pytest.raises(ValueError, match="after its release"):
        k.bpf_cpumask_set_cpu(0, m)
    k.bpf_cpumask_set_cpu(1, other)  # the other reference is still good
    assert k.bpf_cpumask_test_cpu(1, other)
    with pytest.raises(TypeError):
        k.bpf_cpumask_copy(Cpumask([0], domain.nr_cpu_ids), other)  # a read-only destination
    with pytest.raises(TypeError):
        k.bpf_cpumask_empty(None)
    k.bpf_cpumask_release(other)
    with pytest.raises(ValueError):
        k.bpf_cpumask_test_cpu(1, other)


def test_last_release_frees_after_a_grace_period(domain):
    ma = bpf_cpumask_ma()
    m = _create()
    k.bpf_cpumask_set_cpu(1, m)
    with percpu.on_cpu(0):
        reader = rcu.read_lock()
        reader.__enter__()  # a reader that may still read the mask
        try:
            k.bpf_cpumask_release(m)
            got = [ma.cache_alloc() for _ in range(200)]  # the freed object is not handed out again
            assert m.ptr not in got
            assert domain.arena.load(m.ptr) == 2  # still readable, unchanged
        finally:
            reader.__exit__(None, None, None)
        for p in got:
            ma.cache_free(p)
    ma.check()


def _child_uses_mask(ptr: int, cpu: int) -> int:
    m = BpfCpumask.from_ptr(ptr)  # its own reference
    m.set_cpu(cpu)
    ok = m.test_cpu(0)
    m.release()
    return 0 if ok else 3


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_shared_between_processes_with_refcounts(make_domain, method):
    from percpu.runtime.kthread import kthread_run_on_cpu

    dom = make_domain(size=8 << 20, nr_cpus=4)
    m = _create()
    k.bpf_cpumask_set_cpu(0, m)
    kt = kthread_run_on_cpu(_child_uses_mask, 1, "mask/%u", m.ptr, 3, method=method)
    assert kt.join(60) == 0
    assert list(m) == [0, 3] and m.refcount == 1  # the child's reference came and went
    k.bpf_cpumask_release(m)
    dom.check()


@pytest.mark.parametrize("nr", [64, 4096])
def test_many_cpus(make_domain, nr):
    make_domain(size=16 << 20, nr_cpus=nr)
    m = _create()
    for cpu in (0, 63, 64, nr - 1):
        k.bpf_cpumask_set_cpu(cpu, m)
    assert k.bpf_cpumask_weight(m) == len({c for c in (0, 63, 64, nr - 1) if c < nr})  # 64 >= nr is ignored
    assert k.bpf_cpumask_first(m) == 0 and k.bpf_cpumask_first_zero(m) == 1
    k.bpf_cpumask_setall(m)
    assert k.bpf_cpumask_full(m) and k.bpf_cpumask_first_zero(m) == nr
    assert m.cpumask() == Cpumask.full(nr)
    buf = (1 << (nr - 1)).to_bytes((nr + 63) // 64 * 8, "little")
    k.bpf_cpumask_populate(m, buf)
    assert list(m) == [nr - 1]
    k.bpf_cpumask_release(m)


def test_kfunc_names_are_all_there():
    names = [n for n in k.__all__ if n.startswith("bpf_cpumask_")]
    assert len(names) == 27  # 26 kfuncs + the dtor
    assert all(callable(getattr(k, n)) for n in names)
    assert os.environ.get("PERCPU_NEVER_SET") is None


def test_c_facade_reads_a_cpumask_value_too(domain):
    nr = domain.nr_cpu_ids
    v = Cpumask([1, 2], nr)
    assert k.bpf_cpumask_test_cpu(1, v) and not k.bpf_cpumask_test_cpu(0, v)
    assert not k.bpf_cpumask_test_cpu(nr, v) and not k.bpf_cpumask_test_cpu(-1, v)
    assert not k.bpf_cpumask_test_cpu(1 << 80, v)
    assert k.bpf_cpumask_weight(v) == 2
    with pytest.raises(TypeError):
        k.bpf_cpumask_set_cpu(0, v)  # read-only: the verifier's "expected pointer to STRUCT bpf_cpumask"
    with pytest.raises(TypeError):
        k.bpf_cpumask_test_cpu(0, None)
    with pytest.raises(TypeError):
        k.bpf_cpumask_weight(object())
    m = _create()
    assert not k.bpf_cpumask_test_cpu(1 << 80, m)
    k.bpf_cpumask_set_cpu(1 << 80, m)  # ignored
    assert k.bpf_cpumask_weight(m) == 0
    k.bpf_cpumask_release(m)


def _child_releases_last(ptr: int, ready: int, go: int) -> int:
    dom = percpu.current_domain()
    m = BpfCpumask.from_ptr(ptr)
    dom.arena.store(ready, 1)
    while dom.arena.load(go) == 0:  # the parent drops its reference and enters a read section
        pass
    m.release()  # the last reference, in this process: free_rcu
    return 0 if m.released else 3


def test_last_release_in_another_process_waits_for_this_process_readers(make_domain):
    from percpu.runtime.kthread import kthread_run_on_cpu

    dom = make_domain(size=8 << 20, nr_cpus=2)
    ma = bpf_cpumask_ma()
    m = _create()
    k.bpf_cpumask_set_cpu(1, m)
    ready, go = dom.kzalloc(8), dom.kzalloc(8)
    kt = kthread_run_on_cpu(_child_releases_last, 0, "mask_rel/%u", m.ptr, ready, go, method="fork")
    while dom.arena.load(ready) == 0:
        pass
    ptr = m.ptr
    k.bpf_cpumask_release(m)  # the child now holds the only reference
    with percpu.on_cpu(0), rcu.read_lock():  # a reader from before the free
        dom.arena.store(go, 1)
        assert kt.join(60) == 0
        got = [ma.cache_alloc() for _ in range(200)]  # CPU 0's cache, where the child freed it
        assert ptr not in got  # not reused while we may still read it
        assert dom.arena.load(ptr) == 2  # still CPU 1's bit
    for p in got:
        with percpu.on_cpu(0):
            ma.cache_free(p)
    rcu.synchronize()
    ma.poll()
    chk = ma.check()
    assert chk["outstanding"] == 0
    dom.check()


def test_sources_of_another_width_are_cut_to_the_destination(domain):
    nr = domain.nr_cpu_ids  # 4
    m = _create()
    wide = Cpumask([0, 5, 100], 128)
    assert k.bpf_cpumask_and(m, Cpumask([5], 64), Cpumask([5], 64)) is False and k.bpf_cpumask_empty(m)
    k.bpf_cpumask_copy(m, wide)
    assert list(m) == [0]
    k.bpf_cpumask_or(m, wide, m)
    k.bpf_cpumask_xor(m, wide, Cpumask([1], 128))
    assert list(m) == [0, 1] and m.bits() < (1 << nr)
    assert k.bpf_cpumask_first_and(Cpumask([0], nr), Cpumask([5], 64)) == nr
    assert k.bpf_cpumask_first_and(Cpumask([5], 64), Cpumask([0], nr)) == nr
    with pytest.raises(TypeError):
        k.bpf_cpumask_populate(m, 8)  # an int is not a buffer
    assert list(m) == [0, 1]
    k.bpf_cpumask_release(m)


def test_handle_constructor_refuses_wrapping_numbers(domain):
    from percpu import _core

    ma = bpf_cpumask_ma()
    m = _create()
    with pytest.raises((OverflowError, errors.InvalidArgument)):
        _core.CpumaskRef(ma, m.ptr, 2**32 + 4)
    with pytest.raises(OverflowError):
        _core.CpumaskRef(ma, 2**64 + m.ptr, 4)
    k.bpf_cpumask_release(m)


# ---- kptr slots: cpumask_success.c tests 10-18 -------------------------------------------


def test_10_insert_leave_then_teardown_releases(domain):
    slot = domain.kzalloc(8)
    m = _create()
    ptr = m.ptr
    assert k.bpf_kptr_xchg(slot, m) is None  # the slot was empty; m's reference moved in
    with pytest.raises(ValueError):
        k.bpf_cpumask_set_cpu(0, m)  # the program no longer owns it
    assert domain.arena.load(slot) == ptr
    k.bpf_cpumask_release_dtor(slot)  # map teardown: the dtor drops the slot's reference
    assert domain.arena.load(slot) == 0
    assert bpf_cpumask_ma().obj_cache(ptr) is None  # freed (free_rcu)


def test_11_insert_remove_release(domain):
    slot = domain.kzalloc(8)
    assert k.bpf_kptr_xchg(slot, _create()) is None
    got = k.bpf_kptr_xchg(slot, None)
    assert got is not None and got.refcount == 1 and k.bpf_cpumask_empty(got)
    k.bpf_cpumask_release(got)


def test_12_global_mask_rcu(domain):
    slot = domain.kzalloc(8)
    m = _create()
    k.bpf_cpumask_set_cpu(1, m)
    assert k.bpf_kptr_xchg(slot, m) is None
    with rcu.read_lock():
        g = BpfCpumask.from_slot(slot)
        assert g is not None and k.bpf_cpumask_test_cpu(1, g)
        with pytest.raises(ValueError, match="borrowed"):
            k.bpf_cpumask_release(g)  # an RCU pointer holds no reference
        owned = k.bpf_cpumask_acquire(g)  # but can be acquired
    assert owned.refcount == 2
    k.bpf_cpumask_release(owned)
    k.bpf_cpumask_release_dtor(slot)


@pytest.mark.parametrize("nslots", [1, 2, 11])  # 13 (one-element array), 14-17 (two slots), 18 (11 slots)
def test_13_to_18_independent_slots(domain, nslots):
    base = domain.kzalloc(8 * nslots)
    slots = [base + 8 * i for i in range(nslots)]
    assert k.bpf_kptr_xchg(slots[0], _create()) is None
    with rcu.read_lock():
        assert BpfCpumask.from_slot(slots[0]) is not None
        assert all(BpfCpumask.from_slot(s) is None for s in slots[1:])
    for s in slots[1:]:
        assert k.bpf_kptr_xchg(s, _create()) is None
    with rcu.read_lock():
        ptrs = [BpfCpumask.from_slot(s).ptr for s in slots]  # type: ignore[union-attr]
    assert len(set(ptrs)) == nslots  # distinct masks
    for s in slots:
        k.bpf_cpumask_release_dtor(s)
