"""Tests for ``percpu topology`` and the global -j/-p/-V options, via click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from percpu.cli.main import cli, main


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the caller's terminal settings from forcing rich output."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    """Return a fake sysfs root: 3 possible CPUs, cpu2 offline, one node."""
    cpu = tmp_path / "cpu"
    _write(cpu / "possible", "0-2")
    _write(cpu / "present", "0-2")
    _write(cpu / "online", "0-1")
    _write(cpu / "kernel_max", "3")
    for n in (0, 1):
        d = cpu / f"cpu{n}"
        (d / "node0").mkdir(parents=True)
        _write(d / "topology" / "physical_package_id", "0")
        _write(d / "topology" / "core_id", str(n))
        _write(d / "topology" / "thread_siblings_list", str(n))
        for index, (level, kind, cache_id) in enumerate(
            [(1, "Data", n), (1, "Instruction", n), (2, "Unified", n), (3, "Unified", 0)]
        ):
            idx = d / "cache" / f"index{index}"
            _write(idx / "level", str(level))
            _write(idx / "type", kind)
            _write(idx / "id", str(cache_id))
    _write(cpu / "cpu2" / "online", "0")
    _write(tmp_path / "node" / "node0" / "cpulist", "0-1")
    return tmp_path


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_plain_table(sysfs: Path) -> None:
    result = run("topology", "--sysfs-root", str(sysfs))
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["CPU", "NODE", "SOCKET", "CORE", "L1d:L1i:L2:L3", "ONLINE"]
    assert [line.split() for line in lines[1:4]] == [
        ["0", "0", "0", "0", "0:0:0:0", "yes"],
        ["1", "0", "0", "1", "1:1:1:0", "yes"],
        ["2", "-", "-", "-", "-", "no"],
    ]
    assert lines[4] == ""
    assert "possible: 0-2  present: 0-2  online: 0-1" in lines
    assert "node 0 cpus: 0 1" in lines


def test_plain_columns_are_aligned(sysfs: Path) -> None:
    lines = run("topology", "--sysfs-root", str(sysfs)).stdout.splitlines()[:4]
    # Right-aligned numbers: every row's ONLINE value ends where the header does.
    assert len({len(line) for line in lines}) == 1


def test_plain_real_machine_one_row_per_possible_cpu() -> None:
    possible = Path("/sys/devices/system/cpu/possible")
    if not possible.exists():
        pytest.skip("no sysfs CPU directory")
    from percpu.runtime.topology import parse_cpulist

    cpus = parse_cpulist(possible.read_text())
    result = run("topology")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("CPU")
    rows = lines[1 : 1 + len(cpus)]
    assert [int(row.split()[0]) for row in rows] == list(cpus)
    assert "\x1b" not in result.stdout


def test_extended_columns(sysfs: Path) -> None:
    result = run("topology", "--sysfs-root", str(sysfs), "-e", "cpu,online")
    assert result.exit_code == 0, result.output
    assert [line.split() for line in result.stdout.splitlines()[:4]] == [
        ["CPU", "ONLINE"],
        ["0", "yes"],
        ["1", "yes"],
        ["2", "no"],
    ]


def test_extended_alone_means_all_columns() -> None:
    result = run("topology", "--simulate", "2", "-e")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].split() == [
        "CPU", "NODE", "SOCKET", "DIE", "CLUSTER", "CORE", "L1d:L1i:L2:L3", "ONLINE",
    ]  # fmt: skip


def test_extended_unknown_column() -> None:
    result = run("topology", "--simulate", "2", "-e", "cpu,bogus")
    assert result.exit_code == 2
    assert "bogus" in result.stderr
    result = run("-j", "topology", "--simulate", "2", "-e", "bogus")
    assert result.exit_code == 2
    assert "bogus" in json.loads(result.stdout)["error"]


def test_json(sysfs: Path) -> None:
    result = run("-j", "topology", "--sysfs-root", str(sysfs))
    assert result.exit_code == 0, result.output
    assert "\n" not in result.stdout.rstrip("\n")
    data = json.loads(result.stdout)
    assert {"cpus", "possible", "online", "present", "nodes"} <= data.keys()
    assert data["possible"] == "0-2" and data["online"] == "0-1"
    assert data["nodes"] == {"0": "0-1"}
    assert [c["cpu"] for c in data["cpus"]] == [0, 1, 2]
    assert data["cpus"][1]["core"] == 1 and data["cpus"][1]["l1d"] == 1
    assert data["cpus"][2]["online"] is False and data["cpus"][2]["node"] is None


def test_json_ignores_plain_only_options(sysfs: Path) -> None:
    full = run("-j", "topology", "--sysfs-root", str(sysfs)).stdout
    assert run("-j", "topology", "--sysfs-root", str(sysfs), "--parse", "-e", "cpu").stdout == full


def test_pretty_is_indented_json() -> None:
    result = run("-p", "topology", "--simulate", "4")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith('{\n  "cpus": [\n    {\n      "cpu": 0,')
    assert json.loads(result.stdout)["possible"] == "0-3"
    assert json.loads(run("-jp", "topology", "--simulate", "4").stdout)["online"] == "0-3"


def test_simulate_json_64() -> None:
    data = json.loads(run("--json", "topology", "--simulate", "64").stdout)
    assert len(data["cpus"]) == 64 and data["possible"] == "0-63"


def test_parse_csv(sysfs: Path) -> None:
    result = run("topology", "--sysfs-root", str(sysfs), "--parse")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    comments = [line for line in lines if line.startswith("#")]
    rows = [line for line in lines if not line.startswith("#")]
    assert comments[-1] == "# CPU,Core,Socket,Node,,L1d,L1i,L2,L3"
    assert rows == ["0,0,0,0,,0,0,0,0", "1,1,0,0,,1,1,1,0", "2,,,,,,,,"]


def test_parse_csv_chosen_columns(sysfs: Path) -> None:
    result = run("topology", "--sysfs-root", str(sysfs), "--parse", "-e", "cpu,online")
    lines = result.stdout.splitlines()
    assert lines[-4:] == ["# CPU,Online", "0,Y", "1,Y", "2,N"]


def test_bad_sysfs_root_plain(tmp_path: Path) -> None:
    result = run("topology", "--sysfs-root", str(tmp_path / "missing"))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ")
    assert "possible" in result.stderr


def test_bad_sysfs_root_json(tmp_path: Path) -> None:
    result = run("-j", "topology", "--sysfs-root", str(tmp_path / "missing"))
    assert result.exit_code == 1
    assert result.stderr == ""
    data = json.loads(result.stdout)
    assert "possible" in data["error"]
    assert data["errno"] == "ENOENT"


def test_malformed_sysfs_json(sysfs: Path) -> None:
    _write(sysfs / "cpu" / "online", "one")
    result = run("-j", "topology", "--sysfs-root", str(sysfs))
    assert result.exit_code == 1
    assert json.loads(result.stdout)["errno"] == "EINVAL"


def test_simulate_and_sysfs_root_exclude(sysfs: Path) -> None:
    result = run("topology", "--simulate", "2", "--sysfs-root", str(sysfs))
    assert result.exit_code == 2
    assert "exclude" in result.stderr


def test_unknown_object_json() -> None:
    result = run("-j", "nosuchobject")
    assert result.exit_code == 2
    assert "nosuchobject" in json.loads(result.stdout)["error"]
    assert run("nosuchobject").exit_code == 2


def test_version() -> None:
    result = run("-V")
    assert result.exit_code == 0
    assert result.stdout.startswith("percpu ")
    assert len(result.stdout.split()) == 2


def test_help_states_json_is_the_contract() -> None:
    result = run("--help")
    assert result.exit_code == 0
    assert "OBJECT COMMAND" in result.stdout
    assert "not promised" in result.stdout and "contract" in result.stdout
    assert "topology" in result.stdout


def test_forced_terminal_uses_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rich")
    monkeypatch.setenv("FORCE_COLOR", "1")
    result = run("topology", "--simulate", "2")
    assert result.exit_code == 0, result.output
    assert "\x1b[" in result.stdout  # styled header: rich drew this table
    assert "ONLINE" in result.stdout


def test_main_entry_point(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["-j", "topology", "--simulate", "3"])
    assert exc.value.code == 0
    assert json.loads(capsys.readouterr().out)["possible"] == "0-2"
