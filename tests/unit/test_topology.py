"""Tests for percpu.runtime.topology: list vectors, a fake sysfs, this machine."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from percpu.runtime.topology import CpuInfo, Topology, format_cpulist, parse_cpulist

SYS_CPU = Path("/sys/devices/system/cpu")

# (text, CPUs) as sysfs and taskset write them.
PARSE_VECTORS = [
    ("", ()),
    ("\n", ()),
    ("0", (0,)),
    ("0\n", (0,)),
    ("0-3,8", (0, 1, 2, 3, 8)),
    ("0-3,8-11\n", (0, 1, 2, 3, 8, 9, 10, 11)),
    ("8,0-1", (0, 1, 8)),
    ("0-2,1", (0, 1, 2)),
    ("1-1", (1,)),
    (" 0 , 2 ", (0, 2)),
    ("0-7:2", (0, 2, 4, 6)),
    ("1-8:3", (1, 4, 7)),
    ("255", (255,)),
]

PARSE_ERRORS = [
    "a",
    "0x3",
    "1-",
    "-1",
    "3-1",
    "0,,1",
    "0,",
    "0-7:0",
    "1 2",
    "+1",
    "\u0663",  # ARABIC-INDIC DIGIT THREE: int() would take it, sysfs never prints it
]

FORMAT_VECTORS = [
    ((), ""),
    ((0,), "0"),
    ((0, 1), "0-1"),
    ((0, 1, 2, 3, 8), "0-3,8"),
    ((5, 3, 1), "1,3,5"),
    ((2, 2, 3, 3), "2-3"),
    ((0, 2, 3, 4, 6, 8, 9), "0,2-4,6,8-9"),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_VECTORS)
def test_parse_cpulist(text: str, expected: tuple[int, ...]) -> None:
    assert parse_cpulist(text) == expected


@pytest.mark.parametrize("text", PARSE_ERRORS)
def test_parse_cpulist_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_cpulist(text)


@pytest.mark.parametrize(("cpus", "expected"), FORMAT_VECTORS)
def test_format_cpulist(cpus: tuple[int, ...], expected: str) -> None:
    assert format_cpulist(cpus) == expected


def test_format_cpulist_rejects_negative() -> None:
    with pytest.raises(ValueError):
        format_cpulist([0, -1])


@given(st.sets(st.integers(min_value=0, max_value=300)))
def test_cpulist_round_trip(cpus: set[int]) -> None:
    assert parse_cpulist(format_cpulist(cpus)) == tuple(sorted(cpus))


# --- a fake sysfs tree -------------------------------------------------------


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def _cache(cpu_dir: Path, index: int, level: int, kind: str, cache_id: int | None) -> None:
    d = cpu_dir / "cache" / f"index{index}"
    _write(d / "level", str(level))
    _write(d / "type", kind)
    if cache_id is not None:
        _write(d / "id", str(cache_id))


def make_fake_sysfs(root: Path) -> Path:
    """Build 4 possible CPUs on 2 nodes with cpu3 offline; return the root.

    cpu0 and cpu1 are SMT siblings on socket 0 / node 0, cpu2 is alone on
    socket 1 / node 1, cpu3 (node 1) is offline and so has no topology/ or
    cache/ directory.  cpu0 has no ``online`` file.
    """
    cpu = root / "cpu"
    _write(cpu / "possible", "0-3")
    _write(cpu / "present", "0-3")
    _write(cpu / "online", "0-2")
    _write(cpu / "offline", "3")
    _write(cpu / "kernel_max", "7")
    layout = {  # cpu: (node, socket, core, siblings, cache ids l1d/l1i/l2/l3)
        0: (0, 0, 0, "0-1", (0, 0, 0, 0)),
        1: (0, 0, 0, "0-1", (0, 0, 0, 0)),
        2: (1, 1, 0, "2", (1, 1, 1, 1)),
    }
    for n, (node, socket, core, siblings, ids) in layout.items():
        d = cpu / f"cpu{n}"
        (d / f"node{node}").mkdir(parents=True)  # a symlink in real sysfs
        if n != 0:
            _write(d / "online", "1")
        topo = d / "topology"
        _write(topo / "physical_package_id", str(socket))
        _write(topo / "die_id", "0")
        _write(topo / "cluster_id", "-1")
        _write(topo / "core_id", str(core))
        _write(topo / "thread_siblings_list", siblings)
        _cache(d, 0, 1, "Data", ids[0])
        _cache(d, 1, 1, "Instruction", ids[1])
        _cache(d, 2, 2, "Unified", ids[2])
        _cache(d, 3, 3, "Unified", ids[3])
    _cache(cpu / "cpu2", 4, 4, "Unified", 9)  # an L4: not an lscpu column
    d3 = cpu / "cpu3"
    (d3 / "node1").mkdir(parents=True)
    _write(d3 / "online", "0")
    node_dir = root / "node"
    _write(node_dir / "possible", "0-1")
    _write(node_dir / "node0" / "cpulist", "0-1")
    _write(node_dir / "node1" / "cpulist", "2")
    return root


def test_fake_sysfs_sets(tmp_path: Path) -> None:
    topo = Topology.read(make_fake_sysfs(tmp_path))
    assert topo.possible == (0, 1, 2, 3)
    assert topo.present == (0, 1, 2, 3)
    assert topo.online == (0, 1, 2)
    assert topo.kernel_max == 7
    assert topo.nr_cpu_ids == 4
    assert topo.nodes == {0: (0, 1), 1: (2,)}
    assert [c.cpu for c in topo.cpus] == [0, 1, 2, 3]


def test_fake_sysfs_cpus(tmp_path: Path) -> None:
    cpus = Topology.read(make_fake_sysfs(tmp_path)).cpus
    assert cpus[0] == CpuInfo(
        cpu=0, node=0, socket=0, die=0, cluster=None, core=0,
        l1d=0, l1i=0, l2=0, l3=0, online=True, thread_siblings=(0, 1),
    )  # fmt: skip
    assert cpus[1].thread_siblings == (0, 1) and cpus[1].online
    assert (cpus[2].node, cpus[2].socket, cpus[2].core) == (1, 1, 0)
    assert (cpus[2].l1d, cpus[2].l1i, cpus[2].l2, cpus[2].l3) == (1, 1, 1, 1)
    # Offline: the node link survives, everything under topology/ and cache/ is gone.
    assert cpus[3] == CpuInfo(cpu=3, node=1, online=False)


def test_fake_sysfs_without_optional_files(tmp_path: Path) -> None:
    """Fallbacks: present = possible, online from per-CPU files, nodes from links."""
    root = make_fake_sysfs(tmp_path)
    for name in ("present", "online", "kernel_max"):
        (root / "cpu" / name).unlink()
    shutil.rmtree(root / "node")
    topo = Topology.read(root)
    assert topo.present == topo.possible == (0, 1, 2, 3)
    assert topo.online == (0, 1, 2)  # cpu0 has no online file: online
    assert topo.kernel_max == 3
    assert topo.nodes == {0: (0, 1), 1: (2, 3)}
    assert topo.cpus[2].node == 1


def test_fake_sysfs_possible_beyond_present(tmp_path: Path) -> None:
    """A possible CPU with no cpuN directory at all is listed, offline, all None."""
    root = make_fake_sysfs(tmp_path)
    _write(root / "cpu" / "possible", "0-5")
    topo = Topology.read(root)
    assert topo.possible == (0, 1, 2, 3, 4, 5)
    assert topo.present == (0, 1, 2, 3)
    assert topo.cpus[5] == CpuInfo(cpu=5)
    assert topo.nr_cpu_ids == 6


def test_fake_sysfs_to_json(tmp_path: Path) -> None:
    data = Topology.read(make_fake_sysfs(tmp_path)).to_json()
    assert json.loads(json.dumps(data)) == data
    assert data["possible"] == "0-3"
    assert data["online"] == "0-2"
    assert data["present"] == "0-3"
    assert data["nodes"] == {"0": "0-1", "1": "2"}
    cpus = data["cpus"]
    assert isinstance(cpus, list) and len(cpus) == 4
    assert cpus[0] == {
        "cpu": 0, "node": 0, "socket": 0, "die": 0, "cluster": None, "core": 0,
        "l1d": 0, "l1i": 0, "l2": 0, "l3": 0, "online": True, "thread_siblings": "0-1",
    }  # fmt: skip
    assert cpus[3]["online"] is False and cpus[3]["core"] is None


def test_read_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Topology.read(tmp_path / "nothing")


def test_read_garbage_list(tmp_path: Path) -> None:
    root = make_fake_sysfs(tmp_path)
    _write(root / "cpu" / "online", "zero-two")
    with pytest.raises(ValueError):
        Topology.read(root)


def test_read_empty_possible(tmp_path: Path) -> None:
    _write(tmp_path / "cpu" / "possible", "")
    with pytest.raises(ValueError):
        Topology.read(tmp_path)


# --- this machine --------------------------------------------------------------


@pytest.mark.skipif(not (SYS_CPU / "possible").exists(), reason="no sysfs CPU directory")
def test_real_machine() -> None:
    topo = Topology.read()
    assert topo.possible == parse_cpulist((SYS_CPU / "possible").read_text())
    assert topo.online == parse_cpulist((SYS_CPU / "online").read_text())
    assert set(os.sched_getaffinity(0)) <= set(topo.online) <= set(topo.possible)
    assert [c.cpu for c in topo.cpus] == list(topo.possible)
    assert topo.nr_cpu_ids == topo.possible[-1] + 1
    assert topo.kernel_max == int((SYS_CPU / "kernel_max").read_text())
    for info in topo.cpus:
        assert info.online == (info.cpu in topo.online)
        core_id = SYS_CPU / f"cpu{info.cpu}" / "topology" / "core_id"
        if core_id.exists():
            assert info.core == int(core_id.read_text())
        if info.online and info.thread_siblings:
            assert info.cpu in info.thread_siblings
    json.dumps(topo.to_json())


# --- simulated -----------------------------------------------------------------


def test_simulated_64() -> None:
    topo = Topology.simulated(64)
    assert topo.possible == topo.present == topo.online == tuple(range(64))
    assert topo.kernel_max == 63 and topo.nr_cpu_ids == 64
    assert len(topo.cpus) == 64
    assert [c.core for c in topo.cpus] == list(range(64))
    assert {c.socket for c in topo.cpus} == {0} and {c.node for c in topo.cpus} == {0}
    assert all(c.online and c.thread_siblings == (c.cpu,) for c in topo.cpus)
    assert topo.nodes == {0: tuple(range(64))}
    assert topo.to_json()["possible"] == "0-63"


def test_simulated_partly_online() -> None:
    topo = Topology.simulated(4, online=[2, 0])
    assert topo.online == (0, 2)
    assert [c.online for c in topo.cpus] == [True, False, True, False]
    assert topo.nodes == {0: (0, 2)}
    assert topo.to_json()["online"] == "0,2"


@pytest.mark.parametrize(("nr", "online"), [(0, None), (-1, None), (4, [4]), (4, [-1])])
def test_simulated_rejects(nr: int, online: list[int] | None) -> None:
    with pytest.raises(ValueError):
        Topology.simulated(nr, online)
