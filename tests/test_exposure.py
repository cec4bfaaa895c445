"""The catalogue's "exposed by" is measured: the record of `p2msim matrix --record`, re-checked here.

Every catalogued bug has a record; a workload appears under it only where a
strategy found it, and for each recorded random-strategy detection the seed
it names is run again here and must show the bug.
"""

from __future__ import annotations

import pytest

from simulator.cli import main as cli_main
from simulator.engine.bugs import BUGS
from simulator.engine.simulation import Config, run
from simulator.hunt import exposure

RECORD = exposure.load()
CATALOGUE = sorted(b for b in BUGS if not b.startswith("t-"))  # tests register their own
DETECTIONS = [
    (bug, workload, by["random"])
    for bug, cells in sorted(RECORD["bugs"].items())
    for workload, by in sorted(cells.items())
    if by.get("random") is not None
]


def test_every_catalogued_bug_was_measured_on_the_workloads_it_is_tried_on() -> None:
    for bug in CATALOGUE:
        assert bug in RECORD["bugs"], f"{bug}: run `p2msim matrix --bug {bug} --record`"
        assert set(RECORD["bugs"][bug]) <= set(BUGS[bug].workloads), bug


@pytest.mark.parametrize(("bug", "workload", "seeds"), DETECTIONS, ids=[f"{b}:{w}" for b, w, _ in DETECTIONS])
def test_the_recorded_first_detection_still_detects(bug: str, workload: str, seeds: int) -> None:
    r = run(Config(workload, seed=seeds - 1, bugs=(bug,), **dict(BUGS[bug].config)))
    assert r.violations, f"{bug} on {workload}: seed {seeds - 1} no longer finds it; re-run the matrix with --record"


def test_list_shows_only_where_the_matrix_found_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["list"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for bug in CATALOGUE:
        found = exposure.exposed_by(bug) or {}
        for workload in BUGS[bug].workloads:
            shown = f"{workload} (" in exposure.describe(bug)
            assert shown == (workload in found), (bug, workload)
    assert "exposed by:" in out
