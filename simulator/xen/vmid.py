"""VMIDs (arch/riscv/vmid.c): per-hart generations, x86-ASID style.

Each hart hands out VMIDs 1..max_vmid in its current generation; when it runs
out it starts a new generation with a full local HFENCE.GVMA.  A vCPU keeps its
VMID while its generation matches the hart's, so one domain uses different
VMIDs on different harts, and a VMID names one vCPU on one hart within one
generation.  ``vmid_flush_vcpu`` (generation 0) forces a new VMID next entry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulator.riscv.sbi import FenceCall, FenceRequest
from simulator.xen.base import XenPanic
from simulator.xen.p2m import P2m

if TYPE_CHECKING:
    from simulator.xen.domain import Domain, Vcpu


class VmidPcpu:
    def __init__(self, vmid_bits: int) -> None:
        self.generation = 1
        self.next_vmid = 1
        self.max_vmid = (1 << vmid_bits) - 1


class Vmid(P2m):
    vmid_data: list[VmidPcpu]

    def vmid_init(self, vmid_bits: int) -> None:
        self.vmid_data = [VmidPcpu(vmid_bits) for _ in self.harts]

    def vmid_flush_vcpu(self, v: Vcpu) -> None:
        v.vmid_generation = 0

    def p2m_alloc_vmid(self, d: Domain) -> None:
        """ARM style (profile arm-broadcast): the lowest free VMID, for the domain's whole life."""
        if not self.profile.vmid_per_domain:
            return
        used = {x.vmid for x in self.domains.values() if x is not d and x.vmid and not x.destroyed}
        for vmid in range(1, self.vmid_data[0].max_vmid + 1):
            if vmid not in used:
                d.vmid = vmid
                self.emit("vmid.assign", dom=d.domain_id, vcpu=-1, vmid=vmid, generation=0)
                return
        raise XenPanic(f"p2m_alloc_vmid: no free VMID for dom{d.domain_id}")

    async def vmid_handle_vmenter(self, v: Vcpu) -> int:
        if self.profile.vmid_per_domain:
            return v.domain.vmid
        hart = self.this_hart()
        data = self.vmid_data[hart.id]
        if v.vmid_generation == data.generation:
            return v.vmid
        if data.next_vmid > data.max_vmid:
            await self.step()
            data.generation += 1
            data.next_vmid = 1
            self.emit("vmid.rollover", generation=data.generation)
            await self.vmid_rollover_flush(hart.id)
        v.vmid = data.next_vmid
        data.next_vmid += 1
        v.vmid_generation = data.generation
        self.emit("vmid.assign", dom=v.domain.domain_id, vcpu=v.vcpu_id, vmid=v.vmid, generation=data.generation)
        return v.vmid

    async def vmid_rollover_flush(self, cpu: int) -> None:
        """hfence.gvma x0, x0 on this hart: no VMID of the old generation survives."""
        hart = self.harts[cpu]
        hart.local_hfence(FenceRequest(0, cpu, cpu, None, None, self.conductor.seq, FenceCall()))
