"""PTE encoding and G-stage geometry, checked against the RISC-V privileged spec's literal values.

The expected numbers in this file are written out by hand from the spec
(Sv39/Sv48/Sv57 PTE format, Svpbmt, Svnapot, hgatp and the "x4" root), never
derived from the constants under test.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.riscv import pte as P

MODES = [P.SV39X4, P.SV48X4, P.SV57X4]
MODE_IDS = [m.name for m in MODES]

# -- PTE bits ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "bit"),
    [
        (P.PTE_V, 0),
        (P.PTE_R, 1),
        (P.PTE_W, 2),
        (P.PTE_X, 3),
        (P.PTE_U, 4),
        (P.PTE_G, 5),
        (P.PTE_A, 6),
        (P.PTE_D, 7),
        (P.PTE_PBMT_NC, 61),
        (P.PTE_PBMT_IO, 62),
        (P.PTE_N, 63),
    ],
)
def test_single_bit_flags(value: int, bit: int) -> None:
    assert value == 1 << bit


def test_flag_literals() -> None:
    assert (P.PTE_V, P.PTE_R, P.PTE_W, P.PTE_X) == (0x1, 0x2, 0x4, 0x8)
    assert (P.PTE_U, P.PTE_G, P.PTE_A, P.PTE_D) == (0x10, 0x20, 0x40, 0x80)
    assert P.PTE_ACCESS_MASK == 0xE
    assert P.PTE_N == 0x8000_0000_0000_0000
    assert P.PTE_PBMT_NC == 0x2000_0000_0000_0000
    assert P.PTE_PBMT_IO == 0x4000_0000_0000_0000


def test_field_masks() -> None:
    # RSW: bits 9:8
    assert P.PTE_RSW_SHIFT == 8
    assert P.PTE_RSW_MASK == 0x300
    # PPN: bits 53:10 (44 bits)
    assert P.PTE_PPN_SHIFT == 10
    assert P.PTE_PPN_MASK == 0x003F_FFFF_FFFF_FC00
    assert P.PTE_PPN_MASK >> 10 == (1 << 44) - 1
    # PBMT: bits 62:61; NC is encoding 1, IO is encoding 2
    assert P.PTE_PBMT_SHIFT == 61
    assert P.PTE_PBMT_MASK == 0x6000_0000_0000_0000
    assert P.PTE_PBMT_NC >> 61 == 1
    assert P.PTE_PBMT_IO >> 61 == 2
    # bits 60:54 are reserved: no field covers them
    reserved = ((1 << 61) - 1) & ~((1 << 54) - 1)
    assert reserved == 0x1FC0_0000_0000_0000
    every_field = 0xFF | P.PTE_RSW_MASK | P.PTE_PPN_MASK | P.PTE_PBMT_MASK | P.PTE_N
    assert every_field & reserved == 0
    assert every_field | reserved == (1 << 64) - 1


def test_fields_do_not_overlap() -> None:
    fields = [0xFF, P.PTE_RSW_MASK, P.PTE_PPN_MASK, P.PTE_PBMT_MASK, P.PTE_N]
    for i, a in enumerate(fields):
        for b in fields[i + 1 :]:
            assert a & b == 0


def test_literal_leaf_pte() -> None:
    # ppn 0x80123, RW, rsw 2: V|U|R|W = 0x17, rsw 2 -> 0x200, ppn << 10 = 0x2004_8C00
    pte = P.make_leaf_pte(0x80123, P.PTE_R | P.PTE_W, rsw=2)
    assert pte == 0x2004_8C00 | 0x200 | 0x17
    assert P.pte_ppn(pte) == 0x80123
    assert P.pte_rsw(pte) == 2
    assert P.pte_is_mapping(pte)
    assert not P.pte_is_table(pte)
    assert pte & P.PTE_G == 0


def test_literal_leaf_pte_with_pbmt() -> None:
    pte = P.make_leaf_pte(1, P.PTE_X, pbmt=P.PTE_PBMT_IO)
    assert pte == 0x4000_0000_0000_0000 | (1 << 10) | 0x8 | 0x10 | 0x1
    assert P.pte_ppn(pte) == 1


def test_literal_table_pte() -> None:
    pte = P.make_table_pte(0x3_FFFF)
    assert pte == (0x3_FFFF << 10) | 1 == 0xFFF_FC01
    assert P.pte_is_table(pte)
    assert not P.pte_is_mapping(pte)
    assert P.pte_valid(pte)


def test_max_ppn_survives() -> None:
    ppn = (1 << 44) - 1
    assert P.pte_ppn(P.make_table_pte(ppn)) == ppn
    assert P.pte_ppn(P.make_leaf_pte(ppn, P.PTE_R)) == ppn
    # every non-PPN bit set does not leak into the PPN
    assert P.pte_ppn((1 << 64) - 1) == ppn
    assert P.pte_rsw((1 << 64) - 1) == 3


def test_predicates_on_raw_values() -> None:
    assert not P.pte_valid(0)
    assert not P.pte_is_table(0)
    assert not P.pte_is_mapping(0)
    # R/W/X without V is neither a table nor a mapping
    assert not P.pte_is_mapping(0xE)
    assert not P.pte_is_table(0xE)
    # V alone (plus A/D/U/G, which do not count) is a table pointer
    assert P.pte_is_table(0x1)
    assert P.pte_is_table(0x1 | 0x10 | 0x20 | 0x40 | 0x80)
    for perm in (0x2, 0x8, 0x6, 0xA, 0xE):  # R, X, RW, RX, RWX (W without R is reserved)
        assert P.pte_is_mapping(0x1 | perm)
        assert not P.pte_is_table(0x1 | perm)
    leaf = 0x1 | 0x2
    assert not P.pte_is_superpage(leaf, 0)
    assert P.pte_is_superpage(leaf, 1)
    assert P.pte_is_superpage(leaf, 2)
    assert not P.pte_is_superpage(0x1, 1)  # a table pointer is not a superpage
    assert not P.pte_is_superpage(0x2, 1)  # invalid


def test_leaf_needs_permission() -> None:
    with pytest.raises(AssertionError):
        P.make_leaf_pte(5, 0)


# -- hgatp -------------------------------------------------------------------------


def test_hgatp_layout_literals() -> None:
    assert P.HGATP_MODE_SHIFT == 60
    assert P.HGATP_VMID_SHIFT == 44
    assert P.HGATP_VMID_MASK == 0x3FFF  # 14 bits: 57:44
    assert P.HGATP_PPN_MASK == 0xFFF_FFFF_FFFF  # 44 bits: 43:0
    assert P.HGATP_MODE_BARE == 0


def test_make_hgatp_literals() -> None:
    assert P.make_hgatp(P.SV39X4, 1, 0x80000) == 0x8000_1000_0008_0000
    assert P.make_hgatp(P.SV48X4, 0, 4) == 0x9000_0000_0000_0004
    assert P.make_hgatp(P.SV57X4, 0x3FFF, 0xFFF_FFFF_FFFC) == 0xA3FF_FFFF_FFFF_FFFC
    assert P.make_hgatp(None, 7, 0x1000) == 0
    assert P.hgatp_fields(0x8000_1000_0008_0000) == (8, 1, 0x80000)
    assert P.hgatp_fields(0xA3FF_FFFF_FFFF_FFFC) == (10, 0x3FFF, 0xFFF_FFFF_FFFC)
    assert P.hgatp_fields(0) == (0, 0, 0)
    # bits 59:58 are not part of VMID
    assert P.hgatp_fields(0x0C00_0000_0000_0000) == (0, 0, 0)


def test_hgatp_root_must_be_16k_aligned() -> None:
    with pytest.raises(AssertionError):
        P.make_hgatp(P.SV39X4, 0, 0x80001)
    with pytest.raises(AssertionError):
        P.make_hgatp(P.SV39X4, 0, 0x80002)


# -- modes and geometry ------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "name", "hgatp_mode", "root_level", "levels", "gpa_bits"),
    [
        (P.SV39X4, "Sv39x4", 8, 2, 3, 41),
        (P.SV48X4, "Sv48x4", 9, 3, 4, 50),
        (P.SV57X4, "Sv57x4", 10, 4, 5, 59),
    ],
    ids=MODE_IDS,
)
def test_mode_constants(
    mode: P.GStageMode, name: str, hgatp_mode: int, root_level: int, levels: int, gpa_bits: int
) -> None:
    assert mode.name == name
    assert mode.hgatp_mode == hgatp_mode
    assert mode.root_level == root_level
    assert mode.levels == levels
    assert mode.gpa_bits == gpa_bits
    assert mode.max_gfn == (1 << (gpa_bits - 12)) - 1
    assert P.MODES[name.lower()] is mode
    # the root has 2048 entries (16 KiB over 4 frames), every other level 512
    assert mode.entries(root_level) == 2048
    for level in range(root_level):
        assert mode.entries(level) == 512
    # x4: the GPA is 2 bits wider than the VA of the matching Sv mode
    assert gpa_bits == 12 + 9 * root_level + 11


def test_mode_table() -> None:
    assert sorted(P.MODES) == ["sv39x4", "sv48x4", "sv57x4"]
    assert P.SV39X4.max_gfn == 0x1FFF_FFFF
    assert P.SV48X4.max_gfn == 0x3F_FFFF_FFFF
    assert P.SV57X4.max_gfn == 0x7FFF_FFFF_FFFF
    assert P.ROOT_PAGES == 4
    assert P.ROOT_ORDER == 2
    assert P.PAGE_SHIFT == 12
    assert P.PAGE_SIZE == 4096
    assert [P.level_pages(level) for level in range(4)] == [1, 512, 262144, 134217728]


@pytest.mark.parametrize(
    ("mode", "gpa", "expected"),
    [
        # Sv39x4: root = GPA[40:30] (11 bits), L1 = GPA[29:21], L0 = GPA[20:12]
        (P.SV39X4, 0x155_555F_5123, [0x1F5, 0x0AA, 0x555]),  # fields 0x555 / 0xAA / 0x1F5, offset 0x123
        (P.SV39X4, 0x1FF_FFFF_FFFF, [511, 511, 2047]),
        (P.SV39X4, 0x100_0000_0000, [0, 0, 1024]),  # bit 40: the top root bit
        (P.SV39X4, 0x4000_0000, [0, 0, 1]),  # bit 30
        (P.SV39X4, 0x3FFF_FFFF, [511, 511, 0]),  # bits 29:0
        (P.SV39X4, 0x20_0000, [0, 1, 0]),  # bit 21
        (P.SV39X4, 0x1000, [1, 0, 0]),  # bit 12
        (P.SV39X4, 0xFFF, [0, 0, 0]),  # page offset only
        (P.SV39X4, 0x200_0000_0000, [0, 0, 0]),  # bit 41 is above the width: not in any index
        # Sv48x4: root = GPA[49:39]
        (P.SV48X4, 0x1234_5678_9ABC, [393, 179, 209, 36]),
        (P.SV48X4, 0x2_0000_0000_0000, [0, 0, 0, 1024]),  # bit 49
        (P.SV48X4, 0x80_0000_0000, [0, 0, 0, 1]),  # bit 39
        (P.SV48X4, 0x40_0000_0000, [0, 0, 256, 0]),  # bit 38
        # Sv57x4: root = GPA[58:48]; fields 0x6B1 / 0x13C / 0x0F0 / 0x1E1 / 0x00F, offset 0xFFF
        (P.SV57X4, 0x06B1_9E3C_3C20_FFFF, [0x00F, 0x1E1, 0x0F0, 0x13C, 0x6B1]),
        (P.SV57X4, 0x0400_0000_0000_0000, [0, 0, 0, 0, 1024]),  # bit 58
        (P.SV57X4, 0x0001_0000_0000_0000, [0, 0, 0, 0, 1]),  # bit 48
        (P.SV57X4, 0x0000_8000_0000_0000, [0, 0, 0, 256, 0]),  # bit 47
    ],
)
def test_index_split_literals(mode: P.GStageMode, gpa: int, expected: list[int]) -> None:
    assert [mode.index(gpa, level) for level in range(mode.levels)] == expected
    assert [mode.gfn_index(gpa >> 12, level) for level in range(mode.levels)] == expected


def test_root_index_spans_four_frames() -> None:
    # the walker reads root entry i from frame root + (i >> 9), slot i & 511
    mode = P.SV39X4
    idx = mode.index(0x1FF_FFFF_FFFF, 2)
    assert idx == 2047
    assert (idx >> 9, idx & 511) == (3, 511)
    idx = mode.index(0x80_0000_0000, 2)  # bit 39 -> root index 512: first slot of the second frame
    assert idx == 512
    assert (idx >> 9, idx & 511) == (1, 0)


# -- properties --------------------------------------------------------------------

ppns = st.integers(min_value=0, max_value=(1 << 44) - 1)
# the leaf encodings the spec allows: W without R is reserved
perms = st.sampled_from([P.PTE_R, P.PTE_X, P.PTE_R | P.PTE_W, P.PTE_R | P.PTE_X, P.PTE_ACCESS_MASK])
pbmts = st.sampled_from([0, P.PTE_PBMT_NC, P.PTE_PBMT_IO])
modes = st.sampled_from(MODES)


@given(ppn=ppns, perm=perms, rsw=st.integers(0, 3), pbmt=pbmts)
def test_leaf_pte_round_trip(ppn: int, perm: int, rsw: int, pbmt: int) -> None:
    pte = P.make_leaf_pte(ppn, perm, rsw=rsw, pbmt=pbmt)
    assert 0 <= pte < 1 << 64
    assert P.pte_ppn(pte) == ppn
    assert P.pte_rsw(pte) == rsw
    assert pte & P.PTE_ACCESS_MASK == perm
    assert pte & P.PTE_PBMT_MASK == pbmt
    assert pte & 1 == 1  # V
    assert pte & (1 << 4)  # U: G-stage leaves are U-mode
    assert pte & (1 << 5) == 0  # never G
    assert pte & (1 << 63) == 0  # no NAPOT
    assert P.pte_valid(pte)
    assert P.pte_is_mapping(pte)
    assert not P.pte_is_table(pte)
    assert not P.pte_is_superpage(pte, 0)
    for level in (1, 2, 3, 4):
        assert P.pte_is_superpage(pte, level)


@given(ppn=ppns)
def test_table_pte_round_trip(ppn: int) -> None:
    pte = P.make_table_pte(ppn)
    assert pte == (ppn << 10) | 1
    assert P.pte_ppn(pte) == ppn
    assert P.pte_rsw(pte) == 0
    assert P.pte_valid(pte)
    assert P.pte_is_table(pte)
    assert not P.pte_is_mapping(pte)
    for level in range(5):
        assert not P.pte_is_superpage(pte, level)


@given(mode=modes, vmid=st.integers(0, (1 << 14) - 1), root=st.integers(0, (1 << 42) - 1))
def test_hgatp_round_trip(mode: P.GStageMode, vmid: int, root: int) -> None:
    root_ppn = root << 2  # 16 KiB aligned
    hgatp = P.make_hgatp(mode, vmid, root_ppn)
    assert 0 <= hgatp < 1 << 64
    assert P.hgatp_fields(hgatp) == (mode.hgatp_mode, vmid, root_ppn)
    assert hgatp >> 60 == mode.hgatp_mode
    assert (hgatp >> 44) & 0x3FFF == vmid
    assert hgatp & 0xFFF_FFFF_FFFF == root_ppn
    assert (hgatp >> 58) & 3 == 0  # bits 59:58 stay zero


@given(mode=modes, gfn=st.integers(0, (1 << 52) - 1), data=st.data())
def test_gfn_index_matches_gpa_index(mode: P.GStageMode, gfn: int, data: st.DataObject) -> None:
    level = data.draw(st.integers(0, mode.root_level))
    idx = mode.gfn_index(gfn, level)
    assert idx == mode.index(gfn << 12, level)
    assert 0 <= idx < mode.entries(level)


@given(mode=modes, data=st.data())
def test_gpa_reconstructs_from_indices(mode: P.GStageMode, data: st.DataObject) -> None:
    gpa = data.draw(st.integers(0, (1 << mode.gpa_bits) - 1))
    rebuilt = gpa & 0xFFF
    for level in range(mode.levels):
        idx = mode.index(gpa, level)
        assert 0 <= idx < mode.entries(level)
        rebuilt |= idx << (12 + 9 * level)
    assert rebuilt == gpa
    assert (gpa >> 12) <= mode.max_gfn


@given(mode=modes, data=st.data())
def test_indices_rebuild_gpa(mode: P.GStageMode, data: st.DataObject) -> None:
    idxs = [data.draw(st.integers(0, mode.entries(level) - 1)) for level in range(mode.levels)]
    offset = data.draw(st.integers(0, 0xFFF))
    gpa = offset
    for level, idx in enumerate(idxs):
        gpa += idx << (12 + 9 * level)
    assert gpa < 1 << mode.gpa_bits
    assert [mode.index(gpa, level) for level in range(mode.levels)] == idxs
