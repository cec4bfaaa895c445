"""The pytest plugin as a user meets it: a marker that fans out over seeds, and a fixture."""

from __future__ import annotations

import pytest

USER_TESTS = """
import pytest

@pytest.mark.p2msim(workload="foreign-unmap-reuse", seeds=range(2))
def test_clean(p2msim_result):
    assert p2msim_result.stats["accesses"] > 0

@pytest.mark.p2msim(workload="foreign-unmap-reuse", seeds=[0], bugs=["no-reuse-flush"], expect="violation")
def test_expected_bug(p2msim_result):
    assert p2msim_result.violations[0].cls.startswith("reused-")

@pytest.mark.p2msim(workload="foreign-unmap-reuse", seeds=[0], bugs=["no-reuse-flush"])
def test_unexpected_bug(p2msim_result):
    pass

def test_fixture_scenario(p2msim):
    async def main(sim):
        d = await sim.create_domain(1, vcpus=1, pool_pages=2)
        await sim.populate(d, 0x10, 4)
        await sim.run_vcpu(d.vcpus[0], 0, sim.pattern([(0x10, 4)]))
        await sim.elapse(300)
        await sim.destroy(d)
    r = p2msim.scenario(main, pcpus=1)
    assert r.clean and r.stats["accesses"] > 0
"""


def test_marker_fans_out_and_failures_explain_themselves(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    res = pytester.runpytest("-v", "-p", "no:cacheprovider")
    res.assert_outcomes(passed=4, failed=1)
    out = res.stdout.str()
    assert "test_clean[seed=0] PASSED" in out and "test_clean[seed=1] PASSED" in out
    assert "test_unexpected_bug[seed=0] FAILED" in out
    assert "p2msim found a violation" in out
    assert "replay: p2msim run foreign-unmap-reuse --seed 0 --bug no-reuse-flush" in out
