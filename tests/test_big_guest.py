"""big-guest: the scale workload builds, runs and frees a guest of any size, 4K or 2M, and leaves nothing."""

from __future__ import annotations

import re

import pytest

from simulator.engine.scenario import WorkloadError
from simulator.engine.simulation import Config, hunting_workloads, run


@pytest.mark.parametrize("order", [0, 9])
def test_a_guest_is_built_run_and_freed_with_nothing_left(order: int) -> None:
    r = run(Config("big-guest", params=(("mib", "8"), ("order", str(order)), ("run", "500"))))
    assert r.verdict == "clean" and r.stop_reason == "done", r.explain()
    if order == 0:
        assert r.stats["frames_freed"] >= 8 << 8  # every page of its RAM, and its tables
    assert r.stats["accesses"] > 0 and r.stats["walks"] > 0


def test_the_machine_and_the_budget_grow_to_fit_the_guest() -> None:
    """64 MiB of RAM does not fit the default 16,384 frames: the run says what it ran with, and its replay
    command carries it; an explicit --steps is the user's to keep (and may end the run early)."""
    r = run(Config("big-guest", params=(("mib", "64"), ("run", "10"))))
    assert r.config.frames == 20992 and r.verdict == "clean"  # 16,384 pages + tables + Xen, in 2 MiB
    assert r.notes == ["workload big-guest runs with --frames 20992 (what it needs for its parameters)"]
    assert "--frames 20992" in r.replay_command
    short = run(Config("big-guest", params=(("mib", "64"),), steps=5000))
    assert short.stop_reason == "budget" and short.config.steps == 5000


def test_big_guest_is_not_a_race_hunt_and_refuses_a_bad_shape() -> None:
    assert "big-guest" not in hunting_workloads() and "teardown-under-load" in hunting_workloads()
    with pytest.raises(WorkloadError, match=re.escape("-p order=3: 0 (4K pages) or 9 (2M superpages)")):
        run(Config("big-guest", params=(("mib", "8"), ("order", "3"))))
    with pytest.raises(WorkloadError, match="a whole number of 2 MiB"):
        run(Config("big-guest", params=(("mib", "0"), ("gib", "0"))))


def test_the_readme_quotes_the_note_a_gib_guest_gets() -> None:
    """The README's example of a grown machine is what `p2msim run big-guest -p gib=1` says."""
    from pathlib import Path

    from simulator.engine.simulation import _params, _sized_for, load_workload

    mod = load_workload("big-guest")
    config = Config("big-guest", params=(("gib", "1"),))
    _config, note = _sized_for(mod, _params(mod, config), config)
    readme = " ".join((Path(__file__).resolve().parent.parent / "README.md").read_text().split())
    assert f"`{note}`" in readme, note
