"""`p2msim shrink`: the smallest schedule that still fails the same way.

A failing run is its seed plus the conductor's decisions (context switches).
Shrinking keeps the seed - so every data choice is the same - and works on the
decisions, with the run stopped at its first violation:

1. fewer harts: rerun the seed with fewer harts while the same class shows up;
2. cut the tail: decisions after the first violation cannot matter;
3. delta debugging (Zeller's ddmin) over the decision list: drop chunks of
   switches while the replay (with the sticky fallback of the replay strategy:
   the current actor keeps running where the list says nothing) still ends in
   a violation of the same class.  After each success the list is replaced by
   the switches the replay really made, so it stays an exact recording.

The result is an exact schedule: ``p2msim replay`` and ``p2msim inspect``
accept it, and it reproduces its digest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from simulator.engine import schedule
from simulator.engine.scenario import WorkloadError
from simulator.engine.simulation import Config, Result, load_workload, run

Decisions = list[tuple[int, int]]


@dataclass
class Size:
    harts: int
    preemptions: int
    switches: int
    steps: int
    accesses: int

    def describe(self) -> str:
        return (
            f"{self.harts} harts, {self.preemptions:,} preemptions ({self.switches:,} context switches in all), "
            f"{self.steps:,} steps, {self.accesses:,} guest accesses"
        )


@dataclass
class Shrunk:
    cls: str
    before: Size
    to_first: Size  # the original up to its first violation
    after: Size
    tests: int
    seconds: float
    result: Result
    fallback: str = "fair"
    path: Path | None = None


class Shrinker:
    def __init__(
        self,
        config: Config,
        decisions: Decisions,
        *,
        max_tests: int = 400,
        max_seconds: float = 120.0,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.config = replace(config, log=None)
        self.decisions = decisions
        self.max_tests = max_tests
        self.max_seconds = max_seconds
        self.tests = 0
        self.progress = progress or (lambda _m: None)
        self.started = 0.0

    # -- the oracle of the search --------------------------------------------------------

    def _try(self, config: Config, decisions: Decisions | None) -> Result | None:
        """Run with stop-at-first; the result if it fails with our class, else None."""
        self.tests += 1
        try:
            r = run(replace(config, stop_at_first=True), decisions=decisions, fallback="fair")
        except WorkloadError:
            return None  # e.g. fewer harts than the workload accepts
        if r.violations and r.violations[0].cls == self.cls:
            return r
        return None

    def _out_of_budget(self) -> bool:
        return self.tests >= self.max_tests or time.monotonic() - self.started > self.max_seconds

    @staticmethod
    def _size(r: Result) -> Size:
        return Size(r.config.pcpus, sum(r.preemptive), r.stats["switches"], r.stats["steps"], r.stats["accesses"])

    # -- the phases -------------------------------------------------------------------------

    def shrink(self) -> Shrunk:
        self.started = time.monotonic()
        original = run(self.config, decisions=self.decisions)
        if not original.violations:
            raise ValueError("this schedule does not fail: nothing to shrink")
        self.cls = original.violations[0].cls
        before = self._size(original)
        first = run(replace(self.config, stop_at_first=True), decisions=self.decisions)
        self.to_first = self._size(first)
        config, best = self.config, first
        fallback = "exact"  # how `best` was produced: a recorded run, or a fair replay
        self.progress(
            f"original: {before.describe()}; first violation {self.cls} at step {first.stats['steps']:,} "
            f"after {self.to_first.preemptions:,} preemptions"
        )

        # 1. fewer harts: the same seed, fewer harts, a fresh schedule from the original strategy
        least = getattr(load_workload(config.workload), "PCPUS", (1, ""))[0]
        for harts in range(least, config.pcpus):  # the workload refuses fewer
            if self._out_of_budget():
                break
            r = self._try(replace(config, pcpus=harts), None)
            if r is not None:
                config, best = replace(config, pcpus=harts), r
                self.progress(f"fewer harts: {harts} still fail ({sum(r.preemptive):,} preemptions)")
                break

        # 2. ddmin over the preemptions (switches forced by blocking are kept: they are not choices,
        #    and the replay's fallback would make them anyway)
        granularity = 2
        while not self._out_of_budget():
            pre = [i for i, p in enumerate(best.preemptive) if p]
            if not pre:
                break
            chunk = max(1, len(pre) // granularity)
            reduced = False
            for start in range(0, len(pre), chunk):
                if self._out_of_budget():
                    break
                drop = set(pre[start : start + chunk])
                candidate = [d for i, d in enumerate(best.decisions) if i not in drop]
                r = self._try(config, candidate)
                if r is not None and sum(r.preemptive) < len(pre):
                    best, fallback = r, "fair"
                    granularity = max(granularity - 1, 2)
                    reduced = True
                    self.progress(f"ddmin: {sum(r.preemptive):,} preemptions (run {self.tests})")
                    break
            if not reduced:
                if chunk == 1:
                    break
                granularity = min(len(pre), granularity * 2)

        # the minimal schedule, replayed once more so its verdict and digest are recorded honestly;
        # it ends at its violation (stop_at_first is part of its configuration)
        final = run(replace(config, stop_at_first=True), decisions=best.decisions, fallback=fallback)
        self.fallback = fallback
        after = self._size(final)
        return Shrunk(
            self.cls, before, self.to_first, after, self.tests, time.monotonic() - self.started, final, fallback
        )


def shrink_file(source: str | Path, out: str | Path | None = None, **kw: Any) -> Shrunk:
    """Raises ScheduleError for a source it cannot read or a target it cannot write (checked first, so no
    shrinking is done for nothing)."""
    config, decisions, _recorded = schedule.load(source)
    target = Path(out) if out else Path(str(source) + ".shrunk.json")
    if target.resolve() == Path(source).resolve():
        raise schedule.ScheduleError(f"-o {target} is the source itself: the shrunk schedule would overwrite it")
    probe = target if target.exists() and not target.is_file() else target.with_name(target.name + ".tmp")
    try:
        if probe is target:  # a device or a pipe: it must take a write (/dev/full does not)
            with target.open("wb") as fh:
                fh.write(b"\n")
        else:
            probe.write_bytes(b"")
            probe.unlink()
    except OSError as exc:
        raise schedule.ScheduleError(f"cannot write {target}: {exc.strerror}") from None
    shrunk = Shrinker(config, decisions, **kw).shrink()
    data = schedule.to_schedule(shrunk.result, fallback=shrunk.fallback)
    data["shrunk_from"] = {"source": str(source), **shrunk.before.__dict__}
    try:
        shrunk.path = schedule.save(target, data)
    except OSError as exc:
        raise schedule.ScheduleError(f"cannot write {target}: {exc.strerror}; the shrunk schedule is lost") from None
    return shrunk
