"""The C core's stubs match the extension, and the package type-checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_stubtest_accepts_core_stub():
    out = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "percpu._core"],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.timeout(300)
def test_mypy_strict_on_package():
    out = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=280
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_public_names_exist():
    import percpu
    from percpu import kernel

    for name in percpu.__all__:
        assert hasattr(percpu, name), name
    for name in kernel.__all__:
        v = getattr(kernel, name)
        # functions, and the kernel's constants (GFP_*, PCPU_MIN_UNIT_SIZE) in capitals
        assert callable(v) or (name.isupper() and isinstance(v, int)), name
    for name in ("smp_processor_id", "nr_cpu_ids", "num_possible_cpus", "cpu_possible_mask",
                 "cpu_online_mask", "in_nmi", "kmalloc", "kzalloc", "kfree", "kthread_run_on_cpu",
                 "kthread_stop", "__alloc_percpu", "__alloc_percpu_gfp", "__alloc_reserved_percpu",
                 "alloc_percpu", "free_percpu", "per_cpu_ptr", "this_cpu_ptr", "pcpu_nr_pages",
                 "percpu_stats", "GFP_KERNEL", "GFP_NOWAIT"):
        assert name in kernel.__all__


@pytest.mark.timeout(120)
def test_ruff_lint_is_clean():
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", "src", "tests", "benchmarks"],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )
    assert out.returncode == 0, out.stdout + out.stderr
