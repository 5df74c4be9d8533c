"""Build the C core with -fsanitize=address,undefined and run the unit and crash tests under it.

msgspec's recipe: LD_PRELOAD of libasan (the interpreter itself is not
instrumented), PYTHONMALLOC=malloc so ASan sees Python's allocations,
ASAN_OPTIONS=detect_leaks=0 (CPython keeps memory at exit on purpose).  The
build goes to a temporary copy of the package, never into the source tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _libasan() -> str | None:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    path = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


@pytest.mark.timeout(900)
def test_unit_and_crash_tests_pass_under_asan_ubsan(tmp_path):
    if os.environ.get("PERCPU_UNDER_ASAN"):
        pytest.skip("already running under the sanitizers")  # no recursion
    libasan = _libasan()
    assert libasan, "gcc with libasan is required to run the sanitizer tests"
    pkg = tmp_path / "pkg"
    shutil.copytree(ROOT / "src" / "percpu", pkg / "percpu", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    env = dict(os.environ, PERCPU_SANITIZE="1")
    build = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(pkg), "--build-temp", str(tmp_path / "tmp")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    assert list((pkg / "percpu").glob("_core*.so"))
    env = dict(
        os.environ,
        PYTHONPATH=str(pkg),
        LD_PRELOAD=libasan,
        PYTHONMALLOC="malloc",
        ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:halt_on_error=1",
        UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1",
        PERCPU_UNDER_ASAN="1",
        PERCPU_STRESS_SCALE="0.25",
    )
    where = subprocess.run(
        [sys.executable, "-c", "import percpu._core as c; print(c.__file__)"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(pkg)), where.stdout
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         "tests/unit", "tests/crash", "tests/property"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=840,
    )
    tail = (run.stdout + run.stderr)[-6000:]
    assert run.returncode == 0, tail
    assert "ERROR: AddressSanitizer" not in run.stderr and "runtime error:" not in run.stderr, tail
