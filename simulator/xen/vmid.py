"""VMIDs (arch/riscv/vmid.c): per-hart generations, x86-ASID style.

Each hart hands out VMIDs 1..max_vmid in its current generation; when it runs
out it starts a new one, and handing out VMID 1 asks for a full local
HFENCE.GVMA.  A vCPU keeps its VMID while its generation matches the hart's,
so one domain uses different VMIDs on different harts, and a VMID names one
vCPU on one hart within one generation.  VMIDs are not used at all when the
``vmid`` boot option is off, VMIDLEN is 0 or 1, or a 64-bit generation
overflows: every vCPU then runs with VMID 0 and nothing is flushed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulator.riscv.sbi import FenceCall, FenceRequest
from simulator.xen.base import HypercallFailed
from simulator.xen.fidelity import glue, model, upstream
from simulator.xen.p2m import P2m

if TYPE_CHECKING:
    from simulator.xen.domain import Domain, Vcpu

GENERATION_MASK = (1 << 64) - 1


class VmidData:
    """struct vmid_data (per hart)"""

    def __init__(self) -> None:
        self.generation = 0
        self.next_vmid = 0
        self.max_vmid = 0
        self.used = False


class Vmid(P2m):
    vmid_data: list[VmidData]
    opt_vmid: bool = True  # the "vmid" boot option

    @upstream("vmid.c", differs="the machine's VMIDLEN is --vmid-bits")
    def vmidlen_detect(self) -> int:
        """Write all ones to hgatp.VMID and read back how many bits stick (the machine's VMIDLEN)."""
        return self.vmid_bits

    @upstream("vmid.c")
    def vmid_init(self, cpu: int) -> None:
        data = self.vmid_data[cpu]
        vmid_len = self.vmidlen_detect()
        data.max_vmid = (1 << vmid_len) - 1
        data.used = self.opt_vmid and vmid_len > 1
        data.generation = 1  # zero indicates 'invalid generation'
        data.next_vmid = 1  # zero indicates 'VMIDs use disabled'

    @upstream("vmid.c")
    def vmid_flush_vcpu(self, v: Vcpu) -> None:
        v.vmid_generation = 0

    @upstream("vmid.c")
    def vmid_flush_hart(self, cpu: int) -> None:
        data = self.vmid_data[cpu]
        if not data.used:
            return
        data.generation = (data.generation + 1) & GENERATION_MASK
        self.emit("vmid.rollover", generation=data.generation)
        if data.generation != 0:
            return
        # VMID generations are 64 bit: overflow never happens; for safety VMIDs are disabled.
        self.emit("printk", text="VMID generation overrun. Disabling VMIDs")
        data.used = False

    @upstream("vmid.c")
    async def vmid_handle_vmenter(self, v: Vcpu) -> bool:
        """Give ``v`` a VMID valid on this hart; True if the hart must flush its G-stage TLB."""
        cpu = self.smp_processor_id()
        data = self.vmid_data[cpu]
        if data.used:
            if v.vmid_generation == data.generation:
                return False
            if data.next_vmid > data.max_vmid:
                await self.step()
                self.vmid_flush_hart(cpu)
                data.next_vmid = 1
            if data.used:
                v.vmid = data.next_vmid
                data.next_vmid += 1
                v.vmid_generation = data.generation
                self.emit(
                    "vmid.assign", dom=v.domain.domain_id, vcpu=v.vcpu_id, vmid=v.vmid, generation=data.generation
                )
                # VMID 1 starts a new generation: every older VMID is stale now
                return v.vmid == 1
        v.vmid = 0  # disabled
        return False

    @model("this_cpu(vmid_data).used")
    def vmids_used(self, cpu: int) -> bool:
        return self.vmid_data[cpu].used

    @upstream("include/asm/flushtlb.h", policies=("tlbflush_clock",))
    def local_hfence_gvma_all(self) -> None:
        """hfence.gvma x0, x0 on this hart."""
        hart = self.this_hart()
        t = self.pre_flush() if self.profile.tlbflush_clock else 0  # policy: x86's flush_area_local
        hart.local_hfence(FenceRequest(0, hart.id, hart.id, None, None, self.conductor.seq, FenceCall()))
        if t:
            self.post_flush(hart.id, t)

    # -- ARM's approach (profile arm-broadcast) ---------------------------------------

    @glue("xen/arch/arm/mmu/p2m.c", differs="arm-broadcast only: one VMID per domain for life")
    def p2m_alloc_vmid(self, d: Domain) -> None:
        """ARM style: the lowest free VMID, for the domain's whole life (0 for all when VMIDs are off)."""
        if not self.profile.vmid_per_domain:
            return
        if not self.vmids_used(0):
            d.vmid = 0
            return
        used = {x.vmid for x in self.domains.values() if x is not d and x.vmid and not x.destroyed}
        for vmid in range(1, self.vmid_data[0].max_vmid + 1):
            if vmid not in used:
                d.vmid = vmid
                self.emit("vmid.assign", dom=d.domain_id, vcpu=-1, vmid=vmid, generation=0)
                return
        # ARM's p2m_alloc_vmid fails and domain creation fails with it: a limit, not a panic
        live = sum(1 for x in self.domains.values() if x.vmid and not x.destroyed)
        raise HypercallFailed(
            -16, f"domain_create(dom{d.domain_id}): no free VMID ({live} live domains hold all {len(used)} VMIDs)"
        )
