"""The API a workload script drives: domains, vCPUs on harts, hypercalls, time.

The workload's ``main(sim)`` runs as its own actor (the driver).  Hypervisor
work always runs ON a hart: ``sim.on(hart, ...)`` queues it there and waits;
``sim.start`` queues it and returns a job to ``wait`` for later, so several
hypercalls can run at once on different harts while guests keep translating.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from simulator.engine.guest import AccessPattern, Ranges
from simulator.riscv.hart import Job
from simulator.xen.base import ERRNO, XenPanic

if TYPE_CHECKING:
    from simulator.engine.conductor import Actor, Conductor
    from simulator.xen.domain import Domain, Vcpu
    from simulator.xen.hypervisor import Xen


class MachinePanic(BaseException):
    """A Xen panic on a hart: it stops every hart at once, as panic() does (a BaseException, so that the
    hart's job runner, which keeps a job's ordinary errors for whoever waits on it, does not keep it)."""

    def __init__(self, panic: XenPanic) -> None:
        super().__init__(str(panic))
        self.panic = panic


class WorkloadError(Exception):
    """The workload script asked for something impossible (bad hart, unknown domain...)."""


class Scenario:
    def __init__(
        self, xen: Xen, conductor: Conductor, actor: Actor, rng: random.Random, params: dict[str, Any]
    ) -> None:
        self.xen = xen
        self.conductor = conductor
        self.actor = actor
        self.rng = rng
        self.params = params
        self.nr_harts = len(xen.harts)
        self.destroyed: list[int] = []
        self.measures: dict[str, int] = {}  # what the workload measured (a study reads them; run prints them)

    # -- time and jobs ---------------------------------------------------------------

    @property
    def now(self) -> int:
        return self.conductor.seq

    async def elapse(self, steps: int) -> None:
        """Let the harts run for ``steps`` logical steps."""
        await self.conductor.sleep_until(self.actor, self.conductor.seq + max(1, steps), "time to pass")

    def start(self, hart: int, label: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> Job:
        if not 0 <= hart < self.nr_harts:
            raise WorkloadError(f"no hart {hart}: this run has {self.nr_harts} (use --pcpus)")
        if self.xen.harts[hart].hsm_state == "stopped":
            raise WorkloadError(f"hart {hart} is stopped: sim.hart_start({hart}) first")

        async def body() -> Any:
            try:
                return await fn(*args)
            except XenPanic as exc:  # the machine stops now, whoever waits for what
                raise MachinePanic(exc) from exc

        job = Job(label, body)
        self.xen.harts[hart].submit(job)
        return job

    async def wait(self, *jobs: Job) -> list[Any]:
        for job in jobs:
            if not job.done:
                await self.conductor.block(self.actor, lambda j=job: j.done, f"{job.label}")  # type: ignore[misc]
            if job.error is not None:
                raise job.error  # a XenPanic becomes a `panic` finding; anything else is the script's fault
        await self.conductor.step(self.actor)
        return [j.result for j in jobs]

    async def on(self, hart: int, label: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        (result,) = await self.wait(self.start(hart, label, fn, *args))
        return result

    # -- domains and vCPUs ---------------------------------------------------------------

    async def create_domain(self, domid: int, vcpus: int = 1, pool_pages: int = 16, on: int = 0) -> Domain:
        """``pool_pages``: p2m pool pages for tables and metadata; the toolstack adds the 4 the root takes."""
        from simulator.riscv.pte import ROOT_PAGES

        return await self.on(
            on, f"domain_create(dom{domid})", self.xen.domain_create, domid, vcpus, pool_pages + ROOT_PAGES
        )

    async def populate(self, d: Domain, gfn: int, nr: int, order: int = 0, on: int = 0) -> None:
        rc = await self.on(
            on, f"populate_physmap(dom{d.domain_id}, {gfn:#x}, {nr})", self.xen.populate_physmap, d, gfn, nr, order
        )
        if rc:
            why = f"{rc} page(s) left unmapped (p2m pool exhausted?)" if rc > 0 else ERRNO.get(rc, str(rc))
            raise WorkloadError(f"populate_physmap(dom{d.domain_id}, gfn {gfn:#x}, {nr}) failed: {why}")

    async def squeeze(self, d: Domain, gfn: int, leave: int, on: int = 0) -> int:
        """Populate ``d`` from ``gfn`` on until the heap holds at most ``leave`` free pages (memory
        pressure: later allocations must take recently freed pages).  Returns the pages taken."""
        heap = self.xen.heap
        taken = 0
        for order in (9, 0):
            while heap.nr_free - (1 << order) >= leave:
                if heap.get_free_buddy(order, 0) is None:
                    break
                await self.populate(d, gfn + taken, 1 << order, order=order, on=on)
                taken += 1 << order
        return taken

    def pattern(
        self, ranges: Ranges, hot: Ranges = (), hot_prob: float = 0.0, write_ratio: float = 0.25
    ) -> AccessPattern:
        return AccessPattern(ranges, hot, hot_prob, write_ratio)

    async def run_vcpu(self, v: Vcpu, hart: int, program: AccessPattern | None = None) -> None:
        """Switch ``v`` in on ``hart`` (switching out whatever ran there)."""
        if program is not None:
            v.program = program
        if v.processor is not None and v.processor != hart:
            await self.deschedule(v.processor)
        await self.on(hart, f"context_switch({v.name} on hart {hart})", self.xen.context_switch, v)

    async def deschedule(self, hart: int) -> None:
        await self.on(hart, f"context_switch(idle on hart {hart})", self.xen.context_switch, None)

    async def pause(self, d: Domain) -> None:
        """domain_pause: every vCPU of ``d`` leaves its hart."""
        for v in d.vcpus:
            if v.processor is not None:
                await self.deschedule(v.processor)

    # -- harts (SBI HSM) ----------------------------------------------------------------

    async def hart_stop(self, hart: int) -> None:
        """The hart leaves Xen's cpu_online_map and stops (its vCPU, if any, is descheduled first)."""
        if self.xen.curr_vcpu[hart] is not None:
            await self.deschedule(hart)
        await self.on(hart, f"cpu_down({hart})", self.xen.cpu_down, hart)

    async def hart_start(self, hart: int, on: int = 0) -> None:
        """Hart ``on`` starts the stopped ``hart`` (sbi_hart_start); it enters Xen at start_secondary."""
        await self.on(on, f"cpu_up({hart})", self.xen.cpu_up, hart)
        await self.conductor.block(self.actor, lambda: self.xen.harts[hart].online, f"hart {hart} to come up")

    async def hart_suspend(self, hart: int) -> None:
        """A retentive suspend: the idle hart sleeps until an interrupt (a remote fence's IPI wakes it)."""
        if self.xen.curr_vcpu[hart] is not None:
            await self.deschedule(hart)
        await self.on(hart, f"hart_suspend({hart})", self.xen.sbi.hart_suspend, self.xen.harts[hart])

    async def destroy(self, d: Domain, on: int = 0) -> None:
        await self.pause(d)
        await self.on(on, f"domain_kill(dom{d.domain_id})", self.xen.domain_kill, d)
        self.destroyed.append(d.domain_id)
