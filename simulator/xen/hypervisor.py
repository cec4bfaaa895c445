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
from simulator.xen.domain import Domain, DomainOps, Vcpu
from simulator.xen.profiles import Profile

if TYPE_CHECKING:
    from simulator.engine.conductor import Conductor


class Xen(DomainOps):
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
    ) -> None:
        self.memory = memory
        self.harts = harts
        self.sbi = sbi
        self.conductor = conductor
        self.profile = profile
        self.observer = observer
        self.gstage_mode = gstage_mode
        self.domains: dict[int, Domain] = {}
        self.curr_vcpu: list[Vcpu | None] = [None] * len(harts)
        self.init_heap(xen_frames)
        self.vmid_init(vmid_bits)
