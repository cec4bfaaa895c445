"""Hardware A/D updates (Svadu): a walk stores into the PTE it read, so a stale walk writes.

With ``--ad svadu`` the DT lists Svadu and not Svade, and the firmware sets
menvcfg.ADUE: the tree's p2m_set_permission then leaves A and D clear
(``riscv_isa_extension_available(svade)`` is false), and every first access
through a leaf has the walker CAS them in (supervisor.adoc, the second A/D
scheme).  A walk through a freed, reused table thus stores into another
life of that frame: the oracle must call it a write, not a read.
"""

from __future__ import annotations

import subprocess
import sys

from simulator.engine.scenario import Scenario
from simulator.engine.simulation import Config, Result, run
from simulator.riscv.walker import ad_bits

LEAF = 0x1000 << 10 | 0b1_0111  # V R W U, A and D clear
A, D = 1 << 6, 1 << 7


def test_the_update_sets_what_the_access_needs() -> None:
    assert ad_bits(LEAF, False) == A  # a load sets A only
    assert ad_bits(LEAF, True) == A | D
    assert ad_bits(LEAF | A, True) == D
    assert ad_bits(LEAF | A | D, True) == 0
    assert ad_bits(0x1000 << 10 | 0b1_0011, True) == 0  # a store the leaf does not permit faults instead
    assert ad_bits(0x1000 << 10 | 0b1, False) == 0  # a pointer has no A/D


def test_fixed_stays_silent_while_walkers_write_ptes() -> None:
    r = run(Config("teardown-under-load", seed=0, ad="svadu"))
    assert r.clean and not r.warning_count, r.explain()
    assert r.stats["ad_updates"] > 100  # Xen left A/D clear, the harts set them


def test_svade_is_the_default_and_nothing_is_updated() -> None:
    r = run(Config("teardown-under-load", seed=0))
    assert r.clean and "ad_updates" not in r.stats


async def _table_reused_under_a_walk(sim: Scenario) -> None:
    """dom1's 4K leaf table is replaced by a superpage and, at once, taken again from the pool for
    16 MMIO pages mapped under one lock, while its vCPU (one leaf TLB entry: it walks a lot) runs."""
    d = await sim.create_domain(1, vcpus=1, pool_pages=2)
    await sim.populate(d, 0x200, 16)
    await sim.run_vcpu(d.vcpus[0], 1, sim.pattern([(0x200, 16)], write_ratio=0.0))
    await sim.elapse(200)
    await sim.populate(d, 0x200, 1, order=9)
    await sim.on(0, "map_mmio_regions", sim.xen.map_mmio_regions, d, 0x400, 16, 0x100000)
    await sim.elapse(400)
    await sim.deschedule(1)
    await sim.destroy(d)


def _scenario(seed: int, ad: str, bugs: tuple[str, ...]) -> Result:
    return run(
        Config("inline", seed=seed, pcpus=2, tlb_leaf=1, speculate=0.0, ad=ad, bugs=bugs),
        main=_table_reused_under_a_walk,
    )


def test_a_walk_through_a_reused_table_is_a_write_with_svadu_and_a_read_without() -> None:
    bug = ("no-flush-before-table-free",)
    seen = 0
    for seed in range(6):
        read, written = _scenario(seed, "svade", bug), _scenario(seed, "svadu", bug)
        walks = [v for v in read.violations if v.cls == "walk-through-reused-table"]
        stores = [v for v in written.violations if v.cls == "walk-through-reused-table"]
        assert all(v.access == "walk" for v in walks)
        if walks and stores:
            seen += 1
            assert stores[0].access == "write"
            assert "hardware A/D update wrote a PTE there" in stores[0].headline
            # the cause is the same whether the stale walk read or wrote: it is about the missing flush
            assert stores[0].cause is not None and walks[0].cause is not None
            assert stores[0].cause.case == walks[0].cause.case
    assert seen, "no seed raced the walk against the reuse"


def test_without_the_bug_the_same_scenario_is_silent_on_both_schemes() -> None:
    for seed in range(3):
        for ad in ("svade", "svadu"):
            r = _scenario(seed, ad, ())
            assert r.clean and not r.warning_count, r.explain()


def test_an_unknown_scheme_is_a_one_line_error() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "simulator", "run", "pool-churn", "--ad", "svade2"], capture_output=True, text=True
    )
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "p2msim: error: unknown A/D scheme 'svade2' (--ad svade or svadu); did you mean 'svade'?"
    ]
