"""`p2msim sweep`: many seeds in worker processes, results streamed as they finish, crashes survived.

The command is exercised through ``simulator.cli.sweep.main`` (the sweep's options on the CLI's parser class and
its error handling, exactly what `p2msim sweep` runs) and through the library
function ``run_sweep``.  Seed ranges stay small: the whole file runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from simulator.cli import main as cli_main
from simulator.cli import sweep as sweep_cli
from simulator.engine.simulation import Config, ConfigError, run
from simulator.hunt import sweep
from simulator.hunt.replay import replay

ROOT = Path(__file__).resolve().parent.parent
FOREIGN_BUG = ["foreign-unmap-reuse", "--bug", "no-reuse-flush"]

# A tiny workload that misbehaves on the seeds it is told to: os._exit kills the worker process
# (a crash p2msim must survive), WorkloadError is bad input (exit 2).  Otherwise it maps and tears
# down one small domain, in a few thousand steps.
ROGUE = """
import os
import time

from simulator.engine.scenario import WorkloadError

PARAMS = {"crash": "", "fail": "", "slow": ""}


def _seeds(text):
    return {int(s) for s in text.split(",") if s}


async def main(sim):
    seed = sim.conductor.strategy.seed
    if seed in _seeds(sim.params["crash"]):
        os._exit(3)
    if seed in _seeds(sim.params["fail"]):
        raise WorkloadError(f"seed {seed} asked for the impossible")
    if seed in _seeds(sim.params["slow"]):
        time.sleep(1.0)  # wall-clock only: the run itself is unchanged
    d = await sim.create_domain(1, vcpus=2, pool_pages=2)
    await sim.populate(d, 0x10, 4)
    await sim.destroy(d)
"""

# foreign-unmap-reuse, but seed 0 takes a second longer in wall-clock time (same run otherwise)
SLOW_FIRST = """
import time

from workloads.foreign_unmap_reuse import PARAMS, main as inner


async def main(sim):
    if sim.conductor.strategy.seed == 0:
        time.sleep(1.0)
    await inner(sim)
"""


@pytest.fixture
def rogue(tmp_path: Path) -> str:
    path = tmp_path / "rogue.py"
    path.write_text(ROGUE)
    return str(path)


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def by_seed(path: Path) -> dict[int, dict[str, Any]]:
    return {r["seed"]: r for r in lines(path)}


def sweep_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    rc = sweep_cli.main([*argv, "--json"])
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out  # one object, nothing else on stdout
    return rc, orjson.loads(out)


# -- options --------------------------------------------------------------------------------------


def test_seed_range_is_half_open_and_bad_ranges_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert sweep_cli.seed_range("3:7") == range(3, 7)
    assert sweep_cli.seed_range("0x10:0x12") == range(16, 18)
    for bad in ("5:5", "7:3", "4", "a:b", "-1:3", ":3"):
        assert sweep_cli.main(["teardown-under-load", "--seeds", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("p2msim: error: ") and err.count("\n") == 1, err
        assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["nope-workload", "--seeds", "0:2"], "unknown workload"),
        (["teardown-under-load", "--seeds", "0:2", "--bug", "no-such-bug"], "unknown bug"),
        (["teardown-under-load", "--seeds", "0:2", "-p", "nope=1"], "no parameter 'nope'"),
        (["teardown-under-load", "--seeds", "0:2", "--profile", "nope"], "unknown profile"),
        (["teardown-under-load", "--seeds", "0:2", "--jobs", "0"], "at least one job"),
        (["teardown-under-load", "--seeds", "0:2", "--swarm", "--pcpus", "3"], "--swarm draws --pcpus"),
        (["teardown-under-load", "--seeds", "0:2", "--swarm", "--strategy", "pct"], "--swarm draws --strategy"),
        (["teardown-under-load", "--seeds", "0:2", "--out", "/nonexistent-dir/x.jsonl"], "cannot write"),
        (["teardown-under-load", "--seeds", "0:2", "--cluster", "garbage"], "cannot reach the Dask scheduler"),
    ],
)
def test_bad_input_is_exit_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    if "--cluster" in argv:
        pytest.importorskip("dask.distributed")
    assert sweep_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("p2msim: error: ") and err.count("\n") == 1, err
    assert message in err


def test_log_that_names_a_file_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "a-file"
    f.write_text("")
    assert sweep_cli.main(["teardown-under-load", "--seeds", "0:2", "--log", str(f)]) == 2
    assert "names a directory" in capsys.readouterr().err


def test_missing_dask_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "dask.distributed", None)  # import fails as if not installed
    assert sweep_cli.main([*FOREIGN_BUG, "--seeds", "0:2", "--cluster", "tcp://127.0.0.1:8786"]) == 2
    err = capsys.readouterr().err
    assert "install p2msim[cluster]" in err and err.count("\n") == 1


# -- swarm draws ----------------------------------------------------------------------------------


def test_swarm_draw_is_a_pure_function_of_the_seed_within_its_ranges() -> None:
    draws = [sweep.swarm_draw(s) for s in range(300)]
    assert draws == [sweep.swarm_draw(s) for s in range(300)]
    # pinned: a change to the derivation would silently change what every old seed meant
    assert draws[0] == {
        "pcpus": 5,
        "tlb_leaf": 128,
        "tlb_nonleaf": 11,
        "vmid_bits": 8,
        "strategy": "random",
        "pct_depth": 3,
        "speculate": 0.075,
    }
    for d in draws:
        assert sweep.SWARM_PCPUS[0] <= d["pcpus"] <= sweep.SWARM_PCPUS[1]
        assert sweep.SWARM_TLB_LEAF[0] <= d["tlb_leaf"] <= sweep.SWARM_TLB_LEAF[1]
        assert sweep.SWARM_TLB_NONLEAF[0] <= d["tlb_nonleaf"] <= sweep.SWARM_TLB_NONLEAF[1]
        assert sweep.SWARM_VMID_BITS[0] <= d["vmid_bits"] <= sweep.SWARM_VMID_BITS[1]
        assert sweep.SWARM_PCT_DEPTH[0] <= d["pct_depth"] <= sweep.SWARM_PCT_DEPTH[1]
        assert d["speculate"] == 0.0 or sweep.SWARM_SPECULATE[0] <= d["speculate"] <= sweep.SWARM_SPECULATE[1]
    assert {d["strategy"] for d in draws} == {"random", "pct"}
    off = sum(d["speculate"] == 0.0 for d in draws)
    assert 40 < off < 110  # about a quarter of the seeds do not speculate
    assert len({d["pcpus"] for d in draws}) == 4 and len({d["tlb_leaf"] for d in draws}) > 50


def test_swarm_lines_carry_the_draw_and_a_replay_command_that_reproduces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "swarm.jsonl"
    rc, summary = sweep_json(["foreign-unmap-reuse", "--seeds", "0:4", "--swarm", "--out", str(out)], capsys)
    assert summary["swarm"] is True and summary["runs"] == 4
    results = by_seed(out)
    assert sorted(results) == [0, 1, 2, 3]
    for seed, r in results.items():
        assert r["swarm"] == sweep.swarm_draw(seed)
        assert f"--tlb-leaf {r['swarm']['tlb_leaf']}" in r["replay"] or r["swarm"]["tlb_leaf"] == 64
    assert rc == (1 if summary["failing"] else 0)
    # the replay command, run through the real CLI, gives the same run
    seed = 3
    assert cli_main([*shlex.split(results[seed]["replay"])[1:], "--json"]) in (0, 1)
    replayed = orjson.loads(capsys.readouterr().out)
    assert replayed["digest"] == results[seed]["digest"]
    assert replayed["seed"] == seed and replayed["strategy"] == results[seed]["swarm"]["strategy"]


# -- sweeps ---------------------------------------------------------------------------------------


def test_clean_sweep_exits_0_and_streams_one_deterministic_line_per_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "clean.jsonl"
    rc, summary = sweep_json(["teardown-under-load", "--seeds", "0:4", "--out", str(out)], capsys)
    assert rc == 0
    assert summary["runs"] == 4 and summary["failing"] == [] and summary["first_failing"] is None
    assert summary["crashed"] == [] and summary["budget_hits"] == 0 and summary["runs_per_s"] > 0
    assert capsys.readouterr().err == ""  # --json: no progress lines either
    results = by_seed(out)
    assert sorted(results) == [0, 1, 2, 3]
    assert {r["verdict"] for r in results.values()} == {"clean"}
    direct = run(Config("teardown-under-load", seed=2))
    assert results[2]["digest"] == direct.digest and results[2]["steps"] == direct.stats["steps"]
    assert results[2]["replay"] == "p2msim run teardown-under-load --seed 2"


def test_failing_sweep_json_matches_the_result_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fail.jsonl"
    rc, summary = sweep_json([*FOREIGN_BUG, "--seeds", "6:18", "--out", str(out)], capsys)
    assert rc == 1
    results = by_seed(out)
    assert sorted(results) == list(range(6, 18))
    failing = sorted(s for s, r in results.items() if r["verdict"] == "violation")
    assert summary["failing"] == failing and len(failing) >= 6  # the bug fails on many seeds
    assert 9 not in failing  # a seed this bug leaves clean, so the list is not just "everything"
    assert summary["first_failing"] == failing[0]
    assert summary["replay"] == [results[s]["replay"] for s in failing]
    expected: dict[str, int] = {}
    for s in failing:
        assert results[s]["first_violation_seq"] is not None and results[s]["classes"]
        for c in results[s]["classes"]:
            expected[c] = expected.get(c, 0) + 1
    assert summary["classes"] == expected
    assert summary["seeds"] == "6:18" and summary["workload"] == "foreign-unmap-reuse"


def test_human_summary_and_plain_progress(capsys: pytest.CaptureFixture[str]) -> None:
    assert sweep_cli.main([*FOREIGN_BUG, "--seeds", "0:14"]) == 1
    captured = capsys.readouterr()
    text = captured.out
    assert "failing seeds: 10 (71.4%)   first: 0   classes: reused-" in text
    assert "hit step budget: 0 (0.0%)" in text and "runs/s" in text and "crashed seeds: 0" in text
    assert "  p2msim run foreign-unmap-reuse --seed 0 --bug no-reuse-flush" in text
    assert "--seed 5 " not in text  # clean
    assert "  ... and" not in text  # 9 failing, all shown
    # stderr is not a terminal here: plain periodic lines, ending at 100%
    assert "sweep: 14/14 seeds (100%)  failing 10  crashed 0" in captured.err


def test_rich_progress_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert sweep_cli.main([*FOREIGN_BUG, "--seeds", "0:3"]) == 1
    captured = capsys.readouterr()
    assert "3/3" in captured.err and "failing 3" in captured.err
    assert "sweep: 3/3 seeds" not in captured.err  # the bar, not the plain lines
    assert "failing seeds: 3 (100.0%)" in captured.out


def test_stop_on_first_reports_the_lowest_failing_seed(tmp_path: Path) -> None:
    # seed 0 fails but finishes a second after seed 1 (which fails too): a sweep that stopped at the
    # first failure to ARRIVE would report 1; the lowest failing seed is 0, and seeds above 1 never run
    wl = tmp_path / "slow_first.py"
    wl.write_text(SLOW_FIRST)
    out = tmp_path / "stop.jsonl"
    base = Config(str(wl), bugs=("no-reuse-flush",))
    s = sweep.run_sweep(sweep.Sweep(base, range(0, 30)), jobs=2, stop_on_first=True, out=str(out))
    assert s.stopped_early and s.first_failing == 0
    assert s.failing == [0, 1] and s.runs == 2
    assert sorted(by_seed(out)) == [0, 1]


def test_stop_on_first_keeps_the_clean_seeds_below_the_failure(tmp_path: Path) -> None:
    out = tmp_path / "stop.jsonl"
    s = sweep.run_sweep(
        sweep.Sweep(Config("foreign-unmap-reuse", bugs=("no-reuse-flush",)), range(8, 40)),
        jobs=2,
        stop_on_first=True,
        out=str(out),
    )
    assert s.first_failing == 10 and s.exit_code == 1  # 8 and 9 are clean under this bug, 10 fails
    results = by_seed(out)
    assert results[9]["verdict"] == "clean" and results[10]["verdict"] == "violation"
    assert s.runs < 10  # only the seeds in flight when 10 failed ran past it


def test_a_worker_that_dies_is_a_crashed_seed_and_the_sweep_goes_on(
    rogue: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "crash.jsonl"
    # seed 1 sleeps, so it is still running in the other worker when seed 2 kills its own: the pool breaks
    # under both, and seed 1 must get its real result from a re-run, not be blamed
    argv = [rogue, "--seeds", "0:8", "--pcpus", "2", "-p", "crash=2,3", "-p", "slow=1", "--out", str(out)]
    rc = sweep_cli.main(argv)
    assert rc == 1
    text = capsys.readouterr().out
    assert "CRASHED seeds: 2: 2, 3" in text and "seed 2: the worker process died" in text
    assert "failing seeds: 0 (0.0%)" in text
    results = by_seed(out)
    assert sorted(results) == list(range(8))  # every seed has its line: none lost with the pool
    assert {s for s, r in results.items() if r["verdict"] == "crashed"} == {2, 3}
    # the rogue workload runs no vCPU: a real verdict, and an honest one (it could not have found anything)
    assert all(r["verdict"] == "vacuous" and r["digest"] for s, r in results.items() if s not in (2, 3))
    assert results[2]["replay"].startswith("p2msim run ") and "--seed 2" in results[2]["replay"]


def test_a_lone_crash_with_the_json_summary(rogue: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, summary = sweep_json([rogue, "--seeds", "0:5", "--pcpus", "2", "-p", "crash=4", "--jobs", "1"], capsys)
    assert rc == 1 and summary["crashed"] == [4] and summary["runs"] == 5 and summary["failing"] == []
    assert "died" in summary["crash_errors"]["4"]


def test_a_workload_that_raises_is_bad_input_naming_the_seed(
    rogue: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "err.jsonl"
    assert sweep_cli.main([rogue, "--seeds", "0:6", "--pcpus", "2", "-p", "fail=1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("p2msim: error: seed 1: ") and "asked for the impossible" in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert by_seed(out)[1]["verdict"] == "error"


def test_log_dir_keeps_the_failing_seeds_logs_and_schedules_only(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    s = sweep.run_sweep(
        sweep.Sweep(Config("foreign-unmap-reuse", bugs=("no-reuse-flush",)), range(9, 11), log_dir=str(logs))
    )
    assert s.failing == [10]
    assert sorted(p.name for p in logs.iterdir()) == [
        "foreign-unmap-reuse-seed10.jsonl",
        "foreign-unmap-reuse-seed10.jsonl.schedule.json",
    ]
    rp = replay(str(logs / "foreign-unmap-reuse-seed10.jsonl.schedule.json"))
    assert rp.reproduced and rp.result.violations


# -- interruption and the cluster -----------------------------------------------------------------


def test_ctrl_c_keeps_every_finished_line_and_exits_130(tmp_path: Path) -> None:
    out = tmp_path / "int.jsonl"
    cmd = [sys.executable, "-m", "simulator", "sweep", "teardown-under-load", "--seeds", "0:200"]
    proc = subprocess.Popen(
        [*cmd, "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a shell job: Ctrl-C reaches the workers too
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 3):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted after" in stderr
    assert "INTERRUPTED" in stdout
    done = lines(out)  # every line is whole JSON
    assert 3 <= len(done) < 200 and all(r["verdict"] == "clean" for r in done)


def test_cluster_runs_the_same_seeds_with_the_same_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    distributed = pytest.importorskip("dask.distributed")
    local, remote = tmp_path / "local.jsonl", tmp_path / "cluster.jsonl"
    argv = [*FOREIGN_BUG, "--seeds", "8:14"]
    rc_local, s_local = sweep_json([*argv, "--out", str(local)], capsys)
    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=2, dashboard_address=None) as lc:
        rc, s = sweep_json([*argv, "--out", str(remote), "--cluster", lc.scheduler_address], capsys)
        rc_stop, s_stop = sweep_json([*argv, "--stop-on-first", "--cluster", lc.scheduler_address], capsys)
    assert rc == rc_local == 1
    assert s["failing"] == s_local["failing"] and s["classes"] == s_local["classes"] and s["runs"] == 6
    strip = ("seconds",)
    assert {k: {f: v for f, v in r.items() if f not in strip} for k, r in by_seed(remote).items()} == {
        k: {f: v for f, v in r.items() if f not in strip} for k, r in by_seed(local).items()
    }
    assert rc_stop == 1 and s_stop["stopped_early"] and s_stop["first_failing"] == s_local["failing"][0]


def test_prepare_rejects_an_empty_range() -> None:
    with pytest.raises(ConfigError, match="empty"):
        sweep.prepare(sweep.Sweep(Config("teardown-under-load"), range(3, 3)))
