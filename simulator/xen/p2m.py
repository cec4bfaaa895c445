"""The P2M (arch/riscv/p2m.c): set, split, look up and free G-stage mappings.

Function names, arguments and the order of operations follow the C code of
the seed patch and the tree, so this file reads beside p2m.c.  In particular:

* ``p2m_set_entry`` writes the new PTE with one store and sets ``need_flush``;
  it never flushes itself (no break-before-make);
* ``p2m_free_subtree`` puts every leaf of a subtree BEFORE the flush, and frees
  table pages only AFTER ``p2m_tlb_flush_sync``;
* ``p2m_write_unlock`` flushes, then unlocks.

Every PTE store, lock operation, page put and page free awaits ``step()``:
those are the points where other harts' walks and hypercalls interleave.
Reads of Xen's own tables under the lock are not steps (nobody else writes them).
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING

from simulator.engine.conductor import RwLock
from simulator.riscv import memory as M
from simulator.riscv import pte as P
from simulator.xen.base import XenPanic
from simulator.xen.paging import Paging

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
P2M_TYPE_NAMES = ("invalid", "ram_rw", "mmio_direct_io", "ext_storage", "map_foreign_rw", "map_foreign_ro")

# p2m_next_level() results
P2M_TABLE_MAP_NONE = 0
P2M_TABLE_MAP_NOMEM = 1
P2M_TABLE_SUPER_PAGE = 2
P2M_TABLE_NORMAL = 3

P2M_SUPPORTED_LEVEL_MAPPING = 2
INVALID_MFN = -1
ENOMEM = -12
EACCES = -13
EINVAL = -22


def p2m_is_foreign(t: int) -> bool:
    return t in (p2m_map_foreign_rw, p2m_map_foreign_ro)


def p2m_is_ram(t: int) -> bool:
    return t == p2m_ram_rw


def p2m_type_perms(t: int) -> tuple[int, int]:
    """(R/W/X bits, PBMT) for a leaf of type t (reference note, section 2)."""
    if t == p2m_ram_rw:
        return P.PTE_R | P.PTE_W | P.PTE_X, 0
    if t in (p2m_map_foreign_rw,):
        return P.PTE_R | P.PTE_W, 0
    if t == p2m_mmio_direct_io:
        return P.PTE_R | P.PTE_W, P.PTE_PBMT_IO
    if t == p2m_map_foreign_ro:
        return P.PTE_R, 0
    raise ValueError(f"no leaf for p2m type {t}")


class P2MDomain:
    """struct p2m_domain"""

    def __init__(self, d: Domain, lock: RwLock) -> None:
        self.domain = d
        self.root = INVALID_MFN
        self.pages: dict[int, None] = {}  # p2m->pages: every table page, roots included
        self.lock = lock
        self.need_flush = False
        self.md: dict[int, int] = {}  # table page -> its metadata page
        self.md_used: dict[int, int] = {}  # table page -> external-type slots in use
        self.lowest_mapped_gfn = 1 << 62
        self.max_mapped_gfn = 0


class P2m(Paging):
    # -- locking and flushing ----------------------------------------------------

    async def p2m_write_lock(self, p2m: P2MDomain) -> None:
        hart = self.this_hart()
        await hart.tick()
        await p2m.lock.write_lock(f"hart{hart.id}", hart.wait_until)

    async def p2m_write_unlock(self, p2m: P2MDomain) -> None:
        # flush before unlocking: nobody may change the p2m before the invalidation completes
        await self.p2m_tlb_flush_sync(p2m)
        await self.step()
        p2m.lock.write_unlock(f"hart{self.smp_processor_id()}")

    def p2m_flush_mask(self, d: Domain) -> list[int]:
        if self.profile.broadcast_flush:
            return self.cpu_online_map()
        return [i for i, dirty in enumerate(d.dirty_cpumask) if dirty]

    async def p2m_tlb_flush(self, p2m: P2MDomain) -> None:
        d = p2m.domain
        p2m.need_flush = False
        mask = self.p2m_flush_mask(d)
        # model addition (fixed profile): harts not running d now and not since
        # may leave the mask once this synchronous flush has reached them
        idle = {cpu: d.switch_ins[cpu] for cpu in mask if cpu not in d.running_on}
        self.emit("p2m_tlb_flush", dom=d.domain_id, mask=mask)
        rc = await self.sbi.sbi_remote_hfence_gvma(self.this_hart(), mask, 0, 0)
        if rc:
            self.emit("sbi.error_ignored", dom=d.domain_id, rc=rc)  # the C code ignores it too
        if self.profile.maintain_dirty_mask:
            for cpu, ins in idle.items():
                if d.switch_ins[cpu] == ins and cpu not in d.running_on:
                    d.dirty_cpumask[cpu] = False

    async def p2m_tlb_flush_sync(self, p2m: P2MDomain) -> None:
        if p2m.need_flush:
            await self.p2m_tlb_flush(p2m)

    async def p2m_force_tlb_flush_sync(self, p2m: P2MDomain) -> None:
        await self.p2m_tlb_flush(p2m)

    # -- table helpers -----------------------------------------------------------

    def p2m_get_root_pointer(self, p2m: P2MDomain, gfn: int) -> int | None:
        mode = self.gstage_mode
        root_table_indx = gfn >> (9 * mode.root_level)
        if root_table_indx >= mode.entries(mode.root_level):
            return None
        return p2m.root + (root_table_indx >> 9)

    def offsets(self, gfn: int) -> list[int]:
        mode = self.gstage_mode
        return [mode.gfn_index(gfn, lvl) & 511 for lvl in range(mode.root_level + 1)]

    def p2m_get_type(self, p2m: P2MDomain, pte: int, table: int, idx: int) -> int:
        t = P.pte_rsw(pte)
        if t == p2m_ext_storage:
            if self.profile.ext_types_panic:
                raise XenPanic("p2m_get_type: unimplemented (external p2m type)")
            md = p2m.md.get(table)
            if md is None:
                raise XenPanic(f"p2m_get_type: external type without a metadata page (table {table:#x})")
            return self.memory.table(md)[idx]
        return t

    async def p2m_set_type(self, p2m: P2MDomain, table: int, idx: int, t: int) -> bool:
        """Keep the metadata page of ``table`` in step with slot ``idx``'s type."""
        md = p2m.md.get(table)
        old_ext = md is not None and self.memory.table(md)[idx] >= p2m_first_external
        if t >= p2m_first_external:
            if self.profile.ext_types_panic:
                raise XenPanic("p2m_set_type: external types unimplemented")
            if md is None:
                md = await self.paging_alloc_page(p2m.domain, M.METADATA, f"metadata of table {table:#x}")
                if md is None:
                    return False
                self.memory.clear_page(md)
                p2m.md[table] = md
                p2m.md_used[table] = 0
            if not old_ext:
                p2m.md_used[table] += 1
            self.memory.table(md)[idx] = t  # metadata is data, not PTEs
        elif old_ext:
            assert md is not None
            self.memory.table(md)[idx] = 0
            p2m.md_used[table] -= 1
            if p2m.md_used[table] == 0:
                await self.p2m_free_metadata_page(p2m, table)
        return True

    async def p2m_free_metadata_page(self, p2m: P2MDomain, table: int) -> None:
        md = p2m.md.pop(table)
        p2m.md_used.pop(table, None)
        await self.paging_free_page(p2m.domain, md, f"metadata page of table {table:#x}")

    def pte_from_mfn(self, mfn: int, t: int) -> int:
        perms, pbmt = p2m_type_perms(t)
        rsw = t if t < p2m_first_external else p2m_ext_storage
        return P.make_leaf_pte(mfn, perms, rsw, pbmt)

    async def p2m_write_pte(self, table: int, idx: int, pte: int) -> int:
        await self.step()
        return self.memory.write_pte(table, idx, pte)

    async def p2m_alloc_table(self, p2m: P2MDomain) -> int | None:
        pg = await self.paging_alloc_page(p2m.domain, M.TABLE, "p2m table")
        if pg is None:
            return None
        p2m.pages[pg] = None
        self.memory.clear_page(pg)  # clear_and_clean_page()
        return pg

    async def p2m_create_table(self, p2m: P2MDomain, table: int, idx: int) -> int:
        pg = await self.p2m_alloc_table(p2m)
        if pg is None:
            return ENOMEM
        await self.p2m_write_pte(table, idx, P.make_table_pte(pg))
        return 0

    async def p2m_next_level(
        self, p2m: P2MDomain, alloc_tbl: bool, level: int, table: int, offset: int
    ) -> tuple[int, int]:
        entry, _ = self.memory.read_pte(table, offset)
        if P.pte_valid(entry):
            if P.pte_is_mapping(entry):
                return P2M_TABLE_SUPER_PAGE, table
            return P2M_TABLE_NORMAL, P.pte_ppn(entry)
        if not alloc_tbl:
            return P2M_TABLE_MAP_NONE, table
        if await self.p2m_create_table(p2m, table, offset):
            return P2M_TABLE_MAP_NOMEM, table
        entry, _ = self.memory.read_pte(table, offset)
        return P2M_TABLE_NORMAL, P.pte_ppn(entry)

    # -- set / split / get -----------------------------------------------------------

    async def p2m_split_superpage(
        self, p2m: P2MDomain, entry: int, level: int, target: int, offsets: list[int], p2mt: int
    ) -> tuple[bool, int]:
        """Shatter ``entry`` into a private table (recursively down to ``target``).

        Returns (ok, new table PTE).  The new table is published by the caller
        with one store; until then no walker can see it, so the 512 stores into
        it are not steps.
        """
        page = await self.p2m_alloc_table(p2m)
        if page is None:
            return False, entry
        next_level = level - 1
        base = P.pte_ppn(entry)
        perms_bits = entry & ~P.PTE_PPN_MASK
        table = self.memory.table(page)
        await self.step()
        for i in range(512):
            table[i] = perms_bits | ((base + (i << (9 * next_level))) << P.PTE_PPN_SHIFT)
        self.memory.ghosts[page][:] = array("Q", [self.memory.clock]) * 512
        if p2mt >= p2m_first_external:
            for i in range(512):
                if not await self.p2m_set_type(p2m, page, i, p2mt):
                    return False, P.make_table_pte(page)
        ok = True
        if next_level != target:
            i = offsets[next_level]
            ok, sub = await self.p2m_split_superpage(p2m, table[i], next_level, target, offsets, p2mt)
            table[i] = sub
            self.memory.ghosts[page][i] = self.memory.clock
        return ok, P.make_table_pte(page)

    async def p2m_set_entry(self, p2m: P2MDomain, gfn: int, page_order: int, mfn: int, t: int) -> int:
        assert p2m.lock.writer is not None, "p2m_set_entry without the p2m write lock"
        removing = mfn == INVALID_MFN or t == p2m_invalid
        target = page_order // 9
        assert target <= P2M_SUPPORTED_LEVEL_MAPPING
        offsets = self.offsets(gfn)
        table = self.p2m_get_root_pointer(p2m, gfn)
        if table is None:
            return EINVAL
        level = self.gstage_mode.root_level
        while level > target:
            rc, nxt = await self.p2m_next_level(p2m, not removing, level, table, offsets[level])
            if rc == P2M_TABLE_MAP_NOMEM:
                return 0 if removing else ENOMEM
            if rc == P2M_TABLE_MAP_NONE:
                return 0  # removing something that is not there
            if rc == P2M_TABLE_SUPER_PAGE:
                break
            table = nxt
            level -= 1

        idx = offsets[level]
        entry, _ = self.memory.read_pte(table, idx)
        if level > target:
            # a superpage above the target: split a private copy, then publish it
            p2mt = self.p2m_get_type(p2m, entry, table, idx)
            ok, split_pte = await self.p2m_split_superpage(p2m, entry, level, target, offsets, p2mt)
            if not ok:
                # never published: free it without a flush
                await self.p2m_free_subtree(p2m, split_pte, level)
                return ENOMEM
            # the superpage's metadata slot moves to the new table's metadata
            await self.p2m_set_type(p2m, table, idx, p2m_invalid)
            await self.p2m_write_pte(table, idx, split_pte)
            p2m.need_flush = True
            while level > target:
                rc, table = await self.p2m_next_level(p2m, True, level, table, offsets[level])
                assert rc == P2M_TABLE_NORMAL
                level -= 1
            idx = offsets[level]
            entry, _ = self.memory.read_pte(table, idx)

        orig = entry
        orig_type = self.p2m_get_type(p2m, orig, table, idx) if P.pte_valid(orig) else p2m_invalid
        if removing:
            pte = 0
            await self.p2m_set_type(p2m, table, idx, p2m_invalid)
        else:
            pte = self.pte_from_mfn(mfn, t)
            if not await self.p2m_set_type(p2m, table, idx, t):
                return ENOMEM
        await self.p2m_write_pte(table, idx, pte)
        p2m.need_flush = True
        if not removing:
            p2m.max_mapped_gfn = max(p2m.max_mapped_gfn, gfn + (1 << page_order) - 1)
            p2m.lowest_mapped_gfn = min(p2m.lowest_mapped_gfn, gfn)
        if P.pte_valid(orig) and (not P.pte_valid(pte) or P.pte_ppn(orig) != P.pte_ppn(pte)):
            await self.p2m_free_subtree(p2m, orig, level, orig_type)
        return 0

    def p2m_get_entry(self, p2m: P2MDomain, gfn: int) -> tuple[int, int, int]:
        """(mfn, type, page_order); for a hole, INVALID_MFN and the hole's order."""
        offsets = self.offsets(gfn)
        table = self.p2m_get_root_pointer(p2m, gfn)
        if table is None:
            return INVALID_MFN, p2m_invalid, 0
        level = self.gstage_mode.root_level
        while True:
            idx = offsets[level]
            entry, _ = self.memory.read_pte(table, idx)
            if not P.pte_valid(entry):
                return INVALID_MFN, p2m_invalid, 9 * min(level, P2M_SUPPORTED_LEVEL_MAPPING)
            if P.pte_is_mapping(entry):
                t = self.p2m_get_type(p2m, entry, table, idx)
                off = gfn & ((1 << (9 * level)) - 1)
                return P.pte_ppn(entry) + off, t, 9 * level
            if level == 0:
                return INVALID_MFN, p2m_invalid, 0
            table = P.pte_ppn(entry)
            level -= 1

    # -- freeing (the seed patch) --------------------------------------------------

    async def p2m_put_foreign_page(self, pg: int) -> None:
        # It's safe to call put_page() here because arch_flush_tlb_mask() will be
        # invoked if the page is reallocated, which will trigger a flush of the
        # guest TLBs.  (The seed's claim; the simulator tests it.)
        await self.step()
        await self.put_page(pg)

    async def p2m_put_4k_page(self, mfn: int, p2mt: int) -> None:
        if p2m_is_foreign(p2mt):
            await self.p2m_put_foreign_page(mfn)

    async def p2m_put_2m_superpage(self, mfn: int, p2mt: int) -> None:
        if not p2m_is_foreign(p2mt):
            return
        for i in range(512):
            await self.p2m_put_foreign_page(mfn + i)

    async def p2m_put_page(self, entry: int, level: int, p2mt: int) -> None:
        mfn = P.pte_ppn(entry)
        assert P.pte_valid(entry)
        if level == 1:
            await self.p2m_put_2m_superpage(mfn, p2mt)
        elif level == 0:
            await self.p2m_put_4k_page(mfn, p2mt)
        else:
            # ASSERT_UNREACHABLE(): a no-op in release builds, so a 1G leaf drops no reference
            self.emit("ASSERT_UNREACHABLE", where="p2m_put_page", level=level, type=p2mt)

    async def p2m_free_page(self, p2m: P2MDomain, pg: int) -> None:
        p2m.pages.pop(pg, None)  # page_list_del
        await self.paging_free_page(p2m.domain, pg, "p2m_free_page")

    async def p2m_free_subtree(self, p2m: P2MDomain, entry: int, level: int, p2mt: int | None = None) -> None:
        """Free the subtree behind ``entry``.

        Model difference: the caller passes the leaf's type when it has already
        overwritten the slot the type was read from (the C code reads it before
        the store too, via the p2mt variable of p2m_set_entry).
        """
        assert level <= P2M_SUPPORTED_LEVEL_MAPPING
        if not P.pte_valid(entry):
            return
        if level == 0 or P.pte_is_superpage(entry, level):
            if p2mt is None:
                p2mt = P.pte_rsw(entry)
            # (IOREQ mapcache invalidation would go here; no IOREQ servers are modelled)
            await self.p2m_put_page(entry, level, p2mt)
            return
        table = P.pte_ppn(entry)
        contents = self.memory.table(table)
        for i in range(512):
            child = contents[i]
            if P.pte_valid(child):
                child_type = self.p2m_get_type(p2m, child, table, i) if P.pte_is_mapping(child) else None
                await self.p2m_free_subtree(p2m, child, level - 1, child_type)
        # Make sure all the references in the TLB have been removed before
        # freeing the intermediate page table.
        # XXX: Should we defer the free of the page table to avoid the flush?
        await self.p2m_tlb_flush_sync(p2m)
        if table in p2m.md:
            await self.p2m_free_metadata_page(p2m, table)
        self.emit("p2m_free_subtree.table_freed", dom=p2m.domain.domain_id, mfn=table, level=level - 1)
        await self.p2m_free_page(p2m, table)

    # -- ranges and the callers --------------------------------------------------------

    async def p2m_set_range(self, p2m: P2MDomain, gfn: int, nr: int, mfn: int, t: int) -> int:
        removing = mfn == INVALID_MFN or t == p2m_invalid
        if not removing and p2m.domain.is_dying:
            return EACCES
        while nr:
            mask = gfn | (0 if removing else mfn)
            order = 0
            for o in (18, 9):
                if o // 9 <= P2M_SUPPORTED_LEVEL_MAPPING and not mask & ((1 << o) - 1) and nr >= 1 << o:
                    order = o
                    break
            if removing:
                # remove a whole superpage or hole at once when the range covers it
                _mfn, _t, cur_order = self.p2m_get_entry(p2m, gfn)
                if cur_order > order and not gfn & ((1 << cur_order) - 1) and nr >= 1 << cur_order:
                    order = cur_order
            rc = await self.p2m_set_entry(p2m, gfn, order, mfn, t)
            if rc:
                return rc
            gfn += 1 << order
            if not removing:
                mfn += 1 << order
            nr -= 1 << order
        return 0

    async def p2m_insert_mapping(self, d: Domain, gfn: int, nr: int, mfn: int, t: int) -> int:
        p2m = d.p2m
        await self.p2m_write_lock(p2m)
        rc = await self.p2m_set_range(p2m, gfn, nr, mfn, t)
        await self.p2m_write_unlock(p2m)
        return rc

    async def p2m_remove_mapping(self, d: Domain, gfn: int, nr: int) -> int:
        p2m = d.p2m
        await self.p2m_write_lock(p2m)
        rc = await self.p2m_set_range(p2m, gfn, nr, INVALID_MFN, p2m_invalid)
        await self.p2m_write_unlock(p2m)
        return rc
