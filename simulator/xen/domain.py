"""Domains and vCPUs: create, switch, map foreign pages, give memory back, die.

What the tree has is modelled as the tree has it: ``p2m_set_allocation`` and
the root (p2m.c), ``p2m_ctxt_switch_from``/``p2m_ctxt_switch_to`` and
``p2m_handle_vmenter`` (p2m.c, called at every return to the guest).  What the
tree still stubs (``context_switch``, SMP, ``domain_relinquish_resources``,
foreign mapping, ``guest_physmap_remove_page``) is glue, taken from ARM in
ARM's order, and the same on every profile:

* teardown: ``relinquish_memory`` of the domain's pages (RAM goes back to the
  heap while still mapped in the dying domain's p2m), ``relinquish_p2m_mapping``
  (preempting every 512 entries, the lock dropped between continuations),
  ``p2m_clear_root_pages``, ``p2m_teardown`` (under the p2m lock), the pool
  back to the heap, the root;
* foreign mapping: the foreign p2m is looked up under its read lock, which is
  dropped before ``get_page`` (``p2m_get_page_from_gfn``); one 4K page per
  mapping as ARM maps them (an order above 0 is the model's extension).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from simulator.riscv import pte as P
from simulator.xen.base import HypercallFailed
from simulator.xen.fidelity import glue, upstream
from simulator.xen.p2m import (
    INVALID_MFN,
    P2MDomain,
    p2m_invalid,
    p2m_is_ram,
    p2m_map_foreign_ro,
    p2m_map_foreign_rw,
    p2m_ram_rw,
)
from simulator.xen.page_alloc import MEMF_no_tlbflush
from simulator.xen.page_list import PageLinks, PageList
from simulator.xen.paging import ENOMEM, PagingDomain
from simulator.xen.spinlock import RwLock, SpinLock
from simulator.xen.vmid import Vmid

if TYPE_CHECKING:
    from simulator.riscv.hart import GuestProgram


class Vcpu:
    def __init__(self, d: Domain, vcpu_id: int) -> None:
        self.domain = d
        self.vcpu_id = vcpu_id
        self.vmid = 0  # v->arch.vmid.vmid
        self.vmid_generation = 0  # v->arch.vmid.generation
        self.processor: int | None = None  # the hart it runs on now
        self.last_processor: int | None = None
        self.program: GuestProgram | None = None

    @property
    def name(self) -> str:
        return f"d{self.domain.domain_id}v{self.vcpu_id}"


class Cpumask(list[bool]):
    """cpumask_t, a bit per hart.  Every change is reported with the name of the function that made it,
    so an explanation can say who cleared a hart's bit in d->dirty_cpumask, and when."""

    __slots__ = ("report",)

    def __init__(self, nr_harts: int) -> None:
        super().__init__([False] * nr_harts)
        self.report: Callable[[int, bool, str], None] | None = None

    def __setitem__(self, cpu: Any, value: Any) -> None:
        if self.report is not None and bool(self[cpu]) != bool(value):
            self.report(cpu, bool(value), sys._getframe(1).f_code.co_name)
        super().__setitem__(cpu, value)


class Domain:
    def __init__(
        self, domain_id: int, nr_harts: int, p2m_lock: RwLock, paging_lock: SpinLock, links: PageLinks
    ) -> None:
        self.domain_id = domain_id
        self.vcpus: list[Vcpu] = []
        self.p2m = P2MDomain(self, p2m_lock, links)
        self.arch_paging = PagingDomain(paging_lock, links)
        self.dirty_cpumask = Cpumask(nr_harts)
        self.running_on: list[int] = []
        self.switch_ins = [0] * nr_harts  # vCPU switch-ins per hart, for lazy dirty-mask clearing
        self.page_list = PageList(links)  # owned pages, in the order assign_pages added them
        self.tot_pages = 0
        self.is_dying = False
        self.is_crashed = False
        self.creation_finished = False  # set when the toolstack first unpauses it
        self.destroyed = False
        self.struct_page = INVALID_MFN  # the xenheap page holding struct domain
        self.vmid = 0  # arm-broadcast: the domain's VMID for life

    def __repr__(self) -> str:
        return f"dom{self.domain_id}"


class DomainOps(Vmid):
    curr_vcpu: list[Vcpu | None]
    page_links: PageLinks  # page_info.list of every frame (simulator.xen.hypervisor)

    # -- creation -----------------------------------------------------------------

    @glue("xen/common/domain.c", differs="struct domain, the pool and root (p2m_set_allocation), vCPUs")
    async def domain_create(self, domain_id: int, nr_vcpus: int, pool_pages: int) -> Domain:
        """``pool_pages``: the p2m pool as the toolstack sizes it; the 16 KiB root comes out of it."""
        if domain_id in self.domains:
            raise ValueError(f"dom{domain_id} already exists")
        d = Domain(
            domain_id,
            len(self.harts),
            RwLock(self.conductor, f"p2m lock of dom{domain_id}"),
            SpinLock(self.conductor, f"paging lock of dom{domain_id}"),
            self.page_links,
        )
        self.domains[domain_id] = d
        self.p2m_init(d)
        d.dirty_cpumask.report = lambda cpu, bit, fn: self.observer.event(
            self.running_hart(), "dirty_cpumask", dom=domain_id, cpu=cpu, set=bit, fn=fn
        )  # the model's: the log says who set or cleared each bit (a test may set one from its driver)
        self.emit("domain_create", dom=domain_id, vcpus=nr_vcpus, pool=pool_pages)
        pg = await self.alloc_xenheap_pages(0, f"struct domain of dom{domain_id}")
        if pg is None:
            del self.domains[domain_id]
            raise HypercallFailed(ENOMEM, f"domain_create(dom{domain_id}): no memory for struct domain")
        d.struct_page = pg
        # domain_p2m_set_allocation (dom0less) / XEN_DOMCTL_set_paging_mempool_size
        await self.spin_lock(d.arch_paging.lock)
        rc = await self.p2m_set_allocation(d, pool_pages, False)
        self.spin_unlock(d.arch_paging.lock)
        try:
            if rc:
                raise HypercallFailed(rc, f"domain_create(dom{domain_id}): p2m_set_allocation({pool_pages}) failed")
            self.p2m_alloc_vmid(d)
        except HypercallFailed:
            await self.domain_create_fail(d)
            raise
        d.vcpus = [self.vcpu_create(d, i) for i in range(nr_vcpus)]
        return d

    @glue("xen/common/domain.c", differs="a vCPU is its VMID state, where it runs, and its guest program")
    def vcpu_create(self, d: Domain, vcpu_id: int) -> Vcpu:
        return Vcpu(d, vcpu_id)

    @glue("xen/common/domain.c", "domain_create", differs="its error path: what was allocated goes back")
    async def domain_create_fail(self, d: Domain) -> None:
        d.is_dying = True
        await self.p2m_teardown_allocation(d)
        if d.p2m.root != INVALID_MFN:
            await self.p2m_final_teardown(d)
        else:
            await self.free_xenheap_pages(d.struct_page, 0, f"struct domain of dom{d.domain_id}")
        del self.domains[d.domain_id]
        self.emit("domain_create_failed", dom=d.domain_id)

    @upstream("xen/common/memory.c", differs="one call per range of extents", fixes=("no_build_flush_batching",))
    async def populate_physmap(self, d: Domain, gfn: int, nr: int, order: int) -> int:
        """XENMEM_populate_physmap (common/memory.c): allocate extents of ``order`` and map them as RAM.

        While the domain is being built the tree passes MEMF_no_tlbflush and
        accumulates the pages' need_tlbflush after each allocation, to flush once
        at the end - but ``alloc_heap_pages`` has already cleared it
        (``init_free_page_fields``), so that flush never happens.
        """
        self.emit("hypercall", op="populate_physmap", dom=d.domain_id, gfn=gfn, nr=nr, order=order)
        memflags = 0
        if not d.creation_finished and not self.profile.no_build_flush_batching:
            memflags |= MEMF_no_tlbflush
        need_tlbflush = False
        tlbflush_timestamp = 0
        done = 0
        rc = 0
        while done < nr:
            mfn = await self.alloc_domheap_pages(d, order, memflags)
            if mfn is None:
                rc = ENOMEM  # the hypercall returns what it did; the caller sees -ENOMEM
                break
            if memflags & MEMF_no_tlbflush:
                for pg in range(mfn, mfn + (1 << order)):
                    need_tlbflush, tlbflush_timestamp = self.accumulate_tlbflush(need_tlbflush, pg, tlbflush_timestamp)
            rc = await self.p2m_insert_mapping(d, gfn + done, 1 << order, mfn, p2m_ram_rw)
            if rc:
                break
            done += 1 << order
        if need_tlbflush:
            await self.filtered_flush_tlb_mask(INVALID_MFN, 0, tlbflush_timestamp)
        return rc

    # -- scheduling (context_switch is a stub in the tree: ARM-style glue) ---------------

    @glue("xen/arch/arm/domain.c", differs="a stub in the tree")
    async def context_switch(self, nxt: Vcpu | None) -> None:
        """Switch this hart from whatever vCPU it runs to ``nxt`` (None: idle)."""
        hart = self.this_hart()
        prev = self.curr_vcpu[hart.id]
        await self.step()
        if prev is not None:
            self.ctxt_switch_from(prev)
            await self.p2m_ctxt_switch_from(prev)
        if nxt is not None:
            self.ctxt_switch_to(nxt)
            await self.p2m_ctxt_switch_to(nxt)
            hart.guest = nxt.program

    @glue("xen/arch/arm/domain.c", differs="the scheduler's bookkeeping: running_on, curr_vcpu")
    def ctxt_switch_from(self, prev: Vcpu) -> None:
        """Glue: the scheduler's bookkeeping (dirty_cpumask stays set: the hart may still cache entries)."""
        hart = self.this_hart()
        hart.guest = None
        prev.processor = None
        prev.domain.running_on.remove(hart.id)
        self.curr_vcpu[hart.id] = None
        self.emit("switch_out", dom=prev.domain.domain_id, vcpu=prev.vcpu_id)

    @glue("xen/arch/arm/domain.c", differs="the scheduler's bookkeeping; dirty_cpumask", fixes=("maintain_dirty_mask",))
    def ctxt_switch_to(self, nxt: Vcpu) -> None:
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
        d.creation_finished = True  # the toolstack unpaused it
        nxt.processor = hart.id
        d.running_on.append(hart.id)
        self.curr_vcpu[hart.id] = nxt
        self.emit("switch_in", dom=d.domain_id, vcpu=nxt.vcpu_id, vmid=nxt.vmid)

    @upstream("p2m.c", differs="no VS-stage: VSATP is not modelled", fixes=("hgatp_bare_on_switch_out",))
    async def p2m_ctxt_switch_from(self, p: Vcpu) -> None:
        """The tree zeroes VSATP only (no VS-stage here); hgatp stays as it was."""
        if self.profile.hgatp_bare_on_switch_out:
            await self.step()
            self.this_hart().write_hgatp(0)  # fix: no speculative walk through a root that may be freed

    @upstream(
        "p2m.c",
        differs="no VS-stage",
        fixes=("vmid_before_hgatp", "vmid_flush_on_migration", "flush_on_switch_without_vmids"),
    )
    async def p2m_ctxt_switch_to(self, n: Vcpu) -> None:
        hart = self.this_hart()
        p2m = n.domain.p2m
        if self.profile.vmid_per_domain:
            await self.step()
            hart.write_hgatp(P.make_hgatp(self.gstage_mode, n.domain.vmid, p2m.root))
            if not self.vmids_used(hart.id) and self.profile.flush_on_switch_without_vmids:
                self.local_hfence_gvma_all()
            n.last_processor = hart.id
            return
        if self.profile.vmid_flush_on_migration and n.last_processor not in (None, hart.id):
            self.vmid_flush_vcpu(n)  # fix: the tree has no caller of vmid_flush_vcpu
        n.last_processor = hart.id
        if self.profile.vmid_before_hgatp:
            # fix: a valid VMID before hgatp can name this p2m (no speculative fill under another's VMID)
            need_flush = await self.vmid_handle_vmenter(n)
            await self.step()
            hart.write_hgatp(P.make_hgatp(self.gstage_mode, n.vmid, p2m.root))
            if need_flush:
                self.local_hfence_gvma_all()
        else:
            # As VMID is unique per vCPU and just re-used here there is no need for a G-stage flush.
            await self.step()
            hart.write_hgatp(P.make_hgatp(self.gstage_mode, n.vmid, p2m.root))
        if not self.vmids_used(hart.id) and self.profile.flush_on_switch_without_vmids:
            self.local_hfence_gvma_all()  # fix: VMID 0 is everybody's, as x86 SVM flushes for ASID 0

    @upstream("p2m.c")
    async def p2m_handle_vmenter(self) -> None:
        """At every return to the guest (check_for_pcpu_work): a VMID valid on this hart."""
        hart = self.this_hart()
        curr = self.curr_vcpu[hart.id]
        if curr is None or self.profile.vmid_per_domain:
            return
        old_vmid = curr.vmid
        need_flush = await self.vmid_handle_vmenter(curr)
        if old_vmid != curr.vmid:
            await self.step()
            hart.write_hgatp(P.make_hgatp(self.gstage_mode, curr.vmid, curr.domain.p2m.root))
        # There is no need to flush unconditionally: the old VMID won't be reused until need_flush.
        if need_flush:
            self.local_hfence_gvma_all()

    # -- memory hypercalls ---------------------------------------------------------------

    @glue("xen/common/memory.c", differs="one p2m lock hold for the whole range (Xen: per extent)")
    async def decrease_reservation(self, d: Domain, gfn: int, nr: int) -> int:
        """Give ``nr`` pages at ``gfn`` back: unmap them, then drop the allocation references.

        Model difference: the whole range is removed in one p2m lock hold, as
        ``p2m_remove_mapping(d, gfn, nr)`` does for a range; Xen's
        decrease_reservation (guest_remove_page) locks once per extent.
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

    @upstream("p2m.c", differs="foreign entries are refused")
    async def p2m_get_page_from_gfn(self, p2m: P2MDomain, gfn: int) -> tuple[int, int]:
        """(mfn with a reference taken, type), or (INVALID_MFN, type); the lock is dropped before get_page."""
        await self.p2m_read_lock(p2m)
        mfn, t, _ = self.p2m_get_entry(p2m, gfn)
        await self.p2m_read_unlock(p2m)
        if mfn == INVALID_MFN or not 0 <= mfn < self.memory.nr_frames:
            return INVALID_MFN, t
        if not p2m_is_ram(t):
            return INVALID_MFN, t  # a foreign page of a foreign domain: refused
        await self.step()
        return (mfn, t) if self.get_page(mfn, p2m.domain) else (INVALID_MFN, t)

    @glue(
        "xen/arch/arm/mm.c",
        "xenmem_add_to_physmap_one",
        differs="XENMAPSPACE_gmfn_foreign (a BUG_ON stub in arch/riscv/mm.c); an order above 0 maps a foreign "
        "superpage: the model's extension",
    )
    async def map_foreign(
        self, d: Domain, gfn: int, fd: Domain, fgfn: int, order: int = 0, readonly: bool = False
    ) -> int:
        """XENMAPSPACE_gmfn_foreign (ARM's xenmem_add_to_physmap_one): a reference on the page, then map it.

        ``order`` above 0 maps a foreign superpage at once: the model's extension
        (ARM maps 4K at a time); it is what reaches p2m_put_2m_superpage.
        """
        self.emit("hypercall", op="map_foreign", dom=d.domain_id, gfn=gfn, fdom=fd.domain_id, fgfn=fgfn, order=order)
        nr = 1 << order
        taken: list[int] = []
        for i in range(nr):
            mfn, _t = await self.p2m_get_page_from_gfn(fd.p2m, fgfn + i)
            if mfn == INVALID_MFN or (taken and mfn != taken[0] + i):
                if mfn != INVALID_MFN:
                    await self.put_page(mfn)
                for pg in taken:
                    await self.put_page(pg)
                return -22  # not there, or not contiguous: cannot map as one superpage
            taken.append(mfn)
        t = p2m_map_foreign_ro if readonly else p2m_map_foreign_rw
        rc = await self.p2m_insert_mapping(d, gfn, nr, taken[0], t)
        if rc:
            for pg in taken:
                await self.put_page(pg)
        return rc

    @glue(
        "xen/common/memory.c", "XENMEM_remove_from_physmap", differs="guest_physmap_remove_page is a stub in the tree"
    )
    async def unmap_foreign(self, d: Domain, gfn: int, nr: int) -> int:
        """XENMEM_remove_from_physmap over a range: the references drop in p2m_free_subtree."""
        self.emit("hypercall", op="unmap_foreign", dom=d.domain_id, gfn=gfn, nr=nr)
        return await self.p2m_remove_mapping(d, gfn, nr)

    @glue("xen/arch/arm/p2m.c", differs="a stub in the tree")
    async def map_mmio_regions(self, d: Domain, gfn: int, nr: int, mfn: int) -> int:
        """map_mmio_regions: a stub in the tree; map_regions_p2mt with p2m_mmio_direct_io (glue)."""
        from simulator.xen.p2m import p2m_mmio_direct_io

        self.emit("hypercall", op="map_mmio_regions", dom=d.domain_id, gfn=gfn, nr=nr, mfn=mfn)
        return await self.map_regions_p2mt(d, gfn, nr, mfn, p2m_mmio_direct_io)

    # -- teardown (domain_relinquish_resources is a stub in the tree: ARM's, in ARM's order) -------

    @glue("xen/common/domain.c")
    async def domain_kill(self, d: Domain) -> None:
        self.emit("hypercall", op="domain_kill", dom=d.domain_id)
        if d.running_on:
            raise ValueError(f"dom{d.domain_id} still runs on harts {d.running_on}: pause it first")
        d.is_dying = True
        await self.domain_relinquish_resources(d)
        await self.p2m_final_teardown(d)
        d.destroyed = True
        self.emit("domain_destroyed", dom=d.domain_id, zombie_pages=d.tot_pages)

    @glue("xen/arch/arm/domain.c", differs="no IOMMU, PCI, TEE or xenheap pages")
    async def domain_relinquish_resources(self, d: Domain) -> None:
        await self.relinquish_memory(d)
        await self.relinquish_p2m_mapping(d)
        # We are about to free the intermediate page-tables, so clear the root
        # to prevent any walk to use them.
        await self.p2m_clear_root_pages(d.p2m)
        await self.p2m_teardown(d)
        await self.p2m_teardown_allocation(d)

    @glue("xen/arch/arm/domain.c", differs="no preemption")
    async def relinquish_memory(self, d: Domain) -> None:
        for pg in list(d.page_list):
            if not self.get_page(pg, d):
                continue  # someone is freeing it
            await self.put_page_alloc_ref(pg)
            await self.put_page(pg)

    @glue(
        "xen/arch/arm/mmu/p2m.c",
        differs="the lock dropped at every 512 entries (ARM: -ERESTART there when preemption is due)",
    )
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
                    # for a valid mapping the start is aligned: the entry is removed whilst relinquishing
                    start &= ~((1 << order) - 1)
                    await self.p2m_set_entry(p2m, start, order, INVALID_MFN, p2m_invalid)
                start = (start | ((1 << order) - 1)) + 1
            p2m.lowest_mapped_gfn = start
            await self.p2m_write_unlock(p2m)
            await self.step()  # hypercall continuation: others may run, the lock is free

    @glue("xen/arch/arm/mmu/p2m.c", differs="per-entry stores, a step per root page (ARM: clear_and_clean_page)")
    async def p2m_clear_root_pages(self, p2m: P2MDomain) -> None:
        """ARM clears each root page with clear_and_clean_page; the model stores each used entry."""
        await self.p2m_write_lock(p2m)
        for i in range(P.ROOT_PAGES):
            await self.step()
            table = self.memory.load(p2m.root + i)
            for idx in range(512):
                if table[idx]:
                    self.memory.write_pte(p2m.root + i, idx, 0)
        await self.p2m_force_tlb_flush_sync(p2m)
        await self.p2m_write_unlock(p2m)

    @glue(
        "xen/arch/arm/mmu/p2m.c",
        differs="metadata pages first, links cleared; the root stays (RISC-V keeps it in p2m->pages)",
    )
    async def p2m_teardown(self, d: Domain) -> None:
        """Every table page to the pool - no flush: the root was cleared and flushed.

        Metadata pages go first and their links are cleared (glue: ``v.md.pg``
        shares storage with the owner field, so a table page reaching the heap
        with it set would look owned); the root stays for p2m_final_teardown.
        """
        p2m = d.p2m
        await self.p2m_write_lock(p2m)
        root_pages = range(p2m.root, p2m.root + P.ROOT_PAGES)
        for table in list(p2m.md):
            await self.p2m_free_metadata_page(p2m, table)
        for pg in [pg for pg in p2m.pages if pg not in root_pages]:
            await self.p2m_free_page(p2m, pg)
        await self.p2m_write_unlock(p2m)

    @glue("xen/arch/arm/mmu/p2m.c")
    async def p2m_teardown_allocation(self, d: Domain) -> None:
        await self.spin_lock(d.arch_paging.lock)
        await self.p2m_set_allocation(d, 0, True)
        self.spin_unlock(d.arch_paging.lock)

    @glue("xen/arch/arm/mmu/p2m.c", differs="the root and struct domain to the heap")
    async def p2m_final_teardown(self, d: Domain) -> None:
        p2m = d.p2m
        for i in range(P.ROOT_PAGES):
            p2m.pages.pop(p2m.root + i, None)
        await self.free_heap_pages(p2m.root, P.ROOT_ORDER, True, f"p2m root of dom{d.domain_id}")
        await self.free_xenheap_pages(d.struct_page, 0, f"struct domain of dom{d.domain_id}")
        for cpu in range(len(self.harts)):
            d.dirty_cpumask[cpu] = False
