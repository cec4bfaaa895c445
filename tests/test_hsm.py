"""SBI HSM: a stopped hart takes no fence and keeps its TLB; what Xen does when it starts again decides."""

from __future__ import annotations

from simulator.engine.scenario import Scenario
from simulator.engine.simulation import Result
from tests.conftest import simulate


async def _stop_reuse_start(sim: Scenario) -> None:
    """dom1's vCPU ran on hart 1; hart 1 stops; dom1's pages go to dom2; hart 1 starts and dom1 runs there."""
    d1 = await sim.create_domain(1, vcpus=1, pool_pages=4)
    await sim.populate(d1, 0x10, 16)
    await sim.run_vcpu(d1.vcpus[0], 1, sim.pattern([(0x10, 16)], write_ratio=0.5))
    await sim.elapse(800)
    await sim.hart_stop(1)  # its TLB keeps dom1's translations
    await sim.on(0, "decrease_reservation", sim.xen.decrease_reservation, d1, 0x10, 16)  # the fence skips hart 1
    d2 = await sim.create_domain(2, vcpus=1, pool_pages=4)
    await sim.populate(d2, 0x4000, 16)  # the frames dom1 gave back; the reuse flush skips hart 1 too
    await sim.run_vcpu(d2.vcpus[0], 2, sim.pattern([(0x4000, 16)], write_ratio=0.5))
    await sim.elapse(400)
    await sim.hart_start(1)
    await sim.populate(d1, 0x10, 16)  # dom1 takes memory again at the same gfns
    await sim.run_vcpu(d1.vcpus[0], 1)
    await sim.elapse(800)
    for d in (d1, d2):
        await sim.pause(d)
        await sim.destroy(d)


def _no_flush_on_start(sim: Scenario) -> None:
    xen = sim.xen

    async def start_secondary() -> None:  # a variant: vmid_init, but no HFENCE.GVMA
        hart = xen.this_hart()
        xen.vmid_init(hart.id)
        hart.online = True

    xen.start_secondary = start_secondary  # type: ignore[method-assign]


def _run(mutate: bool, profile: str = "fixed") -> Result:
    async def main(sim: Scenario) -> None:
        if mutate:
            _no_flush_on_start(sim)
        await _stop_reuse_start(sim)

    return simulate(main, pcpus=3, profile=profile, speculate=0.0)


def test_a_stopped_hart_is_flushed_when_it_starts() -> None:
    for profile in ("fixed", "arm-broadcast"):
        r = _run(False, profile)
        assert r.stop_reason == "done" and r.clean, r.explain()


def test_without_that_flush_its_old_translations_reach_another_domain() -> None:
    """On fixed: vmid_init restarts the generation at 1, so dom1's vCPU keeps its old VMID 1, and the
    fence dom1's give-back sent while hart 1 was stopped was skipped by the firmware (not an error).
    (arm-broadcast's flush of dom1's new mappings reaches every online hart, hart 1 again included.)"""
    r = _run(True, "fixed")
    assert any(v.cls == "reused-other-domain" for v in r.violations), r.explain()
    assert all("start_secondary" in v.missing and "stopped at step" in v.missing for v in r.violations)
    assert {(v.cause.case, v.cause.function) for v in r.violations if v.cause} == {
        ("not-in-mask/stopped", "start_secondary")
    }
    assert _run(True, "arm-broadcast").clean


def test_a_suspended_hart_still_takes_fences() -> None:
    async def main(sim: Scenario) -> None:
        d1 = await sim.create_domain(1, vcpus=1, pool_pages=4)
        await sim.populate(d1, 0x10, 16)
        await sim.run_vcpu(d1.vcpus[0], 1, sim.pattern([(0x10, 16)]))
        await sim.elapse(500)
        await sim.hart_suspend(1)
        assert sim.xen.harts[1].hsm_state == "suspended"
        await sim.on(0, "decrease_reservation", sim.xen.decrease_reservation, d1, 0x10, 16)
        assert sim.xen.harts[1].hsm_state == "started"  # the fence's IPI woke it
        assert not sim.xen.harts[1].tlb.leaf.entries
        await sim.destroy(d1)

    r = simulate(main, pcpus=2, speculate=0.0)
    assert r.clean, r.explain()


def test_jobs_for_a_stopped_hart_are_refused() -> None:
    import pytest

    from simulator.engine.scenario import WorkloadError

    async def main(sim: Scenario) -> None:
        await sim.hart_stop(1)
        with pytest.raises(WorkloadError, match="hart 1 is stopped"):
            sim.start(1, "x", sim.xen.step)
        await sim.hart_start(1)
        await sim.on(1, "x", sim.xen.step)

    assert simulate(main, pcpus=2).clean
