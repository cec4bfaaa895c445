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

Each seed is its own test item (``test_x[seed=17]``).  A failing item shows
the violation's explanation and the command that replays it.  For custom
scenarios, the ``p2msim`` fixture runs an inline driver or any workload.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import pytest

MARK = "p2msim"
RUN_OPTIONS = {
    "profile",
    "bugs",
    "strategy",
    "backend",
    "pcpus",
    "steps",
    "pct_depth",
    "speculate",
    "strict",
    "vmid_bits",
    "tlb_leaf",
    "tlb_nonleaf",
    "frames",
    "mode",
    "xen_opts",
    "debug_build",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "p2msim(workload, seeds=range(N), expect='clean'|'violation', profile=..., bugs=[...], **params): "
        "run a p2msim race hunt per seed; the item fails on an unexpected verdict",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    mark = metafunc.definition.get_closest_marker(MARK)
    if mark is None:
        return
    seeds = list(mark.kwargs.get("seeds", range(1)))
    if "p2msim_seed" not in metafunc.fixturenames:
        metafunc.fixturenames.append("p2msim_seed")
    metafunc.parametrize("p2msim_seed", seeds, ids=[f"seed={s}" for s in seeds])


def _config_from_mark(mark: pytest.Mark, seed: int) -> Any:
    from simulator.engine.simulation import Config

    kw = dict(mark.kwargs)
    workload = kw.pop("workload", mark.args[0] if mark.args else None)
    if workload is None:
        raise pytest.UsageError("@pytest.mark.p2msim needs workload=NAME_OR_PATH")
    kw.pop("seeds", None)
    kw.pop("expect", None)
    options = {k: kw.pop(k) for k in list(kw) if k in RUN_OPTIONS}
    if "bugs" in options:
        options["bugs"] = tuple(options["bugs"])
    params = tuple((k, str(v)) for k, v in sorted(kw.items()))
    return Config(workload=workload, seed=seed, params=params, **options)


@pytest.fixture
def p2msim_result(request: pytest.FixtureRequest) -> Any:
    """The result of the marked test's race hunt for this item's seed."""
    from simulator.engine.simulation import ConfigError, run

    mark = request.node.get_closest_marker(MARK)
    if mark is None:
        raise pytest.UsageError("p2msim_result needs @pytest.mark.p2msim(workload=...) on the test")
    seed = request.getfixturevalue("p2msim_seed")
    try:
        result = run(_config_from_mark(mark, seed))
    except ConfigError as exc:
        raise pytest.UsageError(f"p2msim: {exc}") from None
    request.node.p2msim_result = result
    return result


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    outcome = yield
    mark = item.get_closest_marker(MARK)
    result = getattr(item, "p2msim_result", None)
    if mark is None or result is None or outcome.excinfo is not None:
        return
    expect = mark.kwargs.get("expect", "clean")
    if expect == "clean" and result.violations:
        pytest.fail(f"p2msim found a violation\n\n{result.explain()}", pytrace=False)
    if expect == "clean" and result.verdict == "incomplete":
        pytest.fail(f"p2msim could not finish the run: {result.explain()}", pytrace=False)
    if expect == "violation" and not result.violations:
        pytest.fail(f"p2msim expected a violation and found none: {result.replay_command}", pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    result = getattr(item, "p2msim_result", None)
    if result is not None and report.when == "call" and report.failed:
        report.sections.append(("p2msim", f"{result.explain()}\nreplay: {result.replay_command}"))


class P2msimRunner:
    """The ``p2msim`` fixture: run workloads or inline scenarios from a test."""

    def run(self, workload: str, seed: int = 0, **kw: Any) -> Any:
        from simulator import run_workload

        return run_workload(workload, seed=seed, **kw)

    def scenario(self, main: Callable[[Any], Awaitable[None]], seed: int = 0, **config: Any) -> Any:
        """Run ``main(sim)`` as the workload driver (see simulator.engine.scenario.Scenario)."""
        from simulator.engine.simulation import Config, run

        if "bugs" in config:
            config["bugs"] = tuple(config["bugs"])
        return run(Config(workload=getattr(main, "__name__", "scenario"), seed=seed, **config), main=main)

    def sweep(self, workload: str, seeds: Iterable[int], **kw: Any) -> list[Any]:
        return [self.run(workload, seed=s, **kw) for s in seeds]


@pytest.fixture
def p2msim() -> P2msimRunner:
    return P2msimRunner()
