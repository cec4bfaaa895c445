"""The table-freeing strategies and `p2msim study table-free`: safe ones silent, the control caught, and a
report whose every conclusion comes from its cells."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from simulator.engine.simulation import Config, run
from simulator.hunt import study as st
from simulator.report import schema
from simulator.report import study as report
from simulator.xen.profiles import TABLE_FREE, lookup
from tests.conftest import TINY_STUDY_GROUP

HUNTS = ("superpage-shatter", "teardown-under-load")


@pytest.mark.parametrize("strategy", ["flush-per-table", "gather", "pool-stamp"])
def test_a_safe_strategy_keeps_every_invariant_in_the_hunts(strategy: str) -> None:
    for w in HUNTS:
        for seed in range(2):
            r = run(Config(w, seed=seed, profile=st.profile_of(strategy)))
            assert r.clean, f"{strategy} on {w} seed {seed}: {r.explain()}"


def test_the_unsafe_control_is_caught_by_the_same_hunts() -> None:
    for w in HUNTS:
        found = [run(Config(w, seed=seed, profile=st.profile_of("deferred-flush-pool-free"))) for seed in range(2)]
        assert any(r.violations for r in found), w
        assert {v.cls for r in found for v in r.violations} <= {"walk-through-reused-table", "reused-table-leaf"}


def test_gather_holds_tables_until_the_unlock_and_flushes_once() -> None:
    """The tree flushes once per level-0 table freed; gather once per lock hold (and the control is silent
    here only because nothing reuses a table inside this hypercall)."""
    runs = {
        s: run(
            Config("table-free", seed=0, strategy="timed", profile=st.profile_of(s), params=(("mib", "16"),))
        ).measures
        for s in TABLE_FREE
    }
    per_table, once = runs["flush-per-table"]["fences"], runs["gather"]["fences"]
    assert once == 3 and per_table == 3 * 3  # 3 remote harts; three 2 MiB tables freed between 2 MiB and 8 MiB
    assert runs["pool-stamp"]["fences"] == once


def test_table_freeing_policies_are_one_at_a_time_and_pool_stamp_brings_the_clock() -> None:
    with pytest.raises(ValueError, match="two table-freeing policies"):
        lookup("fixed+gather_tables+pool_stamp_tables")
    p = lookup("fixed+pool_stamp_tables")
    assert p.pool_stamp_tables and p.tlbflush_clock


@pytest.fixture(scope="module")
def tiny(tiny_study: tuple[str, Path]) -> tuple[dict[str, Any], Path]:
    """The study as `p2msim study --json` printed it (its findings as computed from the runs), and its report."""
    printed, out = tiny_study
    return json.loads(printed), out


@pytest.mark.xdist_group(TINY_STUDY_GROUP)  # one worker makes the tiny study, once
def test_the_tiny_study_has_the_documented_shape(tiny: tuple[dict[str, Any], Path]) -> None:
    body, out = tiny
    published = schema.load("study-table-free-1.json")
    on_disk = json.loads((out / "table-free.json").read_text())
    assert [e.message for e in Draft202012Validator(published).iter_errors(on_disk)] == []
    assert {c["strategy"] for c in body["cells"]} == set(TABLE_FREE)
    assert {c["op"] for c in body["cells"]} == set(st.OPS)


@pytest.mark.xdist_group(TINY_STUDY_GROUP)  # one worker makes the tiny study, once
def test_the_studys_findings_are_what_its_cells_and_hunts_say(tiny: tuple[dict[str, Any], Path]) -> None:
    body, out = tiny
    f = body["findings"]
    assert f["control_caught"] and body["safety"]["deferred-flush-pool-free"]["failing"] > 0
    assert set(f["safe"]) == {"flush-per-table", "gather", "pool-stamp"} and not f["unsafe"]
    shatter = {c["strategy"]: c for c in body["cells"] if c["op"] == "shatter" and c["harts"] == 4}
    # the tight pool's split takes a table the operation freed: under the control it is one that other
    # harts still cache, and the timed cell itself finds the walk through it
    assert shatter["deferred-flush-pool-free"]["violations"] > 0
    assert all(shatter[s]["violations"] == 0 for s in f["safe"])
    # a tight pool makes gather flush early (its split needs a table it holds), so it gains only where
    # the pool has room: in decrease_reservation, one flush for the three tables against three
    decrease = {c["strategy"]: c for c in body["cells"] if c["op"] == "decrease" and c["fence_scale"] == 1.0}
    assert decrease["gather"]["fences"] * 3 == decrease["flush-per-table"]["fences"] > 0
    assert shatter["gather"]["fences"] <= shatter["flush-per-table"]["fences"]
    md = (out / "table-free.md").read_text()
    said = st.answer(st.reload(str(out / "table-free.json")))  # (the printed JSON's keys are all strings)
    assert said in md and "was caught" in said
    assert st.answer(body) == said  # the answer from the printed JSON (string keys) is the same
    again = st.findings(json.loads((out / "table-free.json").read_text()))  # --from: computed again from the JSON
    assert json.loads(json.dumps(again)) == json.loads(json.dumps(f))


@pytest.mark.xdist_group(TINY_STUDY_GROUP)
def test_the_report_says_so_when_matplotlib_is_missing(
    tiny: tuple[dict[str, Any], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body, out = tiny
    pytest.importorskip("matplotlib")
    assert (out / "table-free-fences.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    written = report.write(st.reload(str(out / "table-free.json")), tmp_path, body["command"])
    assert not list(tmp_path.glob("*.png")) and len(written) == 2
    assert "matplotlib is not installed" in (tmp_path / "table-free.md").read_text()


def test_crossovers_are_where_two_series_change_places() -> None:
    series = {"a": {16: 10.0, 64: 30.0, 256: 100.0}, "b": {16: 20.0, 64: 25.0, 256: 50.0}}
    (x,) = st.crossovers(series, "a", "b")
    assert 16 < x < 64
    assert st.crossovers({"a": {1: 1.0, 2: 2.0}, "b": {1: 2.0, 2: 3.0}}, "a", "b") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["study", "tablefree"], "unknown study 'tablefree'"),
        (["study", "table-free", "--grid", "huge"], "unknown grid 'huge'"),
        (["study", "table-free", "--quick", "--grid", "tiny"], "--quick is --grid quick"),
        (["study", "table-free", "--from", "/nonexistent.json"], "not a study's JSON"),
    ],
)
def test_bad_study_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    r = subprocess.run([sys.executable, "-m", "simulator", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr


ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_report_passes_its_schema_and_the_readme_quotes_it() -> None:
    body = json.loads((ROOT / "docs/study/table-free.json").read_text())
    published = schema.load("study-table-free-1.json")
    assert [e.message for e in Draft202012Validator(published).iter_errors(body)] == []
    assert body["grid"] == "full" and body["findings"]["control_caught"]
    r = subprocess.run(
        [sys.executable, "-m", "simulator.report.study", "README.md", "docs/study/table-free.json", "--check"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, (
        "the README's study block drifted: python3 -m simulator.report.study README.md docs/study/table-free.json"
    )
    assert (
        st.answer(st.reload(str(ROOT / "docs/study/table-free.json")))
        in (ROOT / "docs/study/table-free.md").read_text()
    )
