"""`p2msim matrix`: the detector's power, with numbers.

Every catalogued bug runs against the workloads that can expose it, under
each strategy (``random``, ``pct``, and ``uncontrolled`` to show what the
conductor is worth), seed after seed until the first detection; the clean
profiles run against every workload and must stay silent.  Seeds run in
separate processes.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from simulator.engine import windows
from simulator.engine.bugs import BUGS
from simulator.engine.scenario import WorkloadError
from simulator.engine.simulation import Config, ConfigError, SeedTimeout, hunting_workloads, run
from simulator.hunt.sweep import _interruptible, _worker_init, stop_pool

STRATEGIES = ("random", "pct", "uncontrolled")
CLEAN_PROFILES = ("fixed", "arm-broadcast")


@dataclass
class Cell:
    bug: str
    workload: str
    strategy: str
    detected: bool = False
    seeds_to_first: int | None = None
    seconds_to_first: float | None = None
    cls: str | None = None
    seeds_run: int = 0
    incomplete: int = 0  # seeds the step budget or --seed-timeout ended


@dataclass
class CleanRow:
    profile: str
    workload: str
    seeds: int
    violations: int = 0
    failing: list[int] = field(default_factory=list)
    classes: dict[str, int] = field(default_factory=dict)
    budget_hits: int = 0
    timeouts: int = 0  # --seed-timeout ended the run: no verdict, not clean
    vacuous: int = 0  # seeds that finished without a finding but opened no race window
    warnings: int = 0
    windows: dict[str, Any] = field(default_factory=dict)  # race windows over the seeds (engine.windows)
    first_error: str = ""  # the first run the workload or the configuration broke ("error" in classes)


Outcome = tuple[int, list[str], str, float, dict[str, Any]]  # seed, classes, stop, seconds, the run's numbers


def _one(args: tuple[Config, float | None]) -> Outcome:
    config, limit = args
    t = time.monotonic()
    try:
        with _interruptible():
            r = run(config, time_limit=limit)
    except KeyboardInterrupt:
        raise KeyboardInterrupt from None  # (simulation.Interrupted does not pickle back)
    except SeedTimeout:
        return config.seed, [], "timeout", time.monotonic() - t, {}
    except (ConfigError, WorkloadError) as exc:  # a broken run is a finding of its own, not a crash of the matrix
        return config.seed, ["error"], "error", time.monotonic() - t, {"error": str(exc)}
    numbers = {"verdict": r.verdict, "warnings": r.warning_count, "windows": r.windows}
    return config.seed, [v.cls for v in r.violations], r.stop_reason, time.monotonic() - t, numbers


def replaced_from_c(bug: str) -> list[str]:
    """The functions a tree's C provides that ``bug`` replaces (it cannot be applied with --xen-tree)."""
    from simulator.ctree.p2m import FROM_C

    seen = BUGS[bug].replaces()
    return [n for n in FROM_C if n in seen]


def _config(workload: str, seed: int, **kw: Any) -> Config:
    bug = kw.pop("bug", None)
    extra = dict(BUGS[bug].config) if bug else {}
    extra.update(kw)
    return Config(workload, seed=seed, bugs=(bug,) if bug else (), **extra)


def hunt(
    pool: ProcessPoolExecutor,
    bug: str,
    workload: str,
    strategy: str,
    seeds: int,
    batch: int,
    limit: float | None,
    xen_tree: str = "",
) -> Cell:
    cell = Cell(bug, workload, strategy)
    started = time.monotonic()
    for lo in range(0, seeds, batch):
        cfgs = [
            (_config(workload, s, bug=bug, strategy=strategy, xen_tree=xen_tree), limit)
            for s in range(lo, min(seeds, lo + batch))
        ]
        for seed, classes, stop, _secs, _numbers in pool.map(_one, cfgs):
            cell.seeds_run += 1
            cell.incomplete += stop in ("budget", "timeout")
            if classes and not cell.detected:
                cell.detected = True
                cell.seeds_to_first = seed + 1
                cell.seconds_to_first = round(time.monotonic() - started, 2)
                cell.cls = classes[0]
        if cell.detected:
            break
    return cell


def clean(
    pool: ProcessPoolExecutor, profile: str, workload: str, seeds: int, limit: float | None, xen_tree: str = ""
) -> CleanRow:
    row = CleanRow(profile, workload, seeds)
    cfgs = [(Config(workload, seed=s, profile=profile, xen_tree=xen_tree), limit) for s in range(seeds)]
    for seed, classes, stop, _secs, numbers in pool.map(_one, cfgs, chunksize=8):
        if "error" in numbers and not row.first_error:
            row.first_error = f"seed {seed}: {numbers['error']}"
        if "verdict" in numbers:
            row.vacuous += numbers["verdict"] == "vacuous"
            row.warnings += numbers["warnings"]
            windows.add(row.windows, numbers["windows"])
        if classes:
            row.violations += 1
            row.failing.append(seed)
            for c in classes:
                row.classes[c] = row.classes.get(c, 0) + 1
        if stop == "budget":
            row.budget_hits += 1
        if stop == "timeout":
            row.timeouts += 1
    return row


def matrix(
    seeds: int = 50,
    clean_seeds: int = 500,
    jobs: int = 2,
    bugs: list[str] | None = None,
    workloads: list[str] | None = None,
    strategies: tuple[str, ...] = STRATEGIES,
    progress: Any = None,
    seed_timeout: float | None = None,
    xen_tree: str = "",
) -> dict[str, Any]:
    """Raises KeyboardInterrupt at once on Ctrl-C (or SIGTERM), with its workers stopped.

    With ``xen_tree`` every run uses that tree's p2m.c; a bug that replaces a function the C
    provides cannot be applied to it and is skipped (listed under "skipped").
    """
    names = hunting_workloads()
    chosen = workloads or names
    cells: list[Cell] = []
    rows: list[CleanRow] = []
    pool = ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init)
    try:
        skipped = [b for b in bugs or list(BUGS) if xen_tree and replaced_from_c(b)]
        for bug in bugs or list(BUGS):
            if bug in skipped:
                continue
            targets = [w for w in (BUGS[bug].workloads or tuple(names)) if w in chosen]
            for workload in targets:
                for strategy in strategies:
                    cell = hunt(pool, bug, workload, strategy, seeds, max(2, jobs * 2), seed_timeout, xen_tree)
                    cells.append(cell)
                    if progress:
                        progress(cell)
        # arm-broadcast replaces the tree's vmid.c: with a tree only fixed is the clean side
        for profile in CLEAN_PROFILES if not xen_tree else ("fixed",):
            for workload in chosen:
                row = clean(pool, profile, workload, clean_seeds, seed_timeout, xen_tree)
                rows.append(row)
                if progress:
                    progress(row)
    except BaseException:
        stop_pool(pool)
        raise
    pool.shutdown(wait=True)
    return summarise(cells, rows, seeds) | {"skipped": skipped}


def summarise(cells: list[Cell], rows: list[CleanRow], seeds: int) -> dict[str, Any]:
    controlled = [c for c in cells if c.strategy != "uncontrolled"]
    by_bug: dict[str, list[Cell]] = {}
    for c in controlled:
        by_bug.setdefault(c.bug, []).append(c)
    found = {b: any(c.detected for c in cs) for b, cs in by_bug.items()}
    times = [
        min(c.seconds_to_first for c in cs if c.seconds_to_first is not None)
        for cs in by_bug.values()
        if any(c.detected for c in cs)
    ]
    return {
        "seeds": seeds,
        "cells": [{("class" if k == "cls" else k): v for k, v in c.__dict__.items()} for c in cells],
        "clean": [r.__dict__ for r in rows],
        "bugs_found": sum(found.values()),
        "bugs": len(found),
        "missed": sorted(b for b, ok in found.items() if not ok),
        "median_seconds_to_first": round(statistics.median(times), 2) if times else None,
        "clean_violations": sum(r.violations for r in rows),
        "clean_incomplete": sum(r.budget_hits + r.timeouts for r in rows),
    }
