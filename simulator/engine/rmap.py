"""Which live PTEs map a frame: a reverse map kept from the machine's own PTE stores.

A frame freed while a PTE that a walk can still reach maps it is reachable by
any hart at will, with or without a stale TLB entry.  To say so at the free,
the oracle keeps, for every frame, the PTE slots whose last store named it,
each table's level (from its root down) and the slot linking each table.  A
slot counts only if its table is still reachable from a root through slots
that still link it: the leaves of a subtree being torn down are unlinked with
their table, whatever they still hold.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING

from simulator.riscv import memory as M
from simulator.riscv.pte import PTE_PPN_SHIFT, PTE_V

if TYPE_CHECKING:
    from simulator.riscv.memory import Memory

PPN_MASK = (1 << 44) - 1
RWX = 0xE  # a valid PTE with any of R, W, X is a leaf


def _ppn(pte: int) -> int:
    return (pte >> PTE_PPN_SHIFT) & PPN_MASK


class ReverseMap:
    def __init__(self, memory: Memory, root_level: int) -> None:
        self.memory = memory
        self.root_level = root_level
        # frame -> the slots (table << 9 | idx) whose last store named it: one in a per-frame array (1 +
        # the slot; 0: none), the others (a frame several slots name, or one beyond memory) in ``more``
        self.first = array("Q", [0]) * memory.nr_frames
        self.more: dict[int, set[int]] = {}
        self.level: dict[int, int] = {}  # table -> its level
        self.parent: dict[int, tuple[int, int]] = {}  # table -> the slot that linked it last
        self.roots: dict[int, int] = {}  # root page -> the first page of its root (roots span pages)

    def add_root(self, mfn: int, pages: int) -> None:
        for i in range(pages):
            self.roots[mfn + i] = mfn
            self.level[mfn + i] = self.root_level

    def _unlink(self, ppn: int, slot: int) -> None:
        first = self.first
        if ppn < len(first) and first[ppn] == slot + 1:
            rest = self.more.get(ppn)
            first[ppn] = rest.pop() + 1 if rest else 0  # (any of the others: mapped_by sorts them)
            if rest is not None and not rest:
                del self.more[ppn]
            return
        rest = self.more.get(ppn)
        if rest is not None:
            rest.discard(slot)
            if not rest:
                del self.more[ppn]

    def _link(self, ppn: int, slot: int) -> None:
        first = self.first
        if ppn < len(first):
            if not first[ppn]:
                first[ppn] = slot + 1
                return
            if first[ppn] == slot + 1:
                return
        self.more.setdefault(ppn, set()).add(slot)

    def slots(self, ppn: int) -> list[tuple[int, int]]:
        """(table, idx) of every slot whose last store named ``ppn``, in order."""
        first = self.first[ppn] if ppn < len(self.first) else 0
        rest = self.more.get(ppn)
        if not rest:  # (nearly every frame: one slot or none)
            return [((first - 1) >> 9, (first - 1) & 511)] if first else []
        out = sorted([first - 1, *rest]) if first else sorted(rest)
        return [(s >> 9, s & 511) for s in out]

    def store(self, table: int, idx: int, old: int, new: int) -> None:
        slot = table << 9 | idx
        if old & PTE_V:
            self._unlink(_ppn(old), slot)
        if new & PTE_V:
            ppn = _ppn(new)
            self._link(ppn, slot)
            if not new & RWX:
                self.parent[ppn] = (table, idx)
                lvl = self.level.get(table)
                if lvl is not None:
                    self.level[ppn] = lvl - 1

    def stored_table(self, table: int) -> None:
        """A private table was filled by plain stores (a superpage split): take its slots in."""
        t = self.memory.tables.get(table)
        if t is not None:
            for i, pte in enumerate(t):
                self.store(table, i, 0, pte)

    def live(self, table: int) -> bool:
        """Is ``table`` reachable from a root that is still a table, through slots that still link it?"""
        mem = self.memory
        for _ in range(8):
            if mem.state[table] != M.TABLE:
                return False
            if table in self.roots:
                return True
            up = self.parent.get(table)
            if up is None:
                return False
            pte = mem.read_pte(*up)[0]
            if not pte & PTE_V or pte & RWX or _ppn(pte) != table:
                return False
            table = up[0]
        return False

    def mapped_by(self, mfn: int) -> list[tuple[int, int, int]]:
        """(table, idx, level) of every live slot that maps ``mfn`` (a leaf of any size, or a table link)."""
        mem = self.memory
        out = []
        for lvl in range(3):
            base = mfn >> (9 * lvl) << (9 * lvl)
            for table, idx in self.slots(base):
                pte = mem.read_pte(table, idx)[0]
                if not pte & PTE_V or _ppn(pte) != base:
                    continue
                leaf = bool(pte & RWX)
                if (leaf and self.level.get(table) != lvl) or (not leaf and lvl):
                    continue
                if self.live(table):
                    out.append((table, idx, lvl))
        return out

    def gfn_of(self, table: int, idx: int) -> int:
        """The guest frame a slot translates (its first gfn, for a superpage or a table link)."""
        lvl = self.level.get(table, 0)
        gfn = idx << (9 * lvl)
        for _ in range(8):
            if table in self.roots:
                return gfn + ((table - self.roots[table]) << (9 * (lvl + 1)))
            up = self.parent.get(table)
            if up is None:
                return gfn
            table, idx = up
            lvl += 1
            gfn += idx << (9 * lvl)
        return gfn

    def root_of(self, table: int) -> int | None:
        for _ in range(8):
            if table in self.roots:
                return self.roots[table]
            up = self.parent.get(table)
            if up is None:
                return None
            table = up[0]
        return None
