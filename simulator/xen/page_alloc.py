"""The heap (common/page_alloc.c): a buddy allocator with flush-on-reuse.

Freeing a page that had an owner marks it ``need_tlbflush``; pages freed with
no owner (p2m tables, metadata, roots, pool pages) are not marked.
``alloc_heap_pages`` takes pages, scrubs them, THEN flushes every online hart
if any page needs it (RISC-V, like ARM, has no TLB clock to filter harts).
A stale write landing between the scrub and the flush survives into the new
owner (reference note, window 10); the model keeps that order.

Freed blocks go on the head of their order's list and allocation takes the
head, as Xen's buddy allocator does: a freed page is reused soon.
"""

from __future__ import annotations

from array import array

from simulator.riscv import memory as M
from simulator.xen.base import XenBase

MAX_ORDER = 18  # a 1G extent
MEMF_no_tlbflush = 1 << 0


class Heap:
    """Free lists per order; ``dict`` as an insertion-ordered set (never hash order)."""

    def __init__(self, nr_frames: int) -> None:
        self.free: list[dict[int, None]] = [{} for _ in range(MAX_ORDER + 1)]
        self.head_order = array("b", [-1]) * nr_frames
        self.need_tlbflush = bytearray(nr_frames)
        self.nr_free = 0

    def add_block(self, mfn: int, order: int) -> None:
        self.free[order][mfn] = None
        self.head_order[mfn] = order

    def take(self, order: int) -> int | None:
        for o in range(order, MAX_ORDER + 1):
            lst = self.free[o]
            if lst:
                mfn, _ = lst.popitem()  # the most recently freed block
                self.head_order[mfn] = -1
                while o > order:  # split, keeping the lower half
                    o -= 1
                    self.add_block(mfn + (1 << o), o)
                self.nr_free -= 1 << order
                return mfn
        return None

    def give(self, mfn: int, order: int) -> None:
        self.nr_free += 1 << order
        while order < MAX_ORDER:
            buddy = mfn ^ (1 << order)
            if buddy >= len(self.head_order) or self.head_order[buddy] != order:
                break
            del self.free[order][buddy]
            self.head_order[buddy] = -1
            mfn = min(mfn, buddy)
            order += 1
        self.add_block(mfn, order)


class PageAlloc(XenBase):
    heap: Heap

    def init_heap(self, first_free: int) -> None:
        """Frames below ``first_free`` belong to Xen; the rest go to the heap."""
        self.heap = Heap(self.memory.nr_frames)
        for mfn in range(first_free):
            self.memory.hand_out(mfn, M.XEN, M.NO_OWNER, "xen image")
        mfn = first_free
        while mfn < self.memory.nr_frames:
            order = 0
            while (
                order < MAX_ORDER
                and mfn % (1 << (order + 1)) == 0
                and mfn + (1 << (order + 1)) <= self.memory.nr_frames
            ):
                order += 1
            self.heap.give(mfn, order)
            mfn += 1 << order

    async def alloc_heap_pages(self, order: int, memflags: int, state: int, owner: int, why: str) -> int | None:
        await self.step()
        mfn = self.heap.take(order)
        if mfn is None:
            return None
        need_flush = False
        for pg in range(mfn, mfn + (1 << order)):
            if self.heap.need_tlbflush[pg]:
                need_flush = True
                self.heap.need_tlbflush[pg] = 0
        flush = need_flush and not memflags & MEMF_no_tlbflush
        if flush and self.profile.flush_before_scrub:
            await self.flush_on_reuse(mfn, order)  # model fix: nobody can reach the pages any more ...
        for pg in range(mfn, mfn + (1 << order)):
            self.memory.hand_out(pg, state, owner, why)
            self.memory.clear_page(pg)  # scrub
        if flush and not self.profile.flush_before_scrub:
            await self.flush_on_reuse(mfn, order)  # Xen: scrub, then flush
        return mfn

    async def flush_on_reuse(self, mfn: int, order: int) -> None:
        """No TLB clock on RISC-V: every online CPU is fenced."""
        if not self.profile.flush_on_reuse:
            return
        self.emit("page_alloc.reuse_flush", mfn=mfn, order=order)
        await self.arch_flush_tlb_mask(self.cpu_online_map())

    async def arch_flush_tlb_mask(self, mask: list[int]) -> None:
        await self.sbi.sbi_remote_hfence_gvma(self.this_hart(), mask, 0, 0)

    async def free_heap_pages(self, mfn: int, order: int, why: str) -> None:
        await self.step()
        if any(self.memory.state[mfn + i] == M.FREE for i in range(1 << order)):
            self.memory.retire(mfn, M.FREE, f"double free ({why})")  # the oracle reports it
            return
        for i in range(1 << order):
            pg = mfn + i
            if self.memory.owner[pg] != M.NO_OWNER:
                self.heap.need_tlbflush[pg] = 1  # page_set_tlbflush_timestamp()
            self.memory.retire(pg, M.FREE, why)
        self.heap.give(mfn, order)

    async def alloc_xenheap_pages(self, order: int, why: str) -> int | None:
        return await self.alloc_heap_pages(order, 0, M.XEN, M.NO_OWNER, why)

    async def free_xenheap_pages(self, mfn: int, order: int, why: str) -> None:
        await self.free_heap_pages(mfn, order, why)
