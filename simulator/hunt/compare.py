"""`p2msim compare`: your variant against a baseline, over the same seeds and workloads, side by side.

Both sides run every (workload, seed) with the same configuration; the only
difference is the variant files.  A finding is named by its cause (class,
case, C function), so "adds" means the variant shows a cause the baseline
never showed on these seeds, and "removes" the other way round.  The
numbers beside them (fences sent, frames freed and reused, steps, warnings)
are sums over the runs, so the cost of a change shows with its safety.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from simulator.engine import windows
from simulator.engine.scenario import WorkloadError
from simulator.engine.simulation import Config, ConfigError, SeedTimeout, hunting_workloads, replay_command, run
from simulator.hunt.sweep import _interruptible, _worker_init, stop_pool

Cause = tuple[str, str, str]  # class, case, function


@dataclass
class Side:
    runs: int = 0
    failing: list[int] = field(default_factory=list)
    causes: Counter[Cause] = field(default_factory=Counter)  # cause -> seeds that showed it
    example: dict[Cause, str] = field(default_factory=dict)  # cause -> the replay command of its first seed
    incomplete: int = 0  # budget stops and timeouts: no verdict
    compared: int = 0  # runs whose numbers are summed below (both sides of the seed ran to the end)
    warnings: int = 0
    fences_sent: int = 0
    frames_freed: int = 0
    frames_reused: int = 0
    steps: int = 0
    windows: dict[str, Any] = field(default_factory=dict)  # race windows over the compared runs

    def add(self, seed: int, r: dict[str, Any], numbers: bool) -> None:
        """``numbers``: both sides of this seed ran to the end, so its counts compare like for like."""
        self.runs += 1
        if r["causes"]:
            self.failing.append(seed)
        for c in r["causes"]:
            self.causes[c] += 1
            self.example.setdefault(c, r["replay"])
        self.incomplete += r["stop"] in ("budget", "timeout")
        if numbers:
            self.compared += 1
            for k in ("warnings", "fences_sent", "frames_freed", "frames_reused", "steps"):
                setattr(self, k, getattr(self, k) + r[k])
            windows.add(self.windows, r["windows"])

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "failing": sorted(self.failing),
            "causes": [
                {"class": c[0], "case": c[1], "function": c[2], "seeds": n} for c, n in sorted(self.causes.items())
            ],
            "incomplete": self.incomplete,
            "compared": self.compared,
            "warnings": self.warnings,
            "fences_sent": self.fences_sent,
            "frames_freed": self.frames_freed,
            "frames_reused": self.frames_reused,
            "steps": self.steps,
            "windows": self.windows,
        }


def _one(args: tuple[Config, float | None]) -> dict[str, Any]:
    config, limit = args
    try:
        with _interruptible():
            r = run(config, time_limit=limit)
    except KeyboardInterrupt:
        raise KeyboardInterrupt from None
    except SeedTimeout:
        return _result(config, [], "timeout", {})
    except WorkloadError as exc:  # the change made a hypercall fail (a pool too small, say): a finding of its own
        why = getattr(exc, "reason", None) or str(exc).split(": ", 1)[-1]  # not the step, not the place
        return _result(config, [("workload-error", _shape(why), config.workload)], "error", {})
    causes = sorted(
        {(v.cls, v.cause.case, v.cause.function) if v.cause else (v.cls, _shape(v.headline), "") for v in r.violations}
    )
    return _result(config, causes, r.stop_reason, r.stats, r.warning_count, r.windows)


def _shape(text: str) -> str:
    """One cause for every seed it hits: a finding with no causal case (an invariant, a panic) is named by
    its headline with the numbers taken out."""
    return re.sub(r"0x[0-9a-f]+|\d[\d,]*", "#", text)[:200]


def _result(
    config: Config,
    causes: list[Cause],
    stop: str,
    stats: dict[str, int],
    warnings: int = 0,
    opened: dict[str, Any] | None = None,
) -> dict[str, Any]:
    keys = ("fences_sent", "frames_freed", "frames_reused", "steps")
    return {
        "causes": causes,
        "stop": stop,
        "replay": replay_command(config),
        "warnings": warnings,
        "windows": opened or {},
    } | {k: stats.get(k, 0) for k in keys}


def compare(
    variants: tuple[str, ...],
    against: str = "fixed",
    workloads: list[str] | None = None,
    seeds: int = 20,
    jobs: int = 2,
    seed_timeout: float | None = None,
    base: Config | None = None,
    xen_tree: str = "",
    against_tree: str = "",
) -> dict[str, Any]:
    """Run both sides; raises ConfigError for bad input (checked on the first run of each side).

    The variant side is the baseline with ``variants`` applied and, with ``xen_tree``, that tree's
    C as its P2M; the baseline runs ``against_tree``'s C if one is given, else the Python model.
    """
    if not variants and not xen_tree:
        raise ConfigError("compare needs at least one --variant FILE (or a --xen-tree)")
    names = workloads or hunting_workloads()
    template = base or Config("")
    tasks: list[tuple[str, int, str, Config]] = []
    for w in names:
        for s in range(seeds):
            b = replace(template, workload=w, seed=s, profile=against, variants=(), xen_tree=against_tree)
            tasks.append((w, s, "baseline", b))
            tasks.append((w, s, "variant", replace(b, variants=tuple(variants), xen_tree=xen_tree or against_tree)))
    for _w, _s, _side, c in tasks[:2]:  # bad input once, here, with its own message
        with contextlib.suppress(WorkloadError):  # a workload failing on a side is its finding (see _one)
            run(replace(c, steps=1))
    per: dict[str, dict[str, Side]] = {w: {"baseline": Side(), "variant": Side()} for w in names}
    pool = ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init)
    try:
        results = list(pool.map(_one, [(c, seed_timeout) for *_x, c in tasks], chunksize=4))
        for i in range(0, len(tasks), 2):  # baseline, variant of one (workload, seed)
            (w, s, _b, _c), pair = tasks[i], (results[i], results[i + 1])
            both = all(r["stop"] != "error" for r in pair)
            per[w]["baseline"].add(s, pair[0], both)
            per[w]["variant"].add(s, pair[1], both)
    except BaseException:
        stop_pool(pool)
        raise
    pool.shutdown(wait=True)
    total = {"baseline": Side(), "variant": Side()}
    for sides in per.values():
        for k, sd in sides.items():
            t = total[k]
            t.runs += sd.runs
            t.failing += sd.failing
            t.causes.update(sd.causes)
            for c, e in sd.example.items():
                t.example.setdefault(c, e)
            for f in ("incomplete", "compared", "warnings", "fences_sent", "frames_freed", "frames_reused", "steps"):
                setattr(t, f, getattr(t, f) + getattr(sd, f))
            windows.add(t.windows, sd.windows)
    added = sorted(set(total["variant"].causes) - set(total["baseline"].causes))
    removed = sorted(set(total["baseline"].causes) - set(total["variant"].causes))
    return {
        "variants": list(variants) + ([f"the C of {xen_tree}"] if xen_tree else []),
        "against": against + (f" with the C of {against_tree}" if against_tree else ""),
        "seeds": seeds,
        "workloads": {w: {k: sd.to_json() for k, sd in sides.items()} for w, sides in per.items()},
        "total": {k: sd.to_json() for k, sd in total.items()},
        "adds": [_cause_json(c, total["variant"]) for c in added],
        "removes": [_cause_json(c, total["baseline"]) for c in removed],
    }


def _cause_json(c: Cause, side: Side) -> dict[str, Any]:
    return {"class": c[0], "case": c[1], "function": c[2], "seeds": side.causes[c], "replay": side.example[c]}
