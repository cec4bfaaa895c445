"""The hardware G-stage walk: one PTE read per conductor step.

The walk starts from the deepest cached non-leaf entry for the address, or
from the hgatp root, so other harts' PTE stores and frees interleave with
it.  Before each read the walker checks, against the machine's allocation
clock, that the table it is about to read is the one the pointer meant:
a root freed under hgatp, a cached non-leaf entry, or a PTE read from a freed
table may all point at a frame that has been handed out again since.

A walk faults where the privileged spec says it must (supervisor.adoc, the
address-translation algorithm; hypervisor.adoc for the G-stage): an invalid
PTE, the reserved encodings W without R, reserved bits 60:54, N without
Svnapot, PBMT 3, A, D or U (or N, PBMT) in a non-leaf PTE, a pointer at level
0, a misaligned superpage, a leaf with U=0 (G-stage accesses are always
U-mode), and with Svade a leaf whose A is clear, or whose D is clear on a
store (the tree's p2m_set_permission sets both when Svade is there).  The
machine has Svpbmt (Xen maps MMIO with PBMT IO), not Svnapot, and Svade or
Svadu (``Hart.ad_hw``).  The fault goes to the hypervisor's trap handler with
the PTE and why (``Fault``).

With hardware A/D updating (Svadu with menvcfg.ADUE, or a hart without Svade:
the spec's second scheme) a clear A, or D on a store, is not a fault: the walk
sets it by an atomic compare-and-swap on the PTE it read, in the same step.
That is a store by the hart, so a walk through a stale entry into a freed or
reused table writes there; the oracle is told it as a write.  A may be set by
a speculative walk; D only by a store (supervisor.adoc: D updates are exact).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulator.riscv.memory import FREE, POOL
from simulator.riscv.pte import (
    PTE_A,
    PTE_ACCESS_MASK,
    PTE_D,
    PTE_N,
    PTE_PBMT_MASK,
    PTE_PBMT_SHIFT,
    PTE_PPN_SHIFT,
    PTE_R,
    PTE_U,
    PTE_V,
    PTE_W,
)
from simulator.riscv.tlb import TlbEntry, tlb_key

if TYPE_CHECKING:
    from simulator.riscv.hart import Hart


RESERVED_60_54 = ((1 << 7) - 1) << 54


class Fault:
    """A guest-page fault (or an access fault) as the walk raised it: where it stopped, and why."""

    __slots__ = ("cached", "gfn", "idx", "level", "negative", "now_pte", "pte", "reason", "table", "write")

    def __init__(
        self, gfn: int, level: int, table: int, idx: int, pte: int, reason: str, write: bool, cached: bool = False
    ) -> None:
        self.gfn = gfn
        self.level = level
        self.table = table  # -1: no PTE was read (the GPA is out of range)
        self.idx = idx
        self.pte = pte
        self.reason = reason
        self.write = write
        self.cached = cached  # raised from a negative TLB entry: the PTE may be valid by now
        self.now_pte: int | None = None  # for a cached fault: the PTE in memory when it was raised
        self.negative: TlbEntry | None = None  # ... and the entry it came from

    @classmethod
    def from_negative(cls, e: TlbEntry, gfn: int, write: bool) -> Fault:
        f = cls(gfn, e.level, e.src_mfn, e.src_idx, e.src_pte, INVALID, write, cached=True)
        f.negative = e
        f.now_pte = e.src_table[e.src_idx] if e.src_table is not None else None
        return f

    @property
    def malformed(self) -> bool:
        """Not an unmapped address: a PTE no correct p2m code writes."""
        return self.table >= 0 and self.reason != INVALID

    def describe(self) -> str:
        where = f"PTE {self.table:#x}[{self.idx}] = {self.pte:#x} at L{self.level}" if self.table >= 0 else "no PTE"
        if self.cached:
            return f"{where}: {self.reason}, as cached in a negative TLB entry (the PTE is {self._now()} now)"
        return f"{where}: {self.reason}"

    def _now(self) -> str:
        return "still invalid" if self.now_pte is None or not self.now_pte & PTE_V else f"{self.now_pte:#x}"


INVALID = "invalid (V=0)"


def pte_fault(pte: int, level: int) -> str:
    """Why a walk must fault on this PTE, or '' (the spec's step 3, the non-leaf rules, steps 5 and 6)."""
    if not pte & PTE_V:
        return INVALID
    rwx = pte & PTE_ACCESS_MASK
    if rwx & PTE_W and not rwx & PTE_R:
        return "W without R (a reserved encoding)"
    if pte & RESERVED_60_54:
        return "reserved bits 60:54 set"
    if pte & PTE_N:
        return "N set without Svnapot"
    pbmt = (pte & PTE_PBMT_MASK) >> PTE_PBMT_SHIFT
    if pbmt == 3:
        return "PBMT 3 (reserved)"
    if not rwx:
        if pte & (PTE_A | PTE_D | PTE_U):
            return "A, D or U set in a non-leaf PTE (reserved)"
        if pbmt:
            return "PBMT set in a non-leaf PTE (reserved)"
        if level == 0:
            return "a pointer at level 0"
        return ""
    if not pte & PTE_U:
        return "a leaf with U=0 (G-stage accesses are U-mode)"
    if level and (pte >> PTE_PPN_SHIFT) & ((1 << (9 * level)) - 1):
        return "a misaligned superpage"
    return ""


def ad_bits(pte: int, write: bool) -> int:
    """The A/D bits a hardware update must set in this leaf PTE for this access (0: none, or not a leaf)."""
    if not pte & PTE_ACCESS_MASK or (write and not pte & PTE_W):
        return 0  # not a leaf, or a store it does not permit: that faults, and nothing is updated
    return (PTE_A & ~pte) | (PTE_D & ~pte if write and pte & PTE_W else 0)


async def walk(hart: Hart, gfn: int, write: bool = False) -> TlbEntry | Fault | None:
    """Translate ``gfn`` under the hart's hgatp; fill and return the leaf, the Fault, or None for an
    access that reaches a device (a frame beyond RAM: MMIO) and is not cached.

    A fence taken at one of the walk's steps drops the walk, which starts again:
    an in-flight walk that began before a fence must not fill what the fence removed.
    """
    while True:  # (one coroutine for the walk and its restarts: every TLB miss comes here)
        fences = hart.fences_taken
        mode = hart.mode
        if mode is None:
            return Fault(gfn, 0, -1, 0, 0, "hgatp is Bare", write)
        mem = hart.memory
        stamp = mem.stamp
        tables, ghosts = mem.tables, mem.ghosts
        vmid = hart.vmid
        tlb = hart.tlb
        observer = hart.observer
        root_level = mode.root_level
        path: list[tuple[int, int, int]] = []
        ad_hw = hart.ad_hw

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
                return Fault(gfn, mode.root_level, -1, 0, 0, f"GPA above {mode.gpa_bits} bits", write)
            level = root_level
            idx = mode.gfn_index(gfn, level)
            table = hart.root_mfn + (idx >> 9)
            origin = hart.root_mfn
            via = None
            ghost = hart.hgatp_clock
            kind = "dangling-root"

        read_cost = hart.costs.pte_read  # (0 unless timed)
        while True:
            await hart.tick()
            hart.actor.t += read_cost
            if hart.fences_taken != fences or hart.mode is not mode:
                break  # a fence (or an hgatp write) came in: nothing read so far may be filled; walk again
            idx = (gfn >> (9 * level)) & 511  # (the root's 2048 entries are 4 tables of 512)
            t = tables.get(table)  # Memory.read_pte, inline
            if t is None:
                pte = pte_ghost = 0
            else:
                pte, pte_ghost = t[idx], ghosts[table][idx]
            if level:
                why = "" if pte & _NONLEAF_MASK == PTE_V else pte_fault(pte, level)
            else:
                why = "" if pte & _LEAF_MASK == _LEAF_OK else pte_fault(pte, level)
            ppn = pte >> PTE_PPN_SHIFT & ((1 << 44) - 1)
            # hardware A/D updating: the CAS below stores into the table just read
            ad = ad_hw and not why and level <= 2 and ad_bits(pte, write)  # an MMIO leaf's PTE too
            # the table just read: was it handed out again since the pointer was made?
            if stamp[table] > ghost:
                observer.on_reused_use(hart.id, kind, via, table, gfn, bool(ad), pte)
            elif mem.state[table] in (FREE, POOL):
                observer.on_stale_use(hart.id, via, table, gfn, True, bool(ad))
            path.append((level, table, mem.gen[table]))
            if why:
                if why == INVALID and tlb.negative.capacity:
                    _fill(hart, True, level, gfn, 0, 0, pte_ghost, table, idx, pte, path, origin, start, negative=True)
                return Fault(gfn, level, table, idx, pte, why, write)
            if ppn >= mem.nr_frames:
                return None  # beyond RAM: a device (MMIO) access, which the machine does not model further
            if ad:
                pte |= ad
                mem.update_ad(table, idx, pte)
                hart.ad_updates += 1
            if pte & PTE_ACCESS_MASK:
                if not ad_hw and (not pte & PTE_A or (write and not pte & PTE_D)):
                    why = "A clear (Svade)" if not pte & PTE_A else "D clear on a store (Svade)"
                    return Fault(gfn, level, table, idx, pte, why, write)
                if level > 2:
                    return Fault(gfn, level, table, idx, pte, "a leaf above level 2 (Xen maps at most 1G)", write)
                return _fill(
                    hart, True, level, gfn, ppn, pte & PTE_ACCESS_MASK, pte_ghost, table, idx, pte, path, origin,
                    start,
                )  # fmt: skip
            e = _fill(hart, False, level, gfn, ppn, 0, pte_ghost, table, idx, pte, path, origin, start)
            via = e
            kind = "walk-through-reused-table"
            ghost = pte_ghost
            table = ppn
            level -= 1


# pte_fault's verdict without the call, for the two PTEs nearly every walk reads (anything else asks it):
# a pointer (V alone among the flag, reserved, N and PBMT bits) above level 0, and a level-0 leaf with
# V, R and U set and no reserved bit, N or PBMT
_NONLEAF_MASK = PTE_V | PTE_ACCESS_MASK | PTE_U | PTE_A | PTE_D | RESERVED_60_54 | PTE_N | PTE_PBMT_MASK
_LEAF_MASK = PTE_V | PTE_R | PTE_U | RESERVED_60_54 | PTE_N | PTE_PBMT_MASK
_LEAF_OK = PTE_V | PTE_R | PTE_U


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
    negative: bool = False,
) -> TlbEntry:
    """Cache the PTE just read (leaf or non-leaf), remembering where it came from (``origin``: the root
    whose tables the walk read; ``start``: the cached non-leaf entry the walk began below, if any).
    ``negative``: the invalid PTE the walk faulted on, cached as a negative entry (see riscv.tlb)."""
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
    e.set_source(hart.memory.table(table), hart.ad_hw and not pte & PTE_D)
    if negative:
        e.negative = True
        hart.tlb.fill_negative(e)
    else:
        hart.tlb.fill(e)
    hart.observer.on_fill(hart.id, e)
    return e
