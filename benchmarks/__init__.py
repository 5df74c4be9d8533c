"""Benchmarks of percpu, one module per component.

Run one as ``python -m benchmarks.<name>`` (for example
``python -m benchmarks.runtime``).  Each prints ns/op for every case with the
peer a user would pick instead -- ``threading.Lock``, ``multiprocessing.Lock``,
``multiprocessing.shared_memory.SharedMemory`` -- measured in the same run,
and the ratio of the two; then the component's targets with PASS/MISS.

Options every module takes:
    --json    print one JSON document instead of the table
    --quick   few, short rounds (the CI smoke run; numbers are rough)

These machines are noisy (KVM guests with steal time): rounds are interleaved
so drift hits every case alike, ratios are taken per round and then the
median is reported.  Read the ratios, not the absolute figures.  Shared
helpers (timing, tables, JSON, pinned worker processes) are in
:mod:`benchmarks._harness`.
"""
