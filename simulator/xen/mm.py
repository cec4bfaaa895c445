"""Page references and ownership (common/page_alloc.c, arch/riscv/mm.c).

``count_info`` holds ``PGC_allocated`` (the allocation reference) and a count.
A page is freed when the count reaches zero; a foreign page therefore
outlives its dying owner until the last foreign mapping is dropped.  A page
becomes its owner's in ``assign_pages``, after ``alloc_heap_pages`` returned
(and, in the tree, after its reuse flush).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulator.riscv import memory as M
from simulator.xen.fidelity import upstream
from simulator.xen.page_alloc import MEMF_no_owner, PageAlloc

if TYPE_CHECKING:
    from simulator.xen.domain import Domain

PGC_allocated = 1 << 62
PGC_count_mask = (1 << 62) - 1


class Mm(PageAlloc):
    @upstream("xen/common/page_alloc.c", differs="a dying domain is refused before the allocation, not in assign_pages")
    async def alloc_domheap_pages(
        self, d: Domain, order: int, memflags: int = 0, state: int = M.DOMAIN, why: str = ""
    ) -> int | None:
        """``state`` and ``why`` are the model's: what the frames become, for the oracle and the log."""
        if d.is_dying and not memflags & MEMF_no_owner:
            return None  # model: assign_pages() would refuse a dying domain; refused before the allocation
        owner = M.NO_OWNER if memflags & MEMF_no_owner else d.domain_id
        mfn = await self.alloc_heap_pages(order, memflags, state, owner, why or f"dom{d.domain_id} RAM")
        if mfn is not None and not memflags & MEMF_no_owner:
            self.assign_pages(d, mfn, order)
        return mfn

    @upstream(
        "xen/common/page_alloc.c",
        differs="a page still on another list is taken off it first (simulator/xen/page_list.py)",
    )
    def assign_pages(self, d: Domain, mfn: int, order: int) -> None:
        for pg in range(mfn, mfn + (1 << order)):
            self.memory.assign(pg, d.domain_id)  # page_set_owner()
            self.memory.count[pg] = PGC_allocated | 1
            d.page_list.add_tail(pg)
        d.tot_pages += 1 << order

    @upstream("mm.c")
    def get_page(self, pg: int, d: Domain) -> bool:
        count = self.memory.count[pg]
        if (count & PGC_count_mask) == 0 or self.memory.owner[pg] != d.domain_id:
            return False
        self.memory.count[pg] = count + 1
        return True

    @upstream("mm.c", differs="an underflow is reported as an invariant finding")
    async def put_page(self, pg: int) -> None:
        # 71fc690ee7; at the seed's v5 (patch 11/18) put_page() was BUG_ON("unimplemented")
        self.BUG_ON(self.profile.put_page_unimplemented, "put_page: unimplemented")
        count = self.memory.count[pg]
        if (count & PGC_count_mask) == 0:
            self.observer.event(self.smp_processor_id(), "invariant", what="refcount underflow", mfn=pg)
            return
        count -= 1
        self.memory.count[pg] = count
        self.emit("put_page", mfn=pg, count=count & PGC_count_mask)
        if (count & PGC_count_mask) == 0:
            await self.free_domheap_page(pg)

    @upstream("xen/include/xen/mm.h")
    async def put_page_alloc_ref(self, pg: int) -> None:
        if self.memory.count[pg] & PGC_allocated:
            self.memory.count[pg] &= ~PGC_allocated
            await self.put_page(pg)

    @upstream("xen/common/page_alloc.c", "free_domheap_pages")
    async def free_domheap_page(self, pg: int) -> None:
        """free_domheap_pages(pg, 0): a dying owner's pages (and pages with no owner) are scrubbed."""
        owner = self.memory.owner[pg]
        d = self.domains.get(owner)
        if d is not None:
            d.page_list.remove(pg)  # page_list_del
            d.tot_pages -= 1
            scrub = d.is_dying
        else:
            scrub = True
        self.memory.count[pg] = 0
        why = f"last reference to a page of dom{owner} dropped" if d is not None else "free_domheap_page"
        await self.free_heap_pages(pg, 0, scrub, why)
