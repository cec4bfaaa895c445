"""The command line as a user meets it: exit codes, one-line errors, JSON, logs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from simulator.cli import main as cli_main

JSON_KEYS = {
    "workload",
    "seed",
    "profile",
    "strategy",
    "bugs",
    "steps",
    "stats",
    "warnings",
    "windows",
    "verdict",
    "violations",
    "violation_count",
    "findings",
    "causes",
    "stop",
    "digest",
    "replay",
}
STATS_KEYS = {
    "accesses",
    "tlb_hits",
    "walks",
    "fences_sent",
    "fences_acked",
    "frames_freed",
    "frames_reused",
    "stale_benign",
}


def p2msim(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulator", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_clean_run_exits_0_and_prints_the_replay_command() -> None:
    r = p2msim("run", "teardown-under-load", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert "CLEAN: no violation" in r.stdout
    assert "replay: p2msim run teardown-under-load --seed 1" in r.stdout


def test_violation_exits_1_with_explanation_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["run", "teardown-under-load", "--seed", "0", "--bug", "no-flush-before-table-free", "--json"])
    out = orjson.loads(capsys.readouterr().out)
    assert code == 1
    assert set(out) == JSON_KEYS and set(out["stats"]) == STATS_KEYS
    assert out["bugs"] == ["no-flush-before-table-free"]
    v = out["violations"][0]
    assert {"class", "hart", "dom", "gfn", "mfn", "seq", "explanation"} <= set(v)
    assert v["class"] == "walk-through-reused-table"
    assert "missing:" in v["explanation"]
    assert out["replay"] == "p2msim run teardown-under-load --seed 0 --bug no-flush-before-table-free"


def test_json_output_is_deterministic(capsys: pytest.CaptureFixture[str]) -> None:
    outs = []
    for _ in range(2):
        cli_main(["run", "foreign-unmap-reuse", "--seed", "3", "--json"])
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["run", "no-such-workload"], "unknown workload 'no-such-workload'"),
        (["run", "teardown-under-load", "--profile", "nope"], "unknown profile 'nope'"),
        (["run", "teardown-under-load", "--bug", "nope"], "unknown bug 'nope'"),
        (["run", "teardown-under-load", "--strategy", "nope"], "unknown strategy 'nope'"),
        (["run", "teardown-under-load", "--pcpus", "1"], "needs --pcpus 2 or more: dom1 gives memory back"),
        (["run", "teardown-under-load", "--seed", "x"], "is not a whole number"),
        (["run", "teardown-under-load", "--vmid-bits", "20"], "VMID bits"),
        (["run", "teardown-under-load", "-p", "nope=1"], "no parameter 'nope'"),
        (["run", "teardown-under-load", "-p", "chunks=many"], "is not of type int"),
        (["run", "missing.py"], "does not exist"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert words in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_workload_script_that_raises_is_exit_2_and_the_log_is_complete(tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text(
        "async def main(sim):\n"
        "    d = await sim.create_domain(7, vcpus=1, pool_pages=2)\n"
        "    await sim.populate(d, 0x10, 4)\n"
        "    raise RuntimeError('my scenario is wrong')\n"
    )
    log = tmp_path / "run.jsonl"
    r = p2msim("run", str(script), "--log", str(log))
    assert r.returncode == 2
    assert "RuntimeError" in r.stderr and "my scenario is wrong" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    lines = [orjson.loads(x) for x in log.read_bytes().splitlines()]
    assert lines[0]["event"] == "run.start"
    assert lines[-1]["event"] == "run.error" and "my scenario is wrong" in lines[-1]["error"]
    assert any(x["event"] == "domain_create" and x["dom"] == 7 for x in lines)


def test_a_workload_by_path_runs(tmp_path: Path) -> None:
    script = tmp_path / "mine.py"
    script.write_text(
        "PARAMS = {'pages': 8}\n"
        "async def main(sim):\n"
        "    d = await sim.create_domain(1, vcpus=1, pool_pages=2)\n"
        "    await sim.populate(d, 0x10, sim.params['pages'])\n"
        "    await sim.run_vcpu(d.vcpus[0], 1, sim.pattern([(0x10, sim.params['pages'])]))\n"
        "    await sim.elapse(500)\n"
        "    await sim.destroy(d)\n"
    )
    r = p2msim("run", str(script), "-p", "pages=16", "--pcpus", "2", "--json")
    assert r.returncode == 0, r.stderr
    out = orjson.loads(r.stdout)
    assert out["stats"]["accesses"] > 0 and out["violations"] == []
    assert "-p pages=16" in out["replay"] and "--pcpus 2" in out["replay"]


def test_list_names_everything(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["list"]) == 0
    out = capsys.readouterr().out
    for name in (
        "teardown-under-load",
        "foreign-unmap-reuse",
        "fixed",
        "upstream",
        "riscv-tree",  # the old name, listed as such
        "foreign-remap",
        "no-flush-before-table-free",
        "async-remote-fence",
        "no-reuse-flush",
        "pct",
    ):
        assert name in out


def test_bench_prints_the_three_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bench", "--json", "--steps", "20000", "--repeat", "1"]) == 0
    out = orjson.loads(capsys.readouterr().out)
    for key in ("accesses_per_s", "switches_per_s", "baseline_lookups_per_s", "baseline_ratio"):
        assert out[key] > 0


def test_bench_sweep_sets_the_speed_up_beside_the_machines(capsys: pytest.CaptureFixture[str]) -> None:
    """The sweep with one process and with two, and the machine's own speed-up measured between them:
    the figures follow from the seconds."""
    assert cli_main(["bench", "--sweep", "--workload", "foreign-remap", "--seeds", "3", "--jobs", "2", "--json"]) == 0
    out = orjson.loads(capsys.readouterr().out)
    assert (out["workload"], out["seeds"], out["jobs"], out["target_speedup"]) == ("foreign-remap", 3, 2, 1.8)
    assert abs(out["runs_per_s_1"] - 3 / out["seconds_1"]) < 0.01 * out["runs_per_s_1"] + 0.002
    assert abs(out["speedup"] - out["seconds_1"] / out["seconds_n"]) < 0.01 * out["speedup"] + 0.002
    assert out["machine_speedup"] > 0.3 and abs(out["efficiency"] - out["speedup"] / out["machine_speedup"]) < 0.01
    for argv, what in (
        (["--sweep", "--workloads"], "--sweep or --workloads, not both"),
        (["--sweep", "--workload", "balloon", "--workload", "pool-churn"], "sweeps one workload"),
        (["--sweep", "--workload", "nosuch"], "unknown workload 'nosuch'"),
    ):
        assert cli_main(["bench", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert what in err and "\n" not in err


def test_bench_workloads_prices_each_step_in_dict_lookups(capsys: pytest.CaptureFixture[str]) -> None:
    """Each workload's steps and seconds, and a step's cost against the baseline measured beside it:
    the numbers add up (steps/s is steps over seconds; lookups/step is baseline x seconds / steps)."""
    assert cli_main(["bench", "--workloads", "--workload", "foreign-remap", "--repeat", "1", "--json"]) == 0
    out = orjson.loads(capsys.readouterr().out)
    (w,) = out["workloads"]
    assert w["workload"] == "foreign-remap" and w["steps"] > 1000 and w["seconds"] > 0
    assert abs(w["steps_per_s"] - w["steps"] / w["seconds"]) / w["steps_per_s"] < 0.02  # (seconds are rounded)
    want = w["baseline_lookups_per_s"] * w["seconds"] / w["steps"]
    assert abs(w["lookups_per_step"] - want) <= 0.1 + 0.01 * want
    assert out["total"]["steps"] == w["steps"]
    assert cli_main(["bench", "--workloads", "--workload", "nosuch"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown built-in workload 'nosuch'" in err and "\n" not in err


def test_python_api_run_workload() -> None:
    from simulator import run_workload

    r = run_workload("foreign-unmap-reuse", seed=0, bugs=["no-reuse-flush"])
    assert r.violations and "reused" in r.violations[0].cls
    assert "replay: p2msim run foreign-unmap-reuse --seed 0 --bug no-reuse-flush" in r.explain()
    assert run_workload("foreign-unmap-reuse", seed=0).clean


def test_a_workload_script_registers_its_own_bug(tmp_path: Path) -> None:
    script = tmp_path / "mybug.py"
    script.write_text(
        "from simulator.engine.bugs import register_bug\n"
        "from workloads.teardown_under_load import main, PARAMS  # reuse a built-in scenario\n"
        "\n"
        "def _empty_mask(xen):\n"
        "    xen.p2m_flush_mask = lambda d: []  # p2m_tlb_flush fences nobody\n"
        "\n"
        "register_bug('empty-flush-mask', 'p2m_tlb_flush fences nobody', _empty_mask)\n"
    )
    r = p2msim("run", str(script), "--seed", "0", "--bug", "empty-flush-mask", "--json")
    assert r.returncode == 1, r.stderr
    out = orjson.loads(r.stdout)
    assert out["violations"] and out["bugs"] == ["empty-flush-mask"]
    assert p2msim("run", str(script), "--seed", "0", "--json").returncode == 0  # the other side
    bad = p2msim("run", str(script), "--bug", "no-such-bug")
    assert bad.returncode == 2 and "unknown bug 'no-such-bug'" in bad.stderr


def test_a_workload_file_runs_standalone() -> None:
    script = Path(__file__).parent.parent / "workloads" / "foreign_unmap_reuse.py"
    r = subprocess.run([sys.executable, str(script), "--seed", "2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "CLEAN: no violation" in r.stdout


def test_list_json_and_one_workload_with_its_parameters() -> None:
    r = p2msim("list", "--json")
    assert r.returncode == 0, r.stderr
    out = orjson.loads(r.stdout)
    names = [w["name"] for w in out["workloads"]]
    assert "teardown-under-load" in names and len(out["bugs"]) >= 13 and "freed-cached" in out["windows"]
    for w in out["workloads"]:  # every parameter is documented where it is declared
        assert all(p["meaning"] for p in w["params"]), (w["name"], w["params"])
    one = p2msim("list", "teardown-under-load")
    assert one.returncode == 0 and "harts: at least 2" in one.stdout
    assert "pool_slack" in one.stdout and "spare pages in dom1's p2m pool" in one.stdout
    bad = p2msim("list", "teardwn-under-load")
    assert bad.returncode == 2 and "did you mean 'teardown-under-load'?" in bad.stderr and bad.stderr.count("\n") == 1
    fns = orjson.loads(p2msim("list", "--functions", "--json").stdout)
    assert any(f["c_name"] == "p2m_free_subtree" and f["async"] for f in fns["functions"])


def test_help_shows_defaults_and_names_get_a_did_you_mean() -> None:
    h = " ".join(p2msim("run", "--help").stdout.split())  # argparse wraps
    assert "(default: fixed)" in h and "(default: random)" in h and "(default: 64)" in h
    r = p2msim("run", "teardown-under-load", "--bug", "no-reuse-flsh")
    assert r.returncode == 2 and "did you mean 'no-reuse-flush'?" in r.stderr
    r = p2msim("run", "teardown-under-load", "--log", "x.jsonl", "--log-level", "verbose")
    assert r.returncode == 2 and r.stderr.startswith("p2msim: error: unknown log level 'verbose'")
    assert "Traceback" not in r.stderr


def test_inspect_writes_a_perfetto_trace(tmp_path: Path) -> None:
    assert p2msim("run", "pool-churn", "--seed", "1", "--log", "r.jsonl", cwd=tmp_path).returncode == 0
    r = p2msim("inspect", "r.jsonl", "--format", "perfetto", cwd=tmp_path)
    assert r.returncode == 0 and "to r.jsonl.trace.json" in r.stdout, r.stderr
    trace = orjson.loads((tmp_path / "r.jsonl.trace.json").read_bytes())
    names = {e.get("args", {}).get("name") for e in trace["traceEvents"] if e.get("ph") == "M"}
    assert {"hart 0", "hart 3"} <= names
    bad = p2msim("inspect", "r.jsonl", "--format", "perfetto", "-o", "/nonexistent/t.json", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("p2msim: error: cannot write /nonexistent/t.json")
