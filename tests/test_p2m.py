"""The hypervisor model's P2M operations, checked through the real engine."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.engine import invariants
from simulator.engine.scenario import Scenario
from simulator.riscv import memory as M
from simulator.riscv import pte as P
from simulator.xen.mm import PGC_allocated, PGC_count_mask
from simulator.xen.p2m import (
    INVALID_MFN,
    p2m_ext_storage,
    p2m_invalid,
    p2m_map_foreign_ro,
    p2m_map_foreign_rw,
    p2m_ram_rw,
)
from tests.conftest import simulate


def test_map_4k_2m_1g_and_the_walker_agrees() -> None:
    seen: dict[str, object] = {}

    async def main(sim: Scenario) -> None:
        xen = sim.xen
        d = await sim.create_domain(1, vcpus=1, pool_pages=8)
        await sim.populate(d, 0x10, 4, order=0)
        await sim.populate(d, 0x200, 512, order=9)
        await sim.populate(d, 0x40000, 1 << 18, order=18)
        for gfn, order in ((0x10, 0), (0x13, 0), (0x200, 9), (0x3FF, 9), (0x40000, 18), (0x7FFFF, 18)):
            mfn, t, got = xen.p2m_get_entry(d.p2m, gfn)
            assert (t, got) == (p2m_ram_rw, order), (hex(gfn), t, got)
            assert xen.memory.owner[mfn] == 1 and xen.memory.state[mfn] == M.DOMAIN
        base, _, _ = xen.p2m_get_entry(d.p2m, 0x200)
        last, _, _ = xen.p2m_get_entry(d.p2m, 0x3FF)
        assert last == base + 0x1FF
        assert xen.p2m_get_entry(d.p2m, 0x14)[0] == INVALID_MFN
        pattern = sim.pattern([(0x200, 512), (0x40000, 1 << 18)], hot=[(0x10, 4)], hot_prob=0.3)
        await sim.run_vcpu(d.vcpus[0], 1, pattern)
        await sim.elapse(4000)
        entries = list(xen.harts[1].tlb.leaf.entries.values())
        seen["levels"] = {e.level for e in entries}
        for e in entries:
            mfn, _, order = xen.p2m_get_entry(d.p2m, e.gfn_base)
            assert order == 9 * e.level
            assert e.ppn == mfn, (hex(e.gfn_base), e.ppn, mfn)
            assert e.src_pte & P.PTE_U and not e.src_pte & P.PTE_G
        await sim.destroy(d)

    r = simulate(main, frames=1 << 19, pcpus=2)
    assert r.stop_reason == "done" and not r.violations, r.explain()
    assert seen["levels"] == {0, 1, 2}


def test_removing_a_2m_region_frees_its_table_but_a_4k_removal_does_not() -> None:
    async def main(sim: Scenario) -> None:
        xen = sim.xen
        d = await sim.create_domain(1, pool_pages=4)
        await sim.populate(d, 0x400, 8)
        pool = d.arch_paging
        free_before = pool.total_pages
        tables_before = len(d.p2m.pages)
        await sim.on(0, "remove", xen.decrease_reservation, d, 0x401, 1)
        assert xen.p2m_get_entry(d.p2m, 0x401)[0] == INVALID_MFN
        assert xen.p2m_get_entry(d.p2m, 0x402)[1] == p2m_ram_rw
        assert pool.total_pages == free_before and len(d.p2m.pages) == tables_before
        await sim.on(0, "remove", xen.decrease_reservation, d, 0x400, 512)
        assert pool.total_pages == free_before + 1  # the level-0 table went back to the pool
        assert len(d.p2m.pages) == tables_before - 1
        assert xen.memory.state[pool.freelist.tail] == M.POOL  # at the tail: FIFO reuse
        await sim.destroy(d)

    r = simulate(main, pcpus=1)
    assert r.stop_reason == "done" and not r.violations, r.explain()


def test_split_superpage_keeps_the_other_511_pages() -> None:
    async def main(sim: Scenario) -> None:
        xen = sim.xen
        d = await sim.create_domain(1, pool_pages=4)
        await sim.populate(d, 0x600, 512, order=9)
        base, _, _ = xen.p2m_get_entry(d.p2m, 0x600)
        free_before = d.arch_paging.total_pages
        await sim.on(0, "remove one", xen.decrease_reservation, d, 0x605, 1)
        assert xen.p2m_get_entry(d.p2m, 0x605)[0] == INVALID_MFN
        for gfn in (0x600, 0x604, 0x606, 0x7FF):
            mfn, t, order = xen.p2m_get_entry(d.p2m, gfn)
            assert (mfn, t, order) == (base + gfn - 0x600, p2m_ram_rw, 0)
        assert d.arch_paging.total_pages == free_before - 1  # the split took one table
        assert xen.memory.state[base + 5] == M.FREE  # the removed page went back to the heap
        await sim.destroy(d)

    r = simulate(main, pcpus=1)
    assert r.stop_reason == "done" and not r.violations, r.explain()


def test_free_subtree_returns_every_table_and_drops_every_foreign_reference() -> None:
    async def main(sim: Scenario) -> None:
        xen = sim.xen
        mem = xen.memory
        d0 = await sim.create_domain(0, pool_pages=8)
        d1 = await sim.create_domain(1, pool_pages=4)
        await sim.populate(d1, 0x10, 8)
        await sim.populate(d1, 0x200, 512, order=9)
        pool_before = d0.arch_paging.total_pages
        for i in range(8):
            assert await sim.on(0, "map", xen.map_foreign, d0, 0x80000 + i, d1, 0x10 + i, 0, i % 2 == 1) == 0
        assert await sim.on(0, "map", xen.map_foreign, d0, 0x80200, d1, 0x200, 9) == 0
        small, _, _ = xen.p2m_get_entry(d1.p2m, 0x10)
        big, _, _ = xen.p2m_get_entry(d1.p2m, 0x200)
        assert mem.count[small] == PGC_allocated | 2 and mem.count[big + 7] == PGC_allocated | 2
        # external types: RSW says "look it up", the metadata page says which
        _, t, _ = xen.p2m_get_entry(d0.p2m, 0x80001)
        assert t == p2m_map_foreign_ro and xen.p2m_get_entry(d0.p2m, 0x80000)[1] == p2m_map_foreign_rw
        assert len(d0.p2m.md) == 2  # one per table holding external types
        assert all(xen.u_md_used_entries[t] >= 1 for t in d0.p2m.md)
        root_idx = xen.offsets(0x80000)
        l1 = P.pte_ppn(mem.table(d0.p2m.root)[root_idx[2]])
        l0 = P.pte_ppn(mem.table(l1)[root_idx[1]])
        assert P.pte_rsw(mem.table(l0)[0]) == p2m_ext_storage
        assert invariants.check(xen) == []
        # the whole 1G region in one removal: p2m_free_subtree from level 2
        assert await sim.on(0, "unmap", xen.unmap_foreign, d0, 0x80000, 1 << 18) == 0
        assert mem.count[small] == PGC_allocated | 1 and mem.count[big + 7] == PGC_allocated | 1
        assert d0.arch_paging.total_pages == pool_before  # every table and metadata page is back
        assert not d0.p2m.md and set(d0.p2m.pages) == set(range(d0.p2m.root, d0.p2m.root + 4))
        assert invariants.check(xen) == []
        await sim.destroy(d0)
        await sim.destroy(d1)

    r = simulate(main, pcpus=2)
    assert r.stop_reason == "done" and not r.violations, r.explain()


def test_foreign_page_outlives_its_dying_owner_until_unmapped() -> None:
    async def main(sim: Scenario) -> None:
        xen = sim.xen
        mem = xen.memory
        d0 = await sim.create_domain(0, pool_pages=8)
        d1 = await sim.create_domain(1, pool_pages=4)
        await sim.populate(d1, 0x10, 2)
        pg, _, _ = xen.p2m_get_entry(d1.p2m, 0x10)
        assert await sim.on(0, "map", xen.map_foreign, d0, 0x900, d1, 0x10, 0) == 0
        await sim.destroy(d1)
        assert mem.state[pg] == M.DOMAIN and mem.owner[pg] == 1  # a zombie page
        assert mem.count[pg] & PGC_count_mask == 1 and not mem.count[pg] & PGC_allocated
        assert list(d1.page_list) == [pg]
        assert invariants.check(xen) == []
        assert await sim.on(0, "unmap", xen.unmap_foreign, d0, 0x900, 1) == 0
        assert mem.state[pg] == M.FREE and xen.heap.need_tlbflush[pg] == 1  # owned: flush on reuse
        assert not d1.page_list
        await sim.destroy(d0)

    r = simulate(main, pcpus=2)
    assert r.stop_reason == "done" and not r.violations, r.explain()


def test_destroy_gives_back_every_page_table_and_pool_page() -> None:
    async def main(sim: Scenario) -> None:
        xen = sim.xen
        free_at_start = xen.heap.nr_free
        d = await sim.create_domain(1, vcpus=2, pool_pages=6)
        await sim.populate(d, 0x10, 40)
        await sim.populate(d, 0x400, 512, order=9)
        await sim.run_vcpu(d.vcpus[0], 0, sim.pattern([(0x10, 40), (0x400, 512)]))
        await sim.run_vcpu(d.vcpus[1], 1, sim.pattern([(0x10, 40)]))
        await sim.elapse(2000)
        assert xen.heap.nr_free < free_at_start
        await sim.destroy(d)
        assert xen.heap.nr_free == free_at_start
        assert not any(xen.memory.owner[m] == 1 for m in range(xen.memory.nr_frames))
        assert d.destroyed and not d.page_list and not d.p2m.pages and not d.arch_paging.freelist
        assert not any(d.dirty_cpumask)

    r = simulate(main, pcpus=2)
    assert r.stop_reason == "done" and not r.violations, r.explain()


def test_invariants_catch_a_leaked_reference() -> None:
    """The invariant checker is not a rubber stamp: an extra reference is reported."""

    async def main(sim: Scenario) -> None:
        xen = sim.xen
        d = await sim.create_domain(1, pool_pages=4)
        await sim.populate(d, 0x10, 2)
        pg, _, _ = xen.p2m_get_entry(d.p2m, 0x10)
        assert xen.get_page(pg, d)  # a reference nobody will drop
        problems = invariants.check(xen)
        assert any("count 2" in p for p in problems), problems
        await sim.on(0, "put", xen.put_page, pg)
        assert invariants.check(xen) == []
        await sim.destroy(d)

    r = simulate(main, pcpus=1)
    assert not r.violations, r.explain()


# -- a property: random map/unmap sequences keep every invariant and match a plain dict ------------

SLOTS = 6  # 2M slots at 0x10000 + k*512
OPS = st.lists(
    st.tuples(
        st.sampled_from(["populate4k", "populate2m", "remove", "foreign"]),
        st.integers(0, SLOTS - 1),
        st.integers(0, 511),
        st.integers(1, 700),
    ),
    min_size=1,
    max_size=10,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS, st.integers(0, 2**16))
def test_random_map_unmap_sequences_keep_invariants(ops: list[tuple[str, int, int, int]], seed: int) -> None:
    problems: list[str] = []

    async def main(sim: Scenario) -> None:
        xen = sim.xen
        d0 = await sim.create_domain(0, pool_pages=64)
        d1 = await sim.create_domain(1, pool_pages=64)
        model: dict[int, tuple[int, int]] = {}  # gfn of d1 -> (mfn, type)
        lent = 0x200000
        await sim.populate(d0, lent, 16)
        for op, slot, off, n in ops:
            gfn = 0x10000 + slot * 512
            if op == "populate4k":
                first = gfn + off
                count = min(n, 16)
                if any(g in model for g in range(first, first + count)):
                    continue
                await sim.populate(d1, first, count)
            elif op == "populate2m":
                if any(g in model for g in range(gfn, gfn + 512)):
                    continue
                await sim.populate(d1, gfn, 512, order=9)
            elif op == "remove":
                await sim.on(0, "rm", xen.decrease_reservation, d1, gfn + off, n)
                for g in range(gfn + off, gfn + off + n):
                    model.pop(g, None)
            else:
                if gfn + off in model:
                    continue
                rc = await sim.on(0, "map", xen.map_foreign, d1, gfn + off, d0, lent + off % 16, 0)
                assert rc == 0
            for g in range(0x10000, 0x10000 + SLOTS * 512):
                mfn, t, _ = xen.p2m_get_entry(d1.p2m, g)
                if mfn != INVALID_MFN:
                    if g in model and op != "remove":
                        assert model[g] == (mfn, t)
                    model[g] = (mfn, t)
                else:
                    assert g not in model or op == "remove", hex(g)
            problems.extend(invariants.check(xen))
            assert not problems, problems
        await sim.destroy(d1)
        await sim.destroy(d0)
        problems.extend(invariants.check(xen))

    r = simulate(main, pcpus=1, seed=seed)
    assert r.stop_reason == "done", r.stop_reason
    assert not problems and not r.violations, (problems, r.explain())


def test_p2m_invalid_is_zero_and_removal_of_nothing_is_fine() -> None:
    async def main(sim: Scenario) -> None:
        xen = sim.xen
        d = await sim.create_domain(1, pool_pages=2)
        assert await sim.on(0, "rm", xen.decrease_reservation, d, 0x5000, 1024) == 0
        assert xen.p2m_get_entry(d.p2m, 0x5000) == (INVALID_MFN, p2m_invalid, 18)
        await sim.destroy(d)

    r = simulate(main, pcpus=1)
    assert not r.violations, r.explain()
