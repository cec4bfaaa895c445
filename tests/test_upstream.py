"""The `upstream` profile (the Xen tree at c447b7308b) from both sides: what the tree does, and `fixed` silent.

Each test names the function of the tree it is about; the README's "What
upstream shows" quotes the same findings.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from simulator.engine.scenario import Scenario
from simulator.engine.simulation import Config, ConfigError, Result, run
from tests.conftest import simulate

# -- the latent bug: a foreign mapping replaced by RAM loses its type before p2m_free_subtree reads it --


def _remap(profile: str, seed: int = 0, **kw: object) -> Result:
    return run(Config("foreign-remap", seed=seed, profile=profile, **kw))  # type: ignore[arg-type]


def test_foreign_remap_on_upstream_leaks_the_foreign_page_and_names_the_gfn_and_the_slot() -> None:
    r = _remap("upstream")
    assert r.stop_reason == "done"
    lost = [v for v in r.violations if v.cls == "invariant" and "never dropped" in v.headline]
    assert lost, r.explain()
    v = lost[0]
    assert v.dom == 0 and v.gfn is not None and 0x80000 <= v.gfn < 0x80010
    text = v.explain()
    assert f"dom0 gfn {v.gfn:#x}" in text and "metadata slot" in text and "p2m_invalid" in text
    assert "put_page" in v.missing and "p2m_set_type cleared the metadata slot" in v.missing


def test_foreign_remap_on_a_debug_build_fails_the_assert_in_p2m_get_type() -> None:
    r = _remap("upstream", debug_build=True)
    assert r.stop_reason == "panic" and [v.cls for v in r.violations] == ["panic"]
    assert "type > p2m_first_external in p2m_get_type" in r.violations[0].headline
    assert "holds p2m_invalid for the ext_storage PTE" in r.violations[0].headline


def test_replacing_the_last_used_slot_maps_a_null_metadata_page() -> None:
    r = _remap("upstream", params=(("remap", "16"),))
    assert r.stop_reason == "panic"
    assert "v.md.pg is NULL" in r.violations[-1].headline and "page_to_mfn(NULL)" in r.violations[-1].headline


def test_mmio_over_a_foreign_gfn_loses_the_reference_too() -> None:
    r = _remap("upstream", params=(("mmio", "true"),))
    assert any("never dropped" in v.headline for v in r.violations), r.explain()


@pytest.mark.parametrize("seed", range(4))
def test_foreign_remap_is_silent_on_fixed(seed: int) -> None:
    for kw in ({}, {"debug_build": True}, {"params": (("remap", "16"),)}, {"params": (("mmio", "true"),)}):
        r = _remap("fixed", seed, **kw)
        assert r.stop_reason == "done" and r.clean, (kw, r.explain())


# -- VMIDs off: every vCPU runs with VMID 0 and nothing is flushed on a switch --------------------------


async def _time_share(sim: Scenario) -> None:
    """Two domains take turns on hart 0 over the same guest-physical range."""
    d1 = await sim.create_domain(1, vcpus=1, pool_pages=4)
    d2 = await sim.create_domain(2, vcpus=1, pool_pages=4)
    await sim.populate(d1, 0x10, 16)
    await sim.populate(d2, 0x10, 16)
    for _ in range(3):
        for d in (d1, d2):
            await sim.run_vcpu(d.vcpus[0], 0, sim.pattern([(0x10, 16)]))
            await sim.elapse(300)
    await sim.deschedule(0)
    await sim.destroy(d1)
    await sim.destroy(d2)


@pytest.mark.parametrize("how", [{"vmid_bits": 0}, {"vmid_bits": 1}, {"xen_opts": (("vmid", "0"),)}])
def test_vmids_off_on_upstream_lets_one_domain_use_anothers_translations(how: dict[str, object]) -> None:
    r = simulate(_time_share, pcpus=1, profile="upstream", speculate=0.0, **how)
    alias = [v for v in r.violations if v.cls == "vmid-alias"]
    assert alias, r.explain()
    assert "VMID 0" in alias[0].headline and "dom1" in alias[0].explain() and "dom2" in alias[0].explain()


@pytest.mark.parametrize("how", [{"vmid_bits": 0}, {"vmid_bits": 1}, {"xen_opts": (("vmid", "0"),)}])
@pytest.mark.parametrize("profile", ["fixed", "arm-broadcast"])
def test_vmids_off_on_the_clean_profiles_flushes_on_every_switch(profile: str, how: dict[str, object]) -> None:
    r = simulate(_time_share, pcpus=1, profile=profile, **how)
    assert r.stop_reason == "done" and r.clean, r.explain()


def test_vmids_on_keep_the_time_sharing_domains_apart_on_upstream() -> None:
    """The other side: with VMIDs the same schedule is clean on the tree too."""
    r = simulate(_time_share, pcpus=1, profile="upstream", speculate=0.0)
    assert r.clean, r.explain()


def test_a_generation_overflow_turns_vmids_off() -> None:
    async def main(sim: Scenario) -> None:
        sim.xen.vmid_data[0].generation = (1 << 64) - 1
        sim.xen.vmid_data[0].next_vmid = sim.xen.vmid_data[0].max_vmid + 1  # the next vCPU rolls over
        await _time_share(sim)

    r = simulate(main, pcpus=1, profile="upstream", speculate=0.0)
    assert not r.clean and r.violations[0].cls == "vmid-alias", r.explain()
    assert simulate(main, pcpus=1, profile="fixed").clean


# -- the scrub window: stale reads are harmless until the new owner stores, stale writes are not ----------


def _reused_under(write_ratio: float):  # type: ignore[no-untyped-def]
    async def main(sim: Scenario) -> None:
        """dom0 keeps using foreign translations after unmapping; dom2 is built from those very frames.

        Memory is short (dom9 holds the rest), so dom2's RAM must come from frames freed since:
        first dom1's struct domain, pool and root, then the 8 foreign pages; dom2 is still being
        built, so the tree allocates them with MEMF_no_tlbflush.
        """
        d0 = await sim.create_domain(0, vcpus=2, pool_pages=4)
        await sim.populate(d0, 0x100, 8)
        d1 = await sim.create_domain(1, vcpus=1, pool_pages=4)
        await sim.populate(d1, 0x10, 8)
        for i in range(8):
            assert await sim.on(0, "map", sim.xen.map_foreign, d0, 0x800 + i, d1, 0x10 + i) == 0
        d2 = await sim.create_domain(2, vcpus=1, pool_pages=4)
        d9 = await sim.create_domain(9, vcpus=1, pool_pages=4)
        await sim.squeeze(d9, 0x100000, 0)
        await sim.run_vcpu(d0.vcpus[1], 1, sim.pattern([(0x800, 8)], write_ratio=write_ratio))
        await sim.elapse(400)
        await sim.destroy(d1)
        assert await sim.on(0, "unmap", sim.xen.unmap_foreign, d0, 0x800, 8) == 0
        await sim.populate(d2, 0x4000, sim.xen.heap.nr_free)
        await sim.elapse(1500)
        await sim.pause(d0)
        await sim.destroy(d0)
        await sim.destroy(d2)

    return main


def test_stale_reads_of_frames_the_new_owner_never_wrote_are_warnings_on_upstream() -> None:
    r = simulate(_reused_under(0.0), pcpus=2, profile="upstream", speculate=0.0)
    assert r.stop_reason == "done" and r.clean, r.explain()
    assert r.warning_kinds.get("unwritten", 0) > 0, r.warning_kinds
    assert any("before its new owner stored anything" in w for w in r.warnings)


def test_stale_writes_into_the_reused_frames_are_violations_on_upstream() -> None:
    r = simulate(_reused_under(1.0), pcpus=2, profile="upstream", speculate=0.0)
    assert r.violations and {v.cls for v in r.violations} == {"reused-other-domain"}, r.explain()
    assert all(v.mfn is not None and "dom2" in v.explain() for v in r.violations)


@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_the_same_scenario_is_clean_on_fixed(ratio: float) -> None:
    r = simulate(_reused_under(ratio), pcpus=2, profile="fixed", speculate=0.0)
    assert r.stop_reason == "done" and r.clean, r.explain()  # (pages put before the unlock flush: warnings)


# -- the two-step switch-in: hgatp names the new p2m with the vCPU's stale VMID until p2m_handle_vmenter --


async def _rollover_then_switch_back(sim: Scenario) -> None:
    """VMIDs 1..3 on one hart: the fourth vCPU rolls the generation over and takes VMID 1 from dom1.

    Run with no walk cache (--tlb-nonleaf 0), so a speculative walk starts at hgatp's root: under
    the stale VMID it reads dom1's tables, and what it fills dom4 later finds under its own VMID.
    """
    ds = []
    for i in range(1, 5):
        d = await sim.create_domain(i, vcpus=1, pool_pages=4)
        await sim.populate(d, 0, 256)
        d.vcpus[0].program = sim.pattern([(0, 256)])
        ds.append(d)
    for d in ds:  # dom1..3 get VMIDs 1..3; dom4 rolls over and gets VMID 1
        await sim.run_vcpu(d.vcpus[0], 0)
        await sim.elapse(200)
    await sim.run_vcpu(ds[0].vcpus[0], 0)  # dom1 again: hgatp = (dom1's root, VMID 1) until vmenter
    await sim.elapse(200)
    await sim.run_vcpu(ds[3].vcpus[0], 0)  # dom4, VMID 1 in this generation
    await sim.elapse(400)
    await sim.deschedule(0)
    for d in ds:
        await sim.destroy(d)


def _two_step(profile: str, speculate: float) -> Result:
    return simulate(
        _rollover_then_switch_back,
        pcpus=1,
        vmid_bits=2,
        tlb_leaf=1024,
        tlb_nonleaf=0,
        profile=profile,
        speculate=speculate,
    )


def test_the_two_step_switch_in_lets_a_speculative_walk_fill_under_another_vcpus_vmid() -> None:
    r = _two_step("upstream", 1.0)
    alias = [v for v in r.violations if v.cls == "vmid-alias"]
    assert alias, r.explain()
    v = alias[0]
    assert "dom4" in v.headline and "dom1's root" in v.headline and "VMID 1" in v.headline
    assert "p2m_handle_vmenter" in v.missing and "speculatively" in v.missing


def test_the_window_needs_speculation() -> None:
    assert _two_step("upstream", 0.0).clean


def test_fixed_assigns_the_vmid_before_hgatp_names_the_p2m() -> None:
    r = _two_step("fixed", 1.0)
    assert r.clean, r.explain()


# -- seed-v5: what the patch as posted could run --------------------------------------------------------


def test_seed_v5_panics_at_the_first_put_page() -> None:
    # with ARM's guest-fault handling: the patch's own do_trap dies at the guest's first page fault
    r = run(Config("teardown-under-load", profile="seed-v5+handle_guest_page_faults"))
    assert r.stop_reason == "panic" and "put_page: unimplemented" in r.violations[-1].headline


# -- configuration ----------------------------------------------------------------------------------------


def test_the_old_profile_name_still_runs_upstream_with_a_note() -> None:
    r = run(Config("foreign-remap", profile="riscv-tree"))
    assert r.config.profile == "upstream" and r.notes and "now called 'upstream'" in r.notes[0]
    p = subprocess.run(
        [sys.executable, "-m", "simulator", "run", "foreign-remap", "--profile", "riscv-tree"],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "deprecated" not in p.stdout
    assert "p2msim: note: profile 'riscv-tree' is now called 'upstream'" in p.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--vmid-bits", "15"], "VMID bits must be between 0 and 14"),
        (["--profile", "riscv-tre"], "did you mean 'riscv-tree'?"),
        (["--profile", "upstreem"], "did you mean 'upstream'?"),
        (["--xen-opt", "vmid=maybe"], "is not a boolean"),
        (["--xen-opt", "vmd=0"], "did you mean 'vmid'?"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(args: list[str], words: str) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "simulator", "run", "foreign-remap", *args], capture_output=True, text=True
    )
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and words in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_config_errors_from_the_api_too() -> None:
    with pytest.raises(ConfigError, match="did you mean 'fixed'"):
        run(Config("foreign-remap", profile="fixd"))
