"""Shared fixtures of the percpu test suite.

Fixtures:
    domain      a simulated 4-CPU, 32 MiB domain, current for the test
    domain64    the same with 64 simulated CPUs
    make_domain a factory: make_domain(size=..., nr_cpus=..., current=True)
                creates a domain that is closed and unlinked after the test

Hypothesis profiles: "ci" (50 examples) when the CI environment variable is
set, else "dev" (100 examples), or the one PERCPU_HYPOTHESIS_PROFILE names
("long": 1000 examples, for a soak run); none has a deadline (shared-memory set-up
times vary with the machine).

``tests/`` is on ``sys.path`` (pytest's rootdir conftest), so test modules
import the pure-Python reference models as ``models.<name>``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from hypothesis import settings

import percpu

settings.register_profile("ci", max_examples=50, deadline=None)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("long", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("PERCPU_HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


def _domain(nr_cpus: int, size: int = 32 << 20) -> Iterator[percpu.Domain]:
    dom = percpu.Domain.create(size=size, nr_cpus=nr_cpus)
    try:
        with dom:
            yield dom
    finally:
        dom.close()
        dom.unlink()


@pytest.fixture
def domain() -> Iterator[percpu.Domain]:
    """A fresh 32 MiB domain of 4 simulated CPUs, the current domain during the test."""
    yield from _domain(4)


@pytest.fixture
def domain64() -> Iterator[percpu.Domain]:
    """A fresh 32 MiB domain of 64 simulated CPUs, the current domain during the test."""
    yield from _domain(64)


@pytest.fixture
def make_domain() -> Iterator[Callable[..., percpu.Domain]]:
    """Create domains for one test; each is closed and (if still linked) unlinked after it.

    ``current=True`` (the default) also makes the domain current (``with dom:``)
    for the rest of the test.
    """
    made: list[tuple[percpu.Domain, bool]] = []

    def make(size: int = 8 << 20, nr_cpus: int | None = None, *, current: bool = True) -> percpu.Domain:
        dom = percpu.Domain.create(size=size, nr_cpus=nr_cpus)
        if current:
            dom.__enter__()
        made.append((dom, current))
        return dom

    yield make
    for dom, current in reversed(made):
        if current:
            dom.__exit__(None, None, None)
        dom.close()
        if os.path.exists(dom.path):
            dom.unlink()
