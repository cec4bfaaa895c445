"""A pCPU (hart) as an anyio task: guest accesses, hypervisor work, fences.

A hart does one of three things at each instruction boundary: take a pending
remote fence (when, is a seeded choice), run queued hypervisor work (a
hypercall or a context switch that the workload asked for), or execute guest
accesses for the vCPU it runs.  Idle, it blocks until work or a fence arrives.

The guest loop is the hot path.  While the conductor keeps this hart current
(``run_left``), no fence is pending and the access hits the TLB, an access is
a dict probe, two array reads and an integer compare - no await, no task switch.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from simulator.riscv import pte as P
from simulator.riscv.costs import ZERO, Costs
from simulator.riscv.memory import FREE, POOL, Memory
from simulator.riscv.observer import Observer
from simulator.riscv.sbi import FenceRequest, Sbi
from simulator.riscv.tlb import Tlb, TlbEntry
from simulator.riscv.walker import Fault, pte_fault, walk

if TYPE_CHECKING:
    from simulator.engine.conductor import Actor, Conductor


class GuestProgram(Protocol):
    """A vCPU's instruction stream, reduced to the guest-physical accesses it makes."""

    def next_accesses(self, rng: random.Random, n: int) -> list[int]:
        """The next ``n`` accesses, each ``gfn << 1 | is_write``."""
        ...


class IllegalInstruction(Exception):
    """An instruction of an extension the hart does not have (an illegal-instruction trap)."""


class Job:
    """Hypervisor work queued on a hart; the submitter may wait for ``done``."""

    __slots__ = ("done", "error", "fn", "label", "result")

    def __init__(self, label: str, fn: Callable[[], Awaitable[Any]]) -> None:
        self.label = label
        self.fn = fn
        self.done = False
        self.error: BaseException | None = None
        self.result: Any = None


class Hart:
    def __init__(
        self,
        hart_id: int,
        conductor: Conductor,
        actor: Actor,
        memory: Memory,
        tlb: Tlb,
        observer: Observer,
        streams: Callable[[str], random.Random],
        *,
        quantum: tuple[int, int] = (8, 160),
        speculate: float = 0.0,
    ) -> None:
        self.id = hart_id
        self.conductor = conductor
        self.actor = actor
        self.memory = memory
        self.tlb = tlb
        self.observer = observer
        self.sbi: Sbi | None = None
        self.online = True
        self.hsm_state = "started"  # SBI HSM: started, stopped, suspended (see Sbi.interruptible)
        self.stopping = False
        self.jobs: deque[Job] = deque()
        self.current_job: Job | None = None
        self.guest: GuestProgram | None = None
        # what the hypervisor does at each return to the guest (Xen: check_for_pcpu_work),
        # and in its idle loop (Xen: scrub_free_pages); the machine only calls them
        self.vmenter: Callable[[], Awaitable[None]] | None = None
        self.idle_work: Callable[[], Awaitable[None]] | None = None
        self.idle_ready: Callable[[], bool] = lambda: False
        self.hsm_started: Callable[[], Awaitable[None]] | None = None  # what the hypervisor runs on an HSM start
        self.trap: Callable[[Fault], Awaitable[None]] | None = None  # the hypervisor's handler for guest faults
        # the ISA extensions that change what a walk does: Svade (a clear A, or D on a store, faults)
        # or Svadu (the hart sets them: ad_hw), Svinval (see hinval_gvma)
        self.extensions: frozenset[str] = frozenset({"svade", "svpbmt"})
        self.ad_hw = False  # hardware A/D updating for G-stage: Svadu with menvcfg.ADUE set by the firmware
        # Svinval: HINVAL.GVMAs wait here for the SFENCE.INVAL.IR that completes them; each remembers
        # whether an SFENCE.W.INVAL ordered the earlier stores before it
        self.inval_pending: list[tuple[int | None, int | None, bool]] = []
        self.w_inval = False
        # hgatp and what the walker needs from it
        self.hgatp = 0
        self.mode: P.GStageMode | None = None
        self.vmid = 0
        self.root_mfn = 0
        self.hgatp_clock = 0
        self.modes = {m.hgatp_mode: m for m in P.MODES.values()}
        # inbox: requests from other harts' sbi_remote_hfence_gvma
        self._send, self._recv = anyio.create_memory_object_stream[FenceRequest](math.inf)
        self.pending = 0
        self.boundaries = 0  # instruction boundaries passed while a fence was pending
        self._due: deque[int] = deque()  # per pending request: the boundary it is taken at
        self.guest_rng = streams(f"guest/hart{hart_id}")
        # speculative walks: the spec lets a hart walk and fill for any address while hgatp is
        # active, also while it runs hypervisor code; off by default
        self.speculate = speculate
        self.spec_rng = streams(f"speculate/hart{hart_id}")
        self.recent: list[int] = []  # gfns this hart walked lately: where speculation looks
        self.speculating = False
        self.in_guest = False  # inside a guest quantum, where bursts make tick counts schedule-dependent
        self.speculative_walks = 0
        self.fence_rng = streams(f"fence/hart{hart_id}")
        self.quantum_min, self.quantum_span = quantum[0], max(1, quantum[1] - quantum[0] + 1)
        # statistics (accesses = hits + walks)
        self.hits = 0
        self.walks = 0
        self.faults = 0
        self.negative_faults = 0  # faults raised from a negative TLB entry, without a walk
        self.ad_updates = 0  # hardware A/D updates (CAS stores into PTEs), with ad_hw
        self.device_accesses = 0  # accesses that reached a frame beyond RAM (MMIO)
        self.fences_taken = 0
        # virtual time (the timed strategy): what actions cost, and the cycles fences took from the guest
        self.timed = False
        self.costs: Costs = ZERO
        self.stalled = 0

    # -- instruction boundaries --------------------------------------------------

    async def tick(self) -> None:
        """One atomic action of this hart follows; a pending fence may be taken first."""
        c = self.conductor
        if c.run_left > 1 and not c.dirty and not c.timed and c.current is self.actor:
            c.seq += 1  # the conductor's step inline, when it can only count (as the guest's bursts do)
            c.run_left -= 1
        else:
            await c.step(self.actor)
        if self.pending:
            if self.timed:  # the IPI is taken at the first boundary after it arrived
                if self.actor.t >= self._due[0]:
                    await self.take_fence()
                return
            self.boundaries += 1
            if self.boundaries >= self._due[0]:
                await self.take_fence()
        if (
            self.speculate
            and self.mode is not None
            and not self.speculating
            and not self.in_guest  # guest quanta speculate at their start: see run_guest
            and self.spec_rng.random() < self.speculate
        ):
            await self.speculative_walk()

    async def speculative_walk(self) -> None:
        """Walk, and fill, an address near one this hart used lately - nobody asked for it."""
        if not self.recent:
            return
        rng = self.spec_rng
        gfn = self.recent[rng.randrange(len(self.recent))] + rng.randrange(-256, 256)
        if gfn < 0:
            return
        self.speculating = True
        try:
            self.speculative_walks += 1
            await walk(self, gfn)
        finally:
            self.speculating = False

    async def wait_until(self, cond: Callable[[], bool], what: str) -> None:
        """Block until ``cond``; fences keep being taken meanwhile (they are M-mode IPIs)."""
        while not cond():
            await self.conductor.block(self.actor, lambda: self.pending > 0 or cond(), what)
            while self.pending:
                await self.take_fence()
            if self.hsm_state == "suspended":
                self.hsm_state = "started"  # an interrupt ends a retentive suspend

    def post(self, req: FenceRequest) -> None:
        """Queue a request and its IPI.  The IPI's latency, in this hart's instruction
        boundaries, is a seeded draw: mostly short, sometimes a few hundred.  Timed, it is
        in cycles from the sender's clock, drawn from the cost table's distribution."""
        rng = self.fence_rng
        if self.timed:
            self._due.append(self.conductor.now() + self.costs.draw_latency(rng))
        else:
            latency = rng.randrange(4) if rng.random() < 0.5 else rng.randrange(8, 256)
            self._due.append(self.boundaries + latency)
        self._send.send_nowait(req)
        self.pending += 1
        self.conductor.notify()

    async def take_fence(self) -> None:
        due = self._due[0]
        t0 = 0
        if self.timed:
            actor = self.actor
            if actor.t < due:
                # blocked (on its acks, a lock, or idle) until an IPI still in flight arrives: the model
                # takes it then and only after it looks at what it waited for (a simplification)
                actor.t = due
            t0 = actor.t
            actor.t += self.costs.ipi_trap
        await self.conductor.step(self.actor)
        req = self._recv.receive_nowait()
        self._due.popleft()
        self.pending -= 1
        req.taken_seq = self.conductor.seq
        self._hfence(req)
        self.fences_taken += 1
        self.observer.on_fence(self.id, "taken", req)
        assert self.sbi is not None
        if self.timed:
            self.actor.t += self.costs.ack
            if self.in_guest:
                self.stalled += self.actor.t - t0  # cycles the fence took from the vCPU running here
        self.sbi.acknowledge(req)
        req.acked_seq = self.conductor.seq
        self.observer.on_fence(self.id, "acked", req)
        self.conductor.notify()

    def local_hfence(self, req: FenceRequest) -> None:
        """HFENCE.GVMA on this hart, inline (the caller's own hart, or a VMID rollover)."""
        req.taken_seq = req.acked_seq = self.conductor.seq
        self._hfence(req)
        self.observer.on_fence(self.id, "local", req)

    def _hfence(self, req: FenceRequest) -> None:
        """OpenSBI's local handler: one HFENCE.GVMA for everything, or one per page of the range.

        On a hart with Svinval the handler is Linux's local_flush_tlb_range shape instead (OpenSBI
        4e79fd7 has no Svinval path): SFENCE.W.INVAL, one HINVAL.GVMA per page (or one for all),
        SFENCE.INVAL.IR.  What the sequence left incomplete is written on the request.
        """
        if self.timed:
            c = self.costs
            self.actor.t += c.hfence_gvma if req.gfns is None else c.hfence_gvma_page * len(req.gfns)
        if "svinval" in self.extensions:
            self.sfence_w_inval()
            for gfn in (None,) if req.gfns is None else req.gfns:
                self.hinval_gvma(req.vmid, gfn)
            self.sfence_inval_ir()
            req.incomplete = self.inval_incomplete
            return
        if req.gfns is None:
            self.tlb.hfence_gvma(req.vmid, None)
        else:
            for gfn in req.gfns:
                self.tlb.hfence_gvma(req.vmid, gfn)

    # -- Svinval (the fine-grained invalidation extension) ----------------------------------

    def sfence_w_inval(self) -> None:
        """SFENCE.W.INVAL: stores this hart made or sees are ordered before the HINVALs that follow."""
        self._need("svinval", "SFENCE.W.INVAL")
        self.w_inval = True

    def hinval_gvma(self, vmid: int | None, gfn: int | None) -> None:
        """HINVAL.GVMA: an invalidation, complete only at the next SFENCE.INVAL.IR (rs1/rs2 None: x0)."""
        self._need("svinval", "HINVAL.GVMA")
        self.inval_pending.append((vmid, gfn, self.w_inval))

    def sfence_inval_ir(self) -> None:
        """SFENCE.INVAL.IR: the HINVALs before it are ordered before this hart's later implicit reads.

        An HINVAL no SFENCE.W.INVAL preceded may have been performed before an earlier PTE store
        became visible to the walker, which may then have filled the old PTE again: the worst case
        the spec allows is that the entry stays, and the model keeps it.
        """
        self._need("svinval", "SFENCE.INVAL.IR")
        unordered = 0
        for vmid, gfn, ordered in self.inval_pending:
            if ordered:
                self.tlb.hfence_gvma(vmid, gfn)
            else:
                unordered += 1
        self.inval_pending.clear()
        self.w_inval = False
        self.inval_unordered = unordered

    inval_unordered = 0  # HINVALs the last SFENCE.INVAL.IR completed without an SFENCE.W.INVAL before them

    @property
    def inval_incomplete(self) -> str:
        """Why the invalidations just run are not complete, or ''."""
        if self.inval_pending:
            return f"{len(self.inval_pending)} HINVAL.GVMA not completed by an SFENCE.INVAL.IR"
        if self.inval_unordered:
            return (
                f"{self.inval_unordered} HINVAL.GVMA with no SFENCE.W.INVAL before it: the PTE stores before it "
                "were not ordered before the invalidation"
            )
        return ""

    def _need(self, ext: str, insn: str) -> None:
        if ext not in self.extensions:
            raise IllegalInstruction(f"{insn} on hart {self.id}, which does not have {ext.capitalize()}")

    def set_extensions(self, extensions: frozenset[str]) -> None:
        """The machine's ISA: with Svadu and not Svade the firmware sets menvcfg.ADUE (the DT binding's
        rule: Svade listed means faults), and G-stage walks update A/D themselves."""
        self.extensions = extensions
        self.ad_hw = "svade" not in extensions

    def write_hgatp(self, value: int) -> None:
        """csr_write(CSR_HGATP): no fence, no ordering; the TLB keeps its entries."""
        self.hgatp = value
        mode, vmid, ppn = P.hgatp_fields(value)
        self.mode = self.modes.get(mode)
        self.vmid = vmid
        self.root_mfn = ppn
        self.hgatp_clock = self.memory.clock
        self.observer.on_hgatp(self.id, value)

    # -- the task ------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        self.jobs.append(job)
        self.conductor.notify()

    async def main(self) -> None:
        try:
            while True:
                if self.hsm_state == "stopped":
                    await self.conductor.block(
                        self.actor, lambda: self.hsm_state != "stopped" or self.stopping, "an HSM start (stopped)"
                    )
                    if self.hsm_state == "stopped":
                        return  # the run ended with this hart stopped
                    self.hsm_state = "started"
                    self.observer.event(self.id, "hsm.started")
                    if self.hsm_started is not None:
                        await self.hsm_started()  # the hypervisor's entry point for a started hart
                    continue
                if self.jobs:
                    job = self.jobs.popleft()
                    self.current_job = job
                    self.actor.t += self.costs.hypercall  # the trap into the hypervisor and its return
                    try:
                        job.result = await job.fn()
                    except Exception as exc:  # a panic in the model is a finding, reported by the engine
                        job.error = exc
                    finally:
                        job.done = True
                        self.current_job = None
                        self.conductor.notify()
                    continue
                if self.stopping:
                    return
                if self.guest is not None:
                    await self.run_guest()
                    continue
                if self.idle_work is not None and self.hsm_state == "started" and self.idle_ready():
                    await self.idle_work()
                    continue
                await self.wait_until(
                    lambda: (
                        bool(self.jobs)
                        or self.guest is not None
                        or self.stopping
                        or (self.hsm_state == "started" and self.idle_ready())
                    ),
                    "work (idle)" if self.hsm_state == "started" else "an interrupt (suspended)",
                )
        finally:
            self.online = False

    async def run_guest(self) -> None:
        """One guest quantum: a run of accesses ended by a yield (a timer tick, in effect).

        Accesses are taken in bursts: while the conductor keeps this hart
        (``run_left``), nothing woke anyone (``dirty``) and no fence is pending,
        each access is one step accounted inline.  ``conductor.seq`` is brought
        up to date before anything that reports or awaits.
        """
        c = self.conductor
        await c.yield_(self.actor)
        if self.speculate and self.mode is not None and self.spec_rng.random() < self.speculate:
            await self.speculative_walk()
        prog = self.guest
        if prog is None or self.jobs or self.stopping:
            return
        if self.vmenter is not None:
            await self.vmenter()  # the return to the guest
            if self.guest is not prog or self.jobs or self.stopping:
                return
        self.in_guest = True
        try:
            await (self._quantum_multi if self.tlb.multi else self._quantum)(prog)
        finally:
            self.in_guest = False

    async def _quantum_multi(self, prog: GuestProgram) -> None:
        """A quantum on a TLB that holds several entries for one address: one step per access, and
        each hit uses whichever matching entry the seeded stream picks (see Tlb.lookup_leaf)."""
        rng = self.guest_rng
        codes = prog.next_accesses(rng, self.quantum_min + rng.randrange(self.quantum_span))
        lookup = self.tlb.lookup_leaf
        for code in codes:
            await self.tick()
            if self.guest is not prog or self.jobs or self.stopping:
                return
            gfn, write = code >> 1, code & 1
            e = lookup(self.vmid, gfn)
            if e is None:
                await self._miss(gfn, write)
            else:
                self.hits += 1
                self.actor.t += self.costs.tlb_hit
                if write and e.hot[6] == 3:
                    await self.set_dirty(e, gfn)
                elif not self._use(e, gfn, write):
                    await self.guest_fault(_denied(e, gfn))
            if self.guest is not prog or self.jobs or self.stopping:
                return

    async def _quantum(self, prog: GuestProgram) -> None:
        c = self.conductor
        rng = self.guest_rng
        # the quantum's accesses are drawn up front, so the random stream does not
        # depend on how the conductor splits the quantum into bursts
        codes = prog.next_accesses(rng, self.quantum_min + rng.randrange(self.quantum_span))
        total = len(codes)
        i = 0
        leaf_get = self.tlb.leaf_entries.get
        stamp = self.memory.stamp
        written = self.memory.written
        root = self.root_mfn
        vm = self.vmid << 3
        k0, k1, k2 = vm << 48, (vm | 1) << 48, (vm | 2) << 48
        timed = self.timed
        actor = self.actor
        hit_cost = self.costs.tlb_hit
        per = self.costs.step + hit_cost  # a timed access: its step and the hit
        while i < total:
            if c.dirty or self.pending or c.run_left <= 1 or (timed and actor.t + per >= c.horizon):
                await self.tick()  # pays the step of one access
                if self.guest is not prog or self.jobs or self.stopping:
                    return
                burst, prepaid = 1, 1
            else:
                burst, prepaid = min(total - i, c.run_left - 1), 0
                if timed:  # no further than the next actor's clock
                    burst = min(burst, (c.horizon - actor.t - 1) // per)
            seq = c.seq
            done = 0
            miss = -1
            denied: TlbEntry | None = None  # a store through a leaf without W
            code = 0
            for code in codes[i : i + burst]:
                done += 1
                gfn = code >> 1
                e = leaf_get(k0 | gfn) or leaf_get(k1 | (gfn >> 9)) or leaf_get(k2 | (gfn >> 18))
                if e is None:
                    miss = gfn
                    break
                delta, ghost, src, idx, pte, eroot, wstate = e.hot
                mfn = gfn + delta
                if stamp[mfn] > ghost or src[idx] != pte or eroot != root:
                    c.seq = seq + done - prepaid
                    self._use_slow(e, gfn, mfn, code & 1)
                elif code & 1 and wstate != 2:
                    if wstate != 1:  # no W, or D clear with hardware A/D updating
                        denied, miss = e, gfn
                        break
                    else:
                        written[mfn] = 1  # the frame now holds its owner's data
                        if not e.level:
                            e.written_through()
            if not prepaid:
                c.seq = seq + done
                c.run_left -= done
            if timed:
                actor.t += (done - prepaid) * (per - hit_cost) + (done if miss < 0 or denied else done - 1) * hit_cost
            i += done
            if miss < 0:
                self.hits += done
                continue
            if denied is not None:
                self.hits += done
                if denied.hot[6] == 3:
                    await self.set_dirty(denied, miss)
                else:
                    await self.guest_fault(_denied(denied, miss))
                if self.guest is not prog or self.jobs or self.stopping:
                    return
                continue
            self.hits += done - 1
            await self._miss(miss, code & 1)
            if self.guest is not prog or self.jobs or self.stopping:
                return

    async def _miss(self, gfn: int, write: int) -> None:
        """An access the TLB cannot serve: walk, then use the translation (or take the fault)."""
        tlb = self.tlb
        if tlb.negative.keys and self.mode is not None:
            neg = tlb.lookup_negative(self.vmid, gfn, self.mode.root_level)
            if neg is not None:
                self.hits += 1  # served by the TLB: a cached invalid PTE, so the access faults
                self.negative_faults += 1
                await self.guest_fault(Fault.from_negative(neg, gfn, bool(write)))
                return
        self.walks += 1
        if self.speculate:
            recent = self.recent
            recent.append(gfn)
            if len(recent) > 16:
                del recent[0]
        e = await walk(self, gfn, bool(write))
        if isinstance(e, Fault):
            await self.guest_fault(e)
        elif e is None:
            self.device_accesses += 1
        elif not self._use(e, gfn, write):
            await self.guest_fault(_denied(e, gfn))

    async def set_dirty(self, e: TlbEntry, gfn: int) -> None:
        """A store through an entry whose D is clear, with hardware A/D updating: in the same step, the
        hart sets D by a CAS on the PTE it read the entry from - wherever that frame is now.

        The CAS performs the walk's checks on the PTE it finds there (supervisor.adoc: "atomically
        perform all page-table walk checks for that leaf PTE"): if that PTE is no valid writable
        leaf, the entry is dropped and the store walks again.  If it is one, in a table freed or handed
        out since the entry was filled, the store lands there: the oracle hears it as a write.
        """
        mem = self.memory
        table, idx = e.src_mfn, e.src_idx
        cur = e.src_table[idx]
        if pte_fault(cur, e.level) or not cur & P.PTE_W:
            self.tlb.drop(e)
            await self._miss(gfn, 1)
            return
        if mem.stamp[table] > e.ghost:
            self.observer.on_reused_use(self.id, "walk-through-reused-table", e, table, gfn, True, cur)
        elif mem.state[table] in (FREE, POOL):
            self.observer.on_stale_use(self.id, e, table, gfn, True, True)
        new = cur | P.PTE_A | P.PTE_D
        mem.update_ad(table, idx, new)
        self.ad_updates += 1
        if cur == e.src_pte:
            e.src_pte = new  # the entry now caches what it set
            e.set_source(e.src_table)
        self._use(e, gfn, 1)

    def _use(self, e: TlbEntry, gfn: int, write: int) -> bool:
        """Use a translation just filled; False if the access faults (a store without W)."""
        mfn = e.ppn + gfn - e.gfn_base
        if self.memory.stamp[mfn] > e.ghost or e.src_table[e.src_idx] != e.src_pte or e.root_mfn != self.root_mfn:
            self._use_slow(e, gfn, mfn, write)
        elif write:
            if not e.perms & P.PTE_W:
                return False
            self.memory.written[mfn] = 1
        return True

    async def guest_fault(self, fault: Fault) -> None:
        """A guest-page fault: the access did not happen; the hypervisor's trap handler runs on this hart."""
        self.faults += 1
        self.observer.on_guest_fault(self.id, fault)
        if self.trap is not None:
            self.in_guest = False  # the handler is hypervisor code (it may speculate, take steps)
            try:
                await self.trap(fault)
            finally:
                self.in_guest = True

    def _use_slow(self, e: TlbEntry, gfn: int, mfn: int, write: int) -> None:
        """Something about this translation is off; let the observer classify it."""
        w = bool(write)
        if w and not e.perms & P.PTE_W:
            self.faults += 1  # the access faults: nothing is stored
            w = False
        if e.root_mfn != self.root_mfn:
            self.observer.on_alias_use(self.id, e, gfn, self.root_mfn)
        if self.memory.stamp[mfn] > e.ghost:
            self.observer.on_reused_use(self.id, "leaf", e, mfn, gfn, w)
        elif (cur := e.src_table[e.src_idx]) != e.src_pte:
            if not (cur ^ e.src_pte) & ~(P.PTE_A | P.PTE_D):
                # only a hardware A/D update (another hart's, or this one's) changed the PTE: the
                # entry is current; it caches the new bits from now on
                e.src_pte = cur
                e.set_source(e.src_table, self.ad_hw and not cur & P.PTE_D)
                if w:
                    self.memory.written[mfn] = 1
            else:
                self.observer.on_stale_use(self.id, e, mfn, gfn, self.memory.state[mfn] in (FREE, POOL), w)
        elif w:
            self.memory.written[mfn] = 1


def _denied(e: TlbEntry, gfn: int) -> Fault:
    """The store guest-page fault of a store through a leaf without W."""
    return Fault(gfn, e.level, e.src_mfn, e.src_idx, e.src_pte, "a store through a leaf without W", True)
