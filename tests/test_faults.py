"""Walks fault where the privileged spec says hardware faults, and Xen's trap handler is the profile's.

The PTEs below are written out by hand from supervisor.adoc (the translation
algorithm, steps 3 to 6; "For non-leaf PTEs, the D, A, and U bits are
reserved"; Svpbmt's PBMT 3; Svnapot's N) and hypervisor.adoc (G-stage
accesses are U-mode), never built from the walker's own constants.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.engine.bugs import register_bug
from simulator.engine.scenario import Scenario
from simulator.engine.simulation import Config, run
from simulator.riscv.walker import pte_fault
from simulator.xen.hypervisor import Xen
from tests.conftest import simulate

LEAF_RW = 0x1000 << 10 | 0b1_0111  # V R W U, ppn 0x1000
TABLE = 0x1000 << 10 | 0b1  # V only: a pointer


@pytest.mark.parametrize(
    ("pte", "level", "why"),
    [
        (0, 0, "invalid"),
        (0x1000 << 10 | 0b1_0101, 0, "W without R"),  # V W U
        (0x1000 << 10 | 0b1_1101, 0, "W without R"),  # V W X U
        (LEAF_RW | 1 << 54, 0, "reserved bits 60:54"),
        (LEAF_RW | 1 << 60, 0, "reserved bits 60:54"),
        (LEAF_RW | 1 << 63, 0, "N set without Svnapot"),
        (LEAF_RW | 3 << 61, 0, "PBMT 3"),
        (TABLE | 1 << 6, 1, "A, D or U set in a non-leaf"),  # A
        (TABLE | 1 << 7, 1, "A, D or U set in a non-leaf"),  # D
        (TABLE | 1 << 4, 1, "A, D or U set in a non-leaf"),  # U
        (TABLE | 1 << 62, 1, "PBMT set in a non-leaf"),
        (TABLE, 0, "a pointer at level 0"),
        (0x1000 << 10 | 0b0111, 0, "U=0"),  # V R W, no U
        (0x1001 << 10 | 0b1_0111, 1, "misaligned superpage"),  # 2M leaf, ppn not 512-aligned
        (0x40200 << 10 | 0b1_0111, 2, "misaligned superpage"),  # 1G leaf, ppn not 2^18-aligned
    ],
)
def test_the_walk_faults_where_the_spec_says(pte: int, level: int, why: str) -> None:
    assert why in pte_fault(pte, level)


@pytest.mark.parametrize(
    ("pte", "level"),
    [
        (LEAF_RW, 0),
        (LEAF_RW | 1 << 62, 0),  # PBMT IO: Svpbmt is there (Xen maps MMIO so)
        (0x1200 << 10 | 0b1_0111, 1),  # an aligned 2M leaf
        (0x40000 << 10 | 0b1_0011, 2),  # an aligned read-only 1G leaf
        (TABLE, 1),
        (LEAF_RW | 0b11 << 8, 0),  # RSW is software's
    ],
)
def test_well_formed_ptes_do_not_fault(pte: int, level: int) -> None:
    assert pte_fault(pte, level) == ""


def _guest_touches_an_unmapped_gfn(profile: str) -> Any:
    async def main(sim: Scenario) -> None:
        d = await sim.create_domain(1, vcpus=1, pool_pages=4)
        await sim.populate(d, 0x100, 4)
        # the pattern reaches past what is mapped: gfn 0x104.. faults
        await sim.run_vcpu(d.vcpus[0], 1, sim.pattern([(0x100, 8)]))
        await sim.elapse(400)
        await sim.deschedule(1)
        await sim.destroy(d)

    return simulate(main, pcpus=2, profile=profile)


def test_upstream_dies_at_a_guest_page_fault_and_names_the_pte() -> None:
    """The tree's do_trap has no case for guest-page faults: do_unexpected_trap -> die()."""
    r = _guest_touches_an_unmapped_gfn("upstream")
    assert r.stop_reason == "panic", r.explain()
    (v,) = r.violations
    assert v.cls == "panic"
    assert "die(): Unhandled exception:" in v.headline and "Guest" in v.headline and "Page Fault" in v.headline
    assert "invalid (V=0)" in v.headline and "PTE 0x" in v.headline


@pytest.mark.parametrize("profile", ["fixed", "arm-broadcast", "upstream+handle_guest_page_faults"])
def test_with_the_handler_the_fault_is_the_guests_and_the_run_goes_on(profile: str) -> None:
    r = _guest_touches_an_unmapped_gfn(profile)
    assert r.stop_reason == "done" and r.clean, r.explain()
    assert r.stats["faults"] > 0


def _reserved_encoding(xen: Xen) -> None:
    """p2m_set_permission gives RAM write and execute but forgets read: W+X without R is reserved."""
    set_permission = xen.p2m_set_permission

    def p2m_set_permission(pte: int, t: int) -> int:
        pte = set_permission(pte, t)
        return pte & ~0b10 if pte & 0b100 else pte  # R cleared on writable leaves

    xen.p2m_set_permission = p2m_set_permission  # type: ignore[method-assign]


register_bug("t-reserved-encoding", "writable leaves without R", _reserved_encoding)


def test_a_malformed_pte_in_a_live_p2m_is_a_finding() -> None:
    r = run(Config("teardown-under-load", seed=0, bugs=("t-reserved-encoding",)))
    found = [v for v in r.violations if v.cls == "malformed-pte"]
    assert found, r.explain()
    assert "W without R" in found[0].missing and found[0].cause.case == "malformed-pte"
    assert "store:" in found[0].explain()  # the chain shows the store that wrote it


def test_on_upstream_the_same_pte_is_a_die_that_names_it() -> None:
    r = run(Config("teardown-under-load", seed=0, profile="upstream", bugs=("t-reserved-encoding",)))
    assert r.stop_reason == "panic"
    assert "W without R" in r.violations[-1].headline


def test_without_the_mutation_no_pte_is_malformed() -> None:
    for workload in ("teardown-under-load", "superpage-shatter", "foreign-unmap-reuse"):
        r = run(Config(workload, seed=0))
        assert r.clean, r.explain()


def _no_accessed_bit(xen: Xen) -> None:
    """p2m_set_permission forgets A and D although the machine has Svade."""
    set_permission = xen.p2m_set_permission

    def p2m_set_permission(pte: int, t: int) -> int:
        return set_permission(pte, t) & ~(0b11 << 6)

    xen.p2m_set_permission = p2m_set_permission  # type: ignore[method-assign]


register_bug("t-no-accessed-bit", "leaves without A and D on a Svade machine", _no_accessed_bit)


def test_with_svade_a_leaf_without_a_faults_and_is_a_finding() -> None:
    r = run(Config("teardown-under-load", seed=0, bugs=("t-no-accessed-bit",)))
    found = [v for v in r.violations if v.cls == "malformed-pte"]
    assert found and "A clear (Svade)" in found[0].missing, r.explain()


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 2**64 - 1), st.integers(0, 4))
def test_the_walks_one_mask_test_passes_only_what_pte_fault_passes(bits: int, level: int) -> None:
    """The walker skips pte_fault for a PTE its mask test calls plain (a pointer above level 0, a
    level-0 leaf with V, R and U and nothing reserved): pte_fault must find nothing wrong with any of
    them, whatever the other bits (PPN, X, W, A, D, G, RSW) hold."""
    from simulator.riscv import walker

    mask, ok = (walker._NONLEAF_MASK, walker.PTE_V) if level else (walker._LEAF_MASK, walker._LEAF_OK)
    pte = bits & ~mask | ok
    assert pte & mask == ok
    assert pte_fault(pte, level) == ""
