"""VMIDs: per-hart generations, rollover, and what happens when a vCPU migrates."""

from __future__ import annotations

from pathlib import Path

import orjson

from simulator.engine.scenario import Scenario
from tests.conftest import simulate


async def _migrate_into_another_domains_vmid(sim: Scenario) -> None:
    d1 = await sim.create_domain(1, vcpus=1, pool_pages=4)
    d2 = await sim.create_domain(2, vcpus=1, pool_pages=4)
    await sim.populate(d1, 0x10, 16)
    await sim.populate(d2, 0x10, 16)  # the same gfns, other frames
    await sim.run_vcpu(d1.vcpus[0], 0, sim.pattern([(0x10, 16)]))
    await sim.run_vcpu(d2.vcpus[0], 1, sim.pattern([(0x10, 16)]))
    await sim.elapse(800)
    # both got VMID 1, each on its own hart; now d1's vCPU moves to hart 1
    await sim.deschedule(1)
    await sim.run_vcpu(d1.vcpus[0], 1)
    await sim.elapse(800)
    await sim.pause(d1)
    await sim.destroy(d1)
    await sim.destroy(d2)


def test_vmid_kept_on_migration_aliases_another_vcpus_entries() -> None:
    r = simulate(_migrate_into_another_domains_vmid, pcpus=2, profile="upstream")
    classes = {v.cls for v in r.violations}
    assert "vmid-alias" in classes, r.explain()
    v = next(v for v in r.violations if v.cls == "vmid-alias")
    assert "vmid_flush_vcpu" in v.missing and v.hart == 1


def test_vmid_reset_on_migration_keeps_them_apart() -> None:
    r = simulate(_migrate_into_another_domains_vmid, pcpus=2, profile="fixed")
    assert r.stop_reason == "done" and not r.violations, r.explain()


def test_rollover_starts_a_new_generation_with_a_local_flush(tmp_path: Path) -> None:
    async def main(sim: Scenario) -> None:
        ds = []
        for i in range(1, 5):
            d = await sim.create_domain(i, vcpus=1, pool_pages=4)
            await sim.populate(d, 0x10, 8)
            d.vcpus[0].program = sim.pattern([(0x10, 8)])
            ds.append(d)
        for _ in range(3):  # 4 vCPUs take turns on one hart that has VMIDs 1..3
            for d in ds:
                await sim.run_vcpu(d.vcpus[0], 0)
                await sim.elapse(150)
        await sim.deschedule(0)
        for d in ds:
            await sim.destroy(d)

    log = tmp_path / "run.jsonl"
    r = simulate(main, pcpus=1, vmid_bits=2, log=str(log))
    assert r.stop_reason == "done" and not r.violations, r.explain()
    events = [orjson.loads(x) for x in log.read_bytes().splitlines()]
    rollovers = [e for e in events if e["event"] == "vmid.rollover"]
    assert len(rollovers) >= 3
    assert [e["generation"] for e in rollovers] == list(range(2, 2 + len(rollovers)))
    assigned = [e["vmid"] for e in events if e["event"] == "vmid.assign"]
    assert set(assigned) == {1, 2, 3}  # max_vmid = 2^2 - 1; VMID 0 is never handed out
    # every rollover is followed by a full local fence on that hart (when VMID 1 is handed out),
    # before that hart caches anything
    for e in rollovers:
        i = events.index(e)
        later = [x for x in events[i + 1 :] if x["hart"] == e["hart"] and x["event"] in ("fence.local", "tlb.fill")]
        assert later and later[0]["event"] == "fence.local", later[:1]
        assert later[0]["vmid"] is None and later[0]["gfns"] is None
