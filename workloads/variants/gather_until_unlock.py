"""Gather the tables p2m_free_subtree frees until p2m_write_unlock: one flush for all of them.

The C this variant stands for (xen/arch/riscv/p2m.c at c447b7308b):

    void p2m_write_unlock(struct p2m_domain *p2m)
    {
        p2m_tlb_flush_sync(p2m);
    +   while ( (pg = page_list_remove_head(&p2m->deferred_tables)) )
    +       p2m_free_table(p2m, pg);
        write_unlock(&p2m->lock);
    }

    static void p2m_free_subtree(...)
    {
        ...
        unmap_domain_page(table);
    -   p2m_tlb_flush_sync(p2m);
    -   p2m_free_table(p2m, pg);
    +   page_list_add_tail(pg, &p2m->deferred_tables);
    }
"""

from __future__ import annotations

from typing import Any

from simulator import register_variant


def apply(xen: Any) -> None:
    deferred: dict[Any, list[int]] = {}  # p2m->deferred_tables, per p2m
    inside = [0] * len(xen.harts)  # per hart: inside p2m_free_subtree
    free_subtree, flush_sync = xen.p2m_free_subtree, xen.p2m_tlb_flush_sync
    free_table, write_unlock = xen.p2m_free_table, xen.p2m_write_unlock

    async def p2m_free_subtree(p2m: Any, entry: int, ctx: Any) -> None:
        cpu = xen.smp_processor_id()
        inside[cpu] += 1
        try:
            await free_subtree(p2m, entry, ctx)
        finally:
            inside[cpu] -= 1

    async def p2m_tlb_flush_sync(p2m: Any) -> None:
        if not inside[xen.smp_processor_id()]:  # the flush before each table's free is gone
            await flush_sync(p2m)

    async def p2m_free_table(p2m: Any, pg: int) -> None:
        if inside[xen.smp_processor_id()]:
            deferred.setdefault(p2m, []).append(pg)  # page_list_add_tail(pg, &p2m->deferred_tables)
        else:
            await free_table(p2m, pg)

    async def p2m_write_unlock(p2m: Any) -> None:
        await flush_sync(p2m)  # p2m_tlb_flush_sync(p2m): the unlinks set need_flush
        for pg in deferred.pop(p2m, []):
            await free_table(p2m, pg)
        await write_unlock(p2m)  # its own flush has nothing left to do; write_unlock(&p2m->lock)

    xen.p2m_free_subtree = p2m_free_subtree
    xen.p2m_tlb_flush_sync = p2m_tlb_flush_sync
    xen.p2m_free_table = p2m_free_table
    xen.p2m_write_unlock = p2m_write_unlock


register_variant("gather-until-unlock", __doc__.splitlines()[0], apply)
