"""Whole-system invariants, checked when a run ends quietly.

Every frame must be in exactly one place (heap, a pool freelist, a p2m's
table pages, a metadata page, a domain's page list, Xen), in the state that
place implies; every domain page's count must equal its allocation reference
plus the foreign mappings that point at it; pools must account for their
pages; a destroyed domain must leave nothing but pages still mapped by others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulator.riscv import memory as M
from simulator.riscv import pte as P
from simulator.xen.mm import PGC_allocated, PGC_count_mask
from simulator.xen.p2m import p2m_ext_storage, p2m_is_foreign

if TYPE_CHECKING:
    from simulator.xen.hypervisor import Xen


class Problem(str):
    """One broken invariant: its text, and the frame it is about (for the explanation)."""

    mfn: int | None

    def __new__(cls, text: str, mfn: int | None = None) -> Problem:
        p = super().__new__(cls, text)
        p.mfn = mfn
        return p


def foreign_refs(xen: Xen) -> dict[int, int]:
    """mfn -> number of foreign leaf mappings pointing at it, over every p2m still alive."""
    refs: dict[int, int] = {}
    mem = xen.memory
    for d in xen.domains.values():
        if d.destroyed:
            continue
        p2m = d.p2m
        mds = p2m.md  # table -> its metadata page (computed once: with a tree's C it is read from its frames)

        def visit(table: int, level: int, mds: dict[int, int] = mds) -> None:
            contents = mem.table(table)
            for i in range(512):
                e = contents[i]
                if not P.pte_valid(e):
                    continue
                if P.pte_is_mapping(e):
                    if P.pte_rsw(e) != p2m_ext_storage:
                        continue
                    md = mds.get(table)  # the metadata slot, read as p2m_get_type would (no panic)
                    if md is not None and p2m_is_foreign(xen.p2m_md_type(md, i)):
                        base = P.pte_ppn(e)
                        for k in range(P.level_pages(level)):
                            refs[base + k] = refs.get(base + k, 0) + 1
                elif level > 0:
                    visit(P.pte_ppn(e), level - 1)

        for r in range(P.ROOT_PAGES):
            visit(p2m.root + r, xen.gstage_mode.root_level)
    return refs


def check(xen: Xen) -> list[Problem]:
    problems: list[Problem] = []
    mem = xen.memory
    place: dict[int, str] = {}

    def put(mfn: int, where: str, *states: int) -> None:
        if mfn in place:
            problems.append(Problem(f"mfn {mfn:#x} is in two places: {place[mfn]} and {where}", mfn))
            return
        place[mfn] = where
        if mem.state[mfn] not in states:
            problems.append(
                Problem(f"mfn {mfn:#x} is in {where} but its state is {M.STATE_NAMES[mem.state[mfn]]}", mfn)
            )

    for lists in (xen.heap.clean, xen.heap.dirty):
        for order, blocks in enumerate(lists):
            for head in blocks:
                for mfn in range(head, head + (1 << order)):
                    put(mfn, "the heap", M.FREE)
    for d in xen.domains.values():
        name = f"dom{d.domain_id}"
        pool = d.arch_paging
        if pool.total_pages != len(pool.freelist):
            problems.append(
                Problem(
                    f"{name} pool accounting: total_pages {pool.total_pages} but {len(pool.freelist)} pages on "
                    "the freelist (paging_alloc_page decrements it even when the freelist is empty)"
                    if pool.total_pages < len(pool.freelist)
                    else f"{name} pool accounting: total_pages {pool.total_pages} but {len(pool.freelist)} pages "
                    "on the freelist"
                )
            )
        for mfn in pool.freelist:
            put(mfn, f"{name}'s p2m pool", M.POOL)
        pages = list(d.p2m.pages)  # tables, metadata pages and the root (one walk of the list)
        for mfn in pages:
            put(mfn, f"{name}'s p2m pages", M.TABLE, M.METADATA)
        on_list = set(pages)
        for table, mfn in d.p2m.md.items():
            if mfn not in on_list or mem.state[mfn] != M.METADATA:
                problems.append(Problem(f"{name}: metadata page {mfn:#x} of table {table:#x} is not a p2m page", mfn))
        for mfn in d.page_list:
            put(mfn, f"{name}'s pages", M.DOMAIN)
        if d.destroyed and (d.p2m.pages or d.p2m.md or pool.freelist):
            problems.append(
                Problem(
                    f"destroyed {name} left {len(d.p2m.pages)} table, {len(d.p2m.md)} metadata "
                    f"and {len(pool.freelist)} pool pages behind"
                )
            )
    for mfn in range(mem.nr_frames):
        if mfn not in place:
            if mem.state[mfn] == M.XEN:
                continue
            problems.append(Problem(f"mfn {mfn:#x} ({mem.describe(mfn)}) is in no place: leaked", mfn))

    refs = foreign_refs(xen)
    for d in xen.domains.values():
        for mfn in d.page_list:
            count = mem.count[mfn]
            expect = (1 if count & PGC_allocated else 0) + refs.get(mfn, 0)
            if count & PGC_count_mask != expect:
                problems.append(
                    Problem(
                        f"mfn {mfn:#x} of dom{d.domain_id}: count {count & PGC_count_mask}, but "
                        f"{'an allocation reference and ' if count & PGC_allocated else ''}"
                        f"{refs.get(mfn, 0)} foreign mappings",
                        mfn,
                    )
                )
            if d.destroyed and not refs.get(mfn):
                problems.append(
                    Problem(f"destroyed dom{d.domain_id} left mfn {mfn:#x} behind with no mapping holding it", mfn)
                )
    return problems[:20]
