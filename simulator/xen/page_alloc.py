"""The heap (common/page_alloc.c): a buddy allocator with scrubbing and flush-on-reuse.

What the oracle's verdicts rest on, in the tree's order:

* ``free_heap_pages`` marks a page ``need_tlbflush`` when it had an owner
  (``mark_page_free``) and ``PGC_need_scrub`` when the caller asks (a dying
  owner, or no owner at all: pool, table and root pages);
* clean buddies go on the head of their order's list, dirty ones on the tail;
  ``alloc_heap_pages`` takes a clean head first;
* ``alloc_heap_pages`` takes pages under the heap lock (``init_free_page_fields``
  overwrites ``u.free``, so ``need_tlbflush`` is gone once the page is taken),
  drops the lock, scrubs the pages that need it, THEN fences every online hart
  (RISC-V has no TLB clock: ``tlbflush_filter`` is empty) and returns; the new
  owner is assigned after (``assign_pages``);
* idle harts scrub dirty free pages in the background (``scrub_free_pages``),
  which makes them clean: a later allocation hands them out with no scrub.

Model differences: the heap lock is one step (taking, splitting and handing
out are atomic, as they are under the lock); boot memory starts clean
(``bootscrub=on``); one node, one zone.
"""

from __future__ import annotations

from array import array

from simulator.riscv import memory as M
from simulator.xen.fidelity import glue, model, upstream
from simulator.xen.sbi import SbiCalls

MAX_ORDER = 18  # a 1G extent
MEMF_no_tlbflush = 1 << 0
MEMF_no_owner = 1 << 1
MEMF_no_scrub = 1 << 2
INVALID_DIRTY_IDX = -1
SCRUB_BATCH = 8  # scrub_free_pages: "Scrub a few (8) pages before becoming eligible for preemption"


class Heap:
    """Free lists per order: ``clean`` (LIFO, the list's head) and ``dirty`` (FIFO, its tail).

    ``dict`` as an insertion-ordered set, never hash order.  ``first_dirty`` is
    kept per block head, as Xen's ``u.free.first_dirty``.
    """

    def __init__(self, nr_frames: int) -> None:
        self.clean: list[dict[int, None]] = [{} for _ in range(MAX_ORDER + 1)]
        self.dirty: list[dict[int, None]] = [{} for _ in range(MAX_ORDER + 1)]
        self.head_order = array("b", [-1]) * nr_frames
        self.first_dirty = array("l", [INVALID_DIRTY_IDX]) * nr_frames
        self.need_tlbflush = bytearray(nr_frames)  # u.free.need_tlbflush
        self.tlbflush_timestamp = array("L", [0]) * nr_frames  # page_info.tlbflush_timestamp
        self.need_scrub = bytearray(nr_frames)  # PGC_need_scrub
        self.nr_free = 0
        self.node_need_scrub = 0
        self.nr_dirty = 0  # dirty blocks
        self.deferred: dict[int, None] = {}  # dirty blocks the idle scrubber left for their allocation
        self.skipped: dict[int, int] = {}  # block head -> first page the idle scrubber skipped so far

    @upstream("xen/common/page_alloc.c")
    def page_list_add_scrub(self, mfn: int, order: int, first_dirty: int) -> None:
        self.head_order[mfn] = order
        self.first_dirty[mfn] = first_dirty
        if first_dirty == INVALID_DIRTY_IDX:
            self.clean[order][mfn] = None
        else:
            self.dirty[order][mfn] = None
            self.nr_dirty += 1

    @model("page_list_del from the free list of the block's kind")
    def _remove(self, mfn: int, order: int) -> None:
        if self.first_dirty[mfn] == INVALID_DIRTY_IDX:
            del self.clean[order][mfn]
        else:
            del self.dirty[order][mfn]
            self.nr_dirty -= 1
            self.deferred.pop(mfn, None)
            self.skipped.pop(mfn, None)
        self.head_order[mfn] = -1

    @upstream("xen/common/page_alloc.c", differs="one node, one zone")
    def get_free_buddy(self, order: int, memflags: int) -> tuple[int, int] | None:
        """(block head, its order): the first clean head from ``order`` up; then, unless
        MEMF_no_scrub forbids, the first dirty one."""
        for o in range(order, MAX_ORDER + 1):
            if self.clean[o]:
                return next(reversed(self.clean[o])), o
        if memflags & MEMF_no_scrub:
            return None
        for o in range(order, MAX_ORDER + 1):
            if self.dirty[o]:
                return next(iter(self.dirty[o])), o
        return None

    @upstream(
        "xen/common/page_alloc.c",
        "alloc_heap_pages",
        differs="the buddy split of alloc_heap_pages, under the heap lock",
    )
    def take(self, order: int, memflags: int = 0) -> int | None:
        found = self.get_free_buddy(order, memflags)
        if found is None:
            return None
        pg, buddy_order = found
        first_dirty = self.first_dirty[pg]
        self._remove(pg, buddy_order)
        while buddy_order != order:  # halve, giving back the lower half and keeping the upper (as Xen does)
            buddy_order -= 1
            half = 1 << buddy_order
            self.page_list_add_scrub(pg, buddy_order, first_dirty if half > first_dirty else INVALID_DIRTY_IDX)
            pg += half
            if first_dirty != INVALID_DIRTY_IDX:
                first_dirty = first_dirty - half if first_dirty >= half else 0
        self.nr_free -= 1 << order
        return pg

    @upstream("xen/common/page_alloc.c", "free_heap_pages", differs="the buddy merge of free_heap_pages")
    def give(self, mfn: int, order: int) -> None:
        """Merge with free buddies and add the block (head if clean, tail if dirty)."""
        self.nr_free += 1 << order
        first_dirty = INVALID_DIRTY_IDX
        for i in range(1 << order):
            if self.need_scrub[mfn + i]:
                first_dirty = i
                break
        while order < MAX_ORDER:
            size = 1 << order
            buddy = mfn ^ size
            if buddy >= len(self.head_order) or self.head_order[buddy] != order:
                break
            bfd = self.first_dirty[buddy]
            self._remove(buddy, order)
            if buddy < mfn:  # merge with the predecessor
                if bfd == INVALID_DIRTY_IDX and first_dirty != INVALID_DIRTY_IDX:
                    first_dirty += size
                elif bfd != INVALID_DIRTY_IDX:
                    first_dirty = bfd
                mfn = buddy
            elif first_dirty == INVALID_DIRTY_IDX and bfd != INVALID_DIRTY_IDX:
                first_dirty = size + bfd
            order += 1
        self.page_list_add_scrub(mfn, order, first_dirty)

    @upstream("xen/common/page_alloc.c", "scrub_free_pages", differs="its choice of a dirty buddy")
    def last_dirty_block(self) -> tuple[int, int] | None:
        """scrub_free_pages' choice: the dirty tail of the highest order that has one."""
        for o in range(MAX_ORDER, -1, -1):
            for head in reversed(self.dirty[o]):
                if head not in self.deferred:
                    return head, o
        return None

    @upstream("xen/common/page_alloc.c", "node_to_scrub")
    def scrub_work(self) -> bool:
        return self.nr_dirty > len(self.deferred)


class PageAlloc(SbiCalls):
    heap: Heap

    @upstream("xen/common/page_alloc.c", "init_heap_pages", differs="boot memory starts scrubbed (bootscrub=on)")
    def init_heap(self, first_free: int) -> None:
        """Frames below ``first_free`` belong to Xen; the rest go to the heap, scrubbed at boot."""
        self.heap = Heap(self.memory.nr_frames)
        self.init_tlbflush()
        # page_info.u.md.used_entries: it shares u with u.inuse.type_info, which only
        # init_free_page_fields() resets - a page reused from the p2m pool keeps its count
        self.u_md_used_entries = array("q", [0]) * self.memory.nr_frames
        for mfn in range(first_free):
            self.memory.hand_out(mfn, M.XEN, M.NO_OWNER, "xen image")
            self.memory.assign(mfn, M.NO_OWNER)
        mfn = first_free
        while mfn < self.memory.nr_frames:
            order = 0
            while (
                order < MAX_ORDER
                and mfn % (1 << (order + 1)) == 0
                and mfn + (1 << (order + 1)) <= self.memory.nr_frames
            ):
                order += 1
            self.memory.scrubbed[mfn : mfn + (1 << order)] = b"\x01" * (1 << order)
            self.heap.give(mfn, order)
            mfn += 1 << order

    @upstream(
        "xen/common/page_alloc.c",
        differs="the heap lock is one step; scrubbing is a step per 8 pages",
        fixes=("flush_before_scrub",),
    )
    async def alloc_heap_pages(self, order: int, memflags: int, state: int, owner: int, why: str) -> int | None:
        heap = self.heap
        await self.step()  # spin_lock(&heap_lock)
        mfn = heap.take(order, memflags)
        if mfn is None:
            return None
        need_tlbflush = False
        tlbflush_timestamp = 0
        deferred = False
        for pg in range(mfn, mfn + (1 << order)):
            if heap.need_tlbflush[pg]:
                if memflags & MEMF_no_tlbflush:
                    deferred = True  # the caller takes the flush over
                else:
                    need_tlbflush, tlbflush_timestamp = self.accumulate_tlbflush(need_tlbflush, pg, tlbflush_timestamp)
            heap.need_tlbflush[pg] = 0  # init_free_page_fields(): u.inuse.type_info overwrites u.free ...
            self.u_md_used_entries[pg] = 0  # ... and u.md
            self.memory.hand_out(pg, state, owner, why)
        # spin_unlock(&heap_lock)
        if deferred:
            self.emit("page_alloc.no_tlbflush", mfn=mfn, order=order)
        flush = need_tlbflush and self.profile.flush_on_reuse
        if flush and self.profile.flush_before_scrub:
            # fix: nobody can reach the pages before they are scrubbed and given away
            await self.filtered_flush_tlb_mask(mfn, order, tlbflush_timestamp)
        scrubbed = 0
        for pg in range(mfn, mfn + (1 << order)):
            if heap.need_scrub[pg]:
                heap.need_scrub[pg] = 0
                heap.node_need_scrub -= 1
                if not memflags & MEMF_no_scrub:
                    if scrubbed % SCRUB_BATCH == 0:
                        await self.step()  # a step per batch of pages scrubbed
                    scrubbed += 1
                    self.scrub_one_page(pg, f"scrubbed for {why}")
        if flush and not self.profile.flush_before_scrub:
            await self.filtered_flush_tlb_mask(mfn, order, tlbflush_timestamp)  # the tree: scrub, then flush
        return mfn

    @upstream("xen/common/page_alloc.c")
    def scrub_one_page(self, pg: int, why: str) -> None:
        self.memory.clear_page(pg, why)

    @upstream("xen/include/xen/mm.h", differs="the page's (mfn, order) for the log; True if it needs a flush")
    def accumulate_tlbflush(self, need_tlbflush: bool, pg: int, tlbflush_timestamp: int) -> tuple[bool, int]:
        stamp = self.heap.tlbflush_timestamp[pg]
        if (
            self.heap.need_tlbflush[pg]
            and stamp <= self.tlbflush_current_time()
            and (not need_tlbflush or stamp > tlbflush_timestamp)
        ):
            return True, stamp
        return need_tlbflush, tlbflush_timestamp

    @upstream("xen/include/xen/mm.h", differs="(mfn, order) are the model's, for the log")
    async def filtered_flush_tlb_mask(self, mfn: int, order: int, tlbflush_timestamp: int = 0) -> None:
        """The tree's tlbflush_filter is empty: every online hart is fenced (see xen/flushtlb.py)."""
        mask = self.cpu_online_map()
        filtered = self.tlbflush_filter(mask, tlbflush_timestamp)
        self.emit(
            "page_alloc.reuse_flush", mfn=mfn, order=order, mask=list(mask),
            **(
                {"filtered": [[c, t] for c, t in filtered.items()], "stamp": tlbflush_timestamp}
                if self.profile.tlbflush_clock
                else {}
            ),
        )  # fmt: skip
        if mask:
            await self.arch_flush_tlb_mask(mask)

    @upstream("include/asm/flushtlb.h")
    async def arch_flush_tlb_mask(self, mask: list[int]) -> None:
        rc = await self.sbi_remote_hfence_gvma(mask, 0, 0)
        if rc:
            self.emit("sbi.error_ignored", where="arch_flush_tlb_mask", rc=rc, mask=mask)  # void in the C

    @upstream("xen/common/page_alloc.c", differs="a double free is reported, not BUG()ed")
    async def free_heap_pages(self, mfn: int, order: int, need_scrub: bool, why: str) -> None:
        await self.step()  # spin_lock(&heap_lock)
        if any(self.memory.state[mfn + i] == M.FREE for i in range(1 << order)):
            self.memory.retire(mfn, M.FREE, f"double free ({why})")  # the oracle reports it
            return
        heap = self.heap
        for i in range(1 << order):
            pg = mfn + i
            # mark_page_free()
            heap.need_tlbflush[pg] = self.memory.owner[pg] != M.NO_OWNER
            if heap.need_tlbflush[pg]:
                self.page_set_tlbflush_timestamp(pg)
            self.memory.retire(pg, M.FREE, why)
            if need_scrub:
                heap.need_scrub[pg] = 1
                heap.node_need_scrub += 1
        heap.give(mfn, order)

    @upstream(
        "xen/common/page_alloc.c",
        differs="no separate xenheap (as RISC-V); the page is cleared as alloc_domain_struct does",
    )
    async def alloc_xenheap_pages(self, order: int, why: str) -> int | None:
        """No separate xenheap on RISC-V: a domheap allocation with no owner, MEMF_no_scrub
        (the caller initialises the page: ``alloc_domain_struct`` clears it)."""
        mfn = await self.alloc_heap_pages(order, MEMF_no_scrub, M.XEN, M.NO_OWNER, why)
        if mfn is not None:
            for pg in range(mfn, mfn + (1 << order)):
                self.memory.clear_page(pg, "clear_page")
                self.memory.assign(pg, M.NO_OWNER)
                self.memory.written[pg] = 1  # struct domain is written at once
        return mfn

    @upstream("xen/common/page_alloc.c")
    async def free_xenheap_pages(self, mfn: int, order: int, why: str) -> None:
        await self.free_heap_pages(mfn, order, True, why)

    # -- the idle loop (ARM's idle_loop; RISC-V has none yet: glue) -------------------------

    @glue("xen/arch/arm/domain.c", "idle_loop", differs="whether the idle loop has scrubbing to do")
    def scrub_pending(self) -> bool:
        return self.heap.scrub_work()

    @glue(
        "xen/common/page_alloc.c",
        differs="called by idle harts as ARM's idle_loop does (RISC-V has no idle loop yet); a step per batch of 8",
        fixes=("scrub_skips_unflushed",),
    )
    async def scrub_free_pages(self) -> None:
        """Scrub a few dirty free pages; a block taken meanwhile is simply dropped."""
        heap = self.heap
        found = heap.last_dirty_block()
        if found is None:
            await self.step()
            return
        head, order = found
        await self.step()  # one step per call: a batch of up to SCRUB_BATCH pages
        if heap.head_order[head] != order or heap.first_dirty[head] == INVALID_DIRTY_IDX:
            return
        done = 0
        skipped = heap.skipped.get(head, INVALID_DIRTY_IDX)  # fixed: the first page left for its allocation
        i = heap.first_dirty[head]
        while i < (1 << order) and done < SCRUB_BATCH:
            pg = head + i
            if heap.need_scrub[pg]:
                if heap.need_tlbflush[pg] and self.profile.scrub_skips_unflushed:
                    if skipped == INVALID_DIRTY_IDX:
                        skipped = i
                else:
                    self.scrub_one_page(pg, "background scrub (scrub_free_pages)")
                    heap.need_scrub[pg] = 0
                    heap.node_need_scrub -= 1
                    done += 1
            i += 1
        if i < 1 << order:
            heap.first_dirty[head] = i
            if skipped != INVALID_DIRTY_IDX:
                heap.skipped[head] = skipped
            return
        heap._remove(head, order)
        heap.page_list_add_scrub(head, order, skipped)
        if skipped != INVALID_DIRTY_IDX:
            heap.deferred[head] = None
