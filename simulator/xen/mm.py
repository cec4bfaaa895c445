"""Page references and ownership (common/page_alloc.c, arch/riscv/mm.c).

``count_info`` holds ``PGC_allocated`` (the allocation reference) and a count.
A page is freed when the count reaches zero; a foreign page therefore
outlives its dying owner until the last foreign mapping is dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulator.riscv import memory as M
from simulator.xen.page_alloc import PageAlloc

if TYPE_CHECKING:
    from simulator.xen.domain import Domain

PGC_allocated = 1 << 62
PGC_count_mask = (1 << 62) - 1


class Mm(PageAlloc):
    async def alloc_domheap_pages(self, d: Domain, order: int, memflags: int = 0) -> int | None:
        if d.is_dying:
            return None  # assign_pages() refuses a dying domain
        mfn = await self.alloc_heap_pages(order, memflags, M.DOMAIN, d.domain_id, f"dom{d.domain_id} RAM")
        if mfn is not None:
            self.assign_pages(d, mfn, order)
        return mfn

    def assign_pages(self, d: Domain, mfn: int, order: int) -> None:
        for pg in range(mfn, mfn + (1 << order)):
            self.memory.count[pg] = PGC_allocated | 1
            d.page_list[pg] = None
        d.tot_pages += 1 << order

    def get_page(self, pg: int, d: Domain) -> bool:
        count = self.memory.count[pg]
        if (count & PGC_count_mask) == 0 or self.memory.owner[pg] != d.domain_id:
            return False
        self.memory.count[pg] = count + 1
        return True

    async def put_page(self, pg: int) -> None:
        count = self.memory.count[pg]
        if (count & PGC_count_mask) == 0:
            self.observer.event(self.smp_processor_id(), "invariant", what="refcount underflow", mfn=pg)
            return
        count -= 1
        self.memory.count[pg] = count
        if (count & PGC_count_mask) == 0:
            await self.free_domheap_page(pg)

    async def put_page_alloc_ref(self, pg: int) -> None:
        if self.memory.count[pg] & PGC_allocated:
            self.memory.count[pg] &= ~PGC_allocated
            await self.put_page(pg)

    async def free_domheap_page(self, pg: int) -> None:
        owner = self.memory.owner[pg]
        d = self.domains.get(owner)
        if d is not None:
            d.page_list.pop(pg, None)
            d.tot_pages -= 1
        self.memory.count[pg] = 0
        await self.free_heap_pages(pg, 0, f"last reference to a page of dom{owner} dropped")
