"""G-stage PTE encoding and geometry, as the RISC-V privileged spec defines them.

Everything here is a pure function of integers so that the walker, Xen's
p2m code and the tests all agree on one encoding.  The numbers are the
spec's (and Xen's ``asm/page.h``); the tests check them literally.
"""

from __future__ import annotations

from dataclasses import dataclass

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT

# PTE bits (privileged spec, "Sv39 page table entry"; Xen asm/page.h).
PTE_V = 1 << 0
PTE_R = 1 << 1
PTE_W = 1 << 2
PTE_X = 1 << 3
PTE_U = 1 << 4
PTE_G = 1 << 5
PTE_A = 1 << 6
PTE_D = 1 << 7
PTE_RSW_SHIFT = 8
PTE_RSW_MASK = 0x3 << PTE_RSW_SHIFT  # bits 9:8, ignored by hardware
PTE_PPN_SHIFT = 10
PTE_PPN_MASK = ((1 << 44) - 1) << PTE_PPN_SHIFT  # bits 53:10
PTE_PBMT_SHIFT = 61
PTE_PBMT_MASK = 0x3 << PTE_PBMT_SHIFT  # bits 62:61
PTE_PBMT_NC = 1 << 61
PTE_PBMT_IO = 1 << 62
PTE_N = 1 << 63
PTE_ACCESS_MASK = PTE_R | PTE_W | PTE_X

# hgatp (RV64): MODE 63:60, VMID 57:44, PPN 43:0.
HGATP_MODE_SHIFT = 60
HGATP_VMID_SHIFT = 44
HGATP_VMID_MASK = (1 << 14) - 1
HGATP_PPN_MASK = (1 << 44) - 1
HGATP_MODE_BARE = 0


@dataclass(frozen=True, slots=True)
class GStageMode:
    """One hgatp.MODE: only the root grows by two bits (the "x4")."""

    name: str
    hgatp_mode: int
    root_level: int
    gpa_bits: int

    @property
    def levels(self) -> int:
        return self.root_level + 1

    def entries(self, level: int) -> int:
        """Entries in a table at ``level``: 2048 at the root, 512 elsewhere."""
        return 2048 if level == self.root_level else 512

    def index(self, gpa: int, level: int) -> int:
        """`(gpa >> (12 + 9L)) & (entries - 1)`, the spec's VPN split."""
        return (gpa >> (PAGE_SHIFT + 9 * level)) & (self.entries(level) - 1)

    def gfn_index(self, gfn: int, level: int) -> int:
        return (gfn >> (9 * level)) & (self.entries(level) - 1)

    @property
    def max_gfn(self) -> int:
        return (1 << (self.gpa_bits - PAGE_SHIFT)) - 1


SV39X4 = GStageMode("Sv39x4", 8, 2, 41)
SV48X4 = GStageMode("Sv48x4", 9, 3, 50)
SV57X4 = GStageMode("Sv57x4", 10, 4, 59)
MODES = {m.name.lower(): m for m in (SV39X4, SV48X4, SV57X4)}

ROOT_PAGES = 4  # 16 KiB root = 2048 entries over 4 frames
ROOT_ORDER = 2


def pte_valid(pte: int) -> bool:
    return bool(pte & PTE_V)


def pte_is_table(pte: int) -> bool:
    """V set and no R/W/X: a pointer to the next level."""
    return (pte & PTE_V) != 0 and (pte & PTE_ACCESS_MASK) == 0


def pte_is_mapping(pte: int) -> bool:
    return (pte & PTE_V) != 0 and (pte & PTE_ACCESS_MASK) != 0


def pte_is_superpage(pte: int, level: int) -> bool:
    return level > 0 and pte_is_mapping(pte)


def pte_ppn(pte: int) -> int:
    return (pte & PTE_PPN_MASK) >> PTE_PPN_SHIFT


def pte_rsw(pte: int) -> int:
    return (pte & PTE_RSW_MASK) >> PTE_RSW_SHIFT


def make_table_pte(ppn: int) -> int:
    return PTE_V | (ppn << PTE_PPN_SHIFT)


def make_leaf_pte(ppn: int, perms: int, rsw: int = 0, pbmt: int = 0) -> int:
    """A G-stage leaf: U always (G-stage accesses are U-mode), never G."""
    assert perms & PTE_ACCESS_MASK, "a leaf needs R, W or X"
    return PTE_V | PTE_U | perms | (rsw << PTE_RSW_SHIFT) | (ppn << PTE_PPN_SHIFT) | pbmt


def make_hgatp(mode: GStageMode | None, vmid: int, root_ppn: int) -> int:
    if mode is None:
        return 0
    assert root_ppn & 3 == 0, "hgatp root must be 16 KiB aligned"
    return (
        (mode.hgatp_mode << HGATP_MODE_SHIFT)
        | ((vmid & HGATP_VMID_MASK) << HGATP_VMID_SHIFT)
        | (root_ppn & HGATP_PPN_MASK)
    )


def hgatp_fields(hgatp: int) -> tuple[int, int, int]:
    """(MODE, VMID, PPN)."""
    return (
        hgatp >> HGATP_MODE_SHIFT,
        (hgatp >> HGATP_VMID_SHIFT) & HGATP_VMID_MASK,
        hgatp & HGATP_PPN_MASK,
    )


def level_pages(level: int) -> int:
    """4K frames covered by one leaf at ``level``."""
    return 1 << (9 * level)
