"""Domain lifecycle, CPU sets, registry and bad input."""

from __future__ import annotations

import errno
import multiprocessing
import os
import stat
import sys

import mp_helpers  # tests/ is on sys.path (rootdir conftest)
import pytest

import percpu
from percpu import errors
from percpu.runtime import domain as dmod


@pytest.fixture
def dom(make_domain):
    return make_domain(size=4 << 20, nr_cpus=4, current=False)


def test_create_file_is_private_sparse_and_named(dom):
    st = os.stat(dom.path)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    assert st.st_size == 4 << 20
    # Sparse: only the meta pages have backing.
    assert st.st_blocks * 512 // 4096 == dom.populated_pages() < (4 << 20) // 4096 // 4
    assert dom.path == f"/dev/shm/percpu.{dom.name}"


def test_default_names_are_unguessable():
    a = percpu.Domain.create(size=1 << 20)
    b = percpu.Domain.create(size=1 << 20)
    try:
        assert a.name != b.name
        token = a.name.split("-", 1)[1]
        assert len(token) == 16 and int(token, 16) >= 0
    finally:
        for d in (a, b):
            d.close()
            d.unlink()


def test_real_cpu_masks_come_from_sysfs():
    d = percpu.Domain.create(size=1 << 20)
    try:
        from percpu.runtime.topology import parse_cpulist

        with open("/sys/devices/system/cpu/possible") as f:
            possible = parse_cpulist(f.read().strip())
        with open("/sys/devices/system/cpu/online") as f:
            online = parse_cpulist(f.read().strip())
        assert d.possible == possible
        assert d.online == online
        assert d.nr_cpu_ids == possible[-1] + 1
        assert not d.simulated
    finally:
        d.close()
        d.unlink()


def test_simulated_64_cpus_on_a_small_machine():
    d = percpu.Domain.create(size=2 << 20, nr_cpus=64)
    try:
        assert d.nr_cpu_ids == 64 and d.possible == tuple(range(64)) and d.simulated
        real = sorted(os.sched_getaffinity(0))
        for cpu in d.possible:
            assert d.real_cpu(cpu) in real
        with d:
            from percpu import kernel

            assert kernel.nr_cpu_ids() == 64 and kernel.num_possible_cpus() == 64
            for cpu in (0, 37, 63):
                with percpu.on_cpu(cpu):
                    assert kernel.smp_processor_id() == cpu
            assert 0 <= kernel.smp_processor_id() < 64
            # One cache line per possible CPU, all 64 of them.
            slots = d.kzalloc(64 * 64)
            for cpu in d.possible:
                d.arena.percpu_add(slots, cpu, cpu + 1)
            assert d.arena.percpu_sum(slots, 64) == sum(range(1, 65))
    finally:
        d.close()
        d.unlink()


def test_attach_sees_the_same_bytes_and_header(dom):
    p = dom.kmalloc(32)
    dom.mem(p, 32)[:] = bytes(range(32))
    other = percpu.Domain.attach(dom.name)
    try:
        assert bytes(other.mem(p, 32)) == bytes(range(32))
        assert other.possible == dom.possible and other.nr_cpu_ids == 4
        assert other.owner_pid == os.getpid() and not other.is_creator
        with pytest.raises(errors.NotPermitted):
            other.unlink()  # only the creating handle unlinks
    finally:
        other.close()


@pytest.mark.timeout(120)
def test_spawned_process_attaches_by_name_and_sees_same_bytes(dom):
    p = dom.kmalloc(64)
    data = os.urandom(64)
    dom.mem(p, 64)[:] = data
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        rc = pool.apply(mp_helpers.read_and_write_back, (dom.name, p, 64, data))
    assert rc == 0
    assert bytes(dom.mem(p, 64)) == bytes(b ^ 0xFF for b in data)


def test_child_exit_never_unlinks(dom):
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=os._exit, args=(0,))
    proc.start()
    proc.join()

    def try_unlink() -> None:
        try:
            dom.unlink()
        except errors.NotPermitted:
            os._exit(0)
        os._exit(1)

    proc = ctx.Process(target=try_unlink)
    proc.start()
    proc.join()
    assert proc.exitcode == 0
    assert os.path.exists(dom.path)


def test_unlink_twice_is_a_clear_error(dom):
    dom.unlink()
    assert not os.path.exists(dom.path)
    with pytest.raises(errors.NoEntry) as ei:
        dom.unlink()
    assert ei.value.errno == errno.ENOENT
    # The mapping still works after unlink (shm_unlink semantics).
    p = dom.kmalloc(8)
    assert p is not None
    dom.kfree(p)


@pytest.mark.parametrize(
    "kwargs, exc, code",
    [
        (dict(size=0), errors.InvalidArgument, errno.EINVAL),
        (dict(size=-4096), errors.InvalidArgument, errno.EINVAL),
        (dict(size=4096), errors.InvalidArgument, errno.EINVAL),
        (dict(size=1.5e6), errors.InvalidArgument, errno.EINVAL),
        (dict(size=64 << 30), errors.TooBig, errno.E2BIG),
        (dict(size=1 << 20, nr_cpus=0), errors.InvalidArgument, errno.EINVAL),
        (dict(size=1 << 20, nr_cpus=-3), errors.InvalidArgument, errno.EINVAL),
        (dict(size=1 << 20, nr_cpus=5000), errors.InvalidArgument, errno.EINVAL),
        (dict(size=1 << 20, name="../etc"), errors.InvalidArgument, errno.EINVAL),
        (dict(size=1 << 20, name=""), errors.InvalidArgument, errno.EINVAL),
        (dict(size=1 << 20, nr_cpus=4, online=[0, 9]), errors.NoDevice, errno.ENODEV),
    ],
)
def test_bad_create_arguments_change_nothing(kwargs, exc, code):
    def ours() -> set[str]:  # other test runs may share /dev/shm: look at this process's files
        return {f for f in os.listdir("/dev/shm") if f.startswith(f"percpu.{os.getpid()}-")}

    before = ours()
    with pytest.raises(exc) as ei:
        percpu.Domain.create(**kwargs)
    assert ei.value.errno == code
    assert ours() == before


def test_name_taken_is_eexist(dom):
    with pytest.raises(errors.Exists) as ei:
        percpu.Domain.create(size=1 << 20, name=dom.name)
    assert ei.value.errno == errno.EEXIST
    assert dom.kmalloc(8) is not None  # the existing domain is untouched


def test_attach_unknown_name():
    with pytest.raises(errors.NoEntry) as ei:
        percpu.Domain.attach("no-such-domain-" + os.urandom(4).hex())
    assert ei.value.errno == errno.ENOENT
    assert isinstance(ei.value, LookupError)


def test_attach_a_file_that_is_not_a_domain(tmp_path):
    name = "not-a-domain-" + os.urandom(4).hex()
    path = f"/dev/shm/percpu.{name}"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, 1 << 20)
        with pytest.raises(errors.InvalidArgument):
            percpu.Domain.attach(name)
    finally:
        os.close(fd)
        os.unlink(path)


def test_cpus_outside_the_possible_mask(dom):
    with dom:
        for bad in (4, 100, -1, "1", 1.0):
            with pytest.raises(errors.NoDevice) as ei:
                with percpu.on_cpu(bad):
                    pass
            assert ei.value.errno == errno.ENODEV
        assert percpu.smp_processor_id() in dom.possible
        with pytest.raises(errors.NoDevice):
            dom.real_cpu(4)


def test_on_cpu_nests_and_is_per_thread(dom):
    import threading

    with dom:
        seen = []
        with percpu.on_cpu(1):
            with percpu.on_cpu(3):
                assert percpu.smp_processor_id() == 3
                t = threading.Thread(
                    target=lambda: seen.append(
                        (percpu.smp_processor_id(), dom.fold_cpu(percpu._core.sched_getcpu()))
                    )
                )
                t.start()
                t.join()
            assert percpu.smp_processor_id() == 1
        # Another thread does not inherit on_cpu: it is where it runs (folded into 0-3).
        assert len(seen) == 1 and seen[0][0] == seen[0][1] and seen[0][0] in dom.possible


def test_with_makes_current_and_restores(dom):
    other = percpu.Domain.create(size=1 << 20, nr_cpus=2)
    try:
        with dom:
            assert percpu.current_domain() is dom
            with other:
                assert percpu.current_domain() is other
                from percpu import kernel

                assert kernel.nr_cpu_ids() == 2
            assert percpu.current_domain() is dom
        assert not dom.closed  # with does not close
    finally:
        other.close()
        other.unlink()


def test_registry_names_objects_across_handles(dom):
    p = dom.kmalloc(128)
    e = dom.register("freelist.a", "freelist", p, 128)
    assert e.owner_pid == os.getpid()
    with pytest.raises(errors.Exists):
        dom.register("freelist.a", "freelist", p, 128)
    with pytest.raises(errors.InvalidArgument):
        dom.register("x" * 64, "k", p, 1)
    other = percpu.Domain.attach(dom.name)
    try:
        got = other.lookup("freelist.a")
        assert (got.kind, got.offset, got.size) == ("freelist", p, 128)
        other.unregister("freelist.a")
    finally:
        other.close()
    with pytest.raises(errors.NoEntry):
        dom.lookup("freelist.a")
    assert dom.objects() == []


def test_registry_full_is_enospc(dom):
    for i in range(dmod.REGISTRY_MAX):
        dom.register(f"o{i}", "k", 4096, 8)
    with pytest.raises(errors.NoSpace):
        dom.register("one-more", "k", 4096, 8)
    assert len(dom.objects()) == dmod.REGISTRY_MAX


def test_close_keeps_views_valid(dom):
    p = dom.kmalloc(16)
    view = dom.mem(p, 16)
    view[:] = b"x" * 16
    dom.close()
    assert dom.closed
    assert bytes(view) == b"x" * 16  # still mapped until the view is released
    view.release()
    with pytest.raises(ValueError):
        dom.kmalloc(8)
    with pytest.raises(ValueError):
        dom.mem(p, 16)


def test_default_domain_created_on_first_use():
    code = (
        "import os, percpu\n"
        "d = percpu.current_domain()\n"
        "assert d is percpu.current_domain()\n"
        "assert d.is_creator and os.path.exists(d.path)\n"
        "print(d.path)\n"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    path = out.stdout.strip()
    assert path.startswith("/dev/shm/percpu.")
    assert not os.path.exists(path)  # the implicit default is unlinked when its creator exits


def test_repr_reads_like_a_status_line(dom):
    r = repr(dom)
    assert dom.name in r and "cpus=0-3" in r and "simulated" in r


def test_lock_at_refuses_meta_pages_and_misalignment(dom):
    for bad in (0, 8, 4096, 3, dom.size, -8, "8"):
        with pytest.raises(errors.InvalidArgument):
            dom.lock_at(bad)
    off = dom.kzalloc(8)
    assert not dom.lock_at(off).locked


def test_with_a_closed_domain_is_refused(dom):
    dom.close()
    with pytest.raises(ValueError):
        with dom:
            pass
