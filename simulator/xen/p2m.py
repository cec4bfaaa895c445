"""The P2M (arch/riscv/p2m.c): set, split, look up and free G-stage mappings.

Function names, arguments and the order of operations follow the tree at
c447b7308b, so this file reads beside p2m.c.  In particular:

* ``p2m_set_entry`` builds the new PTE with ``p2m_pte_from_mfn`` (whose
  ``p2m_set_type`` updates the metadata slot at once), stores it with one
  write, sets ``need_flush``, and only then frees the replaced subtree -
  ``p2m_free_subtree`` reads the old leaf's type from the slot as it is by
  then; it never flushes itself (no break-before-make);
* a removal is ``p2m_clean_pte``: the metadata slot is left as it was;
* ``p2m_free_subtree`` puts every leaf of a subtree BEFORE the flush, and frees
  table pages only AFTER ``p2m_tlb_flush_sync``;
* ``p2m_write_unlock`` flushes, then unlocks.

Every PTE store, lock operation, page put and page free awaits ``step()``:
those are the points where other harts' walks and hypercalls interleave.
Reads of Xen's own tables under the lock are not steps (nobody else writes
them).  Metadata slots are 8-byte ints in a 512-entry array (the tree's
``struct md_t`` is 4 bytes); only a stale walk can tell the difference.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING, NamedTuple

from simulator.riscv import memory as M
from simulator.riscv import pte as P
from simulator.xen.base import XenPanic
from simulator.xen.fidelity import glue, model, upstream
from simulator.xen.page_alloc import MEMF_no_owner
from simulator.xen.page_list import P2MPageList, PageLinks
from simulator.xen.paging import ENOMEM, Paging
from simulator.xen.spinlock import RwLock

if TYPE_CHECKING:
    from simulator.xen.domain import Domain

# p2m_type_t
p2m_invalid = 0
p2m_ram_rw = 1
p2m_mmio_direct_io = 2
p2m_ext_storage = 3
p2m_map_foreign_rw = 4
p2m_map_foreign_ro = 5
p2m_first_external = p2m_ext_storage
P2M_TYPE_NAMES = (
    "p2m_invalid",
    "p2m_ram_rw",
    "p2m_mmio_direct_io",
    "p2m_ext_storage",
    "p2m_map_foreign_rw",
    "p2m_map_foreign_ro",
)

# p2m_next_level() results
P2M_TABLE_MAP_NONE = 0
P2M_TABLE_MAP_NOMEM = 1
P2M_TABLE_SUPER_PAGE = 2
P2M_TABLE_NORMAL = 3

P2M_MAX_SUPPORTED_LEVEL_MAPPING = 2
P2M_MAX_ROOT_LEVEL = 5
INVALID_MFN = -1
EACCES = -13
EINVAL = -22
EOVERFLOW = -75
INT_MAX = (1 << 31) - 1
UINT_MAX = (1 << 32) - 1
WRAPPED_LEVELS = 32  # recursion below level 0 the model follows before it calls it a stack overflow


def p2m_is_foreign(t: int) -> bool:
    return t in (p2m_map_foreign_rw, p2m_map_foreign_ro)


def p2m_is_ram(t: int) -> bool:
    return t == p2m_ram_rw


def type_name(t: int) -> str:
    return P2M_TYPE_NAMES[t] if 0 <= t < len(P2M_TYPE_NAMES) else f"type {t}"


class PteCtx(NamedTuple):
    """struct p2m_pte_ctx: where a PTE lives (``pt_page`` is the table frame).

    ``known_type`` is the fixed profile's addition: the replaced leaf's type,
    read before ``p2m_set_type`` overwrote its slot (None: read it from the slot).
    ``gfn`` is the model's: the first GFN the entry maps, for the log.
    """

    p2m: P2MDomain
    pt_page: int
    index: int
    level: int
    known_type: int | None = None
    gfn: int = -1


class P2MDomain:
    """struct p2m_domain"""

    def __init__(self, d: Domain, lock: RwLock, links: PageLinks) -> None:
        self.domain = d
        self.root = INVALID_MFN
        self.pages = P2MPageList(links, "p2m->pages")  # table, metadata and root pages
        self.lock = lock
        self.need_flush = False
        self.md: dict[int, int] = {}  # table page -> its metadata page (page_info.v.md.pg)
        self.lowest_mapped_gfn = (1 << 64) - 1  # _gfn(ULONG_MAX)
        self.max_mapped_gfn = 0
        self.deferred_tables: list[int] = []  # policy gather_tables: unlinked tables freed at unlock


class P2m(Paging):
    # -- locking and flushing ----------------------------------------------------

    @upstream("include/asm/p2m.h")
    async def p2m_write_lock(self, p2m: P2MDomain) -> None:
        hart = self.this_hart()
        await hart.tick()
        await p2m.lock.write_lock(f"hart{hart.id}", hart.wait_until)

    @upstream("include/asm/p2m.h")
    async def p2m_read_lock(self, p2m: P2MDomain) -> None:
        hart = self.this_hart()
        await hart.tick()
        await p2m.lock.read_lock(f"hart{hart.id}", hart.wait_until)

    @upstream("include/asm/p2m.h")
    async def p2m_read_unlock(self, p2m: P2MDomain) -> None:
        await self.step()
        p2m.lock.read_unlock(f"hart{self.smp_processor_id()}")

    @upstream("include/asm/p2m.h")
    def p2m_is_locked(self, p2m: P2MDomain) -> bool:
        return p2m.lock.writer is not None or bool(p2m.lock.readers)

    @upstream("include/asm/p2m.h")
    def p2m_is_write_locked(self, p2m: P2MDomain) -> bool:
        return p2m.lock.writer is not None

    @upstream("p2m.c", policies=("gather_tables",))
    async def p2m_write_unlock(self, p2m: P2MDomain) -> None:
        # The final flush is done with the P2M write lock taken to avoid someone
        # else modifying the P2M before the TLB invalidation has completed.
        await self.p2m_tlb_flush_sync(p2m)
        # policy gather_tables: the tables p2m_free_subtree unlinked are unreachable now
        while p2m.deferred_tables:
            await self.p2m_free_table(p2m, p2m.deferred_tables.pop(0))  # page_list_remove_head
        await self.step()
        p2m.lock.write_unlock(f"hart{self.smp_processor_id()}")

    @model("d->dirty_cpumask as p2m_tlb_flush reads it (every online hart on arm-broadcast)")
    def p2m_flush_mask(self, d: Domain) -> list[int]:
        if self.profile.broadcast_flush:
            return self.cpu_online_map()
        return [i for i, dirty in enumerate(d.dirty_cpumask) if dirty]

    @upstream("p2m.c", differs="the ignored SBI error is logged", fixes=("maintain_dirty_mask",))
    async def p2m_tlb_flush(self, p2m: P2MDomain) -> None:
        d = p2m.domain
        self.ASSERT(self.p2m_is_write_locked(p2m), "p2m_is_write_locked(p2m) in p2m_tlb_flush")
        p2m.need_flush = False
        await self._p2m_remote_flush(d)

    @model("p2m_tlb_flush's SBI call and the fixed profile's dirty-mask upkeep (shared with a tree's C)")
    async def _p2m_remote_flush(self, d: Domain) -> int:
        """sbi_remote_hfence_gvma(d->dirty_cpumask, 0, 0) as p2m_tlb_flush makes it; its SBI error."""
        mask = self.p2m_flush_mask(d)
        # model addition (fixed profile): harts not running d now and not since
        # may leave the mask once this synchronous flush has reached them
        idle = {cpu: d.switch_ins[cpu] for cpu in mask if cpu not in d.running_on}
        dirty = [i for i, bit in enumerate(d.dirty_cpumask) if bit]
        locked = d.p2m.lock.writer == f"hart{self.smp_processor_id()}"  # for the log: held by this hart
        self.emit("p2m_tlb_flush", dom=d.domain_id, mask=mask, dirty=dirty, locked=locked)
        rc = await self.sbi_remote_hfence_gvma(mask, 0, 0)
        if rc:
            self.emit("sbi.error_ignored", where="p2m_tlb_flush", dom=d.domain_id, rc=rc, mask=mask)  # as in the C
        if self.profile.maintain_dirty_mask and not rc:  # a failed call may not have reached them
            for cpu, ins in idle.items():
                if d.switch_ins[cpu] == ins and cpu not in d.running_on:
                    d.dirty_cpumask[cpu] = False
        return rc

    @upstream("p2m.c")
    async def p2m_tlb_flush_sync(self, p2m: P2MDomain) -> None:
        if p2m.need_flush:
            await self.p2m_tlb_flush(p2m)

    @glue("xen/arch/arm/mmu/p2m.c", differs="RISC-V's p2m_tlb_flush, for the ARM-style teardown")
    async def p2m_force_tlb_flush_sync(self, p2m: P2MDomain) -> None:
        """ARM's name (glue for teardown); on RISC-V the static p2m_tlb_flush is the forced flush."""
        await self.p2m_tlb_flush(p2m)

    @upstream("p2m.c", differs="struct p2m_domain is built with the domain (P2MDomain); nothing else to do")
    def p2m_init(self, d: Domain) -> None:
        """Called once struct domain exists (domain_create); a tree's C (--xen-tree) builds its own here."""

    @model("the type a metadata slot holds (invariants read it as p2m_get_type would, without a panic)")
    def p2m_md_type(self, md: int, idx: int) -> int:
        return self.memory.table(md)[idx]

    # -- the pool and the root -------------------------------------------------------

    @upstream("p2m.c")
    async def p2m_set_allocation(self, d: Domain, pages: int, can_preempt: bool) -> int:
        rc = await self.paging_freelist_adjust(d, pages, can_preempt)
        if rc:
            return rc
        # First initialise the pool, then allocate the root from it (it must come
        # from alloc_domheap_pages to be 16 KiB aligned).
        if d.p2m.root == INVALID_MFN:
            rc = await self.p2m_alloc_root_table(d.p2m)
        return rc

    @upstream("p2m.c")
    async def p2m_alloc_root_table(self, p2m: P2MDomain) -> int:
        d = p2m.domain
        # Return back P2M_ROOT_PAGES so the root is accounted against the pool.
        rc = await self.paging_ret_to_domheap(d, P.ROOT_PAGES)
        if rc:
            return rc
        page = await self.alloc_domheap_pages(d, P.ROOT_ORDER, MEMF_no_owner, M.TABLE, f"p2m root of dom{d.domain_id}")
        if page is None:
            await self.paging_refill_from_domheap(d, P.ROOT_PAGES)
            return ENOMEM
        for i in range(P.ROOT_PAGES):
            self.clear_and_clean_page(page + i)
            p2m.pages.page_list_add(page + i)
        p2m.root = page
        self.emit("p2m_alloc_root_table", dom=d.domain_id, mfn=page)
        return 0

    @upstream("p2m.c")
    def clear_and_clean_page(self, pg: int) -> None:
        """The page becomes one of Xen's live tables: zeroed, then Xen's."""
        self.memory.clear_page(pg, "clear_and_clean_page")
        self.memory.assign(pg, M.NO_OWNER)

    @upstream("p2m.c", policies=("gather_tables",))
    async def p2m_alloc_page(self, p2m: P2MDomain, state: int = M.TABLE, why: str = "p2m table") -> int | None:
        """``state`` and ``why`` are the model's (a table or a metadata page, for the oracle)."""
        pg = await self.paging_alloc_page(p2m.domain, state, why)
        if pg is None and p2m.deferred_tables:
            # policy gather_tables: the pool ran dry while unlinked tables wait for the unlock: flush
            # now and free them (mmu_gather flushes early when its batch cannot grow), then retry
            await self.p2m_tlb_flush_sync(p2m)
            while p2m.deferred_tables:
                await self.p2m_free_table(p2m, p2m.deferred_tables.pop(0))
            pg = await self.paging_alloc_page(p2m.domain, state, why)
        if pg is not None:
            p2m.pages.page_list_add(pg)
            self.clear_and_clean_page(pg)
        return pg

    @upstream("p2m.c")
    async def p2m_free_page(self, p2m: P2MDomain, pg: int) -> None:
        p2m.pages.page_list_del(pg)
        await self.paging_free_page(p2m.domain, pg, "p2m_free_page")

    @upstream("p2m.c")
    async def p2m_free_metadata_page(self, p2m: P2MDomain, table: int) -> None:
        md = p2m.md.pop(table, None)
        if md is not None:
            await self.p2m_free_page(p2m, md)

    @upstream("p2m.c")
    async def p2m_free_table(self, p2m: P2MDomain, tbl_pg: int) -> None:
        """Free a page table's page and the metadata page linked to it."""
        await self.p2m_free_metadata_page(p2m, tbl_pg)
        self.emit("p2m_free_subtree.table_freed", dom=p2m.domain.domain_id, mfn=tbl_pg)
        await self.p2m_free_page(p2m, tbl_pg)

    # -- table helpers -----------------------------------------------------------

    @upstream("p2m.c")
    def p2m_get_root_pointer(self, p2m: P2MDomain, gfn: int) -> int | None:
        mode = self.gstage_mode
        idx = gfn >> (9 * mode.root_level)
        if idx >= mode.entries(mode.root_level):
            return None
        return p2m.root + (idx >> 9)

    @upstream("p2m.c", "P2M_BUILD_LEVEL_OFFSETS")
    def offsets(self, gfn: int) -> list[int]:
        """P2M_BUILD_LEVEL_OFFSETS: calc_offset() per level, an index within one 4 KiB page."""
        mode = self.gstage_mode
        return [mode.gfn_index(gfn, lvl) & 511 for lvl in range(mode.root_level + 1)]

    @upstream("p2m.c", differs="metadata slots are 8 bytes (struct md_t is 4)")
    def p2m_get_type(self, pte: int, ctx: PteCtx | None) -> int:
        t = P.pte_rsw(pte)
        if t == p2m_ext_storage:
            assert ctx is not None
            if self.profile.ext_types_panic:
                raise XenPanic("p2m_get_type: unimplemented (external p2m type)")
            md = ctx.p2m.md.get(ctx.pt_page)
            if md is None:
                at = f" (gfn {ctx.gfn:#x} of dom{ctx.p2m.domain.domain_id})" if ctx.gfn >= 0 else ""
                raise XenPanic(
                    f"p2m_get_type: table {ctx.pt_page:#x} has no metadata page (v.md.pg is NULL) for its "
                    f"ext_storage PTE {ctx.pt_page:#x}[{ctx.index}] = {pte:#x}{at}: __map_domain_page(NULL) maps "
                    f"page_to_mfn(NULL), a wild address"
                )
            # an index past 511 (p2m_free_subtree's over-read) reads past the metadata page too
            t = (
                self.memory.load(md, ctx.index)[ctx.index]
                if ctx.index < 512
                else self.memory.read_pte(md + ctx.index // 512, ctx.index % 512)[0]
            )
            # Since p2m_set_type() guarantees that the type will be greater than
            # p2m_first_external, just check that we received a valid type here.
            at = f" (gfn {ctx.gfn:#x} of dom{ctx.p2m.domain.domain_id})" if ctx.gfn >= 0 else ""
            self.ASSERT(
                t > p2m_first_external,
                f"type > p2m_first_external in p2m_get_type: metadata slot {md:#x}[{ctx.index}] of table "
                f"{ctx.pt_page:#x} holds {type_name(t)} for the ext_storage PTE {pte:#x}{at}",
            )
        return t

    @upstream("p2m.c", differs="returns the PTE with its type bits")
    async def p2m_set_type(self, pte: int, t: int, ctx: PteCtx) -> int:
        """Store ``t`` for the PTE at ``ctx``; returns the PTE with its type bits.

        External types go in the table's metadata page, allocated on first use
        and freed when its last used slot is cleared (``u.md.used_entries``,
        which nothing resets while the page stays in the pool).
        """
        assert ctx.index < 512
        p2m, tbl = ctx.p2m, ctx.pt_page
        md = p2m.md.get(tbl)
        if md is None and t >= p2m_first_external:
            if self.profile.ext_types_panic:
                raise XenPanic("p2m_set_type: external types unimplemented")
            md = await self.p2m_alloc_page(p2m, M.METADATA, f"metadata of table {tbl:#x}")
            if md is None:
                self.emit("printk", text=f"dom{p2m.domain.domain_id}: can't allocate metadata page")
                self.domain_crash(p2m.domain)
                return pte  # the type bits stay 0
            p2m.md[tbl] = md
        if t >= p2m_first_external:
            assert md is not None
            slots = self.memory.load(md, ctx.index)
            if slots[ctx.index] == p2m_invalid:
                self.u_md_used_entries[tbl] += 1
            self.memory.store_data(md, ctx.index, t)
            t = p2m_ext_storage
        elif md is not None:
            if self.memory.load(md, ctx.index)[ctx.index] != p2m_invalid:
                self.u_md_used_entries[tbl] -= 1
            self.memory.store_data(md, ctx.index, p2m_invalid)
        pte |= t << P.PTE_RSW_SHIFT
        if md is not None and not self.u_md_used_entries[tbl]:
            await self.p2m_free_metadata_page(p2m, tbl)
        return pte

    @upstream("p2m.c")
    def p2m_set_permission(self, pte: int, t: int) -> int:
        pte &= ~P.PTE_ACCESS_MASK
        pte |= P.PTE_U
        if self.riscv_isa_extension_available("svade"):
            pte |= P.PTE_A | P.PTE_D
        if t in (p2m_map_foreign_rw, p2m_mmio_direct_io):
            pte |= P.PTE_R | P.PTE_W
        elif t == p2m_ram_rw:
            pte |= P.PTE_ACCESS_MASK
        elif t == p2m_invalid:
            pte &= ~P.PTE_V
        elif t == p2m_map_foreign_ro:
            pte |= P.PTE_R
        else:
            self.ASSERT_UNREACHABLE("p2m_set_permission", type=t)
        return pte

    @upstream("p2m.c")
    async def p2m_pte_from_mfn(self, mfn: int, t: int, ctx: PteCtx | None) -> int:
        """A leaf for ``mfn`` of type ``t`` at ``ctx`` (its p2m_set_type runs now), or a table pointer."""
        e = P.PTE_V | (mfn << P.PTE_PPN_SHIFT)
        if ctx is not None:
            if t == p2m_mmio_direct_io:
                e |= P.PTE_PBMT_IO
            e = self.p2m_set_permission(e, t)
            e = await self.p2m_set_type(e, t, ctx)
        else:
            e &= ~P.PTE_ACCESS_MASK
        return e

    @upstream("p2m.c")
    def page_to_p2m_table(self, page: int) -> int:
        return P.make_table_pte(page)

    @upstream("p2m.c")
    async def p2m_write_pte(self, table: int, idx: int, pte: int) -> int:
        await self.step()
        return self.memory.write_pte(table, idx, pte)

    @upstream("p2m.c")
    async def p2m_clean_pte(self, table: int, idx: int) -> int:
        return await self.p2m_write_pte(table, idx, 0)

    @upstream("p2m.c")
    async def p2m_create_table(self, p2m: P2MDomain, table: int, idx: int) -> int:
        page = await self.p2m_alloc_page(p2m)
        if page is None:
            return ENOMEM
        await self.p2m_write_pte(table, idx, self.page_to_p2m_table(page))
        return 0

    @upstream("p2m.c", differs="returns the next table instead of remapping *table")
    async def p2m_next_level(
        self, p2m: P2MDomain, alloc_tbl: bool, level: int, table: int, offset: int
    ) -> tuple[int, int]:
        """(result, the table to go on with): the C's ``*table`` is returned."""
        assert level != 0
        entry, _ = self.memory.load_pte(table, offset)
        if not P.pte_valid(entry):
            if not alloc_tbl:
                return P2M_TABLE_MAP_NONE, table
            if await self.p2m_create_table(p2m, table, offset):
                return P2M_TABLE_MAP_NOMEM, table
            entry, _ = self.memory.load_pte(table, offset)
        if P.pte_is_mapping(entry):
            return P2M_TABLE_SUPER_PAGE, table
        return P2M_TABLE_NORMAL, P.pte_ppn(entry)

    # -- freeing (the seed patch, merged as 6f7881e331) ---------------------------------

    @upstream("p2m.c")
    async def p2m_put_foreign_page(self, pg: int) -> None:
        # It's safe to call put_page() here because arch_flush_tlb_mask() will be
        # invoked if the page is reallocated, which will trigger a flush of the
        # guest TLBs.  (The seed's claim; the simulator tests it.)
        await self.step()
        await self.put_page(pg)

    @upstream("p2m.c")
    async def p2m_put_4k_page(self, mfn: int, p2mt: int) -> None:
        if p2m_is_foreign(p2mt):
            await self.p2m_put_foreign_page(mfn)

    @upstream("p2m.c")
    async def p2m_put_2m_superpage(self, mfn: int, p2mt: int) -> None:
        if not p2m_is_foreign(p2mt):
            return
        for i in range(512):
            await self.p2m_put_foreign_page(mfn + i)

    @upstream("p2m.c")
    async def p2m_put_page(self, pte: int, level: int, p2mt: int) -> None:
        mfn = P.pte_ppn(pte)
        assert P.pte_valid(pte)
        if level == 1:
            await self.p2m_put_2m_superpage(mfn, p2mt)
        elif level == 0:
            await self.p2m_put_4k_page(mfn, p2mt)
        else:
            # a 1G leaf: ASSERT_UNREACHABLE(), so a release build drops no reference
            self.ASSERT_UNREACHABLE("p2m_put_page", level=level, type=p2mt)

    @upstream(
        "p2m.c",
        differs="no IOREQ mapcache invalidation (no IOREQ servers); the loop's reads past the table (2048 entries "
        "below a root entry) are plain loads of the next frames, which no hypervisor-access check sees",
        fixes=("read_replaced_type_first", "free_subtree_table_entries"),
        policies=("gather_tables", "pool_stamp_tables", "deferred_flush_pool_free"),
    )
    async def p2m_free_subtree(self, p2m: P2MDomain, entry: int, ctx: PteCtx) -> None:
        """Free the pte sub-tree behind an entry."""
        level = ctx.level
        self.ASSERT(
            level <= P2M_MAX_SUPPORTED_LEVEL_MAPPING, "level <= P2M_MAX_SUPPORTED_LEVEL_MAPPING in p2m_free_subtree"
        )
        if not P.pte_valid(entry):
            return
        if P.pte_is_mapping(entry):
            p2mt = ctx.known_type if ctx.known_type is not None else self.p2m_get_type(entry, ctx)
            # (IOREQ mapcache invalidation would go here; no IOREQ servers are modelled)
            if P.pte_rsw(entry) == p2m_ext_storage:
                self.emit(
                    "p2m_free_subtree.leaf",
                    dom=p2m.domain.domain_id,
                    table=ctx.pt_page,
                    idx=ctx.index,
                    level=level,
                    pte=entry,
                    mfn=P.pte_ppn(entry),
                    type=type_name(p2mt),
                    gfn=ctx.gfn,
                )
            await self.p2m_put_page(entry, level, p2mt)
            return
        pg = P.pte_ppn(entry)
        contents = self.memory.load(pg)
        # P2M_PAGETABLE_ENTRIES(p2m, level): the entry's own level, 2048 below a root entry; the
        # entries past 511 are the next frames of the direct map (the fix: the table's 512)
        entries = 512 if self.profile.free_subtree_table_entries else self.gstage_mode.entries(level)
        sub = level - 1 if level else UINT_MAX  # unsigned int: below level 0 (an over-read entry) it wraps
        if sub > P2M_MAX_ROOT_LEVEL and UINT_MAX - sub >= WRAPPED_LEVELS:
            raise XenPanic(
                f"p2m_free_subtree recursed {WRAPPED_LEVELS} levels below level 0, through PTEs read past a table "
                f"(table {P.pte_ppn(entry):#x}): the hypervisor's stack overflows (the model stops here)"
            )
        for i in range(entries):
            gfn = ctx.gfn + (i << (9 * sub)) if ctx.gfn >= 0 and sub <= P2M_MAX_ROOT_LEVEL else -1
            if i < 512:
                e = contents[i]
            else:  # a plain load past the mapping: the C's is not seen either (no hypervisor-access check)
                e = self.memory.read_pte(pg + i // 512, i % 512)[0] if pg + i // 512 < self.memory.nr_frames else 0
            await self.p2m_free_subtree(p2m, e, PteCtx(p2m, pg, i, sub, gfn=gfn))
        # Make sure all the references in the TLB have been removed before
        # freeing the intermediate page table.
        # XXX: Should we defer the free of the page table to avoid the flush?
        pf = self.profile
        if pf.gather_tables:  # policy: freed by p2m_write_unlock, after its flush
            p2m.deferred_tables.append(pg)  # page_list_add_tail(pg, &p2m->deferred_tables)
            return
        if pf.pool_stamp_tables:  # policy: to the pool now; its reuse fences whoever has not flushed since
            self.page_set_tlbflush_timestamp(pg)
            await self.p2m_free_table(p2m, pg)
            return
        if not pf.deferred_flush_pool_free:  # (the unsafe control frees with no flush at all here)
            await self.p2m_tlb_flush_sync(p2m)
        await self.p2m_free_table(p2m, pg)

    # -- set / split / get -----------------------------------------------------------

    @upstream("p2m.c", differs="returns (ok, *entry) instead of writing *entry")
    async def p2m_split_superpage(
        self, p2m: P2MDomain, entry: int, level: int, target: int, offsets: list[int], tbl_pg: int
    ) -> tuple[bool, int]:
        """Shatter the superpage ``entry`` into a private table, down to ``target``.

        Returns (ok, what ``*entry`` becomes): 0 when no page could be had (the
        caller has nothing to free), else the new table's PTE - also after a
        nested failure, when the caller frees the partial subtree.  The private
        table is filled without steps: no walker can see it yet.
        """
        assert level > target and P.pte_is_superpage(entry, level)
        mfn = P.pte_ppn(entry)
        next_level = level - 1
        level_order = 9 * next_level
        page = await self.p2m_alloc_page(p2m)
        if page is None:
            return False, 0  # memset(entry, 0, sizeof(*entry))
        old_type = p2m_invalid
        if P.pte_rsw(entry) == p2m_ext_storage:
            old_type = self.p2m_get_type(entry, PteCtx(p2m, tbl_pg, offsets[level], level))
        table = self.memory.table(page)
        ghosts = self.memory.ghosts[page]
        for i in range(512):
            pte = (entry & ~P.PTE_PPN_MASK) | ((mfn + (i << level_order)) << P.PTE_PPN_SHIFT)
            if P.pte_rsw(pte) == p2m_ext_storage:
                pte = await self.p2m_set_type(pte, old_type, PteCtx(p2m, page, i, next_level))
            table[i] = pte  # write_pte(new_entry, pte) into the private table
        ghosts[:] = array("Q", [self.memory.clock]) * 512
        rv = True
        if next_level != target:
            i = offsets[next_level]
            rv, sub = await self.p2m_split_superpage(p2m, table[i], next_level, target, offsets, page)
            table[i] = sub
            ghosts[i] = self.memory.clock
        self.memory.stored(page)
        # Even if we failed, install the newly allocated table: the caller frees the sub-tree.
        return rv, self.page_to_p2m_table(page)

    @upstream("p2m.c", fixes=("read_replaced_type_first",))
    async def p2m_set_entry(self, p2m: P2MDomain, gfn: int, page_order: int, mfn: int, t: int) -> int:
        """Insert an entry in the p2m (``mfn`` INVALID_MFN removes one)."""
        target = page_order // 9
        # A mapping is removed only if the MFN is explicitly INVALID_MFN.
        removing_mapping = mfn == INVALID_MFN
        offsets = self.offsets(gfn)
        assert self.p2m_is_write_locked(p2m), "p2m_set_entry without the p2m write lock"
        assert target <= P2M_MAX_SUPPORTED_LEVEL_MAPPING
        table = self.p2m_get_root_pointer(p2m, gfn)
        if table is None:
            return EINVAL
        level = self.gstage_mode.root_level
        while level > target:
            # Don't try to allocate intermediate page tables if the mapping is about to be removed.
            rc, nxt = await self.p2m_next_level(p2m, not removing_mapping, level, table, offsets[level])
            if rc in (P2M_TABLE_MAP_NONE, P2M_TABLE_MAP_NOMEM):
                # removing a mapping that does not exist is fine
                return 0 if removing_mapping else (-2 if rc == P2M_TABLE_MAP_NONE else ENOMEM)
            if rc != P2M_TABLE_NORMAL:
                break
            table = nxt
            level -= 1

        if level > target:
            # We need to split the original page.
            split_pte, _ = self.memory.load_pte(table, offsets[level])
            tbl_pg = table
            ok, split_pte = await self.p2m_split_superpage(p2m, split_pte, level, target, offsets, tbl_pg)
            if not ok:
                # Free the allocated sub-tree (never published: no flush needed)
                await self.p2m_free_subtree(p2m, split_pte, PteCtx(p2m, tbl_pg, offsets[level], level))
                return ENOMEM
            await self.p2m_write_pte(table, offsets[level], split_pte)
            p2m.need_flush = True
            # Then move to the level we want to make real changes
            while level > target:
                rc, table = await self.p2m_next_level(p2m, True, level, table, offsets[level])
                assert rc == P2M_TABLE_NORMAL
                level -= 1

        idx = offsets[level]
        ctx = PteCtx(p2m, table, idx, level, gfn=gfn & ~((1 << (9 * level)) - 1))
        assert level == target
        orig_pte, _ = self.memory.load_pte(table, idx)
        if self.profile.read_replaced_type_first and P.pte_is_mapping(orig_pte):
            # fix: the replaced leaf's type, before p2m_set_type can overwrite its metadata slot
            ctx = ctx._replace(known_type=self.p2m_get_type(orig_pte, ctx))

        if removing_mapping:
            await self.p2m_clean_pte(table, idx)
        else:
            pte = await self.p2m_pte_from_mfn(mfn, t, ctx)
            await self.p2m_write_pte(table, idx, pte)
            p2m.max_mapped_gfn = max(p2m.max_mapped_gfn, gfn + (1 << page_order) - 1)
            p2m.lowest_mapped_gfn = min(p2m.lowest_mapped_gfn, gfn)
        p2m.need_flush = True

        # VALID -> INVALID: free the original; VALID -> VALID: only if the MFN changed.
        entry, _ = self.memory.load_pte(table, idx)
        if P.pte_valid(orig_pte) and (not P.pte_valid(entry) or P.pte_ppn(entry) != P.pte_ppn(orig_pte)):
            await self.p2m_free_subtree(p2m, orig_pte, ctx)
        return 0

    @upstream("p2m.c")
    def p2m_mapping_order(self, gfn: int, mfn: int, nr: int) -> int:
        mask = (mfn if mfn != INVALID_MFN else 0) | gfn
        for level in range(min(self.gstage_mode.root_level, P2M_MAX_SUPPORTED_LEVEL_MAPPING), 0, -1):
            size = 1 << (9 * level)
            if not mask & (size - 1) and nr >= size:
                return 9 * level
        return 0

    @upstream("p2m.c")
    async def p2m_set_range(self, p2m: P2MDomain, sgfn: int, nr: int, smfn: int, t: int) -> int:
        """0, an error, or (partial failure) the number of pages left undone."""
        # Mappings can't be added (nor removed) once the domain is dying: the
        # references they hold are dropped in relinquish_p2m_mapping().
        if p2m.domain.is_dying:
            return EACCES
        rc = 0
        left = nr
        while left:
            order = self.p2m_mapping_order(sgfn, smfn, left)
            rc = await self.p2m_set_entry(p2m, sgfn, order, smfn, t)
            if rc:
                break
            sgfn += 1 << order
            if smfn != INVALID_MFN:
                smfn += 1 << order
            left -= 1 << order
        if left > INT_MAX:
            rc = EOVERFLOW
        return left if left else rc

    @upstream("p2m.c")
    async def map_regions_p2mt(self, d: Domain, gfn: int, nr: int, mfn: int, p2mt: int) -> int:
        p2m = d.p2m
        await self.p2m_write_lock(p2m)
        rc = await self.p2m_set_range(p2m, gfn, nr, mfn, p2mt)
        await self.p2m_write_unlock(p2m)
        return rc

    @glue("xen/arch/arm/p2m.c", differs="map_regions_p2mt under ARM's name")
    async def p2m_insert_mapping(self, d: Domain, gfn: int, nr: int, mfn: int, t: int) -> int:
        """Model name for map_regions_p2mt (ARM's p2m_insert_mapping)."""
        return await self.map_regions_p2mt(d, gfn, nr, mfn, t)

    @glue("xen/arch/arm/p2m.c", differs="map_regions_p2mt with INVALID_MFN")
    async def p2m_remove_mapping(self, d: Domain, gfn: int, nr: int) -> int:
        """ARM's p2m_remove_mapping: map_regions_p2mt with INVALID_MFN (glue)."""
        return await self.map_regions_p2mt(d, gfn, nr, INVALID_MFN, p2m_invalid)

    @upstream("p2m.c")
    def check_outside_boundary(self, gfn: int, boundary: int, is_lower: bool) -> tuple[bool, int]:
        level = P2M_MAX_ROOT_LEVEL + 1
        outside = gfn < boundary if is_lower else gfn > boundary
        if outside:
            level = self.gstage_mode.root_level
            while level:
                mask = (1 << (9 * level)) - 1
                if ((gfn | mask) < boundary) if is_lower else ((gfn & ~mask) > boundary):
                    break
                level -= 1
        return outside, level

    @upstream("p2m.c", differs="returns (mfn, type, order)")
    def p2m_get_entry(self, p2m: P2MDomain, gfn: int) -> tuple[int, int, int]:
        """(mfn, type, page_order); for a hole, INVALID_MFN and the order of the hole."""
        self.ASSERT(self.p2m_is_locked(p2m), "p2m_is_locked(p2m) in p2m_get_entry", note=False)
        mode = self.gstage_mode
        level = mode.root_level
        gfn_limit_bits = 9 * (level + 1) + 2  # P2M_LEVEL_ORDER(level + 1) + P2M_LEVEL_EXTRA_BITS
        if gfn > (1 << gfn_limit_bits) - 1:
            return INVALID_MFN, p2m_invalid, gfn_limit_bits
        for boundary, is_lower in ((p2m.lowest_mapped_gfn, True), (p2m.max_mapped_gfn, False)):
            outside, lvl = self.check_outside_boundary(gfn, boundary, is_lower)
            if outside:
                return INVALID_MFN, p2m_invalid, 9 * lvl
        table = self.p2m_get_root_pointer(p2m, gfn)
        if table is None:
            self.ASSERT_UNREACHABLE("p2m_get_entry")
            return INVALID_MFN, p2m_invalid, 9 * level
        offsets = self.offsets(gfn)
        while level:
            entry, _ = self.memory.load_pte(table, offsets[level])
            if not P.pte_valid(entry):
                return INVALID_MFN, p2m_invalid, 9 * level  # P2M_TABLE_MAP_NONE
            if P.pte_is_mapping(entry):
                break
            table = P.pte_ppn(entry)
            level -= 1
        entry, _ = self.memory.load_pte(table, offsets[level])
        if not P.pte_valid(entry):
            return INVALID_MFN, p2m_invalid, 9 * level
        t = self.p2m_get_type(entry, PteCtx(p2m, table, offsets[level], level))
        mfn = P.pte_ppn(entry) + (gfn & ((1 << (9 * level)) - 1))
        return mfn, t, 9 * level
