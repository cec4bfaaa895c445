"""What every part of the hypervisor model shares: the machine and the current CPU.

Xen's C code finds "this CPU" implicitly (``smp_processor_id()``); the model
finds it from the conductor, since hypervisor code always runs as the current
hart's actor.  Every function that performs an atomic action awaits
``self.step()`` first, so other harts can interleave with it there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from simulator.riscv.hart import Hart
from simulator.riscv.memory import Memory
from simulator.riscv.observer import Observer
from simulator.riscv.pte import GStageMode
from simulator.riscv.sbi import Sbi
from simulator.xen.profiles import Profile

if TYPE_CHECKING:
    from simulator.engine.conductor import Conductor
    from simulator.xen.domain import Domain


class XenPanic(Exception):
    """panic()/BUG_ON()/ASSERT() in the modelled code: a finding, not a p2msim crash."""


class XenBase:
    memory: Memory
    harts: list[Hart]
    sbi: Sbi
    conductor: Conductor
    profile: Profile
    observer: Observer
    gstage_mode: GStageMode
    domains: dict[int, Domain]

    def this_hart(self) -> Hart:
        cur = self.conductor.current
        assert cur is not None and cur.index < len(self.harts), "Xen code must run on a hart"
        return self.harts[cur.index]

    def smp_processor_id(self) -> int:
        return self.this_hart().id

    async def step(self) -> None:
        await self.this_hart().tick()

    def cpu_online_map(self) -> list[int]:
        return [h.id for h in self.harts if h.online]

    def emit(self, name: str, **fields: Any) -> None:
        self.observer.event(self.smp_processor_id(), name, **fields)

    def BUG_ON(self, cond: bool, what: str) -> None:
        if cond:
            raise XenPanic(what)
