"""The hardware G-stage walk: one PTE read per conductor step.

The walk starts from the deepest cached non-leaf entry for the address, or
from the hgatp root, so other harts' PTE stores and frees interleave with
it.  Before each read the walker checks, against the machine's allocation
clock, that the table it is about to read is the one the pointer meant:
a root freed under hgatp, a cached non-leaf entry, or a PTE read from a freed
table may all point at a frame that has been handed out again since.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulator.riscv.memory import FREE, POOL
from simulator.riscv.pte import PTE_ACCESS_MASK, PTE_PPN_SHIFT, PTE_V
from simulator.riscv.tlb import TlbEntry, tlb_key

if TYPE_CHECKING:
    from simulator.riscv.hart import Hart


async def walk(hart: Hart, gfn: int) -> TlbEntry | None:
    """Translate ``gfn`` under the hart's hgatp; fill and return the leaf, or None (fault).

    A fence taken at one of the walk's steps drops the walk, which starts again:
    an in-flight walk that began before a fence must not fill what the fence removed.
    """
    while True:
        fences = hart.fences_taken
        e = await _walk_once(hart, gfn, fences)
        if e is not _DROPPED:
            return e  # type: ignore[return-value]


_DROPPED = object()


async def _walk_once(hart: Hart, gfn: int, fences: int) -> TlbEntry | object | None:
    mode = hart.mode
    if mode is None:
        return None
    mem = hart.memory
    stamp = mem.stamp
    vmid = hart.vmid
    tlb = hart.tlb
    observer = hart.observer
    root_level = mode.root_level
    path: list[tuple[int, int, int]] = []

    start = tlb.lookup_nonleaf(vmid, gfn, root_level)
    if start is not None:
        level = start.level - 1
        table = start.ppn
        via: TlbEntry | None = start
        ghost = start.ghost
        kind = "walk-through-reused-table"
        origin = start.root_mfn  # what it fills comes from the tables that entry was read under
    else:
        if gfn > mode.max_gfn:
            return None
        level = root_level
        idx = mode.gfn_index(gfn, level)
        table = hart.root_mfn + (idx >> 9)
        origin = hart.root_mfn
        via = None
        ghost = hart.hgatp_clock
        kind = "dangling-root"

    while True:
        await hart.tick()
        if hart.fences_taken != fences or hart.mode is not mode:
            return _DROPPED  # a fence (or an hgatp write) came in: nothing read so far may be filled
        idx = mode.gfn_index(gfn, level) & 511
        pte, pte_ghost = mem.read_pte(table, idx)
        # the table just read: was it handed out again since the pointer was made?
        if stamp[table] > ghost:
            observer.on_reused_use(hart.id, kind, via, table, gfn, False, pte)
        elif mem.state[table] in (FREE, POOL):
            observer.on_stale_use(hart.id, via, table, gfn, True, False)
        path.append((level, table, mem.gen[table]))
        if not pte & PTE_V:
            return None
        ppn = pte >> PTE_PPN_SHIFT & ((1 << 44) - 1)
        if ppn >= mem.nr_frames:
            return None  # no such frame: access fault
        if pte & PTE_ACCESS_MASK:
            if level > 2:
                return None  # Xen maps at most 1G leaves
            return _fill(
                hart, True, level, gfn, ppn, pte & PTE_ACCESS_MASK, pte_ghost, table, idx, pte, path, origin, start
            )
        if level == 0:
            return None  # a table pointer at level 0 is reserved: fault
        e = _fill(hart, False, level, gfn, ppn, 0, pte_ghost, table, idx, pte, path, origin, start)
        via = e
        kind = "walk-through-reused-table"
        ghost = pte_ghost
        table = ppn
        level -= 1


def _fill(
    hart: Hart,
    leaf: bool,
    level: int,
    gfn: int,
    ppn: int,
    perms: int,
    ghost: int,
    table: int,
    idx: int,
    pte: int,
    path: list[tuple[int, int, int]],
    origin: int,
    start: TlbEntry | None,
) -> TlbEntry:
    """Cache the PTE just read (leaf or non-leaf), remembering where it came from (``origin``: the root
    whose tables the walk read; ``start``: the cached non-leaf entry the walk began below, if any)."""
    vmid = hart.vmid
    base = gfn >> (9 * level) << (9 * level)
    e = TlbEntry(
        tlb_key(vmid, level, gfn),
        leaf,
        vmid,
        level,
        base,
        ppn,
        perms,
        ghost,
        table,
        idx,
        pte,
        origin,
        hart.conductor.seq,
        tuple(path),
    )
    e.spec = hart.speculating
    e.via = start
    e.set_source(hart.memory.table(table))
    hart.tlb.fill(e)
    hart.observer.on_fill(hart.id, e)
    return e
