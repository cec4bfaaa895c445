"""`p2msim replay`: re-execute a recorded run and confirm it ends the same way.

The same verdict (violation classes and count), the same digest: the run
reproduced.  Otherwise the first step where the schedules part ways is named,
so a user can tell a changed model from a changed workload.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from simulator.engine import schedule
from simulator.engine.simulation import Result, run


@dataclass
class Replay:
    source: str
    result: Result
    recorded: dict[str, Any]
    same_digest: bool
    same_verdict: bool
    diverged_at: int | None

    @property
    def reproduced(self) -> bool:
        return self.same_digest and self.same_verdict


def first_divergence(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> int | None:
    """The logical step of the first decision that differs, or None."""
    for x, y in zip(a, b, strict=False):
        if x != y:
            return min(x[0], y[0])
    if len(a) != len(b):
        longer = a if len(a) > len(b) else b
        return longer[min(len(a), len(b))][0]
    return None


def replay(path: str | Path, backend: str | None = None, log: str | None = None) -> Replay:
    config, decisions, recorded = schedule.load(path)
    overrides: dict[str, Any] = {"log": log}
    if backend:
        overrides["backend"] = backend
    result = run(replace(config, **overrides), decisions=decisions, fallback=recorded.get("fallback", "exact"))
    classes = sorted({v.cls for v in result.violations})
    same_digest = recorded.get("digest") in (None, result.digest)
    same_verdict = "classes" not in recorded or (
        recorded["classes"] == classes and recorded.get("violations") in (None, result.violation_count)
    )
    # schedules hold the exact switches of the run they came from, so the lists must agree
    diverged = first_divergence(decisions, result.decisions)
    return Replay(str(path), result, recorded, same_digest, same_verdict, diverged)
