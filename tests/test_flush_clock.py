"""The TLB flush clock as a heap policy (``base+tlbflush_clock``): x86's tlbflush_clock/tlbflush_filter.

The tree's clock reads 0 and its filter is empty; with the policy a full flush
ticks the clock and stamps the harts it reached, a freed page records the
time, and the flush on reuse leaves out harts that flushed fully since.  The
oracle judges the result by what each hart's TLB holds, so a clock that
lies is caught even though the filter trusted it: the two mutations below
(a page stamp left at the tree's 0, targets stamped before the call) are the
test's own; tests/test_cause.py checks the causes they get.
"""

from __future__ import annotations

import pytest

from simulator.engine.bugs import register_bug
from simulator.engine.simulation import Config, run
from simulator.xen.hypervisor import Xen
from simulator.xen.profiles import lookup

CLOCK = "fixed+tlbflush_clock"


def _stamp_zero(xen: Xen) -> None:
    def page_set_tlbflush_timestamp(pg: int) -> None:
        xen.heap.tlbflush_timestamp[pg] = 0

    xen.page_set_tlbflush_timestamp = page_set_tlbflush_timestamp  # type: ignore[method-assign]


register_bug("t-clock-stamp-zero", "a freed page keeps the stamp 0 while the filter is on", _stamp_zero)


def test_the_policy_is_off_everywhere_and_switched_on_by_name() -> None:
    assert not any(lookup(p).tlbflush_clock for p in ("fixed", "upstream", "arm-broadcast", "seed-v5"))
    p = lookup("upstream+tlbflush_clock")
    assert p.tlbflush_clock and not p.maintain_dirty_mask
    assert p.description.endswith("with the policy tlbflush_clock")


@pytest.mark.parametrize("workload", ["foreign-unmap-reuse", "balloon", "teardown-under-load", "pool-churn"])
def test_the_filter_skips_harts_and_stays_silent(workload: str) -> None:
    r = run(Config(workload, seed=1, profile=CLOCK))
    assert r.clean, r.explain()  # (balloon warns on fixed too: stale reads of freed, unreused frames)
    assert r.stats["tlbflush_filtered"] > 0  # it did leave harts out


def test_a_lying_clock_is_caught_by_what_the_tlbs_hold() -> None:
    r = run(Config("foreign-unmap-reuse", seed=0, profile=CLOCK, bugs=("t-clock-stamp-zero",)))
    assert r.violations and all(v.cause is not None for v in r.violations), r.explain()
    assert {v.cause.case for v in r.violations if v.cause} == {"not-in-mask/filtered"}


def test_without_the_policy_the_same_stamp_is_the_trees_and_harmless() -> None:
    for seed in range(3):
        r = run(Config("foreign-unmap-reuse", seed=seed, bugs=("t-clock-stamp-zero",)))
        assert r.clean, r.explain()
        assert "tlbflush_filtered" not in r.stats
