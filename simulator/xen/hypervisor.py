"""The hypervisor instance: every part of the model, bound to one machine.

Each concept lives in its own module as a mixin (page_alloc -> mm -> paging ->
p2m -> vmid -> domain); this class only wires them to the machine.  Because
every call goes through the instance, a bug from engine/bugs.py can replace
one function on one simulation without touching the model's source.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulator.riscv.hart import Hart
from simulator.riscv.memory import Memory
from simulator.riscv.observer import Observer
from simulator.riscv.pte import GStageMode
from simulator.riscv.sbi import Sbi
from simulator.xen.domain import Domain, Vcpu
from simulator.xen.fidelity import model
from simulator.xen.page_list import PageLinks
from simulator.xen.profiles import Profile
from simulator.xen.traps import Traps
from simulator.xen.vmid import VmidData

if TYPE_CHECKING:
    from simulator.engine.conductor import Conductor
    from simulator.riscv.walker import Fault


class Xen(Traps):
    def __init__(
        self,
        *,
        memory: Memory,
        harts: list[Hart],
        sbi: Sbi,
        conductor: Conductor,
        profile: Profile,
        observer: Observer,
        gstage_mode: GStageMode,
        vmid_bits: int,
        xen_frames: int,
        opt_vmid: bool = True,
        debug_build: bool = False,
    ) -> None:
        self.memory = memory
        self.page_links = PageLinks(memory.nr_frames)
        self.harts = harts
        self.sbi = sbi
        self.conductor = conductor
        self.profile = profile
        self.observer = observer
        self.gstage_mode = gstage_mode
        self.domains: dict[int, Domain] = {}
        self.curr_vcpu: list[Vcpu | None] = [None] * len(harts)
        self.vmid_bits = vmid_bits  # what hgatp.VMID holds on this machine (VMIDLEN)
        self.opt_vmid = opt_vmid
        self.debug_build = debug_build
        self.init_heap(xen_frames)
        self.vmid_data = [VmidData() for _ in harts]
        for h in harts:
            self.vmid_init(h.id)  # every hart at bring-up
            # the machine calls back into Xen at each return to a guest and when idle;
            # through the instance, so a bug or variant that replaces the method is seen
            h.vmenter = self._vmenter
            h.idle_work = self._idle_work
            h.idle_ready = self.scrub_pending
            h.hsm_started = self._hsm_started
            h.trap = self._trap

    @model("the machine's return-to-guest hook: check_for_pcpu_work -> p2m_handle_vmenter (traps.c)")
    async def _vmenter(self) -> None:
        await self.p2m_handle_vmenter()

    @model("the machine's trap hook: a guest-page fault enters Xen at do_trap (handle_exception -> do_trap)")
    async def _trap(self, fault: Fault) -> None:
        await self.do_trap(fault)

    @model("the machine's HSM-start hook: the started hart enters Xen at start_secondary")
    async def _hsm_started(self) -> None:
        await self.start_secondary()

    @model("the machine's idle hook: ARM's idle_loop -> scrub_free_pages")
    async def _idle_work(self) -> None:
        await self.scrub_free_pages()  # ARM's idle_loop: scrub_free_pages() when no softirq is pending
