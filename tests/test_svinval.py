"""Svinval: an invalidation is complete only at the final SFENCE.INVAL.IR, and ordered after earlier
stores only by an SFENCE.W.INVAL before it (the Svinval chapter of the privileged spec).

``--svinval HARTS`` gives harts the extension; their firmware then runs a
remote fence as SFENCE.W.INVAL, HINVAL.GVMA..., SFENCE.INVAL.IR, and Xen code
may use the instructions (on a hart without them they trap: Xen dies).  The
mutations below are the test's own: a firmware that forgets one of the two
fences, and a Xen whose local flush uses the instructions.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from simulator.engine.bugs import register_bug
from simulator.engine.simulation import Config, run
from simulator.xen.hypervisor import Xen


def _firmware_without(insn: str):  # type: ignore[no-untyped-def]
    def apply(xen: Xen) -> None:
        for h in xen.harts:
            setattr(h, insn, lambda: None)

    return apply


register_bug("t-no-inval-ir", "the firmware's fence never runs SFENCE.INVAL.IR", _firmware_without("sfence_inval_ir"))
register_bug("t-no-w-inval", "the firmware's fence runs no SFENCE.W.INVAL first", _firmware_without("sfence_w_inval"))


def _xen_flushes_with_svinval(xen: Xen) -> None:
    def local_hfence_gvma_all() -> None:
        hart = xen.this_hart()
        hart.sfence_w_inval()
        hart.hinval_gvma(None, None)
        hart.sfence_inval_ir()

    xen.local_hfence_gvma_all = local_hfence_gvma_all  # type: ignore[method-assign]


register_bug(
    "t-xen-svinval", "Xen's local flush is SFENCE.W.INVAL; HINVAL.GVMA; SFENCE.INVAL.IR", _xen_flushes_with_svinval
)


@pytest.mark.parametrize(
    ("bug", "why"),
    [
        ("t-no-inval-ir", "HINVAL.GVMA not completed by an SFENCE.INVAL.IR"),
        ("t-no-w-inval", "HINVAL.GVMA with no SFENCE.W.INVAL before it"),
    ],
)
def test_an_incomplete_invalidation_is_found_and_named(bug: str, why: str) -> None:
    r = run(Config("teardown-under-load", seed=1, bugs=(bug,), svinval="all"))
    assert r.violations, r.explain()
    for v in r.violations:
        assert v.cause is not None and v.cause.case == "incomplete", v.missing
        assert why in v.cause.text


def test_only_the_harts_with_svinval_keep_entries() -> None:
    r = run(Config("teardown-under-load", seed=1, bugs=("t-no-w-inval",), svinval="1"))
    assert r.violations and {v.hart for v in r.violations} == {1}, r.explain()


@pytest.mark.parametrize("bug", ["t-no-inval-ir", "t-no-w-inval"])
def test_without_svinval_the_same_firmware_mutation_changes_nothing(bug: str) -> None:
    assert run(Config("teardown-under-load", seed=1, bugs=(bug,))).clean


@pytest.mark.parametrize("workload", ["teardown-under-load", "vcpu-migration", "pool-churn"])
def test_the_complete_sequence_is_silent(workload: str) -> None:
    r = run(Config(workload, seed=1, svinval="all"))
    assert r.clean and not r.warning_count, r.explain()


def test_xen_code_may_use_the_instructions_where_the_hart_has_them() -> None:
    assert run(Config("vcpu-migration", seed=1, bugs=("t-xen-svinval",), svinval="all")).clean


def test_on_a_hart_without_svinval_they_trap_and_xen_dies() -> None:
    r = run(Config("vcpu-migration", seed=1, bugs=("t-xen-svinval",)))
    (v,) = r.violations
    assert v.cls == "panic"
    assert "Illegal instruction: SFENCE.W.INVAL on hart" in v.headline and "does not have Svinval" in v.headline


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("x", "--svinval takes 'all' or hart IDs like 0,2, not 'x'"),
        ("0,9", "--svinval names hart 9, but the machine has harts 0-3"),
    ],
)
def test_bad_hart_lists_are_one_line_errors(value: str, error: str) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "simulator", "run", "pool-churn", "--svinval", value], capture_output=True, text=True
    )
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [f"p2msim: error: {error}"]
