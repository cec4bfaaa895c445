"""SBI remote fences as the spec, OpenSBI and Xen's sbi.c have them: hart-mask windows, ranges, errors."""

from __future__ import annotations

from simulator.engine.scenario import Scenario
from simulator.riscv.sbi import (
    ALL_HARTS,
    SBI_ERR_INVALID_PARAM,
    SBI_EXT_RFENCE_REMOTE_HFENCE_GVMA,
    SBI_SUCCESS,
    SBI_TLB_FLUSH_ALL,
)
from tests.conftest import simulate

GVMA = SBI_EXT_RFENCE_REMOTE_HFENCE_GVMA


def test_xen_batches_hart_ids_into_windows_as_its_comment_says() -> None:
    """arch/riscv/sbi.c: hart IDs 0, 1, 3, 65, 66, 69 take two calls, (0b1011, 0) and (0b10011, 65)."""
    calls: list[tuple[int, int]] = []

    async def main(sim: Scenario) -> None:
        xen = sim.xen
        hartids = [0, 1, 3, 65, 66, 69]
        xen.cpuid_to_hartid = lambda cpu: hartids[cpu]  # type: ignore[method-assign]

        async def real(fid: int, hmask: int, hbase: int, start: int, size: int, arg4: int) -> int:
            calls.append((hmask, hbase))
            return 0

        xen.sbi_rfence_v02_real = real  # type: ignore[method-assign]
        assert await sim.on(0, "fence", xen.sbi_rfence_v02, GVMA, list(range(6)), 0, 0, 0) == 0
        calls.append((-1, -1))
        # an empty cpumask: no ecall, and -EINVAL (the result's first value), which p2m_tlb_flush ignores
        assert await sim.on(0, "fence", xen.sbi_rfence_v02, GVMA, [], 0, 0, 0) == -22

    simulate(main, pcpus=1)
    assert calls == [(0b1011, 0), (0b10011, 65), (-1, -1)]


def test_the_first_failing_window_ends_the_loop() -> None:
    calls: list[int] = []

    async def main(sim: Scenario) -> None:
        xen = sim.xen

        async def real(fid: int, hmask: int, hbase: int, start: int, size: int, arg4: int) -> int:
            calls.append(hbase)
            return -22 if hbase == 0 else 0

        xen.sbi_rfence_v02_real = real  # type: ignore[method-assign]
        xen.cpuid_to_hartid = lambda cpu: cpu  # type: ignore[method-assign]
        assert await sim.on(0, "fence", xen.sbi_rfence_v02, GVMA, [0, 1, 64, 65, 128], 0, 0, 0) == -22

    simulate(main, pcpus=1)
    assert calls == [0]  # the windows at 64 and 128 are never sent


def _ecall(hmask: int, hbase: int, start: int, size: int, pcpus: int = 4, unassigned: tuple[int, ...] = ()):  # type: ignore[no-untyped-def]
    """One RFENCE ecall from hart 0; returns (SBI error, [(target, gfns) of each request])."""
    seen: dict[str, object] = {}

    async def main(sim: Scenario) -> None:
        sbi = sim.xen.sbi
        sbi.assigned -= set(unassigned)
        before = sbi.sent
        got: list[tuple[int, object]] = []
        for h in sim.xen.harts:
            orig = h._hfence

            def spy(req, h=h, orig=orig):  # type: ignore[no-untyped-def]
                got.append((h.id, req.gfns))
                orig(req)

            h._hfence = spy  # type: ignore[method-assign]
        rc = await sim.on(0, "ecall", sbi.ecall_rfence, sim.xen.harts[0], GVMA, hmask, hbase, start, size)
        seen["rc"], seen["sent"], seen["got"] = rc, sbi.sent - before, sorted(got, key=lambda x: x[0])

    simulate(main, pcpus=pcpus)
    return seen["rc"], seen["got"]


def test_a_window_names_harts_from_its_base() -> None:
    rc, got = _ecall(0b101, 1, 0, 0)  # harts 1 and 3
    assert rc == SBI_SUCCESS and [h for h, _ in got] == [1, 3] and all(g is None for _, g in got)


def test_base_minus_one_means_every_hart_and_zero_mask_means_none() -> None:
    assert [h for h, _ in _ecall(0, ALL_HARTS, 0, 0)[1]] == [0, 1, 2, 3]
    assert _ecall(0, 0, 0, 0) == (SBI_SUCCESS, [])


def test_ranges_as_opensbi_handles_them() -> None:
    _, got = _ecall(0b10, 0, 0x5000, 0x1000)  # one page
    assert got == [(1, (5,))]
    _, got = _ecall(0b10, 0, 0x5000, 0x2000)  # two pages: above OpenSBI's default flush limit, so everything
    assert got == [(1, None)]
    _, got = _ecall(0b10, 0, 0x5000, 0)  # start != 0, size 0: the loop fences no page
    assert got == [(1, ())]
    _, got = _ecall(0b10, 0, 0x5000, SBI_TLB_FLUSH_ALL)
    assert got == [(1, None)]


def test_a_hart_outside_the_sbi_domain_fails_the_whole_call() -> None:
    assert _ecall(0b1110, 0, 0, 0, unassigned=(2,)) == (SBI_ERR_INVALID_PARAM, [])


def test_stopped_harts_are_skipped() -> None:
    async def main(sim: Scenario) -> None:
        sim.xen.harts[2].hsm_state = "stopped"
        rc = await sim.on(0, "ecall", sim.xen.sbi.ecall_rfence, sim.xen.harts[0], GVMA, 0b1110, 0, 0, 0)
        assert rc == SBI_SUCCESS and sim.xen.sbi.sent == 2  # harts 1 and 3

    simulate(main, pcpus=4)


async def _two_windows(sim: Scenario, stray: int | None = None) -> None:
    """dom1 runs on harts 1, 5 and 65; hart 0 gives back a 4K chunk and part of the next superpage.

    ``stray``: a hart Xen believes dom1 ran on (a dirty_cpumask bit) though it is not in Xen's SBI
    domain, so the window that names it fails.
    """
    d = await sim.create_domain(1, vcpus=3, pool_pages=2)
    await sim.populate(d, 0x40000, 48)
    await sim.populate(d, 0x40200, 512, order=9)
    pat = sim.pattern([(0x40000, 48), (0x40200, 512)], hot=[(0x40000, 48)], hot_prob=0.9)
    for v, hart in zip(d.vcpus, (1, 5, 65), strict=True):
        await sim.run_vcpu(v, hart, pat)
    await sim.elapse(3000)
    if stray is not None:
        sim.xen.sbi.assigned.discard(stray)
        d.dirty_cpumask[stray] = True
    await sim.on(0, "decrease_reservation", sim.xen.decrease_reservation, d, 0x40000, 512 + 8)
    await sim.elapse(3000)
    await sim.pause(d)
    await sim.destroy(d)


def test_a_flush_reaches_harts_in_every_window() -> None:
    r = simulate(_two_windows, pcpus=66, speculate=0.0, tlb_leaf=8)
    assert r.clean, r.explain()
    assert r.stats["fences_sent"] > 0


def test_a_failed_window_leaves_its_harts_unfenced_and_the_explanation_says_so() -> None:
    async def main(sim: Scenario) -> None:
        await _two_windows(sim, stray=7)

    r = simulate(main, pcpus=66, speculate=0.0, tlb_leaf=8)
    assert r.violations, r.explain()
    texts = [v.missing for v in r.violations]
    assert any("sbi_rfence_v02 stops at a failed window" in t and "p2m_tlb_flush ignores the error" in t for t in texts)
