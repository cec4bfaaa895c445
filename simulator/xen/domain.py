"""Domains and vCPUs: create, switch, map foreign pages, give memory back, die.

RISC-V has no teardown yet; ``domain_kill`` follows ARM's preemptible
sequence (reference note, section 13) with RISC-V's structures: relinquish
the mappings (preempting every 512 entries, the lock dropped between
continuations), drop the allocation references, clear the root and force a
flush, move every table page to the pool, give the pool back to the heap,
free the root.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulator.engine.conductor import RwLock, SpinLock
from simulator.riscv import memory as M
from simulator.riscv import pte as P
from simulator.xen.base import XenPanic
from simulator.xen.p2m import (
    INVALID_MFN,
    P2MDomain,
    p2m_invalid,
    p2m_is_ram,
    p2m_map_foreign_ro,
    p2m_map_foreign_rw,
    p2m_ram_rw,
)
from simulator.xen.paging import PagingDomain
from simulator.xen.vmid import Vmid

if TYPE_CHECKING:
    from simulator.riscv.hart import GuestProgram


class Vcpu:
    def __init__(self, d: Domain, vcpu_id: int) -> None:
        self.domain = d
        self.vcpu_id = vcpu_id
        self.vmid = 0
        self.vmid_generation = 0
        self.processor: int | None = None  # the hart it runs on now
        self.last_processor: int | None = None
        self.program: GuestProgram | None = None

    @property
    def name(self) -> str:
        return f"d{self.domain.domain_id}v{self.vcpu_id}"


class Domain:
    def __init__(self, domain_id: int, nr_harts: int, p2m_lock: RwLock, paging_lock: SpinLock) -> None:
        self.domain_id = domain_id
        self.vcpus: list[Vcpu] = []
        self.p2m = P2MDomain(self, p2m_lock)
        self.arch_paging = PagingDomain(paging_lock)
        self.dirty_cpumask = [False] * nr_harts
        self.running_on: list[int] = []
        self.switch_ins = [0] * nr_harts  # vCPU switch-ins per hart, for lazy dirty-mask clearing
        self.page_list: dict[int, None] = {}  # owned pages, insertion ordered
        self.tot_pages = 0
        self.is_dying = False
        self.destroyed = False
        self.struct_page = INVALID_MFN  # the xenheap page holding struct domain
        self.vmid = 0  # arm-broadcast: the domain's VMID for life

    def __repr__(self) -> str:
        return f"dom{self.domain_id}"


class DomainOps(Vmid):
    curr_vcpu: list[Vcpu | None]

    # -- creation -----------------------------------------------------------------

    async def domain_create(self, domain_id: int, nr_vcpus: int, pool_pages: int) -> Domain:
        if domain_id in self.domains:
            raise ValueError(f"dom{domain_id} already exists")
        d = Domain(
            domain_id,
            len(self.harts),
            RwLock(self.conductor, f"p2m lock of dom{domain_id}"),
            SpinLock(self.conductor, f"paging lock of dom{domain_id}"),
        )
        self.domains[domain_id] = d
        self.emit("domain_create", dom=domain_id, vcpus=nr_vcpus, pool=pool_pages)
        pg = await self.alloc_xenheap_pages(0, f"struct domain of dom{domain_id}")
        if pg is None:
            raise XenPanic("out of memory for struct domain")
        d.struct_page = pg
        if await self.paging_freelist_adjust(d, pool_pages):
            raise XenPanic(f"out of memory for the p2m pool of dom{domain_id}")
        await self.p2m_alloc_root_table(d)
        self.p2m_alloc_vmid(d)
        d.vcpus = [Vcpu(d, i) for i in range(nr_vcpus)]
        return d

    async def p2m_alloc_root_table(self, d: Domain) -> None:
        root = await self.alloc_heap_pages(P.ROOT_ORDER, 0, M.TABLE, M.NO_OWNER, f"p2m root of dom{d.domain_id}")
        if root is None:
            raise XenPanic(f"out of memory for the p2m root of dom{d.domain_id}")
        for i in range(P.ROOT_PAGES):
            self.memory.clear_page(root + i)
            d.p2m.pages[root + i] = None  # RISC-V keeps the root in p2m->pages
        d.p2m.root = root
        self.emit("p2m_alloc_root_table", dom=d.domain_id, mfn=root)

    async def populate_physmap(self, d: Domain, gfn: int, nr: int, order: int) -> int:
        """XENMEM_populate_physmap: allocate extents of ``order`` and map them as RAM."""
        done = 0
        while done < nr:
            mfn = await self.alloc_domheap_pages(d, order)
            if mfn is None:
                raise XenPanic(f"out of memory populating dom{d.domain_id} (gfn {gfn + done:#x})")
            rc = await self.p2m_insert_mapping(d, gfn + done, 1 << order, mfn, p2m_ram_rw)
            if rc:
                return rc
            done += 1 << order
        return 0

    # -- scheduling -----------------------------------------------------------------

    async def context_switch(self, nxt: Vcpu | None) -> None:
        """Switch this hart from whatever vCPU it runs to ``nxt`` (None: idle)."""
        hart = self.this_hart()
        prev = self.curr_vcpu[hart.id]
        await self.step()
        if prev is not None:
            await self.ctxt_switch_from(prev)
        if nxt is not None:
            await self.ctxt_switch_to(nxt)

    async def ctxt_switch_from(self, prev: Vcpu) -> None:
        hart = self.this_hart()
        hart.guest = None
        prev.processor = None
        prev.domain.running_on.remove(hart.id)
        self.curr_vcpu[hart.id] = None
        if self.profile.hgatp_bare_on_switch_out:
            hart.write_hgatp(0)
        # dirty_cpumask stays set: the hart may still cache this domain's entries
        self.emit("switch_out", dom=prev.domain.domain_id, vcpu=prev.vcpu_id)

    async def ctxt_switch_to(self, nxt: Vcpu) -> None:
        hart = self.this_hart()
        d = nxt.domain
        if d.is_dying:
            raise ValueError(f"{nxt.name} cannot run: dom{d.domain_id} is dying")
        if nxt.processor is not None:
            raise ValueError(f"{nxt.name} already runs on hart {nxt.processor}")
        # both before any step: a flush completing during the switch must see it
        d.switch_ins[hart.id] += 1
        if self.profile.maintain_dirty_mask:
            d.dirty_cpumask[hart.id] = True  # before the hart can cache anything
        if self.profile.vmid_flush_on_migration and nxt.last_processor not in (None, hart.id):
            self.vmid_flush_vcpu(nxt)
        vmid = await self.vmid_handle_vmenter(nxt)
        await self.step()
        hart.write_hgatp(P.make_hgatp(self.gstage_mode, vmid, d.p2m.root))
        nxt.processor = hart.id
        nxt.last_processor = hart.id
        d.running_on.append(hart.id)
        self.curr_vcpu[hart.id] = nxt
        self.emit("switch_in", dom=d.domain_id, vcpu=nxt.vcpu_id, vmid=vmid)
        hart.guest = nxt.program

    # -- memory hypercalls ---------------------------------------------------------------

    async def decrease_reservation(self, d: Domain, gfn: int, nr: int) -> int:
        """Give ``nr`` pages at ``gfn`` back: unmap them, then drop the allocation references.

        Model difference: the whole range is removed in one p2m lock hold, as
        ``p2m_remove_mapping(d, gfn, nr)`` does for a range; Xen's
        decrease_reservation locks once per extent.
        """
        self.emit("hypercall", op="decrease_reservation", dom=d.domain_id, gfn=gfn, nr=nr)
        p2m = d.p2m
        await self.p2m_write_lock(p2m)
        pages: list[tuple[int, int]] = []  # (gfn, mfn) of the RAM pages in the range
        g = gfn
        while g < gfn + nr:
            mfn, t, order = self.p2m_get_entry(p2m, g)
            step = (1 << order) - (g & ((1 << order) - 1))
            if mfn != INVALID_MFN and p2m_is_ram(t):
                pages.extend((g + i, mfn + i) for i in range(min(step, gfn + nr - g)))
            g += step
        rc = await self.p2m_set_range(p2m, gfn, nr, INVALID_MFN, p2m_invalid)
        # a failed removal (no pool page for a split) leaves some pages mapped: keep those
        gone = [mfn for g, mfn in pages if rc == 0 or self.p2m_get_entry(p2m, g)[0] == INVALID_MFN]
        await self.p2m_write_unlock(p2m)
        for pg in gone:
            await self.put_page_alloc_ref(pg)
        return rc

    async def map_foreign(self, d: Domain, gfn: int, fd: Domain, fgfn: int, order: int, readonly: bool = False) -> int:
        """XENMAPSPACE_gmfn_foreign: take a reference on each page, then map it."""
        self.emit("hypercall", op="map_foreign", dom=d.domain_id, gfn=gfn, fdom=fd.domain_id, fgfn=fgfn, order=order)
        mfn, t, _ = self.p2m_get_entry(fd.p2m, fgfn)
        if mfn == INVALID_MFN or not p2m_is_ram(t):
            return -22
        nr = 1 << order
        for i in range(nr):
            m2, _, _ = self.p2m_get_entry(fd.p2m, fgfn + i)
            if m2 != mfn + i:
                return -22  # not contiguous: cannot map as one superpage
        for i in range(nr):
            await self.step()
            if not self.get_page(mfn + i, fd):
                for j in range(i):
                    await self.put_page(mfn + j)
                return -22
        rc = await self.p2m_insert_mapping(d, gfn, nr, mfn, p2m_map_foreign_ro if readonly else p2m_map_foreign_rw)
        if rc:
            for j in range(nr):
                await self.put_page(mfn + j)
        return rc

    async def unmap_foreign(self, d: Domain, gfn: int, nr: int) -> int:
        """XENMEM_remove_from_physmap over a range: the references drop in p2m_free_subtree."""
        self.emit("hypercall", op="unmap_foreign", dom=d.domain_id, gfn=gfn, nr=nr)
        return await self.p2m_remove_mapping(d, gfn, nr)

    # -- teardown ------------------------------------------------------------------------

    async def domain_kill(self, d: Domain) -> None:
        self.emit("hypercall", op="domain_kill", dom=d.domain_id)
        if d.running_on:
            raise ValueError(f"dom{d.domain_id} still runs on harts {d.running_on}: pause it first")
        d.is_dying = True
        await self.relinquish_p2m_mapping(d)
        await self.relinquish_memory(d)
        await self.p2m_clear_root_pages(d.p2m)
        await self.p2m_teardown(d)
        await self.paging_freelist_adjust(d, 0)  # p2m_teardown_allocation
        await self.p2m_final_teardown(d)
        d.destroyed = True
        self.emit("domain_destroyed", dom=d.domain_id, zombie_pages=d.tot_pages)

    async def relinquish_p2m_mapping(self, d: Domain) -> None:
        p2m = d.p2m
        start = p2m.lowest_mapped_gfn
        end = p2m.max_mapped_gfn + 1
        while start < end:
            await self.p2m_write_lock(p2m)
            count = 0
            while start < end:
                mfn, _t, order = self.p2m_get_entry(p2m, start)
                count += 1
                if count % 512 == 0:
                    break  # arbitrarily preempt every 512 iterations
                if mfn != INVALID_MFN:
                    start &= ~((1 << order) - 1)
                    await self.p2m_set_entry(p2m, start, order, INVALID_MFN, p2m_invalid)
                start = (start | ((1 << order) - 1)) + 1
            p2m.lowest_mapped_gfn = start
            await self.p2m_write_unlock(p2m)
            await self.step()  # hypercall continuation: others may run, the lock is free

    async def relinquish_memory(self, d: Domain) -> None:
        for pg in list(d.page_list):
            await self.put_page_alloc_ref(pg)

    async def p2m_clear_root_pages(self, p2m: P2MDomain) -> None:
        # We are about to free the intermediate page-tables, so clear the root
        # to prevent any walk to use them.
        await self.p2m_write_lock(p2m)
        for i in range(P.ROOT_PAGES):
            await self.step()
            table = self.memory.table(p2m.root + i)
            for idx in range(512):
                if table[idx]:
                    self.memory.write_pte(p2m.root + i, idx, 0)
        p2m.need_flush = True
        await self.p2m_force_tlb_flush_sync(p2m)
        await self.p2m_write_unlock(p2m)

    async def p2m_teardown(self, d: Domain) -> None:
        """Every table page to the pool - no flush: the root was cleared and flushed."""
        p2m = d.p2m
        root_pages = range(p2m.root, p2m.root + P.ROOT_PAGES)
        for table in list(p2m.md):
            await self.p2m_free_metadata_page(p2m, table)
        for pg in [pg for pg in p2m.pages if pg not in root_pages]:
            await self.p2m_free_page(p2m, pg)

    async def p2m_final_teardown(self, d: Domain) -> None:
        p2m = d.p2m
        # model difference: RISC-V keeps the root in p2m->pages; it goes straight to the heap
        for i in range(P.ROOT_PAGES):
            p2m.pages.pop(p2m.root + i, None)
        await self.free_heap_pages(p2m.root, P.ROOT_ORDER, f"p2m root of dom{d.domain_id}")
        await self.free_xenheap_pages(d.struct_page, 0, f"struct domain of dom{d.domain_id}")
        d.dirty_cpumask = [False] * len(self.harts)
