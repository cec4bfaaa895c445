"""Harts coming and going (glue: ``__cpu_up``, ``__cpu_disable`` and ``__cpu_die`` are stubs in the tree).

A hart leaves ``cpu_online_map`` and stops through the firmware's HSM; it comes
back through ``sbi_hart_start`` and runs ``start_secondary``, which does for
the G-stage what ``guest_mm_init`` does at boot: ``vmid_init`` (a fresh VMID
generation) and a full local HFENCE.GVMA, because nothing promises what the
TLB of a stopped hart still holds.  A variant that drops that flush is
checked against a machine that keeps every entry across the stop.
"""

from __future__ import annotations

from simulator.riscv.sbi import SBI_SUCCESS
from simulator.xen.base import HypercallFailed
from simulator.xen.domain import DomainOps
from simulator.xen.fidelity import glue


class Smp(DomainOps):
    @glue("xen/common/cpu.c", "cpu_down", differs="__cpu_disable (out of cpu_online_map), then sbi_hart_stop")
    async def cpu_down(self, cpu: int) -> None:
        """Runs on the hart going down; it must run no vCPU."""
        hart = self.this_hart()
        if hart.id != cpu:
            raise ValueError(f"cpu_down({cpu}) must run on hart {cpu}, not {hart.id}")
        v = self.curr_vcpu[cpu]
        if v is not None:
            raise ValueError(f"hart {cpu} still runs {v.name}: deschedule it before stopping the hart")
        await self.step()
        hart.online = False  # __cpu_disable(): out of cpu_online_map
        self.emit("cpu_down", cpu=cpu)
        await self.sbi.hart_stop(hart)  # __cpu_die()

    @glue("xen/common/cpu.c", "cpu_up", differs="__cpu_up: sbi_hart_start of a stopped hart")
    async def cpu_up(self, cpu: int) -> None:
        rc = await self.sbi.hart_start(self.this_hart(), cpu)
        if rc != SBI_SUCCESS:
            raise HypercallFailed(-22, f"cpu_up({cpu}): sbi_hart_start failed (SBI error {rc})")

    @glue("p2m.c", "guest_mm_init", differs="start_secondary: what boot does for the G-stage, on a started hart")
    async def start_secondary(self) -> None:
        hart = self.this_hart()
        self.vmid_init(hart.id)
        self.local_hfence_gvma_all()
        hart.online = True  # set_cpu_online()
        self.emit("cpu_up", cpu=hart.id)
