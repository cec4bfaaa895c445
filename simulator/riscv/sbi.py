"""Firmware: the SBI RFENCE extension's remote HFENCE.GVMA, as OpenSBI implements it.

The call as the SBI spec defines it: ``hart_mask`` is a window of XLEN harts
starting at ``hart_mask_base`` (-1: every hart, the mask ignored); the range is
``(start, size)`` in bytes, ``(0, 0)`` or ``size == -1`` meaning everything,
and a range larger than the platform's flush limit widened to everything
(``sbi_tlb_request``); ``size == 0`` with ``start != 0`` loops over no page and
fences nothing, as OpenSBI does.  Harts named that are not assigned to the
calling SBI domain make the whole call ``SBI_ERR_INVALID_PARAM`` before
anything is sent; harts that are not started (HSM) are skipped
(``sbi_hsm_hart_interruptible_mask``: started, suspended, resuming).

A remote fence is a request queued into the target hart's inbox (an anyio
memory object stream) plus an IPI.  The target takes it at one of its
instruction boundaries - when, is the conductor's choice - runs a local
HFENCE.GVMA in M-mode and acknowledges.  The caller fences its own hart
inline and then spins until every target has acknowledged, draining its own
inbox meanwhile, so two harts fencing each other cannot deadlock.

The SBI spec itself promises only that the request was sent; OpenSBI waits.
``wait_for_acks`` is that difference (the bug ``async-remote-fence`` clears it).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulator.riscv.hart import Hart

SBI_SUCCESS = 0
SBI_ERR_FAILURE = -1
SBI_ERR_NOT_SUPPORTED = -2
SBI_ERR_INVALID_PARAM = -3
SBI_ERR_DENIED = -4
SBI_ERR_INVALID_ADDRESS = -5
SBI_ERR_ALREADY_AVAILABLE = -6
SBI_TLB_FLUSH_ALL = (1 << 64) - 1
XLEN = 64
PAGE_SIZE = 4096
ALL_HARTS = -1  # hart_mask_base of -1: every hart

# SBI_EXT_RFENCE function IDs
SBI_EXT_RFENCE_REMOTE_HFENCE_GVMA_VMID = 3
SBI_EXT_RFENCE_REMOTE_HFENCE_GVMA = 4


class FenceRequest:
    """One target's share of a remote fence: VMID (None: all) and the GFNs (None: all addresses)."""

    __slots__ = ("acked_seq", "call", "dst", "gfns", "id", "incomplete", "sent_seq", "src", "taken_seq", "vmid")

    def __init__(
        self,
        rid: int,
        src: int,
        dst: int,
        vmid: int | None,
        gfns: tuple[int, ...] | None,
        seq: int,
        call: FenceCall,
    ) -> None:
        self.id = rid
        self.src = src
        self.dst = dst
        self.vmid = vmid
        self.gfns = gfns
        self.sent_seq = seq
        self.taken_seq = -1
        self.acked_seq = -1
        self.call = call
        self.incomplete = ""  # why the local invalidation it ran was not complete (Svinval ordering), if so

    def describe(self) -> str:
        what = "all VMIDs" if self.vmid is None else f"VMID {self.vmid}"
        if self.gfns is None:
            where = "all addresses"
        elif not self.gfns:
            where = "no address (size 0)"
        elif len(self.gfns) == 1:
            where = f"gfn {self.gfns[0]:#x}"
        else:
            where = f"gfns {self.gfns[0]:#x}..{self.gfns[-1]:#x}"
        return f"HFENCE.GVMA({what}, {where})"


class FenceCall:
    """One RFENCE ecall: the caller waits until ``outstanding`` is 0."""

    __slots__ = ("outstanding",)

    def __init__(self) -> None:
        self.outstanding = 0


class Sbi:
    def __init__(self, harts: list[Hart]) -> None:
        self.harts = harts
        self.wait_for_acks = True
        self.tlb_range_flush_limit = PAGE_SIZE  # sbi_platform_tlbr_flush_limit(): the generic default
        self.assigned = {h.id for h in harts}  # the harts of the SBI domain Xen runs in
        self._ids = itertools.count(1)
        self.sent = 0
        self.acked = 0

    def interruptible(self, hart: Hart) -> bool:
        """sbi_hsm_hart_interruptible_mask(): started, suspended or resuming harts take IPIs."""
        return hart.hsm_state in ("started", "suspended", "resume_pending")

    async def ecall_rfence(
        self, caller: Hart, fid: int, hmask: int, hbase: int, start: int, size: int, vmid: int = 0
    ) -> int:
        """sbi_ecall_rfence_handler -> sbi_tlb_request -> sbi_ipi_send_many, for the G-stage fences."""
        if fid == SBI_EXT_RFENCE_REMOTE_HFENCE_GVMA:
            fence_vmid: int | None = None
        elif fid == SBI_EXT_RFENCE_REMOTE_HFENCE_GVMA_VMID:
            fence_vmid = vmid
        else:
            return SBI_ERR_NOT_SUPPORTED
        size &= SBI_TLB_FLUSH_ALL
        if size > self.tlb_range_flush_limit:
            start, size = 0, SBI_TLB_FLUSH_ALL  # too big to flush 4 KiB at a time: flush everything
        if hmask == 0 and hbase != ALL_HARTS:
            return SBI_SUCCESS  # nothing to do, but not an error either
        targets = [h for h in self.harts if self.interruptible(h)]
        if hbase != ALL_HARTS:
            named = [hbase + i for i in range(XLEN) if hmask >> i & 1]
            if any(i not in self.assigned for i in named):
                return SBI_ERR_INVALID_PARAM  # validated against the domain, not the HSM state
            targets = [h for h in targets if h.id in named]
        if (start == 0 and size == 0) or size == SBI_TLB_FLUSH_ALL:
            gfns: tuple[int, ...] | None = None
        else:
            gfns = tuple((start + i) >> 12 for i in range(0, size, PAGE_SIZE))
        call = FenceCall()
        conductor = caller.conductor
        costs = caller.costs
        caller.actor.t += costs.sbi_ecall  # the ecall's entry into M-mode and its return (0 unless timed)
        for target in targets:
            await caller.tick()
            req = FenceRequest(next(self._ids), caller.id, target.id, fence_vmid, gfns, conductor.seq, call)
            if target is caller:
                caller.local_hfence(req)  # tlb_update(): a request for itself is a local flush
                continue
            call.outstanding += 1
            self.sent += 1
            caller.actor.t += costs.ipi_send
            target.post(req)
            caller.observer.on_fence(caller.id, "sent", req)
        if self.wait_for_acks and call.outstanding:
            await caller.wait_until(lambda: call.outstanding == 0, f"fence acks ({call.outstanding} outstanding)")
        return SBI_SUCCESS

    # -- HSM (hart state management) --------------------------------------------------

    async def hart_stop(self, caller: Hart) -> int:
        """sbi_hart_stop(): the calling hart leaves S-mode; requests already queued to it are taken first.

        Neither the SBI spec nor the privileged spec says what a stopped hart's TLB
        holds when it starts again: the model keeps every entry (the worst case).
        """
        while caller.pending:
            await caller.take_fence()
        await caller.tick()
        caller.hsm_state = "stopped"
        caller.observer.event(caller.id, "hsm.stop")
        return SBI_SUCCESS

    async def hart_start(self, caller: Hart, hartid: int) -> int:
        """sbi_hart_start(): a stopped hart starts at the hypervisor's entry point."""
        if not 0 <= hartid < len(self.harts) or hartid not in self.assigned:
            return SBI_ERR_INVALID_PARAM
        target = self.harts[hartid]
        if target.hsm_state != "stopped":
            return SBI_ERR_ALREADY_AVAILABLE
        await caller.tick()
        target.hsm_state = "start_pending"
        caller.observer.event(caller.id, "hsm.start", target=hartid)
        caller.conductor.notify()
        return SBI_SUCCESS

    async def hart_suspend(self, caller: Hart) -> int:
        """sbi_hart_suspend() (retentive): the hart sleeps until an interrupt; an IPI still reaches it."""
        await caller.tick()
        caller.hsm_state = "suspended"
        caller.observer.event(caller.id, "hsm.suspend")
        return SBI_SUCCESS

    def acknowledge(self, req: FenceRequest) -> None:
        req.call.outstanding -= 1
        self.acked += 1
