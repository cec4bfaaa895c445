"""p2msim under hostile input, faults and signals: every probe of issue 9, kept.

Each test injects the fault (bad input, a full disk, a missing directory, a
signal, a killed worker, a workload that misbehaves) and asserts the outcome
exactly: the exit code, the one line on stderr, and that every file left is
complete (or gone).  They run the command line as a user does, in a
subprocess.  Read-only directories do not stop root, so those probes use
paths that fail for everyone (/dev/full, a directory that does not exist, a
file where a directory should be); the chmod probe runs only for other users.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from simulator.engine.simulation import Config
from simulator.hunt.sweep import Sweep, swarm_draw

P2MSIM = [sys.executable, "-m", "simulator"]
BUG = ("--bug", "no-flush-before-table-free")  # teardown-under-load seed 0 finds it


def p2msim(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300):
    return subprocess.run(
        [*P2MSIM, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env={**os.environ, **(env or {})}
    )


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    """The command's stderr, which must be exactly one line (no traceback)."""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def complete_jsonl(path: Path) -> list[dict]:
    raw = path.read_bytes()
    assert not raw or raw.endswith(b"\n"), f"{path} ends mid-line"
    return [orjson.loads(line) for line in raw.splitlines()]


# -- 1. false verdicts --------------------------------------------------------------------------------


@pytest.mark.parametrize("workload", ["teardown-under-load", "vmid-rollover"])
def test_too_few_vmids_for_one_vmid_per_domain_is_a_configuration_limit(workload: str) -> None:
    r = p2msim("run", workload, "--profile", "arm-broadcast", "--vmid-bits", "2")
    assert r.returncode == 2
    assert one_line(r) == (
        f"p2msim: error: workload {workload} keeps 4 domains alive at once, and profile arm-broadcast gives each "
        "its own VMID for life (as ARM does): --vmid-bits 2 has 3; use --vmid-bits 3 or more"
    )
    r = p2msim("run", workload, "--profile", "arm-broadcast", "--vmid-bits", "3")
    assert r.returncode == 0 and "CLEAN" in r.stdout, r.stdout + r.stderr


def test_swarm_draws_only_configurations_the_profile_supports() -> None:
    sweep = Sweep(Config("teardown-under-load", profile="arm-broadcast"), range(280), swarm=True)
    raised = [s for s in range(280) if swarm_draw(s)["vmid_bits"] < 3]
    assert raised  # the draw does give some seeds 2 bits ...
    assert all(sweep.task(s).config.vmid_bits >= 3 for s in range(280))  # ... and the sweep raises them
    fixed = Sweep(Config("teardown-under-load"), range(280), swarm=True)
    assert [fixed.task(s).config.vmid_bits for s in raised] == [swarm_draw(s)["vmid_bits"] for s in raised]


@pytest.fixture(scope="module")
def failing_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("failing")
    r = p2msim("run", "teardown-under-load", *BUG, "--log", "run.jsonl", cwd=d)
    assert r.returncode == 1
    return d / "run.jsonl"


def _schedule(failing_log: Path) -> dict:
    return json.loads((failing_log.parent / "run.jsonl.schedule.json").read_text())


def test_replay_of_a_true_record_reproduces(failing_log: Path) -> None:
    r = p2msim("replay", str(failing_log))
    assert r.returncode == 0 and r.stdout.startswith("REPRODUCED: ")


def test_replay_with_nothing_recorded_says_so(failing_log: Path, tmp_path: Path) -> None:
    s = _schedule(failing_log)
    del s["verdict"]
    (tmp_path / "s.json").write_text(json.dumps(s))
    r = p2msim("replay", str(tmp_path / "s.json"))
    assert r.returncode == 4 and r.stdout.startswith("NOTHING TO COMPARE: "), r.stdout


def test_replay_of_an_interrupted_log_has_nothing_to_compare(failing_log: Path, tmp_path: Path) -> None:
    lines = failing_log.read_text().splitlines()
    end = json.loads(lines[-1])
    stop = {"seq": 3, "hart": None, "event": "run.interrupted", "decisions": end["decisions"][:3]}
    cut = [*lines[:200], json.dumps(stop)]
    (tmp_path / "cut.jsonl").write_text("\n".join(cut) + "\n")
    r = p2msim("replay", str(tmp_path / "cut.jsonl"))
    assert r.returncode == 4 and r.stdout.startswith("NOTHING TO COMPARE: "), r.stdout


def test_replay_that_parts_ways_is_diverged(failing_log: Path, tmp_path: Path) -> None:
    s = _schedule(failing_log)
    s["decisions"][3][1] = (s["decisions"][3][1] + 1) % 4
    (tmp_path / "s.json").write_text(json.dumps(s))
    r = p2msim("replay", str(tmp_path / "s.json"))
    assert r.returncode == 1 and r.stdout.startswith("DIVERGED: ") and "part ways at step" in r.stdout


def test_replay_of_a_decision_for_an_actor_the_run_lacks_is_bad_input(failing_log: Path, tmp_path: Path) -> None:
    s = _schedule(failing_log)
    s["decisions"][3][1] = 99
    (tmp_path / "s.json").write_text(json.dumps(s))
    r = p2msim("replay", str(tmp_path / "s.json"))
    assert r.returncode == 2
    assert one_line(r).endswith("names actor 99, but the run has actors 0-4 (harts 0-3, then the driver)")


def test_a_budget_stop_is_incomplete_not_clean() -> None:
    r = p2msim("run", "teardown-under-load", "--steps", "5000")
    assert r.returncode == 3 and "INCOMPLETE" in r.stdout and "CLEAN" not in r.stdout


def test_a_closed_stdout_does_not_change_the_exit_code() -> None:
    p = subprocess.Popen([*P2MSIM, "run", "teardown-under-load", *BUG], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline()
    p.stdout.close()  # as `| head -1` does
    _out, err = p.communicate(timeout=300)
    assert p.returncode == 1, err


def test_a_later_run_removes_the_schedule_of_an_earlier_one(tmp_path: Path) -> None:
    assert p2msim("run", "teardown-under-load", *BUG, "--log", "run.jsonl", cwd=tmp_path).returncode == 1
    old = (tmp_path / "run.jsonl.schedule.json").read_bytes()
    assert p2msim("run", "teardown-under-load", "--log", "run.jsonl", cwd=tmp_path).returncode == 0
    assert not (tmp_path / "run.jsonl.schedule.json").exists()
    (tmp_path / "run.jsonl.schedule.json").write_bytes(old)  # copied back by hand
    r = p2msim("replay", "run.jsonl.schedule.json", cwd=tmp_path)
    assert r.returncode == 2 and "was written for an earlier run" in one_line(r)


# -- 2. lost data --------------------------------------------------------------------------------------


def test_a_full_disk_under_the_log_is_one_line_and_the_verdict_stands() -> None:
    r = p2msim("run", "teardown-under-load", *BUG, "--log", "/dev/full")
    assert r.returncode == 2
    assert "VIOLATIONS: " in r.stdout
    assert one_line(r) == "p2msim: error: cannot write the log /dev/full: No space left on device"


def test_a_full_disk_under_sweep_out_is_one_line_and_the_summary_stands() -> None:
    r = p2msim("sweep", "pool-churn", "--seeds", "0:2", "--out", "/dev/full")
    assert r.returncode == 2 and "failing seeds: 0" in r.stdout
    assert r.stderr.strip().splitlines()[-1] == "p2msim: error: cannot write /dev/full: No space left on device"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("run", "pool-churn", "--log", "nodir/x.jsonl"), "cannot write log nodir/x.jsonl: No such file or directory"),
        (("sweep", "pool-churn", "--seeds", "0:2", "--out", "nodir/x.jsonl"), "cannot write nodir/x.jsonl"),
        (("run", "pool-churn", "--log", "afile/x.jsonl"), "cannot write log afile/x.jsonl: Not a directory"),
    ],
)
def test_an_unwritable_path_is_one_line_before_any_work(tmp_path: Path, args: tuple[str, ...], error: str) -> None:
    (tmp_path / "afile").write_text("")
    r = p2msim(*args, cwd=tmp_path)
    assert r.returncode == 2 and error in one_line(r)


def test_shrink_checks_its_output_before_the_work(failing_log: Path) -> None:
    started = time.monotonic()
    r = p2msim("shrink", str(failing_log), "-o", str(failing_log.parent / "nodir" / "s.json"))
    assert r.returncode == 2 and one_line(r).endswith("/nodir/s.json: No such file or directory")
    assert time.monotonic() - started < 30  # no shrinking first
    r = p2msim("shrink", str(failing_log), "-o", "/dev/full", "--max-tests", "3")
    assert r.returncode == 2 and one_line(r) == "p2msim: error: cannot write /dev/full: No space left on device"
    assert Path("/dev/full").is_char_device()  # written to, never replaced by a file


@pytest.mark.skipif(os.geteuid() == 0, reason="a read-only directory does not stop root")
def test_a_read_only_directory(failing_log: Path, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    shutil.copy(failing_log.parent / "run.jsonl.schedule.json", ro / "s.json")
    ro.chmod(0o555)
    try:
        r = p2msim("run", "pool-churn", "--log", str(ro / "x.jsonl"))
        assert r.returncode == 2 and "Permission denied" in one_line(r)
        r = p2msim("inspect", str(ro / "s.json"))
        assert r.returncode == 0 and "replayed into" in r.stderr
    finally:
        ro.chmod(0o755)


def test_inspect_of_a_schedule_where_its_log_cannot_go_replays_elsewhere(failing_log: Path) -> None:
    r = p2msim("inspect", "/proc/self/none.json")
    assert r.returncode == 2 and one_line(r) == "p2msim: error: /proc/self/none.json does not exist"


def test_the_first_and_last_lines_are_written_at_every_level(tmp_path: Path) -> None:
    r = p2msim("run", "pool-churn", "--log-level", "error", "--log", "e.jsonl", cwd=tmp_path)
    assert r.returncode == 0
    events = complete_jsonl(tmp_path / "e.jsonl")
    assert events[0]["event"] == "run.start" and events[-1]["event"] == "run.end"
    assert p2msim("inspect", "e.jsonl", cwd=tmp_path).returncode == 0


def test_sigterm_on_a_run_writes_the_last_line_and_exits_143(tmp_path: Path) -> None:
    p = subprocess.Popen(
        [*P2MSIM, "run", "teardown-under-load", "--pcpus", "64", "--log", "t.jsonl"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(4)
    p.send_signal(signal.SIGTERM)
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("p2msim: terminated at step ")
    assert complete_jsonl(tmp_path / "t.jsonl")[-1]["event"] == "run.interrupted"


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


@pytest.mark.parametrize(("command", "sig", "rc"), [("sweep", signal.SIGTERM, 143), ("matrix", signal.SIGINT, 130)])
def test_a_signal_to_the_main_process_ends_it_and_its_workers(tmp_path: Path, command: str, sig: int, rc: int) -> None:
    args = (
        ["sweep", "teardown-under-load", "--seeds", "0:400", "--pcpus", "8", "--out", "s.jsonl"]
        if command == "sweep"
        else ["matrix", "--seeds", "40", "--clean-seeds", "100", "--workload", "teardown-under-load"]
    )
    p = subprocess.Popen([*P2MSIM, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers: list[int] = []
    for _ in range(60):
        time.sleep(0.5)
        workers = _children(p.pid)
        if len(workers) >= 2:
            break
    time.sleep(2)
    p.send_signal(sig)  # the main process only: not the terminal's whole process group
    started = time.monotonic()
    _out, err = p.communicate(timeout=30)
    assert p.returncode == rc, err
    assert time.monotonic() - started < 10
    assert workers and not [w for w in workers if _alive(w)]
    if command == "sweep":
        complete_jsonl(tmp_path / "s.jsonl")


def test_a_log_over_the_workload_file_is_refused(tmp_path: Path) -> None:
    w = tmp_path / "mine.py"
    w.write_text("NAME = 'mine'\n\nasync def main(sim):\n    await sim.elapse(10)\n")
    before = w.read_bytes()
    r = p2msim("run", str(w), "--log", str(w))
    assert r.returncode == 2 and "is the workload file itself" in one_line(r)
    assert w.read_bytes() == before


EXITS = "import sys\nNAME = 'exits'\n\nasync def main(sim):\n    await sim.elapse(10)\n    sys.exit(3)\n"


def test_sys_exit_in_a_workload_is_that_runs_error(tmp_path: Path) -> None:
    (tmp_path / "exits.py").write_text(EXITS)
    r = p2msim("run", "exits.py", cwd=tmp_path)
    assert r.returncode == 2 and "called sys.exit(3)" in one_line(r)
    r = p2msim("sweep", "exits.py", "--seeds", "0:4", "--out", "o.jsonl", cwd=tmp_path)
    assert r.returncode == 2 and "called sys.exit(3)" in r.stderr.strip().splitlines()[-1]
    lines = complete_jsonl(tmp_path / "o.jsonl")
    assert lines and lines[0]["verdict"] == "error"


KILLS = """import os, signal
from pathlib import Path
NAME = "kills"
MARK = Path({mark!r})

async def main(sim):
    await sim.elapse(10)
    if {always} or not MARK.exists():
        MARK.write_text("")
        os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_killed_worker_is_reported_the_same_way_on_one_job_or_two(tmp_path: Path, jobs: str) -> None:
    (tmp_path / "once.py").write_text(KILLS.format(mark=str(tmp_path / "mark"), always=False))
    r = p2msim("sweep", "once.py", "--seeds", "0:3", "--jobs", jobs, cwd=tmp_path)
    assert r.returncode == 5, r.stdout + r.stderr  # every seed ran to its verdict: vacuous (it runs no vCPU)
    assert "crashed seeds: 0" in r.stdout and "worker processes lost: 1" in r.stdout
    (tmp_path / "always.py").write_text(KILLS.format(mark=str(tmp_path / "mark2"), always=True))
    r = p2msim("sweep", "always.py", "--seeds", "5:6", "--jobs", jobs, cwd=tmp_path)
    assert r.returncode == 1 and "CRASHED seeds: 1: 5" in r.stdout, r.stdout


# -- 3. hangs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    ["    while True:\n        pass\n", "    while True:\n        await anyio.sleep(0)\n"],
    ids=["busy", "sleep0"],
)
@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_a_workload_that_stops_stepping_is_stopped(tmp_path: Path, body: str, backend: str) -> None:
    (tmp_path / "loop.py").write_text(f"import anyio\nNAME = 'loop'\n\nasync def main(sim):\n{body}")
    r = p2msim(
        "run", "loop.py", "--backend", backend, "--log", "l.jsonl", cwd=tmp_path, env={"P2MSIM_STALL_SECONDS": "1"}
    )
    assert r.returncode == 2
    assert "stopped taking steps at step 3 (none for 1 s)" in one_line(r)
    complete_jsonl(tmp_path / "l.jsonl")


def test_a_seed_past_its_time_limit_is_a_timeout(tmp_path: Path) -> None:
    slow = (
        "import time\nNAME = 'slow'\n\nasync def main(sim):\n"
        "    while True:\n        time.sleep(0.01)\n        await sim.elapse(1)\n"
    )
    (tmp_path / "slow.py").write_text(slow)
    r = p2msim("sweep", "slow.py", "--seeds", "0:2", "--seed-timeout", "1", cwd=tmp_path)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "TIMEOUT seeds: 2 (INCOMPLETE: no verdict within --seed-timeout): 0, 1" in r.stdout


# -- 4. bad input: one line, exit 2 ---------------------------------------------------------------------

BIG = str(1 << 64)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("run", "pool-churn", "--strategy", "replay"), "--strategy replay needs the decisions of a recorded run"),
        (("run", "pool-churn", "--seed", BIG), "argument --seed: '18446744073709551616' is too large"),
        (("run", "pool-churn", "--steps", BIG), "argument --steps: '18446744073709551616' is too large"),
        (("run", "pool-churn", "--tlb-leaf", BIG), "argument --tlb-leaf: '18446744073709551616' is too large"),
        (("run", "pool-churn", "--log-level", "bogus", "--log", "x.jsonl"), "unknown log level 'bogus'"),
        (("bench", "--steps", "0"), "argument --steps: '0': at least 1"),
        (("matrix", "--jobs", "0"), "argument --jobs: '0': at least 1"),
        (("sweep", "pool-churn", "--seeds", "0:2", "--seed-timeout", "0"), "a positive number of seconds"),
        (("run", "pool-churn", "--frames", str(1 << 40)), "GiB for the machine's per-frame state"),
        (("run", "pool-churn", "--frames", "5000"), "memory must be a whole number of 2 MiB (512 frames)"),
        (("run", "pool-churn", "--speculate", "5"), "--speculate is a probability between 0 and 1, not 5.0"),
        (("run", "pool-churn", "--speculate", "nan"), "--speculate is a probability between 0 and 1, not nan"),
        (("run", "pool-churn", "-p", "resize=maybe"), "parameter resize='maybe' is not of type bool"),
        (("run", "pool-churn", "-p", "hot=inf"), "parameter hot='inf' is not a finite number"),
        (("run", "pool-churn", "--strategy", "pct", "--pct-depth", "1000000000"), "PCT's depth is bounded"),
        (("run", "params5.py"), "PARAMS must be a dict of parameter name -> default, not int"),
        (("inspect", "."), "cannot read log .: Is a directory"),
        (("replay", "."), ". is a directory, not a log or a schedule"),
        (("replay", "none.json"), "none.json does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], error: str) -> None:
    (tmp_path / "params5.py").write_text("NAME = 'p5'\nPARAMS = 5\n\nasync def main(sim):\n    pass\n")
    r = p2msim(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert error in one_line(r)


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda s: s["config"].__setitem__("pcpus", "4"), "configuration field 'pcpus' is str, not int"),
        (lambda s: s.__setitem__("verdict", []), "malformed schedule"),
        (lambda s: s.__setitem__("decisions", [["a", 1]]), "malformed schedule"),
    ],
    ids=["config-type", "verdict-type", "decision-type"],
)
def test_a_schedule_with_wrong_field_types_is_one_line(failing_log: Path, tmp_path: Path, mutate, error: str) -> None:
    s = _schedule(failing_log)
    mutate(s)
    (tmp_path / "s.json").write_text(json.dumps(s))
    r = p2msim("replay", str(tmp_path / "s.json"))
    assert r.returncode == 2 and error in one_line(r)


def test_a_log_with_wrong_field_types_is_one_line(failing_log: Path, tmp_path: Path) -> None:
    lines = failing_log.read_text().splitlines()
    e = json.loads(lines[5])
    e["seq"] = "x"
    lines[5] = json.dumps(e)
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    r = p2msim("inspect", str(tmp_path / "bad.jsonl"))
    assert r.returncode == 2 and one_line(r).endswith(
        "bad.jsonl:6: not a p2msim event (seq and hart are numbers, event a name)"
    )


def test_a_log_from_another_version_is_named(failing_log: Path, tmp_path: Path) -> None:
    s = _schedule(failing_log)
    s["version"] = "9.9.9"
    (tmp_path / "s.json").write_text(json.dumps(s))
    r = p2msim("replay", str(tmp_path / "s.json"))
    assert "was written by p2msim 9.9.9, this is" in one_line(r)
