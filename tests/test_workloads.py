"""The five scenario workloads: clean and deterministic on `fixed`, and each finds a bug it was built for.

The long numbers (50 seeds per workload and bug, every profile) belong to
`p2msim matrix`; these are the small versions that keep CI honest.
"""

from __future__ import annotations

import pytest

from simulator.engine.bugs import BUGS
from simulator.engine.scenario import Scenario, WorkloadError
from simulator.engine.simulation import Config, ConfigError, Result, load_workload, run

WORKLOADS = ("superpage-shatter", "vcpu-migration", "vmid-rollover", "balloon", "pool-churn")
CLEAN_SEEDS = range(5)
SEEDS_TO_FIND = 12

# (workload, bug, violation classes it may raise): each found in at least 26 of 50 seeds when measured
WALK, REUSED, ALIAS = "walk-through-reused-table", "reused-", "vmid-alias"
FINDS = [
    ("superpage-shatter", "no-flush-before-table-free", (WALK, REUSED)),
    ("superpage-shatter", "local-fence-only", (WALK, REUSED)),
    ("vcpu-migration", "local-fence-only", (WALK, REUSED)),
    ("vcpu-migration", "dirty-mask-cleared-on-switch-out", (WALK, REUSED)),
    ("vcpu-migration", "vmid-kept-on-migration", (ALIAS, REUSED)),
    ("vmid-rollover", "vmid-rollover-no-flush", (ALIAS, REUSED)),
    ("balloon", "no-reuse-flush", (REUSED,)),
    ("balloon", "async-remote-fence", (REUSED, WALK)),
    ("pool-churn", "no-flush-before-table-free", (WALK, REUSED)),
    ("pool-churn", "deferred-flush-pool-free", (WALK, REUSED)),
]


def _run(workload: str, seed: int, bugs: tuple[str, ...] = (), **kw: object) -> Result:
    extra: dict[str, object] = {}
    for b in bugs:
        extra.update(BUGS[b].config)  # e.g. vmid-rollover-no-flush needs few VMID bits
    extra.update(kw)
    r = run(Config(workload, seed=seed, bugs=bugs, **extra))  # type: ignore[arg-type]
    assert r.stop_reason == "done", (workload, seed, bugs, r.stop_reason)
    return r


@pytest.mark.parametrize("workload", WORKLOADS)
def test_clean_and_deterministic_on_fixed(workload: str) -> None:
    for seed in CLEAN_SEEDS:
        first = _run(workload, seed)
        assert first.clean, first.explain()
        assert first.violation_count == 0
        again = _run(workload, seed)
        assert again.digest == first.digest, (workload, seed)
        assert again.stats == first.stats


@pytest.mark.parametrize("workload", WORKLOADS)
def test_every_domain_it_creates_is_destroyed(workload: str) -> None:
    mod = load_workload(workload)
    alive: list[int] = []

    async def main(sim: Scenario) -> None:
        sim.params = dict(mod.PARAMS)
        await mod.main(sim)
        alive.extend(d.domain_id for d in sim.xen.domains.values() if not d.destroyed)

    r = run(Config(workload, seed=1), main=main)
    assert r.stop_reason == "done" and r.clean, r.explain()
    assert alive == []
    assert len(r.destroyed) >= 1
    assert r.digest == _run(workload, 1).digest  # the wrapper changed nothing


@pytest.mark.parametrize("workload", WORKLOADS)
def test_same_run_on_both_backends(workload: str) -> None:
    assert _run(workload, 7, backend="asyncio").digest == _run(workload, 7, backend="trio").digest


def test_vmid_rollover_is_clean_with_few_vmid_bits() -> None:
    """What it is meant to run with: many rollovers per hart, still nothing on `fixed`."""
    for seed in range(3):
        r = _run("vmid-rollover", seed, vmid_bits=2)
        assert r.clean, r.explain()


@pytest.mark.parametrize(("workload", "bug", "classes"), FINDS, ids=[f"{w}:{b}" for w, b, _ in FINDS])
def test_finds_the_bug_and_nothing_without_it(workload: str, bug: str, classes: tuple[str, ...]) -> None:
    for seed in range(SEEDS_TO_FIND):
        found = _run(workload, seed, (bug,))
        if found.violations:
            assert all(v.cls.startswith(classes) for v in found.violations), [v.cls for v in found.violations]
            # the other side: the same seed and configuration without the bug is clean
            clean = _run(workload, seed, (), **dict(BUGS[bug].config))
            assert clean.clean, clean.explain()
            return
    pytest.fail(f"{bug} not found on {workload} in {SEEDS_TO_FIND} seeds")


@pytest.mark.parametrize("workload", ["superpage-shatter", "vcpu-migration", "balloon"])
def test_upstream_profile_races(workload: str) -> None:
    """The tree's empty dirty_cpumask: flushes reach no hart; VMIDs kept across harts; no flush during a build."""
    # past the guest's first page fault, which the tree's do_trap answers with die()
    assert any(_run(workload, seed, profile="upstream+handle_guest_page_faults").violations for seed in range(8))


@pytest.mark.parametrize("workload", WORKLOADS)
def test_one_hart_runs_or_is_refused_with_the_reason(workload: str) -> None:
    least, why = load_workload(workload).PCPUS
    if least == 1:
        r = run(Config(workload, pcpus=1))
        assert r.stop_reason == "done" and r.clean, r.explain()
        return
    assert why, f"{workload} must say why it needs {least} harts"
    with pytest.raises(ConfigError, match=f"needs --pcpus {least} or more: {why}"):
        run(Config(workload, pcpus=least - 1))
    assert run(Config(workload, pcpus=least)).stop_reason == "done"


def test_the_latent_bug_shows_on_one_hart() -> None:
    assert [v.cls for v in run(Config("foreign-remap", pcpus=1, profile="upstream")).violations][:1] == ["invariant"]


@pytest.mark.parametrize("workload", WORKLOADS)
def test_impossible_configurations_are_refused(workload: str) -> None:
    with pytest.raises(WorkloadError, match=r"rounds|domains"):
        key = "domains" if workload == "vmid-rollover" else "rounds"
        run(Config(workload, params=((key, "0"),)))
