"""Firmware: SBI RFENCE remote HFENCE.GVMA, as OpenSBI implements it.

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
SBI_ERR_INVALID_PARAM = -3


class FenceRequest:
    __slots__ = ("acked_seq", "call", "dst", "gfn", "id", "sent_seq", "src", "taken_seq", "vmid")

    def __init__(
        self, rid: int, src: int, dst: int, vmid: int | None, gfn: int | None, seq: int, call: FenceCall
    ) -> None:
        self.id = rid
        self.src = src
        self.dst = dst
        self.vmid = vmid
        self.gfn = gfn
        self.sent_seq = seq
        self.taken_seq = -1
        self.acked_seq = -1
        self.call = call

    def describe(self) -> str:
        what = "all VMIDs" if self.vmid is None else f"VMID {self.vmid}"
        where = "all addresses" if self.gfn is None else f"gfn {self.gfn:#x}"
        return f"HFENCE.GVMA({what}, {where})"


class FenceCall:
    """One sbi_remote_hfence_gvma call: the caller waits until ``outstanding`` is 0."""

    __slots__ = ("outstanding",)

    def __init__(self) -> None:
        self.outstanding = 0


class Sbi:
    def __init__(self, harts: list[Hart]) -> None:
        self.harts = harts
        self.wait_for_acks = True
        self._ids = itertools.count(1)
        self.sent = 0
        self.acked = 0

    async def sbi_remote_hfence_gvma(self, caller: Hart, hart_mask: list[int], start: int = 0, size: int = 0) -> int:
        return await self._rfence(caller, hart_mask, None, start, size)

    async def sbi_remote_hfence_gvma_vmid(
        self, caller: Hart, hart_mask: list[int], start: int, size: int, vmid: int
    ) -> int:
        return await self._rfence(caller, hart_mask, vmid, start, size)

    async def _rfence(self, caller: Hart, hart_mask: list[int], vmid: int | None, start: int, size: int) -> int:
        if not hart_mask:
            return SBI_ERR_INVALID_PARAM
        # start=size=0, size all-ones, or more than one page: the whole space
        gfn = None if (size == 0 or size > 4096) else start >> 12
        call = FenceCall()
        conductor = caller.conductor
        for dst in hart_mask:
            target = self.harts[dst]
            if not target.online:
                continue  # OpenSBI skips harts that are not started
            await caller.tick()
            req = FenceRequest(next(self._ids), caller.id, dst, vmid, gfn, conductor.seq, call)
            if target is caller:
                caller.local_hfence(req)
                continue
            call.outstanding += 1
            self.sent += 1
            target.post(req)
            caller.observer.on_fence(caller.id, "sent", req)
        if self.wait_for_acks and call.outstanding:
            await caller.wait_until(lambda: call.outstanding == 0, f"fence acks ({call.outstanding} outstanding)")
        return SBI_SUCCESS

    def acknowledge(self, req: FenceRequest) -> None:
        req.call.outstanding -= 1
        self.acked += 1
