"""Several TLB entries for one address (--tlb-multi): a refill does not replace the stale entry, and a
lookup may use any entry that matches - the old superpage or the 4K leaf that split it, an entry or the
refill beside it (riscv-translation-caching.md: "any number of them, even several for one address").

The scenario is the test's own: a stale entry on hart 1 that two bugs leave in place (the unmap fences
only the calling hart, the reuse is not fenced) and that a refill by Xen's own access to guest memory
would replace - on a TLB with one entry per address, and hide the bug.
"""

from __future__ import annotations

import random

from simulator.engine.scenario import Scenario
from simulator.engine.simulation import Config, Result, run
from simulator.riscv.tlb import Tlb, TlbEntry, tlb_key
from simulator.riscv.walker import walk


def _entry(gfn: int, ppn: int, level: int = 0, src_pte: int = 1) -> TlbEntry:
    e = TlbEntry(tlb_key(1, level, gfn), True, 1, level, gfn, ppn, 0b111, 0, 0x79, gfn & 511, src_pte, 0x60, 0, ())
    e.set_source([0] * 512)  # type: ignore[arg-type]
    return e


def test_a_refill_keeps_the_old_translation_and_a_covering_fence_removes_both() -> None:
    tlb = Tlb(8, 4, random.Random(0), multi=True)
    old, new = _entry(0x104, 0x6D, src_pte=0x1B5DF), _entry(0x104, 0x70, src_pte=0x1C1DF)
    tlb.fill(old)
    tlb.fill(new)
    seen = {tlb.lookup_leaf(1, 0x104).ppn for _ in range(64)}  # type: ignore[union-attr]
    assert seen == {0x6D, 0x70}
    tlb.hfence_gvma(1, 0x104)
    assert tlb.lookup_leaf(1, 0x104) is None


def test_a_refill_with_the_same_translation_is_one_entry() -> None:
    tlb = Tlb(8, 4, random.Random(0), multi=True)
    tlb.fill(_entry(0x104, 0x6D))
    tlb.fill(_entry(0x104, 0x6D))
    assert len(tlb.leaf.all(tlb_key(1, 0, 0x104))) == 1


def test_a_superpage_and_its_split_leaf_are_both_candidates() -> None:
    tlb = Tlb(8, 4, random.Random(0), multi=True)
    tlb.fill(_entry(0x200, 0x400, level=1))
    tlb.fill(_entry(0x204, 0x404))
    assert {tlb.lookup_leaf(1, 0x204).level for _ in range(64)} == {0, 1}  # type: ignore[union-attr]


async def _refilled_beside_a_stale_entry(sim: Scenario) -> None:
    d1 = await sim.create_domain(1, vcpus=1, pool_pages=4)
    d2 = await sim.create_domain(2, vcpus=1, pool_pages=4)
    await sim.populate(d1, 0x100, 8)
    v = d1.vcpus[0]
    await sim.run_vcpu(v, 1, sim.pattern([(0x100, 8)]))
    await sim.elapse(400)
    await sim.run_vcpu(v, 1, sim.pattern([(0x100, 1)]))  # away from gfn 0x104 for now
    await sim.on(0, "decrease_reservation", sim.xen.decrease_reservation, d1, 0x104, 1)
    await sim.populate(d2, 0x200, 1)  # the freed frame, to dom2
    await sim.populate(d1, 0x104, 1)  # gfn 0x104 again, another frame
    await sim.on(1, "Xen reads gfn 0x104", walk, sim.xen.harts[1], 0x104)  # the refill
    await sim.run_vcpu(v, 1, sim.pattern([(0x100, 8)]))
    await sim.elapse(600)
    await sim.deschedule(1)
    await sim.destroy(d1)
    await sim.destroy(d2)


BUGS = ("local-fence-only", "no-reuse-flush")


def _run(seed: int, multi: bool, bugs: tuple[str, ...]) -> Result:
    config = Config("inline", seed=seed, pcpus=2, speculate=0.0, tlb_multi=multi, bugs=bugs)
    return run(config, main=_refilled_beside_a_stale_entry)


def test_the_stale_entry_beside_a_refill_is_used_and_found() -> None:
    for seed in range(3):
        r = _run(seed, True, BUGS)
        assert [v.cls for v in r.violations] == ["reused-other-domain"], r.explain()
        assert r.violations[0].gfn == 0x104


def test_with_one_entry_per_address_the_refill_hides_it() -> None:
    for seed in range(3):
        assert _run(seed, False, BUGS).clean


def test_without_the_bugs_several_entries_change_nothing() -> None:
    for seed in range(3):
        assert _run(seed, True, ()).clean
    for workload in ("superpage-shatter", "teardown-under-load", "vcpu-migration"):
        r = run(Config(workload, seed=1, tlb_multi=True))
        assert r.clean and not r.warning_count, r.explain()
