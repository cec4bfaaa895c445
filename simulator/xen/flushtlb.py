"""The TLB flush clock (include/asm/flushtlb.h), and x86's, as a heap policy.

The tree has the hooks and no clock: ``tlbflush_current_time()`` is 0,
``page_set_tlbflush_timestamp`` stores that 0, and ``tlbflush_filter()`` is
empty ("lazy implementation"), so every flush on reuse fences every online
hart.  With the profile policy ``tlbflush_clock`` they are x86's
(xen/arch/x86/flushtlb.c): a global clock that ticks at each full flush
(``pre_flush``), the time each hart last flushed fully (``tlbflush_time``,
set by ``post_flush``), and a filter that takes out of a reuse flush every
hart that has flushed fully since the page was freed (``NEED_FLUSH``).

On x86 the flushing CPU stamps itself.  On RISC-V a remote fence runs in the
firmware, not in Xen, so the caller stamps its targets once the SBI call has
returned (``sbi_remote_hfence_gvma``): the clock is only as right as that
return.  The oracle never asks the clock: it judges by what each TLB holds.
"""

from __future__ import annotations

from simulator.xen.base import XenBase
from simulator.xen.fidelity import model, upstream

X86 = "xen/arch/x86/flushtlb.c"
X86_H = "xen/arch/x86/include/asm/flushtlb.h"


class FlushTlb(XenBase):
    tlbflush_clock = 1  # x86 starts it at 1
    tlbflush_time: list[int]  # DEFINE_PER_CPU(u32, tlbflush_time)

    @model(f"x86's per-CPU tlbflush_time ({X86}, not in the pin): one list for the harts, set up at boot")
    def init_tlbflush(self) -> None:
        self.tlbflush_time = [0] * len(self.harts)

    @upstream("include/asm/flushtlb.h", policies=("tlbflush_clock",))
    def tlbflush_current_time(self) -> int:
        return self.tlbflush_clock if self.profile.tlbflush_clock else 0  # policy: x86's clock

    @upstream("include/asm/flushtlb.h", differs="the stamp is the heap's array", fixes=())
    def page_set_tlbflush_timestamp(self, pg: int) -> None:
        # tlbflush_current_time() is 0 on RISC-V (1055177445); v5 had BUG_ON("unimplemented")
        self.BUG_ON(self.profile.tlbflush_timestamp_unimplemented, "page_set_tlbflush_timestamp: unimplemented")
        self.heap.tlbflush_timestamp[pg] = self.tlbflush_current_time()  # type: ignore[attr-defined]

    @upstream(
        "include/asm/flushtlb.h",
        differs="returns the harts it took out, with their tlbflush_time, for the log",
        policies=("tlbflush_clock",),
    )
    def tlbflush_filter(self, mask: list[int], page_timestamp: int) -> dict[int, int]:
        if not self.tlbflush_current_time():
            return {}  # the tree's: "lazy implementation just doesn't clear anything"
        out = {c: self.tlbflush_time[c] for c in mask if not self.NEED_FLUSH(self.tlbflush_time[c], page_timestamp)}
        mask[:] = [c for c in mask if c not in out]
        return out

    @model(f"x86's NEED_FLUSH ({X86_H}, not in the pin)")
    def NEED_FLUSH(self, cpu_stamp: int, lastuse_stamp: int) -> bool:
        curr_time = self.tlbflush_current_time()
        return curr_time == 0 or cpu_stamp <= lastuse_stamp <= curr_time

    @model(f"x86's pre_flush ({X86}, not in the pin); no wrap handling: a run never nears 2^32 flushes")
    def pre_flush(self) -> int:
        self.tlbflush_clock += 1
        return self.tlbflush_clock

    @model(f"x86's post_flush ({X86}, not in the pin): for each target of a remote fence, by its caller")
    def post_flush(self, cpu: int, t: int) -> None:
        self.tlbflush_time[cpu] = t
        self.emit("tlbflush.stamp", cpu=cpu, time=t)
