"""Traps from a guest: the guest-page faults a walk raises (traps.c).

The tree's ``do_trap`` has no case for guest-page faults: they reach
``do_unexpected_trap``, which dumps the CSRs and calls ``die()`` (an endless
``wfi`` loop); the model reports that as a ``panic`` finding naming the PTE
and why the walk faulted.  With ``handle_guest_page_faults`` (the ``fixed``
profile) the handler is ARM's (``do_trap_stage2_abort_guest`` ->
``p2m_resolve_translation_fault``): a fault on an address the p2m maps now (a
translation cached before a change, a race with a concurrent one) is
resolved by flushing the hart's entries for it and retrying; any other
fault is the guest's, injected into it (the guest goes on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulator.riscv.sbi import FenceCall, FenceRequest
from simulator.xen.base import XenPanic
from simulator.xen.fidelity import glue, upstream
from simulator.xen.p2m import INVALID_MFN, p2m_map_foreign_rw, p2m_mmio_direct_io, p2m_ram_rw
from simulator.xen.smp import Smp

if TYPE_CHECKING:
    from simulator.riscv.walker import Fault

CAUSE_LOAD_GUEST_PAGE_FAULT = 0x15
CAUSE_STORE_GUEST_PAGE_FAULT = 0x17
CAUSE_NAMES = {
    CAUSE_LOAD_GUEST_PAGE_FAULT: "Load Guest Page Fault",
    CAUSE_STORE_GUEST_PAGE_FAULT: "Guest Store/AMO Page Fault",
}


class Traps(Smp):
    @upstream(
        "traps.c",
        differs="guest-page faults only (the cause comes with the fault, not from CSR_SCAUSE)",
        fixes=("handle_guest_page_faults",),
    )
    async def do_trap(self, fault: Fault) -> None:
        cause = CAUSE_STORE_GUEST_PAGE_FAULT if fault.write else CAUSE_LOAD_GUEST_PAGE_FAULT
        if self.profile.handle_guest_page_faults:
            await self.do_trap_guest_page_fault(fault)  # fix: the case the tree lacks
            return
        self.do_unexpected_trap(cause, fault)  # default: of the switch

    @upstream("traps.c", differs="the CSR dump is the fault's description")
    def do_unexpected_trap(self, cause: int, fault: Fault) -> None:
        hart = self.this_hart()
        v = self.curr_vcpu[hart.id]
        who = f"{v.name}, VMID {hart.vmid}" if v is not None else "no vCPU"
        self.die(
            f"Unhandled exception: {CAUSE_NAMES[cause]} on hart {hart.id} ({who}) at gfn {fault.gfn:#x}: "
            f"{fault.describe()}"
        )

    @upstream("include/asm/processor.h", differs="a panic finding, not an endless wfi loop")
    def die(self, what: str) -> None:
        raise XenPanic(f"die(): {what}")

    @glue(
        "xen/arch/arm/mmu/p2m.c",
        "p2m_resolve_translation_fault",
        differs="ARM's stage-2 abort path in short: a fault on a mapped address is retried after a local flush",
    )
    async def do_trap_guest_page_fault(self, fault: Fault) -> None:
        hart = self.this_hart()
        v = self.curr_vcpu[hart.id]
        if v is None:
            return
        p2m = v.domain.p2m
        await self.p2m_read_lock(p2m)
        mfn, t, _order = self.p2m_get_entry(p2m, fault.gfn)
        await self.p2m_read_unlock(p2m)
        writable = t in (p2m_ram_rw, p2m_map_foreign_rw, p2m_mmio_direct_io)
        if not fault.malformed and mfn != INVALID_MFN and (writable or not fault.write):
            # mapped now: the hart used a translation from before a change; drop it and retry
            req = FenceRequest(0, hart.id, hart.id, hart.vmid, (fault.gfn,), self.conductor.seq, FenceCall())
            hart.local_hfence(req)
            self.emit("guest_fault.resolved", gfn=fault.gfn, why=fault.reason)
            return
        self.emit("guest_fault.injected", gfn=fault.gfn, why=fault.reason, write=fault.write)
