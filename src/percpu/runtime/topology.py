"""CPU topology as the kernel exports it under /sys/devices/system.

This module is what ``lscpu -e`` and ``numactl --hardware`` read, without
either tool: psutil counts CPUs but does not say which socket, core, cache or
NUMA node a CPU belongs to, nor which CPUs are *possible* rather than online.

Files read (``root`` defaults to ``/sys/devices/system`` and is injectable,
so a test can build a fake tree, and a simulated topology needs none)::

    root/cpu/possible          0-3      CPUs that may ever exist (kernel's
    root/cpu/present           0-3      cpu_possible_mask, cpu_present_mask,
    root/cpu/online            0-2      cpu_online_mask), list format
    root/cpu/kernel_max        255      NR_CPUS - 1
    root/cpu/cpuN/online       1        absent for cpu0 when it cannot be hotplugged
    root/cpu/cpuN/nodeM        symlink  NUMA node of a present CPU
    root/cpu/cpuN/topology/    physical_package_id, die_id, cluster_id, core_id,
                               thread_siblings_list (gone while the CPU is offline)
    root/cpu/cpuN/cache/indexK level, type, id   (lscpu's L1d:L1i:L2:L3 column)
    root/node/nodeM/cpulist    0-1      numactl --hardware "node M cpus:"

Per-CPU arrays in this package are sized by *possible* CPUs, never by online
ones (liburcu's ``compat-smp.h`` explains why: a CPU brought online later
must already have its slot), so :class:`Topology` lists one :class:`CpuInfo`
per possible CPU; fields sysfs does not give for a CPU (an offline CPU has no
``topology/`` or ``cache/`` directory) are ``None``.

Deviations from lscpu: cache columns show the ``id`` file only (lscpu invents
a logical number when a kernel lacks it; we print ``None``/``-``), and the
negative ids some architectures use for "unknown" are reported as ``None``.

This module imports nothing from the rest of the package.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_SYSFS_ROOT",
    "CpuInfo",
    "Topology",
    "format_cpulist",
    "parse_cpulist",
]

DEFAULT_SYSFS_ROOT = "/sys/devices/system"

_RANGE_RE = re.compile(r"^([0-9]+)(?:-([0-9]+)(?::([0-9]+))?)?$")
_NODE_RE = re.compile(r"^node([0-9]+)$")
_INDEX_RE = re.compile(r"^index([0-9]+)$")


def parse_cpulist(text: str) -> tuple[int, ...]:
    """Parse a CPU list such as ``0-3,8`` into sorted, distinct CPU numbers.

    Mirrors the list format of sysfs ``cpulist`` files (``%*pbl``), plus the
    ``a-b:stride`` form taskset accepts (``0-7:2`` is 0, 2, 4, 6).  Leading
    and trailing whitespace (the newline sysfs appends) is ignored and an
    empty string is the empty list.

    Context: pure function.
    Raises ValueError on any other input (empty element, ``b < a``, stride 0,
    signs, non-ASCII digits).  The kernel-exact grammar (``used/group``, ``N``,
    ``all``) belongs to the cpumask module, not here.
    """
    text = text.strip()
    if not text:
        return ()
    cpus: set[int] = set()
    for part in text.split(","):
        m = _RANGE_RE.match(part.strip())
        if m is None:
            raise ValueError(f"invalid CPU list element {part!r} in {text!r}")
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
        stride = int(m.group(3)) if m.group(3) is not None else 1
        if last < first:
            raise ValueError(f"invalid CPU range {part!r}: end before start")
        if stride == 0:
            raise ValueError(f"invalid CPU range {part!r}: stride 0")
        cpus.update(range(first, last + 1, stride))
    return tuple(sorted(cpus))


def format_cpulist(cpus: Iterable[int]) -> str:
    """Format CPU numbers as a list with runs collapsed, e.g. ``0-3,8``.

    Mirrors the kernel's ``bitmap_list_string()`` (``%*pbl``): ascending,
    duplicates dropped, two or more consecutive CPUs printed as ``a-b``.

    Context: pure function.
    Raises ValueError on a negative CPU number.
    """
    ordered = sorted(set(cpus))
    if ordered and ordered[0] < 0:
        raise ValueError(f"negative CPU number {ordered[0]}")
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


@dataclass(frozen=True)
class CpuInfo:
    """One possible CPU as lscpu -e shows it.

    Topology ids are the raw sysfs ids (``physical_package_id`` is ``socket``,
    ``core_id`` is ``core``); cache fields are the ``id`` of the level-1 data,
    level-1 instruction, level-2 and level-3 caches.  Any field sysfs does not
    give is ``None``.
    """

    cpu: int
    node: int | None = None
    socket: int | None = None
    die: int | None = None
    cluster: int | None = None
    core: int | None = None
    l1d: int | None = None
    l1i: int | None = None
    l2: int | None = None
    l3: int | None = None
    online: bool = False
    thread_siblings: tuple[int, ...] = ()

    def to_json(self) -> dict[str, object]:
        """Return the lscpu -J style object for this CPU."""
        return {
            "cpu": self.cpu,
            "node": self.node,
            "socket": self.socket,
            "die": self.die,
            "cluster": self.cluster,
            "core": self.core,
            "l1d": self.l1d,
            "l1i": self.l1i,
            "l2": self.l2,
            "l3": self.l3,
            "online": self.online,
            "thread_siblings": format_cpulist(self.thread_siblings),
        }


@dataclass(frozen=True)
class Topology:
    """The CPU sets and per-CPU topology of one machine (or a simulated one).

    ``cpus`` holds one entry per possible CPU, in CPU order.  ``nodes`` maps
    each NUMA node to the CPUs its ``cpulist`` names (on most architectures
    the online ones only); it is empty when the kernel has no node directory
    and no CPU names its node.
    """

    possible: tuple[int, ...]
    present: tuple[int, ...]
    online: tuple[int, ...]
    kernel_max: int
    cpus: tuple[CpuInfo, ...]
    nodes: dict[int, tuple[int, ...]] = field(default_factory=dict, hash=False)

    @property
    def nr_cpu_ids(self) -> int:
        """Return the last possible CPU plus one, the size of a per-CPU array.

        Mirrors the kernel's ``nr_cpu_ids``.
        """
        return self.possible[-1] + 1 if self.possible else 0

    @classmethod
    def read(cls, root: str | os.PathLike[str] = DEFAULT_SYSFS_ROOT) -> Topology:
        """Read the topology from a sysfs tree (``/sys/devices/system``).

        Mirrors what ``lscpu -e`` and ``numactl --hardware`` read; see the
        module docstring for the files.  ``present`` falls back to
        ``possible``, ``online`` to the per-CPU ``online`` files (a CPU without
        one is online, as cpu0 often is) and ``kernel_max`` to the last
        possible CPU when their files are missing.

        Context: reads files only; safe from any thread or process.  The
        result is a snapshot: CPUs may go on- or offline right after.
        Raises OSError when ``root/cpu/possible`` cannot be read, and
        ValueError when a CPU list file is malformed or no CPU is possible.
        """
        base = Path(root)
        cpu_dir = base / "cpu"
        possible = parse_cpulist((cpu_dir / "possible").read_text())
        if not possible:
            raise ValueError(f"{cpu_dir / 'possible'} lists no CPU")
        present = _read_cpulist(cpu_dir / "present")
        if present is None:
            present = possible
        online_list = _read_cpulist(cpu_dir / "online")
        if online_list is None:
            online_list = tuple(
                n for n in possible if _read_text(cpu_dir / f"cpu{n}" / "online") != "0"
            )
        kernel_max = _read_int(cpu_dir / "kernel_max")
        if kernel_max is None:
            kernel_max = possible[-1]

        nodes = _read_nodes(base / "node")
        node_of: dict[int, int] = {}
        for node, members in nodes.items():
            for n in members:
                node_of.setdefault(n, node)

        online_set = set(online_list)
        cpus = tuple(
            _read_cpu(cpu_dir / f"cpu{n}", n, n in online_set, node_of.get(n))
            for n in possible
        )
        if not (base / "node").is_dir():
            grouped: dict[int, list[int]] = {}
            for info in cpus:
                if info.node is not None:
                    grouped.setdefault(info.node, []).append(info.cpu)
            nodes = {k: tuple(v) for k, v in sorted(grouped.items())}
        return cls(
            possible=possible,
            present=present,
            online=online_list,
            kernel_max=kernel_max,
            cpus=cpus,
            nodes=nodes,
        )

    @classmethod
    def simulated(cls, nr_cpus: int, online: Iterable[int] | None = None) -> Topology:
        """Build a synthetic topology of ``nr_cpus`` possible CPUs.

        One node, one socket, one die; ``core`` is the CPU number, each CPU
        has private L1 and L2 caches (id = CPU) and all share L3 id 0.  All
        CPUs are present; ``online`` defaults to all of them.  Offline
        simulated CPUs keep their topology fields (there is no sysfs to hide
        them); ``nodes[0]`` lists the online CPUs, as the kernel's does.

        Context: pure function; lets a test run 64 CPUs on a 2-CPU machine.
        Raises ValueError when ``nr_cpus < 1`` or ``online`` names a CPU
        outside ``0..nr_cpus-1``.
        """
        if nr_cpus < 1:
            raise ValueError(f"nr_cpus must be at least 1, not {nr_cpus}")
        possible = tuple(range(nr_cpus))
        online_set = set(possible) if online is None else set(online)
        bad = sorted(n for n in online_set if not 0 <= n < nr_cpus)
        if bad:
            raise ValueError(f"online CPU {bad[0]} is not in 0-{nr_cpus - 1}")
        online_tuple = tuple(sorted(online_set))
        cpus = tuple(
            CpuInfo(
                cpu=n,
                node=0,
                socket=0,
                die=0,
                cluster=0,
                core=n,
                l1d=n,
                l1i=n,
                l2=n,
                l3=0,
                online=n in online_set,
                thread_siblings=(n,),
            )
            for n in possible
        )
        return cls(
            possible=possible,
            present=possible,
            online=online_tuple,
            kernel_max=nr_cpus - 1,
            cpus=cpus,
            nodes={0: online_tuple},
        )

    def to_json(self) -> dict[str, object]:
        """Return the topology as a JSON-ready dict in the spirit of lscpu -J.

        Keys: ``cpus`` (one object per possible CPU, see
        :meth:`CpuInfo.to_json`), ``possible``, ``present``, ``online``
        (list-format strings), ``kernel_max``, and ``nodes`` (node number as a
        string → list-format string).
        """
        return {
            "cpus": [info.to_json() for info in self.cpus],
            "possible": format_cpulist(self.possible),
            "present": format_cpulist(self.present),
            "online": format_cpulist(self.online),
            "kernel_max": self.kernel_max,
            "nodes": {str(node): format_cpulist(cpus) for node, cpus in self.nodes.items()},
        }


def _read_text(path: Path) -> str | None:
    """Return a sysfs attribute stripped of whitespace, or None if unreadable."""
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    """Return a decimal sysfs attribute, or None if absent or not a number."""
    text = _read_text(path)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _read_id(path: Path) -> int | None:
    """Return a topology or cache id; negative ids (unknown) become None."""
    value = _read_int(path)
    return value if value is not None and value >= 0 else None


def _read_cpulist(path: Path) -> tuple[int, ...] | None:
    """Return a list-format sysfs file parsed, or None if it is absent."""
    text = _read_text(path)
    return None if text is None else parse_cpulist(text)


def _read_nodes(node_dir: Path) -> dict[int, tuple[int, ...]]:
    """Return node number → CPUs from ``node/nodeM/cpulist`` files."""
    try:
        entries = os.listdir(node_dir)
    except OSError:
        return {}
    nodes: dict[int, tuple[int, ...]] = {}
    for name in entries:
        m = _NODE_RE.match(name)
        if m is None or not (node_dir / name).is_dir():
            continue
        nodes[int(m.group(1))] = _read_cpulist(node_dir / name / "cpulist") or ()
    return dict(sorted(nodes.items()))


def _read_cpu(cpu_path: Path, cpu: int, online: bool, node: int | None) -> CpuInfo:
    """Return the CpuInfo for one CPU directory (which may not exist)."""
    try:
        entries = os.listdir(cpu_path)
    except OSError:
        entries = []
    for name in sorted(entries):
        m = _NODE_RE.match(name)
        if m is not None:
            node = int(m.group(1))
            break

    topo = cpu_path / "topology"
    siblings = _read_cpulist(topo / "thread_siblings_list")
    if siblings is None:
        siblings = _read_cpulist(topo / "core_cpus_list") or ()

    caches: dict[str, int | None] = {"l1d": None, "l1i": None, "l2": None, "l3": None}
    cache_dir = cpu_path / "cache"
    try:
        indexes = [name for name in os.listdir(cache_dir) if _INDEX_RE.match(name)]
    except OSError:
        indexes = []
    for name in sorted(indexes, key=lambda s: int(s[len("index"):])):
        index = cache_dir / name
        key = _cache_key(_read_int(index / "level"), _read_text(index / "type"))
        if key is not None and caches[key] is None:
            caches[key] = _read_id(index / "id")

    return CpuInfo(
        cpu=cpu,
        node=node,
        socket=_read_id(topo / "physical_package_id"),
        die=_read_id(topo / "die_id"),
        cluster=_read_id(topo / "cluster_id"),
        core=_read_id(topo / "core_id"),
        l1d=caches["l1d"],
        l1i=caches["l1i"],
        l2=caches["l2"],
        l3=caches["l3"],
        online=online,
        thread_siblings=siblings,
    )


def _cache_key(level: int | None, kind: str | None) -> str | None:
    """Return which lscpu cache column a ``cache/indexK`` directory fills."""
    if level == 1 and kind == "Data":
        return "l1d"
    if level == 1 and kind == "Instruction":
        return "l1i"
    if level == 2 and kind in ("Unified", "Data"):
        return "l2"
    if level == 3 and kind in ("Unified", "Data"):
        return "l3"
    return None
