"""The pytest plugin as a user meets it: a marker that fans out over seeds, a fixture, options for CI."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from simulator.engine.simulation import Config, run
from simulator.pytest_plugin import item_key, parse_seeds, summary

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

IDLE = """
async def main(sim):  # a run in a few hundred steps, with no guest access: vacuous
    d = await sim.create_domain(1, vcpus=1, pool_pages=2)
    await sim.destroy(d)
"""

# the first line of the explanation of foreign-unmap-reuse seed 0 with no-reuse-flush
FIRST_VIOLATION = "VIOLATION 1 of 3: reused-other-domain: hart 2 (dom0 vcpu2, VMID 1) accessed gfn 0x8000f"


def _run_printed(cmd: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command the plugin printed, as the user would, with this interpreter's p2msim and pytest."""
    argv = shlex.split(cmd)
    program = {"p2msim": [sys.executable, "-m", "simulator"], "pytest": [sys.executable, "-m", "pytest"]}
    env = {**os.environ, "COLUMNS": "120", "PYTEST_ADDOPTS": "-p no:cacheprovider"}
    return subprocess.run([*program[argv[0]], *argv[1:]], cwd=cwd, capture_output=True, text=True, env=env)


def _printed(out: str, label: str) -> list[str]:
    """The commands printed after ``label:`` (``replay: CMD``, ``rerun: CMD``)."""
    return [m.group(1) for m in re.finditer(rf"^{label}: (\S.*?)$", out, re.M)]


def test_marker_fans_out_and_a_failure_is_one_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    res = pytester.runpytest("-v", "-p", "no:cacheprovider")
    res.assert_outcomes(passed=4, failed=1)
    out = res.stdout.str()
    assert "test_clean[seed0] PASSED" in out and "test_clean[seed1] PASSED" in out
    assert "test_unexpected_bug[seed0] FAILED" in out
    # one report: the explanation once, no warning from a hook wrapper
    assert out.count(FIRST_VIOLATION) == 1, out
    assert out.count("replay: p2msim run foreign-unmap-reuse --seed 0 --bug no-reuse-flush") == 1
    assert "PluggyTeardownRaisedWarning" not in out and "warnings" not in res.parseoutcomes()
    res.stdout.fnmatch_lines(
        [
            "*_ test_unexpected_bug[[]seed0[]] _*",
            "p2msim: foreign-unmap-reuse seed 0: expected clean, found 3 violations (reused-other-domain)",
            "",
            "VIOLATION 1 of 3: *",
        ]
    )
    res.stdout.fnmatch_lines(["FAILED test_user.py::test_unexpected_bug[[]seed0[]] - Failed: p2msim: *"])
    # the printed commands run: the replay finds the violation again, the rerun fails the item again
    (replay,) = _printed(out, "replay")
    p = _run_printed(replay, pytester.path)
    assert p.returncode == 1 and "reused-other-domain" in p.stdout, p.stdout
    (rerun,) = _printed(out, "rerun")
    assert rerun == "pytest 'test_user.py::test_unexpected_bug[seed0]'"
    p = _run_printed(rerun, pytester.path)
    assert p.returncode == 1 and "1 failed" in p.stdout and p.stdout.count(FIRST_VIOLATION) == 1, p.stdout


def test_a_failing_test_body_gets_the_explanation_once_in_a_section(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import pytest

        @pytest.mark.p2msim(workload="foreign-unmap-reuse", seeds=[0, 1], bugs=["no-reuse-flush"], expect="violation")
        def test_classes(p2msim_result):
            assert p2msim_result.violations[0].cls == "reused-other-domain"
        """
    )
    res = pytester.runpytest("-p", "no:cacheprovider")
    res.assert_outcomes(passed=1, failed=1)  # seed 0: reused-other-domain; seed 1: reused-as-table
    out = res.stdout.str()
    res.stdout.fnmatch_lines(
        [
            "*AssertionError*",
            "*- p2msim -*",
            "p2msim: foreign-unmap-reuse seed 1: the run ended as expected (* violations: reused-as-table); "
            "the test body failed",
            "",
            "VIOLATION 1 of *",
        ]
    )
    assert out.count("VIOLATION 1 of") == 1 and "seed 0" not in out.split("FAILURES")[1].split("p2msim summary")[0]
    assert "PluggyTeardownRaisedWarning" not in out


def test_k_selects_a_seed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    res = pytester.runpytest("-v", "-p", "no:cacheprovider", "-k", "seed1")
    res.assert_outcomes(passed=1, deselected=4)
    assert "test_clean[seed1] PASSED" in res.stdout.str()


@pytest.mark.parametrize(
    ("mark", "message"),
    [
        (
            'workload="foreign-unmap-reuse", expect="violaton"',
            "expect='violaton' is not one of 'clean', 'violation' (did you mean 'violation'?)",
        ),
        (
            'workload="foreign-unmap-reuse", seeds=3',
            "seeds=3 is not an iterable of seeds: seeds=range(3) runs seeds 0 to 2, seeds=[3] the one seed 3",
        ),
        ('workload="foreign-unmap-reuse", seeds=[]', "seeds is empty: the mark would run nothing"),
        ('workload="foreign-unmap-reuse", pcpus="4"', "pcpus='4': pcpus takes a whole number"),
        ('workload="foreign-unmap-reuse", log="x.jsonl"', "log= is not a mark option: every seed would write*"),
        ("seeds=[0]", "@pytest.mark.p2msim needs workload=NAME_OR_PATH*"),
    ],
)
def test_a_mistake_in_the_mark_is_a_one_line_collection_error(
    pytester: pytest.Pytester, mark: str, message: str
) -> None:
    pytester.makepyfile(
        test_user=f"""
        import pytest

        @pytest.mark.p2msim({mark})
        def test_hunt(p2msim_result):
            pass
        """
    )
    res = pytester.runpytest("-p", "no:cacheprovider")
    assert res.ret == pytest.ExitCode.INTERRUPTED
    res.assert_outcomes(errors=1)
    res.stdout.fnmatch_lines(["*ERROR collecting test_user.py*", f"p2msim: test_user.py::test_hunt: {message}"])
    out = res.stdout.str()
    assert "Traceback" not in out and "During handling" not in out and "pytest_plugin.py" not in out


def test_a_marked_test_without_the_result_fixture_is_an_error_not_a_pass(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import pytest

        @pytest.mark.p2msim(workload="foreign-unmap-reuse", seeds=[0], bugs=["no-reuse-flush"])
        def test_hunt():
            pass
        """
    )
    res = pytester.runpytest("-p", "no:cacheprovider")
    res.assert_outcomes(errors=1)
    res.stdout.fnmatch_lines(
        [
            "p2msim: test_user.py::test_hunt: @pytest.mark.p2msim runs nothing unless the test takes the "
            "p2msim_result fixture (def test_hunt(p2msim_result): ...)"
        ]
    )
    # the other side: with the fixture, the same mark runs and finds the bug
    pytester.makepyfile(test_user=USER_TESTS)
    pytester.runpytest("-p", "no:cacheprovider", "-k", "unexpected").assert_outcomes(failed=1)


def test_a_bad_run_option_is_a_clean_error_naming_the_item(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import pytest

        @pytest.mark.p2msim(workload="foreign-unmap-reuse", seeds=[0], pcpu=2)
        def test_param(p2msim_result):
            pass

        @pytest.mark.p2msim(workload="foreign-unmap-reuse", seeds=[0], profile="fixd")
        def test_profile(p2msim_result):
            pass

        @pytest.mark.p2msim(workload="no-such-workload")
        def test_workload(p2msim_result):
            pass

        def test_no_mark(p2msim_result):
            pass

        @pytest.mark.p2msim(workload="foreign-unmap-reuse", seeds=[0], pcpus=3)
        def test_fine(p2msim_result):
            assert p2msim_result.config.pcpus == 3
        """
    )
    res = pytester.runpytest("-p", "no:cacheprovider")
    res.assert_outcomes(passed=1, errors=4)
    res.stdout.fnmatch_lines_random(
        [
            "p2msim: test_user.py::test_param[[]seed0[]]: workload foreign-unmap-reuse has no parameter 'pcpu' "
            "(it has: *); pcpu= is not a run option either (did you mean pcpus=?): other keywords go to the workload",
            "p2msim: test_user.py::test_profile[[]seed0[]]: unknown profile 'fixd' (*); did you mean 'fixed'?",
            "p2msim: test_user.py::test_workload[[]seed0[]]: *no-such-workload*",
            "p2msim: test_user.py::test_no_mark: the p2msim_result fixture needs @pytest.mark.p2msim(workload=...)*",
        ]
    )
    out = res.stdout.str()
    assert "Traceback" not in out and "During handling" not in out and "simulation.py" not in out


def test_a_workload_that_fails_is_a_clean_error_with_its_replay(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        boom="""
        from simulator.engine.scenario import WorkloadError

        async def main(sim):
            d = await sim.create_domain(1, vcpus=1, pool_pages=2)
            if sim.rng.random() < 2:
                raise WorkloadError("the script gave up")
        """,
        test_user="""
        import pytest

        @pytest.mark.p2msim(workload="boom.py", seeds=[4])
        def test_boom(p2msim_result):
            pass
        """,
    )
    res = pytester.runpytest("-p", "no:cacheprovider")
    res.assert_outcomes(errors=1)
    res.stdout.fnmatch_lines(
        ["p2msim: test_user.py::test_boom[[]seed4[]]: *the script gave up*", "replay: p2msim run boom.py --seed 4"]
    )
    assert "Traceback" not in res.stdout.str()


def test_seeds_and_profile_from_the_command_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import pytest

        @pytest.mark.p2msim(workload="foreign-unmap-reuse", seeds=range(3), profile="fixed")
        def test_hunt(p2msim_result):
            assert p2msim_result.config.profile == "fixed"
        """
    )
    for given, ids in [(None, [0, 1, 2]), ("1,5", [1, 5]), ("7", [7]), ("0:2", [0, 1])]:
        args = ["--collect-only", "-q", "-p", "no:cacheprovider"] + (["--p2msim-seeds", given] if given else [])
        res = pytester.runpytest(*args)
        assert [line for line in res.stdout.lines if "::" in line] == [f"test_user.py::test_hunt[seed{s}]" for s in ids]
    res = pytester.runpytest("-p", "no:cacheprovider", "--p2msim-seeds", "3:1")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["ERROR: --p2msim-seeds '3:1': '3:1' is an empty range (A:B runs seeds A to B-1)*"])

    res = pytester.runpytest("-p", "no:cacheprovider", "--p2msim-seeds", "0")
    res.assert_outcomes(passed=1)  # the mark's profile
    res = pytester.runpytest("-p", "no:cacheprovider", "--p2msim-seeds", "0", "--p2msim-profile", "arm-broadcast")
    res.assert_outcomes(failed=1)  # overridden: the test body sees the other profile, and so does the replay
    res.stdout.fnmatch_lines(
        ["p2msim: every marked test runs with seeds 0 (1 seed) and profile arm-broadcast", "*--profile arm-broadcast*"]
    )
    res = pytester.runpytest("-p", "no:cacheprovider", "--p2msim-profile", "fixd")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["ERROR: --p2msim-profile: unknown profile 'fixd'*did you mean 'fixed'?"])


def test_parse_seeds() -> None:
    assert parse_seeds("0:3") == (0, 1, 2) and parse_seeds("7") == (7,) and parse_seeds("1,5,9") == (1, 5, 9)
    assert parse_seeds("0:2,1,9") == (0, 1, 9) and parse_seeds("0x10") == (16,)
    for bad in ("", "x", "-1", "1,,2", "5:5", "1:x"):
        with pytest.raises(ValueError):
            parse_seeds(bad)


def test_the_log_dir_keeps_the_log_and_schedule_of_failing_items_only(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    res = pytester.runpytest("-p", "no:cacheprovider", "--p2msim-log-dir", "logs")
    res.assert_outcomes(passed=4, failed=1)
    stem = "test_user.py_test_unexpected_bug_seed0.jsonl"
    assert sorted(p.name for p in (pytester.path / "logs").iterdir()) == [stem, f"{stem}.schedule.json"]
    res.stdout.fnmatch_lines(
        [
            f"log: logs/{stem}   inspect: p2msim inspect logs/{stem} --violation 1",
            f"schedule: logs/{stem}.schedule.json   replay: p2msim replay logs/{stem}.schedule.json",
        ]
    )
    out = res.stdout.str()
    assert out.count(FIRST_VIOLATION) == 1
    # the printed commands run
    (inspect,) = re.findall(r"inspect: (p2msim inspect .*)$", out, re.M)
    p = _run_printed(inspect, pytester.path)
    assert p.returncode == 0 and "reused-other-domain" in p.stdout, p.stdout + p.stderr
    (replay,) = re.findall(r"replay: (p2msim replay .*)$", out, re.M)
    p = _run_printed(replay, pytester.path)
    assert p.returncode == 0 and p.stdout.startswith("REPRODUCED: 3 violations"), p.stdout + p.stderr

    # the other side: once the item passes, its old log goes
    pytester.makepyfile(
        test_user=USER_TESTS.replace('bugs=["no-reuse-flush"])', 'bugs=["no-reuse-flush"], expect="violation")')
    )
    res = pytester.runpytest("-p", "no:cacheprovider", "--p2msim-log-dir", "logs", "-k", "unexpected")
    res.assert_outcomes(passed=1, deselected=4)
    assert list((pytester.path / "logs").iterdir()) == []


def test_seeds_that_failed_last_time_run_first(pytester: pytest.Pytester) -> None:
    src = """
        import pytest

        @pytest.mark.p2msim(workload="idle.py", seeds=range(3), pcpus=1, frames=4096, allow_vacuous=True)
        def test_a(p2msim_result):
            pass

        @pytest.mark.p2msim(workload="idle.py", seeds=range(3), pcpus=1, frames=4096, allow_vacuous=True)
        def test_b(p2msim_result):
            assert p2msim_result.config.seed != {bad}
        """
    pytester.makepyfile(idle=IDLE)

    def order() -> tuple[list[str], str]:
        res = pytester.runpytest("-v")
        return re.findall(r"::(test_\w+\[seed\d\]) (?:PASSED|FAILED)", res.stdout.str()), res.stdout.str()

    in_file = [f"test_{t}[seed{s}]" for t in "ab" for s in range(3)]
    pytester.makepyfile(test_user=src.format(bad=-1))  # all pass
    assert order()[0] == in_file
    ran, out = order()
    assert ran == in_file and "failed last time" not in out  # nothing failed: nothing moves

    pytester.makepyfile(test_user=src.format(bad=1))
    assert order()[0] == in_file  # test_b[seed1] fails here
    ran, out = order()
    assert ran == ["test_b[seed1]", *(t for t in in_file if t != "test_b[seed1]")], ran
    assert "p2msim: 1 seed that failed last time run first" in out

    pytester.makepyfile(test_user=src.format(bad=-1))
    assert order()[0][0] == "test_b[seed1]"  # still first: it failed last time; now it passes
    assert order()[0] == in_file  # and the time after, it is back in its place


def test_item_key_drops_only_the_seed() -> None:
    assert item_key("t.py::test_x[seed3]", 3) == "t.py::test_x"
    assert item_key("t.py::test_x[seed3-a]", 3) == "t.py::test_x[a]"
    assert item_key("t.py::C::test_x[b-seed30]", 30) == "t.py::C::test_x[b]"
    assert item_key("t.py::test_x", 3) == "t.py::test_x"


SCENARIOS = """
async def migrate(sim):
    d1 = await sim.create_domain(1, vcpus=1, pool_pages=4)
    d2 = await sim.create_domain(2, vcpus=1, pool_pages=4)
    await sim.populate(d1, 0x10, 16)
    await sim.populate(d2, 0x10, 16)
    await sim.run_vcpu(d1.vcpus[0], 0, sim.pattern([(0x10, 16)]))
    await sim.run_vcpu(d2.vcpus[0], 1, sim.pattern([(0x10, 16)]))
    await sim.elapse(800)
    await sim.deschedule(1)
    await sim.run_vcpu(d1.vcpus[0], 1)  # d1's vCPU moves to hart 1, where VMID 1 is d2's
    await sim.elapse(800)
    await sim.pause(d1)
    await sim.destroy(d1)
    await sim.destroy(d2)

def test_fixed(p2msim):
    assert p2msim.scenario(migrate, pcpus=2, profile="fixed").clean

def test_upstream(p2msim):
    assert p2msim.scenario(migrate, pcpus=2, profile="upstream").clean
"""


def test_a_failing_scenario_prints_a_replay_that_runs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_scen=SCENARIOS)
    res = pytester.runpytest("-p", "no:cacheprovider", "--p2msim-log-dir", "logs")
    res.assert_outcomes(passed=1, failed=1)
    out = res.stdout.str()
    res.stdout.fnmatch_lines(
        [
            "*- p2msim -*",
            "p2msim fixture run 1 of 1 (inline scenario migrate, seed 0): violation",
            "",
            "VIOLATION 1 of 1: vmid-alias: *",
        ]
    )
    assert "p2msim run migrate" not in out  # no such workload: the scenario is the test
    assert _printed(out, "replay") == ["pytest test_scen.py::test_upstream"]
    assert out.count("VIOLATION 1 of 1: vmid-alias") == 1
    p = _run_printed("pytest test_scen.py::test_upstream", pytester.path)
    assert p.returncode == 1 and "1 failed" in p.stdout and "VIOLATION 1 of 1: vmid-alias" in p.stdout, p.stdout
    # its log is kept (no schedule: `p2msim replay` cannot load an inline driver), and inspect reads it
    assert [p.name for p in (pytester.path / "logs").iterdir()] == ["test_scen.py_test_upstream-run1.jsonl"]
    p = _run_printed("p2msim inspect logs/test_scen.py_test_upstream-run1.jsonl --violation 1", pytester.path)
    assert p.returncode == 0 and "vmid-alias" in p.stdout


VACUOUS_CONFTEST = """
import pytest
from simulator.engine.simulation import Result

@pytest.fixture(autouse=True)
def _vacuous_verdict(monkeypatch):
    # the verdict as p2msim defines it once runs that made no guest access are vacuous
    # (patched so this holds whichever p2msim version runs it)
    verdict = Result.verdict.fget
    monkeypatch.setattr(
        Result, "verdict",
        property(lambda r: "vacuous" if not r.violations and not r.stats["accesses"] else verdict(r)),
    )
"""


def test_a_vacuous_run_fails_expect_clean_unless_allowed(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(VACUOUS_CONFTEST)
    pytester.makepyfile(
        idle=IDLE,
        test_user="""
        import pytest

        @pytest.mark.p2msim(workload="idle.py", pcpus=1)
        def test_idle(p2msim_result):
            pass

        @pytest.mark.p2msim(workload="idle.py", pcpus=1, allow_vacuous=True)
        def test_idle_allowed(p2msim_result):
            pass

        @pytest.mark.p2msim(workload="idle.py", pcpus=1, expect="violation", allow_vacuous=True)
        def test_idle_expecting_a_violation(p2msim_result):
            pass

        @pytest.mark.p2msim(workload="foreign-unmap-reuse", seeds=[0])
        def test_busy(p2msim_result):
            pass
        """,
    )
    res = pytester.runpytest("-v", "-p", "no:cacheprovider")
    res.assert_outcomes(passed=2, failed=2)
    out = res.stdout.str()
    assert "test_idle[seed0] FAILED" in out and "test_idle_allowed[seed0] PASSED" in out
    assert "test_idle_expecting_a_violation[seed0] FAILED" in out and "test_busy[seed0] PASSED" in out
    res.stdout.fnmatch_lines(
        [
            "p2msim: idle.py seed 0: expected clean, the run is vacuous: it could not have found a stale use "
            "(allow_vacuous=True accepts it)",
            "p2msim: idle.py seed 0: expected a violation, found none (the run is vacuous)",
            "4 seeds of 4 marked tests: 1 clean, 3 vacuous",
        ]
    )


def test_the_terminal_summary_counts_seeds_verdicts_warnings_and_windows(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    res = pytester.runpytest("-p", "no:cacheprovider")
    runs = [run(Config("foreign-unmap-reuse", seed=s)) for s in (0, 1)]
    assert [r.verdict for r in runs] == ["clean", "clean"]
    runs += [run(Config("foreign-unmap-reuse", seed=0, bugs=("no-reuse-flush",)))] * 2
    warnings = sum(r.warning_count for r in runs)  # the scenario's run has none
    res.stdout.fnmatch_lines(
        [
            "*= p2msim summary =*",
            "4 seeds of 3 marked tests: 2 clean, 2 violation; 1 run through the p2msim fixture: 1 clean",
            f"{warnings:,} warnings (*",
            "windows opened*",
        ]
    )
    # the other side: a session without p2msim runs prints no summary
    pytester.makepyfile(test_user="def test_plain():\n    pass\n")
    out = pytester.runpytest("-p", "no:cacheprovider").stdout.str()
    assert "p2msim summary" not in out and "windows opened" not in out


def test_the_summary_takes_window_counts_in_either_shape() -> None:
    from simulator.pytest_plugin import _info

    def result(verdict: str, **extra: object) -> SimpleNamespace:
        return SimpleNamespace(verdict=verdict, warning_count=2, warning_kinds={"unwritten": 2}, **extra)

    before = [_info(result("clean"), "mark"), _info(result("violation"), "mark")]
    assert summary(before, 1) == [
        "2 seeds of 1 marked test: 1 clean, 1 violation",
        "4 warnings (unwritten 4)",
        "windows opened: not measured (this p2msim's results do not count race windows)",
    ]
    flat = result("clean", windows={"freed-cached": 12_000, "used-alias": 0}, defences={"p2m_tlb_flush_sync": 7})
    nested = result("vacuous", windows={"opened": {"freed-cached": 345}, "closed_by": {"p2m_tlb_flush_sync": 1}})
    lines = summary([_info(flat, "mark"), _info(nested, "fixture")], 1)
    assert lines == [
        "1 seed of 1 marked test: 1 clean; 1 run through the p2msim fixture: 1 vacuous",
        "4 warnings (unwritten 4)",
        "windows opened: freed-cached 12,345; never opened: used-alias",
        "windows closed by: p2m_tlb_flush_sync 8",
    ]


def test_a_report_explains_three_violations_unless_vv() -> None:
    from simulator.pytest_plugin import explain

    vs = [SimpleNamespace(explain=lambda i=i: f"v{i}") for i in range(5)]
    r = SimpleNamespace(violations=vs, replay_command="p2msim run w --seed 1", explain=lambda: "all five")
    text = explain(r)
    assert "VIOLATION 3 of 5: v2" in text and "v3" not in text and "... and 2 more (-vv shows them all)" in text
    assert text.endswith("replay: p2msim run w --seed 1")
    assert explain(r, verbose=2) == "all five"
    assert explain(r, replay="pytest t.py::test_x").endswith("replay: pytest t.py::test_x")
    few = SimpleNamespace(violations=vs[:3], replay_command="p2msim run w", explain=lambda: "three (p2msim run w)")
    assert explain(few) == "three (p2msim run w)"
