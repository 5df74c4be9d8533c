"""The README's two commands, and .ci/run running exactly the second one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", text, re.S)]


def test_readme_has_exactly_two_commands():
    blocks = _blocks()
    assert len(blocks) == 2
    setup_and_run, setup_and_test = blocks
    assert "pip install" in setup_and_run and "percpu" in setup_and_run
    assert "pip install" in setup_and_test and "pytest" in setup_and_test


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    m = re.search(r'^TEST_CMD="(.*)"$', ci, re.M)
    assert m, ".ci/run must define TEST_CMD"
    assert m.group(1) == _blocks()[1]


def test_readme_python_example_runs():
    import subprocess
    import sys

    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S)
    assert code, "the README shows a Python example"
    out = subprocess.run([sys.executable, "-c", code.group(1)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
