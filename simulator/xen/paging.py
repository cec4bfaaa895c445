"""The per-domain P2M pool (arch/riscv/paging.c).

Pool pages come from the heap with no owner, so freeing them back to the heap
needs no reuse flush - and gets none.  ``paging_free_page`` adds to the tail
of the freelist and ``paging_alloc_page`` takes the head: reuse is FIFO, so a
table freed by ``p2m_free_subtree`` is handed out again as soon as the pages
ahead of it are used.  ``total_pages`` counts the freelist (the tree
decrements it even when the list is empty).

Resizing runs with ``d->arch.paging.lock`` held throughout, as
``arch_set_paging_mempool_size`` holds it; heap allocations and frees happen
under it.  Model difference: no ``general_preempt_check`` (pools are small).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulator.riscv import memory as M
from simulator.xen.fidelity import model, upstream
from simulator.xen.mm import Mm
from simulator.xen.page_alloc import MEMF_no_owner
from simulator.xen.page_list import PageLinks, PageListHead
from simulator.xen.spinlock import SpinLock

if TYPE_CHECKING:
    from simulator.xen.domain import Domain

ENOMEM = -12
EINVAL = -22


class PagingDomain:
    """d->arch.paging"""

    def __init__(self, lock: SpinLock, links: PageLinks) -> None:
        self.lock = lock
        self.freelist = PageListHead(links, "d->arch.paging.freelist")  # through page_info.list, as p2m->pages
        self.total_pages = 0
        self.least_free = 1 << 62  # model: the fewest pages the freelist held after an allocation (a study reads it)


class Paging(Mm):
    @upstream("xen/common/spinlock.c", differs="a conductor-aware lock")
    async def spin_lock(self, lock: SpinLock) -> None:
        hart = self.this_hart()
        await hart.tick()
        await lock.acquire(f"hart{hart.id}", hart.wait_until)

    @upstream("xen/common/spinlock.c")
    def spin_unlock(self, lock: SpinLock) -> None:
        lock.release(f"hart{self.smp_processor_id()}")

    @upstream("xen/common/spinlock.c", differs="held by this hart")
    def spin_is_locked(self, lock: SpinLock) -> bool:
        return lock.holder == f"hart{self.smp_processor_id()}"

    @upstream("paging.c")
    async def paging_free_page(self, d: Domain, pg: int, why: str) -> None:
        pool = d.arch_paging
        await self.spin_lock(pool.lock)
        pool.freelist.page_list_add_tail(pg)
        pool.total_pages += 1
        self.memory.retire(pg, M.POOL, f"{why} -> dom{d.domain_id} p2m pool (tail)")
        self.spin_unlock(pool.lock)

    @upstream(
        "paging.c",
        differs="keeps the fewest free pages the pool held (model bookkeeping the table-free study reads)",
        policies=("pool_stamp_tables",),
    )
    async def paging_alloc_page(self, d: Domain, state: int, why: str) -> int | None:
        pool = d.arch_paging
        await self.spin_lock(pool.lock)
        pg = pool.freelist.page_list_remove_head()
        pool.least_free = min(pool.least_free, pool.freelist.count)
        if pg is not None or self.profile.pool_total_underflow:
            pool.total_pages -= 1  # the tree decrements even when the list is empty
        self.spin_unlock(pool.lock)
        if pg is not None and self.profile.pool_stamp_tables and self.heap.tlbflush_timestamp[pg]:
            # policy: a table freed with its stamp is handed out again: first fence every hart that
            # has not flushed fully since (alloc_heap_pages's reuse flush, here for the pool)
            stamp = self.heap.tlbflush_timestamp[pg]
            self.heap.tlbflush_timestamp[pg] = 0
            await self.filtered_flush_tlb_mask(pg, 0, stamp)
        if pg is not None:
            self.memory.hand_out(pg, state, M.NO_OWNER, f"dom{d.domain_id} p2m pool -> {why}")
        return pg

    @upstream("paging.c", policies=("pool_stamp_tables",))
    async def _paging_ret_to_domheap(self, d: Domain) -> int:
        pool = d.arch_paging
        assert self.spin_is_locked(pool.lock)
        pg = pool.freelist.page_list_remove_head()
        if pg is None:
            self.emit("printk", text="failed to free pages, P2M freelist is empty")
            return ENOMEM
        pool.total_pages -= 1
        stamp = self.heap.tlbflush_timestamp[pg]
        await self.free_domheap_page(pg)
        if self.profile.pool_stamp_tables and stamp:
            # policy: a stamped table leaves for the heap still needing its flush (a page with no
            # owner gets no need_tlbflush in free_heap_pages): the heap's reuse flush sees it
            self.heap.need_tlbflush[pg] = 1
            self.heap.tlbflush_timestamp[pg] = stamp
        return 0

    @upstream("paging.c")
    async def _paging_add_to_freelist(self, d: Domain) -> int:
        pool = d.arch_paging
        assert self.spin_is_locked(pool.lock)
        pg = await self.alloc_domheap_pages(d, 0, MEMF_no_owner, M.POOL, f"dom{d.domain_id} p2m pool")
        if pg is None:
            self.emit("printk", text="failed to allocate pages")
            return ENOMEM
        pool.total_pages += 1
        pool.freelist.page_list_add_tail(pg)
        return 0

    @upstream("paging.c", differs="no general_preempt_check")
    async def paging_freelist_adjust(self, d: Domain, pages: int, can_preempt: bool = False) -> int:
        pool = d.arch_paging
        assert self.spin_is_locked(pool.lock)
        while True:
            if pool.total_pages < pages:
                rc = await self._paging_add_to_freelist(d)
            elif pool.total_pages > pages:
                rc = await self._paging_ret_to_domheap(d)
            else:
                return 0
            if rc:
                return rc

    @upstream("paging.c")
    async def paging_refill_from_domheap(self, d: Domain, nr_pages: int) -> int:
        for _ in range(nr_pages):
            rc = await self._paging_add_to_freelist(d)
            if rc:
                return rc
        return 0

    @upstream("paging.c")
    async def paging_ret_to_domheap(self, d: Domain, nr_pages: int) -> int:
        if d.arch_paging.total_pages < nr_pages:
            return 0  # the tree returns false (0) here: the root is then not taken from the pool
        for _ in range(nr_pages):
            rc = await self._paging_ret_to_domheap(d)
            if rc:
                return rc
        return 0

    @upstream("p2m.c")
    async def arch_set_paging_mempool_size(self, d: Domain, size: int) -> int:
        """XEN_DOMCTL_set_paging_mempool_size: the toolstack resizes a domain's p2m pool (bytes).

        Only the paging lock is taken, not the p2m lock: a page freed to the pool
        by a hypercall still holding the p2m lock can leave for the heap here.
        """
        pages = size >> 12
        if pages << 12 != size:
            return EINVAL
        self.emit("hypercall", op="set_paging_mempool_size", dom=d.domain_id, pages=pages)
        await self.spin_lock(d.arch_paging.lock)
        rc: int = await self.p2m_set_allocation(d, pages, True)  # type: ignore[attr-defined]  # p2m.c
        self.spin_unlock(d.arch_paging.lock)
        return rc

    @model("arch_set_paging_mempool_size in pages, for workloads")
    async def paging_set_allocation(self, d: Domain, pages: int) -> int:
        """Model convenience for workloads: ``arch_set_paging_mempool_size`` in pages."""
        return await self.arch_set_paging_mempool_size(d, pages << 12)
