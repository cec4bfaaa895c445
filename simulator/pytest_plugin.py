"""The p2msim pytest plugin (registered through the ``pytest11`` entry point).

Race hunts from a user's own tests::

    import pytest

    @pytest.mark.p2msim(workload="teardown-under-load", seeds=range(200), profile="fixed")
    def test_teardown_is_race_free(p2msim_result):
        pass  # the plugin fails the item if the run found a violation

    @pytest.mark.p2msim(workload="foreign-unmap-reuse", seeds=range(5), bugs=["no-reuse-flush"],
                        expect="violation")
    def test_the_detector_sees_the_bug(p2msim_result):
        assert p2msim_result.violations[0].cls.startswith("reused-")

Each seed is its own test item (``test_x[seed17]``, so ``-k seed17`` selects it).
The run happens in the item's setup (the ``p2msim_result`` fixture) and its
verdict is checked in the call phase, after the test body: a failing item
has one report, with the explanation, the replay command and the command
that reruns the item.  A mistake in the mark (a mistyped ``expect``, ``seeds=3``,
a test that does not take ``p2msim_result``) is a collection error naming the
test; a bad run option (p2msim's ConfigError) is a one-line error of the item.

Command line: ``--p2msim-seeds`` and ``--p2msim-profile`` override every mark,
``--p2msim-log-dir DIR`` keeps the log and schedule of each failing item (the
failing run runs again with a log: logging doubles a run's cost, and runs
are deterministic).  Through pytest's cache, the seeds that failed last time
run first next time.  The terminal summary counts the seeds, the verdicts,
the warnings and the race windows the runs opened.

For custom scenarios, the ``p2msim`` fixture runs an inline driver or any
workload; a failing test that used it shows its non-clean runs with a replay
command that works (``pytest FILE::TEST``: an inline driver is not a file
``p2msim run`` could load).

Nothing heavy is imported at import time: every pytest session of a user with
p2msim installed loads this module.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

MARK = "p2msim"
EXPECTS = ("clean", "violation")
CACHE_KEY = "p2msim/failed"  # [[test id without the seed, seed], ...] of the items that failed last time
NOT_MARK_OPTIONS = {
    "seed": "use seeds=[N] (or --p2msim-seeds N)",
    "log": "every seed would write the same file: use --p2msim-log-dir DIR, which keeps the logs of failing items",
    "params": "pass workload parameters as keywords of the mark",
    "paths": "the workload is found by its name or path, as given",
}
SHOWN_VIOLATIONS = 3  # violations a failure report explains in full (-vv: all)
SHOWN_RUNS = 3  # runs through the p2msim fixture a failure report shows
SEED_LIMIT = 1 << 63


# -- the mark -------------------------------------------------------------------------------------


class MarkError(Exception):
    """A mistake in a @pytest.mark.p2msim (reported as a collection error naming the test)."""


@dataclass(frozen=True)
class Spec:
    workload: str
    seeds: tuple[int, ...]
    expect: str
    allow_vacuous: bool
    options: dict[str, Any]  # Config fields
    params: tuple[tuple[str, str], ...]  # the workload's parameters


def _run_options() -> dict[str, Any]:
    """The Config fields a mark may set, with their defaults (which give their types)."""
    from dataclasses import fields

    from simulator.engine.simulation import Config

    return {f.name: f.default for f in fields(Config) if f.name not in ("workload", *NOT_MARK_OPTIONS)}


def _did_you_mean(name: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _option(name: str, value: Any, default: Any) -> Any:
    """A run option of the mark, checked against the type of its default, as Config holds it."""

    def bad(kind: str) -> MarkError:
        return MarkError(f"{name}={value!r}: {name} takes {kind}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("True or False")
        return value
    if isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad("a whole number")
        return value
    if isinstance(default, float):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise bad("a number")
        return float(value)
    if isinstance(default, str):
        if name == "svinval" and isinstance(value, list | tuple) and all(isinstance(h, int) for h in value):
            return ",".join(str(h) for h in value)
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if name == "xen_opts":
        items = value.items() if isinstance(value, dict) else value
        if isinstance(items, str) or not isinstance(items, Iterable):
            raise bad("a dict of boot option -> value, or strings like 'vmid=0'")
        out = []
        for item in items:
            if isinstance(item, str) and "=" in item:
                item = tuple(item.split("=", 1))
            if not isinstance(item, tuple | list) or len(item) != 2:
                raise bad("a dict of boot option -> value, or strings like 'vmid=0'")
            k, v = item
            out.append((str(k), str(v).lower() if isinstance(v, bool) else str(v)))
        return tuple(out)
    # bugs, variants: names
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Iterable) or not all(isinstance(v, str) for v in value):
        raise bad("a list of names")
    return tuple(value)


def _seeds(value: Any) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        raise MarkError(
            f"seeds={value!r} is not an iterable of seeds: seeds=range({value}) runs seeds 0 to {value - 1}, "
            f"seeds=[{value}] the one seed {value}"
        )
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise MarkError(f"seeds={value!r} is not an iterable of seeds (use seeds=range(N) or seeds=[1, 5, 9])")
    out: dict[int, None] = {}
    for s in value:
        if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < SEED_LIMIT:
            raise MarkError(f"seeds holds {s!r}: a seed is a whole number from 0 to 2^63 - 1")
        out[s] = None  # in order, once each
    if not out:
        raise MarkError("seeds is empty: the mark would run nothing")
    return tuple(out)


def parse_mark(mark: pytest.Mark, with_seeds: bool = True) -> Spec:
    """The mark's run, checked; raises MarkError with a one-line message."""
    kw = dict(mark.kwargs)
    if len(mark.args) > 1 or (mark.args and "workload" in kw):
        raise MarkError("@pytest.mark.p2msim takes one positional argument, the workload")
    workload = mark.args[0] if mark.args else kw.pop("workload", None)
    if isinstance(workload, os.PathLike):
        workload = os.fspath(workload)
    if not isinstance(workload, str) or not workload:
        raise MarkError("@pytest.mark.p2msim needs workload=NAME_OR_PATH (a built-in name or a .py file)")
    seeds = _seeds(kw.pop("seeds", range(1))) if with_seeds else ()
    kw.pop("seeds", None)
    expect = kw.pop("expect", "clean")
    if expect not in EXPECTS:
        raise MarkError(
            f"expect={expect!r} is not one of {', '.join(map(repr, EXPECTS))}"
            + (_did_you_mean(expect, EXPECTS) if isinstance(expect, str) else "")
        )
    allow_vacuous = kw.pop("allow_vacuous", False)
    if not isinstance(allow_vacuous, bool):
        raise MarkError(f"allow_vacuous={allow_vacuous!r}: allow_vacuous takes True or False")
    for k, why in NOT_MARK_OPTIONS.items():
        if k in kw:
            raise MarkError(f"{k}= is not a mark option: {why}")
    known = _run_options()
    options = {k: _option(k, kw.pop(k), known[k]) for k in list(kw) if k in known}
    params = tuple((k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in sorted(kw.items()))
    return Spec(workload, seeds, expect, allow_vacuous, options, params)


def _config(spec: Spec, seed: int, profile: str | None) -> Any:
    from simulator.engine.simulation import Config

    options = dict(spec.options)
    if profile:
        options["profile"] = profile
    return Config(workload=spec.workload, seed=seed, params=spec.params, **options)


def _param_hint(spec: Spec) -> str:
    """A workload parameter that looks like a mistyped run option."""
    import difflib

    known = list(_run_options())
    for k, _ in spec.params:
        close = difflib.get_close_matches(k, known, n=1, cutoff=0.75)
        if close:
            return f"; {k}= is not a run option either (did you mean {close[0]}=?): other keywords go to the workload"
    return ""


def problem(spec: Spec, result: Any) -> str | None:
    """Why the verdict fails the item, or None.  ``vacuous`` (a run that opened no race window or made
    no guest access) fails expect='clean' unless the mark allows it."""
    verdict = getattr(result, "verdict", "clean")
    if spec.expect == "violation":
        return None if result.violations else f"expected a violation, found none (the run is {verdict})"
    if result.violations:
        n, classes = result.violation_count, ", ".join(sorted({v.cls for v in result.violations}))
        return f"expected clean, found {_count(n, 'violation')} ({classes})"
    if verdict == "clean" or (verdict == "vacuous" and spec.allow_vacuous):
        return None
    if verdict == "vacuous":
        return "expected clean, the run is vacuous: it could not have found a stale use (allow_vacuous=True accepts it)"
    if verdict == "incomplete":
        return "expected clean, the run is incomplete: the step budget ended it before the workload finished (steps=N)"
    return f"expected clean, the verdict is {verdict}"


# -- command-line options -------------------------------------------------------------------------


def parse_seeds(text: str) -> tuple[int, ...]:
    """``--p2msim-seeds``: ``A:B`` (seeds A to B-1, as `p2msim sweep --seeds`), ``N`` (that seed) or a
    comma-separated list of both (``1,5,9``, ``0:10,99``).  Raises ValueError with the reason."""

    def number(t: str) -> int:
        t = t.strip()
        try:
            v = int(t, 0)
        except ValueError:
            try:
                v = int(t)
            except ValueError:
                raise ValueError(f"{t!r} is not a whole number") from None
        if not 0 <= v < SEED_LIMIT:
            raise ValueError(f"{t!r} is not a seed (0 to 2^63 - 1)")
        return v

    out: dict[int, None] = {}
    for part in text.split(","):
        if not part.strip():
            raise ValueError("an empty part")
        if ":" in part:
            a, b = (number(t) for t in part.split(":", 1))
            if b <= a:
                raise ValueError(f"{part.strip()!r} is an empty range (A:B runs seeds A to B-1)")
            out.update(dict.fromkeys(range(a, b)))
        else:
            out[number(part)] = None
    return tuple(out)


@dataclass
class Options:
    seeds: tuple[int, ...] | None = None
    profile: str | None = None
    log_dir: Path | None = None
    invocation_dir: Path = Path()


OPTIONS = pytest.StashKey[Options]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("p2msim", "p2msim race hunts (@pytest.mark.p2msim)")
    g.addoption(
        "--p2msim-seeds",
        metavar="SEEDS",
        help="run every p2msim-marked test with these seeds instead of its own: A:B (seeds A to B-1), N, or 1,5,9",
    )
    g.addoption("--p2msim-profile", metavar="PROFILE", help="run every p2msim-marked test with this profile")
    g.addoption(
        "--p2msim-log-dir",
        metavar="DIR",
        help="keep the JSON-lines log and the schedule of each failing p2msim item in DIR, named by the item id",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "p2msim(workload, seeds=range(N), expect='clean'|'violation', allow_vacuous=False, profile=..., "
        "bugs=[...], **params): run a p2msim race hunt per seed; the item fails on an unexpected verdict",
    )
    opts = Options(invocation_dir=Path(config.invocation_params.dir))
    text = config.getoption("p2msim_seeds", None)
    if text is not None:
        try:
            opts.seeds = parse_seeds(text)
        except ValueError as exc:
            raise pytest.UsageError(
                f"--p2msim-seeds {text!r}: {exc} (give A:B for seeds A to B-1, N for one seed, or a list 1,5,9)"
            ) from None
    profile = config.getoption("p2msim_profile", None)
    if profile is not None:
        from simulator.engine.simulation import Config, ConfigError, validate

        try:
            validate(Config(workload="", profile=profile), bugs=False)
        except ConfigError as exc:
            raise pytest.UsageError(f"--p2msim-profile: {exc}") from None
        opts.profile = profile
    log_dir = config.getoption("p2msim_log_dir", None)
    if log_dir is not None:
        opts.log_dir = opts.invocation_dir / log_dir
    config.stash[OPTIONS] = opts
    config.pluginmanager.register(Session(config), "p2msim-session")


def _options(config: pytest.Config) -> Options:
    return config.stash.get(OPTIONS, None) or Options()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    mark = metafunc.definition.get_closest_marker(MARK)
    if mark is None:
        return
    where = metafunc.definition.nodeid
    try:
        spec, error = parse_mark(mark), ""
    except MarkError as exc:
        error = str(exc)
    if error:  # outside the except: the report is the one line, with no exception chained to it
        pytest.fail(f"p2msim: {where}: {error}", pytrace=False)
    if "p2msim_result" not in metafunc.fixturenames:
        pytest.fail(
            f"p2msim: {where}: @pytest.mark.p2msim runs nothing unless the test takes the p2msim_result fixture "
            f"(def {metafunc.function.__name__}(p2msim_result): ...)",
            pytrace=False,
        )
    seeds = _options(metafunc.config).seeds or spec.seeds
    if "p2msim_seed" not in metafunc.fixturenames:
        metafunc.fixturenames.append("p2msim_seed")
    metafunc.parametrize("p2msim_seed", seeds, ids=[f"seed{s}" for s in seeds])


# -- one item ---------------------------------------------------------------------------------------


@dataclass
class FixtureRun:
    result: Any
    main: Callable[[Any], Awaitable[None]] | None  # an inline scenario's driver, or None for a workload


@dataclass
class ItemState:
    spec: Spec | None = None
    result: Any = None  # the marked run
    crashed: str = ""  # the workload failed (WorkloadError) in the setup
    reported: bool = False  # the call phase failed with the explanation in its message
    runs: list[FixtureRun] = field(default_factory=list)  # through the p2msim fixture


STATE = pytest.StashKey[ItemState]()


def _state(item: pytest.Item) -> ItemState:
    if STATE not in item.stash:
        item.stash[STATE] = ItemState()
    return item.stash[STATE]


def _seed_of(item: pytest.Item) -> int | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("p2msim_seed") if callspec is not None else None


def item_key(nodeid: str, seed: int) -> str:
    """The item's id without its seed: ``t.py::test_x[seed3-a]`` -> ``t.py::test_x[a]``."""
    head, sep, rest = nodeid.partition("[")
    if not sep or not rest.endswith("]"):
        return nodeid
    ids = rest[:-1].split("-")
    token = f"seed{seed}"
    if token not in ids:
        return head
    ids.remove(token)
    return f"{head}[{'-'.join(ids)}]" if ids else head


def _describe(result: Any) -> str:
    if result.violations:
        return f"{_count(result.violation_count, 'violation')}: {', '.join(sorted({v.cls for v in result.violations}))}"
    return str(result.verdict)


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}" + ("" if n == 1 else "s")


def _shown_path(item: pytest.Item, path: str | Path) -> str:
    """A path as the user would type it: relative to where pytest was started, when it is below it."""
    rel = os.path.relpath(path, _options(item.config).invocation_dir)
    return str(path) if rel.startswith("..") else rel


def rerun_command(item: pytest.Item) -> str:
    """``pytest FILE::TEST[ID]``, from the directory pytest was started in."""
    _, _, rest = item.nodeid.partition("::")
    target = f"{_shown_path(item, item.path)}::{rest}" if rest else _shown_path(item, item.path)
    return f"pytest {shlex.quote(target)}"


def explain(result: Any, verbose: int = 0, replay: str | None = None) -> str:
    """The result's explanation; at most SHOWN_VIOLATIONS violations in full below -vv.  ``replay``
    replaces the result's replay command (an inline scenario's does not run)."""
    n = len(result.violations)
    if n <= SHOWN_VIOLATIONS or verbose >= 2:
        text = result.explain()
    else:
        parts = [f"VIOLATION {i} of {n}: {v.explain()}" for i, v in enumerate(result.violations[:SHOWN_VIOLATIONS], 1)]
        parts.append(f"... and {n - SHOWN_VIOLATIONS:,} more (-vv shows them all)")
        parts.append(f"replay: {result.replay_command}")
        text = "\n\n".join(parts)
    return text.replace(result.replay_command, replay) if replay else text


def _log_name(item: pytest.Item, suffix: str = "") -> str:
    name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", item.nodeid).strip("_.") + suffix
    if len(name) > 150:
        import hashlib

        name = name[:130] + "-" + hashlib.blake2b(item.nodeid.encode(), digest_size=6).hexdigest()
    return name


def _keep_log(item: pytest.Item, result: Any, name: str, main: Callable[..., Any] | None = None) -> list[str]:
    """Run the failing run again with a log in --p2msim-log-dir (and save its schedule); the lines that
    name them.  Runs are deterministic: the re-run must end with the same digest."""
    log_dir = _options(item.config).log_dir
    if log_dir is None:
        return []
    from simulator.engine import schedule
    from simulator.engine.simulation import run

    path = log_dir / f"{name}.jsonl"
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        again = run(replace(result.config, log=str(path)), main=main)
    except Exception as exc:  # an unwritable directory, a workload that fails only with a log, ...
        return [f"log: not written: {type(exc).__name__}: {exc}"]
    shown = _shown_path(item, path)
    inspect = f"p2msim inspect {shlex.quote(shown)}" + (" --violation 1" if again.violations else "")
    lines = [f"log: {shown}   inspect: {inspect}"]
    lines += [f"log: {e}" for e in again.output_errors]
    if again.digest != result.digest:
        lines.append(
            f"note: the run again with a log ended with digest {again.digest}, not {result.digest}: "
            "it is not deterministic (a p2msim bug: please report it)"
        )
    sched = schedule.schedule_path_for(str(path))
    if main is not None:  # `p2msim replay` cannot load an inline driver: the test reruns it
        sched.unlink(missing_ok=True)
        return lines
    if again.schedule_path is None and not again.output_errors:
        try:
            schedule.save(sched, schedule.to_schedule(again))
        except OSError as exc:
            return [*lines, f"schedule: not written: {exc}"]
    if sched.is_file():
        s = _shown_path(item, sched)
        lines.append(f"schedule: {s}   replay: p2msim replay {shlex.quote(s)}")
    return lines


def _drop_logs(item: pytest.Item) -> None:
    """A passing item leaves no log of an earlier failing run behind in --p2msim-log-dir."""
    log_dir = _options(item.config).log_dir
    if log_dir is None or not log_dir.is_dir():
        return
    name = _log_name(item)
    for p in [log_dir / f"{name}.jsonl", *log_dir.glob(f"{glob.escape(name)}-run*.jsonl")]:
        for q in (p, p.with_name(p.name + ".schedule.json")):
            q.unlink(missing_ok=True)


def _mark_text(item: pytest.Item, state: ItemState, why: str | None) -> str:
    """The marked run's part of a failure report: what failed, the explanation, how to rerun, the logs."""
    result, spec = state.result, state.spec
    assert result is not None and spec is not None
    c = result.config
    if state.reported:  # the verdict failed the item
        what = why
    elif why:
        what = f"{why}; and the test body failed"
    else:
        what = f"the run ended as expected ({_describe(result)}); the test body failed"
    head = f"p2msim: {c.workload} seed {c.seed}: {what}"
    lines = [head, "", explain(result, item.config.get_verbosity()), f"rerun: {rerun_command(item)}"]
    lines += _keep_log(item, result, _log_name(item))
    return "\n".join(lines)


def _runs_text(item: pytest.Item, state: ItemState) -> str:
    """The p2msim fixture's part: its runs that were not clean (or the last one), each with a replay that
    runs (an inline scenario's is the test itself)."""
    runs = state.runs
    shown = [(i, r) for i, r in enumerate(runs, 1) if r.result.verdict != "clean"] or [(len(runs), runs[-1])]
    out = []
    for i, r in shown[:SHOWN_RUNS]:
        replay = rerun_command(item) if r.main is not None else None
        c = r.result.config
        what = "inline scenario" if r.main is not None else "workload"
        lines = [f"p2msim fixture run {i} of {len(runs)} ({what} {c.workload}, seed {c.seed}): {r.result.verdict}"]
        text = explain(r.result, item.config.get_verbosity(), replay)
        lines += ["", text]
        if replay and f"replay: {replay}" not in text:
            lines.append(f"replay: {replay}")
        lines += _keep_log(item, r.result, _log_name(item, f"-run{i}"), r.main)
        out.append("\n".join(lines))
    if len(shown) > SHOWN_RUNS:
        out.append(f"... and {len(shown) - SHOWN_RUNS} more runs that were not clean")
    return "\n\n".join(out)


@pytest.fixture
def p2msim_result(request: pytest.FixtureRequest) -> Any:
    """The result of the marked test's race hunt for this item's seed."""
    from simulator.engine.scenario import WorkloadError
    from simulator.engine.simulation import ConfigError, replay_command, run

    item = request.node
    mark = item.get_closest_marker(MARK)
    if mark is None:
        pytest.fail(
            f"p2msim: {item.nodeid}: the p2msim_result fixture needs @pytest.mark.p2msim(workload=...) on the test",
            pytrace=False,
        )
    spec = parse_mark(mark, with_seeds=False)  # checked at collection
    seed = request.getfixturevalue("p2msim_seed")
    state = _state(item)
    state.spec = spec
    config = _config(spec, seed, _options(request.config).profile)
    try:
        result, error = run(config), ""
    except ConfigError as exc:
        error = f"{exc}{_param_hint(spec)}"
    except WorkloadError as exc:
        state.crashed = str(exc)
        error = f"{exc}\nreplay: {replay_command(config)}\nrerun: {rerun_command(item)}"
    if error:  # outside the except: one message, no exception chained to it
        pytest.fail(f"p2msim: {item.nodeid}: {error}", pytrace=False)
    state.result = result
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """After the test body: the verdict.  A failure here is the item's one report."""
    result = yield
    state = item.stash.get(STATE, None)
    if state is not None and state.result is not None and state.spec is not None:
        why = problem(state.spec, state.result)
        if why is not None:
            state.reported = True
            text = _mark_text(item, state, why)
            if state.runs:
                text += "\n\n" + _runs_text(item, state)
            pytest.fail(text, pytrace=False)
    return result


def _info(result: Any, kind: str) -> dict[str, Any]:
    """What the summary needs of a run (plain data: it travels in the report, e.g. to xdist's controller)."""
    windows, defences = _coverage(result)
    return {
        "kind": kind,
        "verdict": result.verdict,
        "warnings": result.warning_count,
        "warning_kinds": dict(getattr(result, "warning_kinds", {}) or {}),
        "windows": windows,
        "defences": defences,
    }


def _coverage(result: Any) -> tuple[dict[str, int] | None, dict[str, int] | None]:
    """Race windows opened and what closed them; None where this p2msim's results do not say.

    Takes ``windows: {window: n}`` with ``defences: {defence: n}``, or ``windows: {"opened": {...},
    "closed_by": {...}}``."""
    w = getattr(result, "windows", None)
    if not isinstance(w, dict):
        return None, None
    if isinstance(w.get("opened"), dict):
        opened, defences = w["opened"], w.get("closed_by")
    else:
        opened, defences = w, getattr(result, "defences", None)

    def ints(d: Any) -> dict[str, int] | None:
        return {str(k): v for k, v in d.items() if isinstance(v, int)} if isinstance(d, dict) else None

    return ints(opened), ints(defences)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    state = item.stash.get(STATE, None)
    if state is None:
        return report
    seed = _seed_of(item)
    if call.when == "setup" and state.crashed and seed is not None:
        report.p2msim_key = [item_key(item.nodeid, seed), seed]
        report.p2msim = [{"kind": "mark", "verdict": "workload-error", "warnings": 0, "warning_kinds": {}}]
    if call.when != "call":
        return report
    infos = [_info(state.result, "mark")] if state.result is not None else []
    infos += [_info(r.result, "fixture") for r in state.runs]
    report.p2msim = infos
    if state.result is not None and seed is not None:
        report.p2msim_key = [item_key(item.nodeid, seed), seed]
    if report.failed and state.reported:
        # the short summary shows the failure's first line only: on CI (where pytest does not truncate
        # it) the whole explanation would otherwise be printed a second time
        crash = getattr(report.longrepr, "reprcrash", None)
        if crash is not None and isinstance(crash.message, str):
            crash.message = crash.message.split("\n", 1)[0]
    if report.failed and not state.reported:
        parts = []
        if state.result is not None and state.spec is not None:
            parts.append(_mark_text(item, state, problem(state.spec, state.result)))
        if state.runs:
            parts.append(_runs_text(item, state))
        if parts:
            report.sections.append(("p2msim", "\n\n".join(parts)))
    elif report.passed:
        _drop_logs(item)
    return report


# -- the session: failure cache, header, summary ----------------------------------------------------


class Session:
    """Seeds that failed last time run first (through pytest's cache); the terminal summary."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.failed: set[tuple[str, int]] = set()
        self.passed: set[tuple[str, int]] = set()
        self.first = 0  # items moved to the front
        self.infos: list[dict[str, Any]] = []
        self.tests: set[str] = set()

    def _cache(self) -> Any:
        return getattr(self.config, "cache", None)

    def last_failed(self) -> set[tuple[str, int]]:
        cache = self._cache()
        raw = cache.get(CACHE_KEY, []) if cache is not None else []
        out = set()
        for entry in raw if isinstance(raw, list) else []:
            if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], int):
                out.add((str(entry[0]), entry[1]))
        return out

    @pytest.hookimpl(trylast=True)  # after -k / -m deselect
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        before = self.last_failed()
        if not before:
            return

        def failed(item: pytest.Item) -> bool:
            seed = _seed_of(item)
            return seed is not None and (item_key(item.nodeid, seed), seed) in before

        first = [i for i in items if failed(i)]
        if first:
            rest = [i for i in items if not failed(i)]
            items[:] = first + rest
        self.first = len(first)

    def pytest_report_header(self) -> list[str]:
        opts = _options(self.config)
        said = []
        if opts.seeds is not None:
            said.append(f"seeds {self.config.getoption('p2msim_seeds')} ({_count(len(opts.seeds), 'seed')})")
        if opts.profile:
            said.append(f"profile {opts.profile}")
        lines = [f"p2msim: every marked test runs with {' and '.join(said)}"] if said else []
        if opts.log_dir is not None:
            lines.append(f"p2msim: failing items keep their logs in {_shown_path_dir(opts)}")
        return lines

    def pytest_report_collectionfinish(self) -> list[str]:
        if not self.first:
            return []
        return [f"p2msim: {_count(self.first, 'seed')} that failed last time run first"]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        key = getattr(report, "p2msim_key", None)
        if key is not None:
            k = (str(key[0]), int(key[1]))
            if report.failed:
                self.failed.add(k)
            elif report.passed and report.when == "call":
                self.passed.add(k)
            self.tests.add(k[0])
        infos = getattr(report, "p2msim", None)
        if infos:
            self.infos += infos

    def pytest_sessionfinish(self) -> None:
        cache = self._cache()
        if cache is None or hasattr(self.config, "workerinput"):  # xdist: the controller writes
            return
        before = self.last_failed()
        after = (before - self.passed) | self.failed
        if after != before:
            cache.set(CACHE_KEY, sorted([list(k) for k in after]))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.infos or self.config.get_verbosity() < -1:
            return
        terminalreporter.section("p2msim summary")
        for line in summary(self.infos, len(self.tests)):
            terminalreporter.write_line(line)


def _shown_path_dir(opts: Options) -> str:
    assert opts.log_dir is not None
    rel = os.path.relpath(opts.log_dir, opts.invocation_dir)
    return str(opts.log_dir) if rel.startswith("..") else rel


def _tally(infos: list[dict[str, Any]]) -> str:
    verdicts: dict[str, int] = {}
    for i in infos:
        verdicts[i["verdict"]] = verdicts.get(i["verdict"], 0) + 1
    order = ["clean", "violation", "vacuous", "incomplete", "workload-error"]
    names = sorted(verdicts, key=lambda v: (order.index(v) if v in order else len(order), v))
    return ", ".join(f"{verdicts[v]:,} {v}" for v in names)


def _add(into: dict[str, int], d: dict[str, int] | None) -> None:
    for k, v in (d or {}).items():
        into[k] = into.get(k, 0) + v


def summary(infos: list[dict[str, Any]], tests: int) -> list[str]:
    """The lines of the terminal summary: seeds and verdicts, warnings, window coverage."""
    marked = [i for i in infos if i["kind"] == "mark"]
    fixture = [i for i in infos if i["kind"] == "fixture"]
    parts = []
    if marked:
        parts.append(f"{_count(len(marked), 'seed')} of {_count(tests, 'marked test')}: {_tally(marked)}")
    if fixture:
        parts.append(f"{_count(len(fixture), 'run')} through the p2msim fixture: {_tally(fixture)}")
    lines = ["; ".join(parts)]
    warnings = sum(i["warnings"] for i in infos)
    kinds: dict[str, int] = {}
    for i in infos:
        _add(kinds, i.get("warning_kinds"))
    if warnings:
        detail = ", ".join(f"{k} {n:,}" for k, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(_count(warnings, "warning") + (f" ({detail})" if detail else ""))
    measured = [i for i in infos if i.get("windows") is not None]
    if not measured:
        lines.append("windows opened: not measured (this p2msim's results do not count race windows)")
        return lines
    opened: dict[str, int] = {}
    defences: dict[str, int] = {}
    for i in measured:
        _add(opened, i["windows"])
        _add(defences, i.get("defences"))
    some = sorted(((k, n) for k, n in opened.items() if n), key=lambda kv: (-kv[1], kv[0]))
    never = sorted(k for k, n in opened.items() if not n)
    text = ", ".join(f"{k} {n:,}" for k, n in some) or "none"
    if never:
        text += f"; never opened: {', '.join(never)}"
    of = f" (over {len(measured):,} of {len(infos):,} runs)" if len(measured) != len(infos) else ""
    lines.append(f"windows opened{of}: {text}")
    if defences:
        closed = sorted(defences.items(), key=lambda kv: (-kv[1], kv[0]))
        lines.append("windows closed by: " + ", ".join(f"{k} {n:,}" for k, n in closed))
    return lines


# -- the p2msim fixture ----------------------------------------------------------------------------


class P2msimRunner:
    """The ``p2msim`` fixture: run workloads or inline scenarios from a test.

    A failing test shows the runs that were not clean, with a replay command that works."""

    def __init__(self, item: pytest.Item | None = None) -> None:
        self._item = item

    def _record(self, result: Any, main: Callable[..., Any] | None = None) -> Any:
        if self._item is not None:
            _state(self._item).runs.append(FixtureRun(result, main))
        return result

    def run(self, workload: str, seed: int = 0, **kw: Any) -> Any:
        from simulator import run_workload

        return self._record(run_workload(workload, seed=seed, **kw))

    def scenario(self, main: Callable[[Any], Awaitable[None]], seed: int = 0, **config: Any) -> Any:
        """Run ``main(sim)`` as the workload driver (see simulator.engine.scenario.Scenario)."""
        from simulator.engine.simulation import Config, run

        if "bugs" in config:
            config["bugs"] = tuple(config["bugs"])
        result = run(Config(workload=getattr(main, "__name__", "scenario"), seed=seed, **config), main=main)
        return self._record(result, main)

    def sweep(self, workload: str, seeds: Iterable[int], **kw: Any) -> list[Any]:
        return [self.run(workload, seed=s, **kw) for s in seeds]


@pytest.fixture
def p2msim(request: pytest.FixtureRequest) -> P2msimRunner:
    return P2msimRunner(request.node)
