"""The XDP runtime: frames from a pool, sources, programs, and the engine that polls.

``percpu.xdp`` is the part people touch first: a source of packets
(:class:`Generator` by default, pcap/pcapng files, a live AF_PACKET socket),
an XDP program (an ``xdp-bench redirect-cpu`` mode, a numpy batch program, or
a Python function per frame) and a :class:`percpu.CpuMap` whose workers hand
the packets to a "stack".  See ``docs/design/xdp.md``.
"""

from percpu.xdp.engine import (
    BPF_F_TEST_XDP_LIVE_FRAMES,
    BatchProgram,
    FrameProgram,
    PollResult,
    RxStats,
    TestRunResult,
    XdpEngine,
    bpf_prog_test_run,
    builtin_program,
)
from percpu.xdp.programs import HDR_DTYPE, MODES, REMOTE_ACTIONS, batch_program, parse
from percpu.xdp.sources import Generator, RxBatch, open_source

__all__ = [
    "BPF_F_TEST_XDP_LIVE_FRAMES",
    "HDR_DTYPE",
    "MODES",
    "REMOTE_ACTIONS",
    "BatchProgram",
    "FrameProgram",
    "Generator",
    "PollResult",
    "RxBatch",
    "RxStats",
    "TestRunResult",
    "XdpEngine",
    "batch_program",
    "bpf_prog_test_run",
    "builtin_program",
    "open_source",
    "parse",
]
