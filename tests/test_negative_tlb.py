"""Negative TLB entries: a hart may cache the invalid PTE its walk faulted on (supervisor.adoc: after
an invalid PTE is made valid, "a page-fault exception might occur", and software should then fence).

``--tlb-negative N`` gives each hart N such entries.  What a spurious fault does
is the profile's: the tree's do_trap dies; the fixed handler finds the page
mapped and fences the address locally before the retry.  ARM's own handler
(p2m_resolve_translation_fault) retries without a fence - right on ARM,
whose TLBs cache no faults - and on RISC-V the hart then faults on that page
for ever: the test's mutation, and the `livelock` finding.
"""

from __future__ import annotations

from typing import Any

from simulator.engine.bugs import register_bug
from simulator.engine.scenario import Scenario
from simulator.engine.simulation import Config, Result, run
from simulator.riscv.tlb import TlbEntry
from simulator.riscv.walker import Fault
from simulator.xen.hypervisor import Xen
from simulator.xen.p2m import INVALID_MFN


def _resolve_without_a_fence(xen: Xen) -> None:
    async def do_trap_guest_page_fault(fault: Any) -> None:
        hart = xen.this_hart()
        v = xen.curr_vcpu[hart.id]
        if v is None:
            return
        p2m = v.domain.p2m
        await xen.p2m_read_lock(p2m)
        mfn, _t, _order = xen.p2m_get_entry(p2m, fault.gfn)
        await xen.p2m_read_unlock(p2m)
        if mfn == INVALID_MFN:
            xen.emit("guest_fault.injected", gfn=fault.gfn, why=fault.reason, write=fault.write)
        # mapped: retry, as ARM does

    xen.do_trap_guest_page_fault = do_trap_guest_page_fault  # type: ignore[method-assign]


register_bug("t-resolve-without-fence", "the guest-fault handler retries a mapped address without a fence",
             _resolve_without_a_fence)  # fmt: skip


async def _touch_before_populate(sim: Scenario) -> None:
    """The guest runs over 16 pages of which 8 are there; the other 8 are populated while it runs."""
    d = await sim.create_domain(1, vcpus=1, pool_pages=4)
    await sim.populate(d, 0x100, 8)
    await sim.run_vcpu(d.vcpus[0], 1, sim.pattern([(0x100, 16)]))
    await sim.elapse(300)
    await sim.populate(d, 0x108, 8)
    await sim.elapse(2000)
    await sim.deschedule(1)
    await sim.destroy(d)


def _run(seed: int, negative: int, bugs: tuple[str, ...] = (), profile: str = "fixed") -> Result:
    config = Config("inline", seed=seed, pcpus=2, profile=profile, tlb_negative=negative, bugs=bugs)
    return run(config, main=_touch_before_populate)


# upstream's p2m flushes reach no hart (its dirty_cpumask is never set): only the handler can fence
NO_FLUSH = "upstream+handle_guest_page_faults"


def test_a_handler_that_does_not_fence_leaves_the_guest_faulting_for_ever() -> None:
    for seed in range(3):
        r = _run(seed, 8, ("t-resolve-without-fence",), NO_FLUSH)
        (v,) = [v for v in r.violations if v.cls == "livelock"]
        assert r.stop_reason == "livelock"
        assert v.cause is not None and v.cause.case == "fault-loop" and v.cause.function == "do_trap"
        assert "without an HFENCE.GVMA covering gfn" in v.missing
        assert [k for _s, _h, k, _t in v.chain] == ["fill", "store", "fault", "fault"]


def test_without_negative_entries_the_same_handler_is_right() -> None:
    for seed in range(3):
        assert _run(seed, 0, ("t-resolve-without-fence",), NO_FLUSH).clean


def test_the_fencing_handler_resolves_every_spurious_fault() -> None:
    for seed in range(3):
        r = _run(seed, 8, (), NO_FLUSH)
        assert r.clean and r.stats["negative_faults"] > 0, r.explain()


def test_fixed_stays_silent_with_negative_entries() -> None:
    for workload in ("balloon", "superpage-shatter", "teardown-under-load", "vcpu-migration"):
        r = run(Config(workload, seed=1, tlb_negative=8))
        assert r.clean and r.stats["negative_faults"] > 0, r.explain()


def test_a_fault_from_a_negative_entry_says_so_and_what_the_pte_is_now() -> None:
    table = [0] * 512
    e = TlbEntry(0, True, 1, 0, 0x108, 0, 0, 0, 0x79, 264, 0, 0x60, 81, ())
    e.set_source(table)  # type: ignore[arg-type]
    table[264] = 0x1B9DF
    f = Fault.from_negative(e, 0x108, False)
    assert not f.malformed
    assert f.describe() == (
        "PTE 0x79[264] = 0x0 at L0: invalid (V=0), as cached in a negative TLB entry (the PTE is 0x1b9df now)"
    )
