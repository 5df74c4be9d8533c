"""A hypothesis state machine over the per-CPU allocator.

After every step the C core's check compares the allocation map with the
boundary map, every block hint and the chunk hints with a brute-force scan
of the bitmap, the slots with the contig hints, and every counter with a
recount; this model adds what the check cannot know: the live areas never
overlap, each keeps the bytes written into it on every CPU, and the file's
backing equals the allocator's page count.
"""

from __future__ import annotations

import os

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import percpu
from percpu import kernel as K
from percpu import pcpu

SIZES = st.one_of(st.integers(1, 64), st.sampled_from([100, 1000, 4096, 5000, 12000, 32768]))
ALIGNS = st.sampled_from([0, 4, 8, 16, 64, 256, 4096])


class PcpuMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dom = percpu.Domain.create(size=48 << 20, nr_cpus=3, pcpu_static_size=64, pcpu_dyn_size=8192)
        self.dom.__enter__()
        self.live: dict[int, tuple[int, int]] = {}  # ptr -> (rounded size, stamp)
        self.n = 0

    def _stamp(self, ptr: int, size: int, stamp: int) -> None:
        for cpu in self.dom.possible:
            m = self.dom.mem(K.per_cpu_ptr(ptr, cpu), size)
            m[:] = bytes([(stamp + cpu) & 0xFF]) * size
            m.release()

    @rule(size=SIZES, align=ALIGNS, atomic=st.booleans(), reserved=st.booleans())
    def alloc(self, size: int, align: int, atomic: bool, reserved: bool) -> None:
        gfp = (K.GFP_NOWAIT if atomic else K.GFP_KERNEL) | 0x2000
        p = pcpu.alloc(size, align, reserved=reserved, gfp=gfp)
        if p is None:
            assert atomic or reserved, "a GFP_KERNEL allocation failed with room in the domain"
            return
        rsize = -(-size // 4) * 4
        assert p % max(align, 4) == 0
        assert pcpu.alloc_size(p) == rsize
        for cpu in self.dom.possible:  # zeroed everywhere
            assert bytes(self.dom.mem(K.per_cpu_ptr(p, cpu), rsize)) == bytes(rsize)
        self.n += 1
        self._stamp(p, rsize, self.n)
        self.live[p] = (rsize, self.n)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        p = data.draw(st.sampled_from(sorted(self.live)))
        K.free_percpu(p)
        del self.live[p]

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def double_free_is_refused(self, data: st.DataObject) -> None:
        p = data.draw(st.sampled_from(sorted(self.live)))
        K.free_percpu(p)
        del self.live[p]
        bad = [p]
        big = [q for q, (size, _) in self.live.items() if size > 4]
        if big:
            bad.append(data.draw(st.sampled_from(sorted(big))) + 4)  # inside a live area
        before = pcpu.stats_dict()
        for b in bad:
            if b in self.live:
                continue
            try:
                K.free_percpu(b)
            except percpu.errors.InvalidArgument:
                pass
            else:
                raise AssertionError(f"free_percpu({b:#x}) of no live area succeeded")
        assert pcpu.stats_dict() == before

    @rule()
    def balance(self) -> None:
        pcpu.balance()

    @invariant()
    def consistent(self) -> None:
        self.dom.arena.pcpu_check()
        spans = sorted((p, p + s) for p, (s, _) in self.live.items())
        for (_, e), (s2, _) in zip(spans, spans[1:]):
            assert e <= s2, "live areas overlap"
        for p, (size, stamp) in self.live.items():
            for cpu in self.dom.possible:
                got = bytes(self.dom.mem(K.per_cpu_ptr(p, cpu), size))
                assert got == bytes([(stamp + cpu) & 0xFF]) * size, f"area {p:#x} cpu {cpu} changed"
        percpu.runtime.work.flush(10)
        assert self.dom.populated_pages() == self.dom.st_blocks_pages()

    def teardown(self) -> None:
        percpu.runtime.work.flush(10)
        self.dom.__exit__(None, None, None)
        self.dom.close()
        if os.path.exists(self.dom.path):
            self.dom.unlink()


PcpuMachine.TestCase.settings = settings(PcpuMachine.TestCase.settings, stateful_step_count=40)
TestPcpu = PcpuMachine.TestCase
