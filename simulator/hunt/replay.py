"""`p2msim replay`: re-execute a recorded run and confirm it ends the same way.

The same verdict (violation classes and count), the same digest, and for an
exact schedule the same switches: the run reproduced.  Otherwise the first
step where the schedules part ways is named, so a user can tell a changed
model from a changed workload.  A source that records neither a digest nor
a verdict (the log of an interrupted run, a schedule with its verdict taken
out) has nothing to compare: that is said, never "reproduced".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from simulator.engine import provenance, schedule
from simulator.engine.simulation import Result, run


@dataclass
class Replay:
    source: str
    result: Result
    recorded: dict[str, Any]
    same_digest: bool
    same_verdict: bool
    diverged_at: int | None

    compared: tuple[str, ...] = ()  # what the source recorded and the replay was held to
    changed: tuple[str, ...] = ()  # the recorded files or model that differ now (engine.provenance)

    @property
    def nothing_to_compare(self) -> bool:
        return not self.compared

    @property
    def reproduced(self) -> bool:
        exact = self.recorded.get("fallback", "exact") == "exact"
        return bool(self.compared) and self.same_digest and self.same_verdict and not (exact and self.diverged_at)


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
    actors = config.pcpus + 1  # the harts, then the driver
    for i, (seq, actor) in enumerate(decisions):
        if not 0 <= actor < actors:
            raise schedule.ScheduleError(
                f"{path}: decision {i} (step {seq:,}) names actor {actor}, but the run has actors 0-{actors - 1} "
                f"(harts 0-{actors - 2}, then the driver)"
            )
    overrides: dict[str, Any] = {"log": log, "paths": _located(config, recorded.get("sources"), Path(path).parent)}
    if backend:
        overrides["backend"] = backend
    result = run(replace(config, **overrides), decisions=decisions, fallback=recorded.get("fallback", "exact"))
    classes = sorted({v.cls for v in result.violations})
    compared = tuple(k for k in ("digest", "classes", "violations") if recorded.get(k) is not None)
    same_digest = recorded.get("digest") in (None, result.digest)
    same_verdict = recorded.get("classes") in (None, classes) and recorded.get("violations") in (
        None,
        result.violation_count,
    )
    # schedules hold the exact switches of the run they came from, so the lists must agree
    diverged = first_divergence(decisions, result.decisions)
    changed = tuple(provenance.changes(recorded.get("sources"), result.sources))
    return Replay(str(path), result, recorded, same_digest, same_verdict, diverged, compared, changed)


def _located(config: Any, sources: dict[str, Any] | None, beside: Path) -> tuple[tuple[str, str], ...]:
    """The recorded workload and variant files, found again from here (see provenance.locate)."""
    sources = sources or {}
    found = []
    named = [(config.workload, sources.get("workload"))]
    named += list(zip(config.variants, sources.get("variants") or [None] * len(config.variants), strict=False))
    for name, rec in named:
        where = provenance.locate(name, rec, beside)
        if where is not None:
            found.append((name, where))
    return tuple(found)
