"""A Prometheus collector for per-CPU counters (``pip install percpu[prometheus]``).

The values are read at scrape time, one sample per possible CPU with a
``cpu`` label, so the counters cost nothing between scrapes and every
process of the domain contributes without prometheus_client's multiprocess
mode::

    from prometheus_client import REGISTRY, start_http_server
    REGISTRY.register(PerCpuCollector({"app_requests": requests}))
    start_http_server(8000)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from percpu.pcpu.var import PerCpuCounter

__all__ = ["PerCpuCollector"]


class PerCpuCollector:
    """Export ``{metric name: PerCpuCounter}`` as counters with a ``cpu`` label."""

    def __init__(self, counters: Mapping[str, PerCpuCounter], *,
                 documentation: Mapping[str, str] | None = None) -> None:
        try:
            from prometheus_client.core import CounterMetricFamily
        except ImportError as e:  # pragma: no cover - optional dependency
            raise ImportError("PerCpuCollector needs prometheus_client: pip install percpu[prometheus]") from e
        self._family = CounterMetricFamily
        self._counters = dict(counters)
        self._doc = dict(documentation or {})

    def collect(self) -> Iterator[Any]:
        for name, counter in self._counters.items():
            fam = self._family(name, self._doc.get(name, f"per-CPU counter {name}"), labels=["cpu"])
            for cpu, value in counter.per_cpu().items():
                fam.add_metric([str(cpu)], float(value))
            yield fam

    def describe(self) -> Iterator[Any]:
        # Registration-time description without reading the counters.
        for name in self._counters:
            yield self._family(name, self._doc.get(name, f"per-CPU counter {name}"), labels=["cpu"])
