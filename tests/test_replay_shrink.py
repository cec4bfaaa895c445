"""Exact replay from a log or a schedule, divergence reports, and shrinking."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from simulator.cli import main as cli_main
from simulator.engine.simulation import Config, run
from simulator.hunt.replay import replay
from simulator.hunt.shrink import shrink_file

# bug -> (workload, seed that fails), from the detection tests' catalogue
FAILING = {
    "no-flush-before-table-free": ("teardown-under-load", 0),
    "async-remote-fence": ("teardown-under-load", 2),
    "no-reuse-flush": ("foreign-unmap-reuse", 4),  # the memory-pressure retries leave ddmin more to keep on most seeds
}


def _failing_log(tmp_path: Path, bug: str) -> tuple[Path, object]:
    workload, seed = FAILING[bug]
    log = tmp_path / f"{bug}.jsonl"
    r = run(Config(workload, seed=seed, bugs=(bug,), log=str(log)))
    assert r.violations, f"{bug} no longer fails on {workload} seed {seed}"
    return log, r


def test_a_failing_run_saves_its_schedule_next_to_the_log(tmp_path: Path) -> None:
    log, r = _failing_log(tmp_path, "no-flush-before-table-free")
    sched = Path(str(log) + ".schedule.json")
    assert r.schedule_path == str(sched) and sched.is_file()  # type: ignore[attr-defined]
    data = orjson.loads(sched.read_bytes())
    assert data["p2msim_schedule"] == 1 and data["config"]["seed"] == 0
    assert data["verdict"]["classes"] == ["walk-through-reused-table"]
    assert [tuple(d) for d in data["decisions"]] == r.decisions  # type: ignore[attr-defined]


def test_a_clean_run_saves_no_schedule(tmp_path: Path) -> None:
    log = tmp_path / "clean.jsonl"
    r = run(Config("teardown-under-load", seed=1, log=str(log)))
    assert not r.violations and r.schedule_path is None
    assert not Path(str(log) + ".schedule.json").exists()


@pytest.mark.parametrize("source", ["log", "schedule"])
def test_replay_confirms_verdict_and_digest(tmp_path: Path, source: str, capsys: pytest.CaptureFixture[str]) -> None:
    log, r = _failing_log(tmp_path, "async-remote-fence")
    path = log if source == "log" else Path(str(log) + ".schedule.json")
    assert cli_main(["replay", str(path), "--backend", "asyncio"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("REPRODUCED:") and r.digest in out  # type: ignore[attr-defined]


def test_replay_reports_where_it_diverged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log, _ = _failing_log(tmp_path, "no-flush-before-table-free")
    sched = Path(str(log) + ".schedule.json")
    data = orjson.loads(sched.read_bytes())
    k = len(data["decisions"]) // 3
    at = data["decisions"][k][0]
    del data["decisions"][k]  # the recorded run switched here; this replay will not
    edited = tmp_path / "edited.json"
    edited.write_bytes(orjson.dumps(data))
    rp = replay(edited)
    assert not rp.same_digest and rp.diverged_at is not None
    # the replay follows the edited list up to the hole; it parts from it at or after the hole
    assert at <= rp.diverged_at <= data["decisions"][-1][0]
    assert cli_main(["replay", str(edited)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("DIVERGED:") and "the schedules part ways at step" in out


def test_replay_of_something_else_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text('{"hello": 1}')
    assert cli_main(["replay", str(junk)]) == 2
    assert "not a p2msim schedule" in capsys.readouterr().err


@pytest.mark.parametrize("bug", sorted(FAILING))
def test_shrinking_meets_the_target_and_replays(tmp_path: Path, bug: str) -> None:
    log, r = _failing_log(tmp_path, bug)
    s = shrink_file(log, max_seconds=90)
    cls = r.violations[0].cls  # type: ignore[attr-defined]
    assert s.cls == cls
    # the target: a tenth of the original's context switches that were choices (preemptions), or fewer than 20
    assert s.after.preemptions <= s.before.preemptions // 10 or s.after.preemptions < 20, (s.before, s.after)
    assert s.after.steps <= s.before.steps and s.after.harts <= s.before.harts
    assert s.path is not None and s.path.is_file()
    rp = replay(s.path)
    assert rp.reproduced and rp.result.violations[0].cls == cls
    data = orjson.loads(s.path.read_bytes())
    assert len(data["decisions"]) >= s.after.switches and data["shrunk_from"]["switches"] == s.before.switches
    assert data["fallback"] in ("fair", "exact")


def test_shrink_cli_prints_sizes_and_inspect_takes_the_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, _ = _failing_log(tmp_path, "no-reuse-flush")
    out_path = tmp_path / "min.json"
    assert cli_main(["shrink", str(log), "-o", str(out_path), "--max-seconds", "60"]) == 0
    out = capsys.readouterr().out
    assert "before:" in out and "after:" in out and str(out_path) in out
    assert cli_main(["inspect", str(out_path), "--violation", "1"]) == 0
    assert "stale use" in capsys.readouterr().out
