"""Model-check the RCU grace-period protocol (docs/model/rcu.pml) with spin.

The Promela model abstracts csrc/rcu.h, pk_rcu_advance (csrc/rcu.c) and the
waiters of src/percpu/runtime/rcu.py; docs/model/README.md explains it.  Each
test generates the verifier in a temporary directory (``spin -a``), compiles
``pan.c`` with gcc and runs it:

* the protocol as written: no reader sees a freed object (safety, 2 readers,
  1 updater doing 2 grace periods, 1 independent scanner, nesting, a reader
  that dies in its section) and every grace period ends (LTL ``<> upd_finished``
  under weak fairness, 1 update to keep it under a minute);
* deliberately broken variants must fail, so the model is shown able to fail:
  ``-DBUG`` (the scan loads the slots before gp_seq), ``-DBUG_READER`` (the
  reader loads the pointer before publishing its slot), ``-DNO_RECLAIM`` (a
  dead reader's slot is never freed: the progress property fails).

Skipped when spin or gcc is not installed (Debian package ``spin``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

MODEL = Path(__file__).resolve().parents[2] / "docs" / "model" / "rcu.pml"

pytestmark = pytest.mark.skipif(
    shutil.which("spin") is None or shutil.which("gcc") is None,
    reason="spin is not installed (Debian package spin)",
)


def _pan(
    tmp_path: Path, defines: list[str], cflags: list[str], args: list[str]
) -> tuple[int, str]:
    """Generate, compile and run the verifier; returns (errors, pan's output)."""
    if shutil.which("spin") is None:
        pytest.skip("spin is not installed (Debian package spin)")
    shutil.copy(MODEL, tmp_path / "rcu.pml")
    subprocess.run(
        ["spin", *defines, "-a", "rcu.pml"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=60,
    )
    subprocess.run(
        ["gcc", "-w", "-O2", *cflags, "-o", "pan", "pan.c"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=120,
    )
    run = subprocess.run(
        ["./pan", *args],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=110,
    )
    out = run.stdout + run.stderr
    m = re.search(r"errors: (\d+)", out)
    assert m, f"no error count in pan's output:\n{out}"
    assert "out of memory" not in out.lower(), out
    return int(m.group(1)), out


SAFETY = ["-DSAFETY", "-DNOCLAIM", "-DCOLLAPSE"]
LIVENESS = ["-DCOLLAPSE"]


def test_safety_holds(tmp_path: Path) -> None:
    errors, out = _pan(tmp_path, [], SAFETY, ["-m200000"])
    assert errors == 0, out
    assert "max search depth too small" not in out, out  # the search was exhaustive


def test_progress_holds(tmp_path: Path) -> None:
    errors, out = _pan(tmp_path, ["-DNU=1"], LIVENESS, ["-a", "-f", "-m200000"])
    assert errors == 0, out
    assert "max search depth too small" not in out, out


@pytest.mark.parametrize("variant", ["-DBUG", "-DBUG_READER"])
def test_broken_variant_sees_freed_object(tmp_path: Path, variant: str) -> None:
    errors, out = _pan(tmp_path, [variant], [*SAFETY, "-DBFS"], [])
    assert errors > 0, out
    assert "assertion violated" in out, out


def test_progress_fails_without_dead_reader_reclaim(tmp_path: Path) -> None:
    errors, out = _pan(
        tmp_path, ["-DNU=1", "-DNO_RECLAIM"], LIVENESS, ["-a", "-f", "-m200000"]
    )
    assert errors > 0, out
    assert "acceptance cycle" in out, out
