"""The per-domain P2M pool (arch/riscv/paging.c).

Pool pages come from the heap with no owner, so freeing them back to the heap
needs no reuse flush - and gets none.  ``paging_free_page`` adds to the tail
of the freelist and ``paging_alloc_page`` takes the head: reuse is FIFO, so a
table freed by ``p2m_free_subtree`` is handed out again as soon as the pages
ahead of it are used.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from simulator.engine.conductor import SpinLock
from simulator.riscv import memory as M
from simulator.xen.mm import Mm

if TYPE_CHECKING:
    from simulator.xen.domain import Domain


class PagingDomain:
    """d->arch.paging"""

    def __init__(self, lock: SpinLock) -> None:
        self.lock = lock
        self.freelist: deque[int] = deque()
        self.total_pages = 0


class Paging(Mm):
    async def spin_lock(self, lock: SpinLock) -> None:
        hart = self.this_hart()
        await hart.tick()
        await lock.acquire(f"hart{hart.id}", hart.wait_until)

    def spin_unlock(self, lock: SpinLock) -> None:
        lock.release(f"hart{self.smp_processor_id()}")

    async def paging_alloc_page(self, d: Domain, state: int, why: str) -> int | None:
        pool = d.arch_paging
        await self.spin_lock(pool.lock)
        pg = pool.freelist.popleft() if pool.freelist else None
        if pg is not None or self.profile.pool_total_underflow:
            pool.total_pages -= 1
        self.spin_unlock(pool.lock)
        if pg is not None:
            self.memory.hand_out(pg, state, M.NO_OWNER, f"dom{d.domain_id} p2m pool -> {why}")
        return pg

    async def paging_free_page(self, d: Domain, pg: int, why: str) -> None:
        pool = d.arch_paging
        await self.spin_lock(pool.lock)
        pool.freelist.append(pg)  # page_list_add_tail
        pool.total_pages += 1
        self.memory.retire(pg, M.POOL, f"{why} -> dom{d.domain_id} p2m pool (tail)")
        self.spin_unlock(pool.lock)

    async def paging_set_allocation(self, d: Domain, pages: int) -> int:
        """The toolstack resizes a domain's p2m pool (XEN_DOMCTL_SHADOW_OP_SET_ALLOCATION).

        Only the paging lock is taken, not the p2m lock: a page freed to the pool
        by a hypercall still holding the p2m lock can leave for the heap here.
        """
        self.emit("hypercall", op="paging_set_allocation", dom=d.domain_id, pages=pages)
        return await self.paging_freelist_adjust(d, pages)

    async def paging_freelist_adjust(self, d: Domain, pages: int) -> int:
        """Grow or shrink the pool to ``pages`` free pages (shrinking takes the head)."""
        pool = d.arch_paging
        while pool.total_pages < pages:
            pg = await self.alloc_heap_pages(0, 0, M.POOL, M.NO_OWNER, f"dom{d.domain_id} p2m pool")
            if pg is None:
                return -12  # -ENOMEM
            await self.spin_lock(pool.lock)
            pool.freelist.append(pg)
            pool.total_pages += 1
            self.spin_unlock(pool.lock)
        while pool.total_pages > pages and pool.freelist:
            await self.spin_lock(pool.lock)
            if not pool.freelist:  # emptied while we waited for the lock
                self.spin_unlock(pool.lock)
                break
            pg = pool.freelist.popleft()
            pool.total_pages -= 1
            self.spin_unlock(pool.lock)
            await self.free_heap_pages(pg, 0, f"dom{d.domain_id} p2m pool returned to the heap")
        return 0
