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
from simulator.xen.fidelity import model, upstream
from simulator.xen.profiles import Profile

if TYPE_CHECKING:
    from simulator.engine.conductor import Conductor
    from simulator.xen.domain import Domain


class XenPanic(Exception):
    """panic()/BUG_ON()/ASSERT() in the modelled code: a finding, not a p2msim crash."""


class HypercallFailed(Exception):
    """A hypercall the hypervisor refused or could not complete (-ENOMEM, ...): not a panic.

    The workload that issued it may handle it; if it does not, the run ends
    with a one-line workload error.
    """

    def __init__(self, rc: int, what: str) -> None:
        super().__init__(f"{what}: {ERRNO.get(rc, rc)}")
        self.rc = rc


ERRNO = {-12: "-ENOMEM", -13: "-EACCES", -22: "-EINVAL", -16: "-EBUSY", -28: "-ENOSPC"}


class XenBase:
    memory: Memory
    harts: list[Hart]
    sbi: Sbi
    conductor: Conductor
    profile: Profile
    observer: Observer
    gstage_mode: GStageMode
    domains: dict[int, Domain]

    @model("current hart: Xen finds it implicitly, the model asks the conductor")
    def this_hart(self) -> Hart:
        cur = self.conductor.current
        assert cur is not None and cur.index < len(self.harts), "Xen code must run on a hart"
        return self.harts[cur.index]

    @model("the hart the running code is on, or None for the workload driver (a test poking Xen's state)")
    def running_hart(self) -> int | None:
        cur = self.conductor.current
        return cur.index if cur is not None and cur.index < len(self.harts) else None

    @upstream("include/asm/current.h", differs="from the conductor's current actor")
    def smp_processor_id(self) -> int:
        return self.this_hart().id

    @model("an atomic action follows: other harts may interleave here")
    async def step(self) -> None:
        cur = self.conductor.current  # (this_hart() inline: every step of Xen's code comes here)
        assert cur is not None and cur.index < len(self.harts), "Xen code must run on a hart"
        await self.harts[cur.index].tick()

    @upstream("include/asm/cpufeature.h", differs="the machine's extensions, not the ISA string of the DT")
    def riscv_isa_extension_available(self, ext: str) -> bool:
        return ext in self.harts[0].extensions

    @upstream("xen/include/xen/cpumask.h", differs="a list of started harts")
    def cpu_online_map(self) -> list[int]:
        return [h.id for h in self.harts if h.online]

    @model("a narrative event for the oracle and the log")
    def emit(self, name: str, **fields: Any) -> None:
        cur = self.conductor.current  # (smp_processor_id() inline: every event comes here)
        assert cur is not None and cur.index < len(self.harts), "Xen code must run on a hart"
        self.observer.event(self.harts[cur.index].id, name, **fields)

    debug_build: bool = False  # CONFIG_DEBUG: ASSERT() is checked (release builds compile it out)

    @upstream("xen/include/xen/bug.h", differs="a panic finding, not a crash")
    def BUG_ON(self, cond: bool, what: str) -> None:
        if cond:
            raise XenPanic(what)

    @upstream("xen/common/domain.c", differs="marks the domain and logs it; vCPUs are not stopped")
    def domain_crash(self, d: Domain) -> None:
        """common/domain.c: the domain is shut down as crashed; the hypervisor goes on."""
        d.is_crashed = True
        self.emit("domain_crash", dom=d.domain_id)

    @upstream("xen/include/xen/bug.h", differs="--debug-build panics; a release build logs what went unchecked")
    def ASSERT(self, cond: bool, what: str, note: bool = True) -> None:
        """A debug build panics; a release build goes on, and (``note``) the log says what went unchecked."""
        if cond:
            return
        if self.debug_build:
            raise XenPanic(f"Assertion failed: {what}")
        if note:
            self.emit("ASSERT.unchecked", what=what)

    @upstream("xen/include/xen/bug.h", differs="--debug-build panics; a release build logs it")
    def ASSERT_UNREACHABLE(self, where: str, **fields: Any) -> None:
        if self.debug_build:
            raise XenPanic(f"ASSERT_UNREACHABLE() in {where}")
        self.emit("ASSERT_UNREACHABLE", where=where, **fields)
