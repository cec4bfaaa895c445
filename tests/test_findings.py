"""Violations by root cause: one cause per missing step, the same numbers in run, inspect and replay."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from simulator.engine.oracle import MAX_REPORTED
from simulator.engine.simulation import Config, run


def _p2msim(*args: str, cwd: Path) -> str:
    return subprocess.run([sys.executable, "-m", "simulator", *args], cwd=cwd, capture_output=True, text=True).stdout


def test_one_missing_flush_is_one_cause_and_every_command_counts_it_alike(tmp_path: Path) -> None:
    cmd = ["teardown-under-load", "--seed", "0", "--bug", "no-flush-before-table-free"]
    ran = _p2msim("run", *cmd, "--log", "run.jsonl", cwd=tmp_path)
    counts = "5 violations, 1 cause (27 harmful uses, repeats included)"
    assert f"VIOLATIONS: {counts}" in ran
    assert "CAUSE 1 of 1: flush-before-free missing in p2m_free_subtree: no p2m_tlb_flush between the unlink" in ran
    assert ran.count("     step  hart  event") == 1  # one full chain for the cause, a line for the other
    assert "VIOLATION 2 of 5 (cause 1, as violation 1): walk-through-reused-table" in ran
    assert "distinct" not in ran
    inspected = _p2msim("inspect", "run.jsonl", cwd=tmp_path)
    assert f"violations: {counts}" in inspected and "distinct" not in inspected
    assert "  cause 1: flush-before-free missing in p2m_free_subtree" in inspected
    replayed = _p2msim("replay", "run.jsonl", cwd=tmp_path)
    assert f"REPRODUCED: {counts}" in replayed


def test_a_cause_has_one_entry_per_missing_step_not_per_symptom() -> None:
    """A lost reference shows as two invariants per frame (a count nobody explains, a frame left behind):
    one cause, named by the put that never happened, from the events."""
    r = run(Config("foreign-unmap-reuse", seed=0, bugs=("leak-foreign-ref",)))
    assert len(r.causes) == 1 and r.findings == r.causes[0]["violations"] > 2
    assert "no put_page of mfn" in r.causes[0]["title"] or "put_page of dom0" in r.causes[0]["title"]
    assert all("p2m_put_foreign_page dropped nothing" in v.missing for v in r.violations)
    clean = run(Config("foreign-unmap-reuse", seed=0))
    assert not clean.violations and clean.causes == []


def test_a_double_put_names_the_function_that_put_twice() -> None:
    r = run(Config("foreign-unmap-reuse", seed=0, bugs=("put-foreign-twice",)))
    assert [c["title"] for c in r.causes] == ["invariant: one put_page too many in p2m_put_foreign_page"]
    v = r.violations[0]
    assert "p2m_put_foreign_page had dropped the last one itself" in v.missing
    assert [k for _s, _h, k, _t in v.chain] == ["free", "free"]


def test_a_capped_list_says_what_it_shows_and_keeps_the_first_of_every_cause() -> None:
    r = run(Config("foreign-unmap-reuse", seed=0, bugs=("leak-foreign-ref",)))
    assert r.findings > MAX_REPORTED == len(r.violations)
    text = r.explain()
    m = re.search(r"\((\d+) of (\d+) violations kept in full here, the first of every cause among them", text)
    assert m is not None and int(m[1]) == MAX_REPORTED and int(m[2]) == r.findings, text[-400:]
    assert "distinct" not in text
    firsts = {c["first"] for c in r.causes}
    assert firsts <= {v.n for v in r.violations}
