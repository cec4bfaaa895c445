"""`p2msim study table-free`: the seed's question - defer the free of the page table to avoid the flush? -
answered with virtual time and the oracle.

Each table-freeing strategy (``profiles.TABLE_FREE``: a policy knob in the
Xen model) runs the ``table-free`` workload under ``--strategy timed`` over a
grid of guest sizes, mappings, harts, pool sizes and operations, and the same
race hunts as the profiles (the hunting workloads, untimed, over seeds).  The
report's figures are means over seeds; its conclusions are computed from
them (which strategy is cheapest, by how much, where two cross, whether the
unsafe control was caught, whether halving or doubling the fence costs
changes the ranking), never written in advance.

The report is deterministic: the same grid gives the same JSON and Markdown
(no wall clock in either); only the progress on stderr says how long it took.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulator.engine.simulation import Config, hunting_workloads, run
from simulator.hunt.sweep import _worker_init, stop_pool
from simulator.riscv.costs import load as load_costs
from simulator.xen.profiles import TABLE_FREE

SAFE = ("flush-per-table", "gather", "pool-stamp")  # the control, deferred-flush-pool-free, must be caught
OPS = ("decrease", "shatter", "teardown")
HYPERCALL = {"decrease": "decrease_reservation", "shatter": "decrease_reservation", "teardown": "domain_kill"}
SCHEMA = "study-table-free-1"
TIE = 0.02  # durations within 2% of each other are a tie: IPI latencies are seeded draws, and a schedule
# that differs by one step draws differently


def cheaper(a: float, b: float) -> bool:
    """Is ``a`` cheaper than ``b`` by more than a tie?"""
    return a < b * (1 - TIE)


def _ranked(strategies: list[str], cost: dict[str, float]) -> list[str]:
    """Cheapest first; at equal cost the tree's own strategy first (a change must earn its place)."""
    return sorted(strategies, key=lambda s: (cost[s], s != "flush-per-table", s))


def profile_of(strategy: str) -> str:
    policy = TABLE_FREE[strategy]
    return "fixed" if policy is None else f"fixed+{policy}"


@dataclass(frozen=True)
class Cell:
    """One point of the grid: a strategy doing one operation on one machine and guest."""

    strategy: str
    op: str
    mib: int
    order: int = 0
    harts: int = 4
    pool: str = "tight"
    fence_scale: float = 1.0
    vcpus: int = 1  # per hart

    def key(self) -> str:
        scale = f" fences x{self.fence_scale:g}" if self.fence_scale != 1.0 else ""
        mapping = "mixed" if self.op == "shatter" else ("2M" if self.order else "4K")
        per = f" {self.vcpus} vCPUs/hart" if self.vcpus != 1 else ""
        return f"{self.strategy} {self.op} {self.mib} MiB {mapping} {self.harts} harts{per} {self.pool} pool{scale}"


@dataclass(frozen=True)
class Grid:
    name: str
    sizes: tuple[int, ...]  # MiB, swept at 4 harts with a tight pool
    seeds: dict[int, int]  # size -> seeds (sizes not named: 1)
    orders: tuple[int, ...] = (0, 9)
    harts: tuple[int, ...] = (1, 4, 16)  # swept at ``side_mib``
    pools: tuple[str, ...] = ("tight", "ample")
    side_mib: int = 64
    scales: tuple[float, ...] = (0.5, 2.0)  # fence-cost sensitivity, at sizes up to ``scale_upto``
    scale_upto: int = 256
    hunts: tuple[str, ...] = ()  # hunting workloads (empty: all of them)
    hunt_seeds: int = 8
    side_ops: tuple[str, ...] = ("decrease", "shatter")
    vcpus: tuple[int, ...] = (1, 2)  # vCPUs per hart, swept at ``side_mib``

    def cells(self) -> list[tuple[Cell, int]]:
        """(cell, seeds) in report order; a cell that two sweeps share is listed once."""
        out: dict[Cell, int] = {}
        for strategy in TABLE_FREE:
            for op in OPS:
                for mib in self.sizes:
                    for order in self.orders if op != "shatter" else (0,):
                        out.setdefault(Cell(strategy, op, mib, order), self.seeds.get(mib, 1))
            for op in self.side_ops:
                for harts in self.harts:
                    out.setdefault(Cell(strategy, op, self.side_mib, harts=harts), self.seeds.get(self.side_mib, 1))
                for pool in self.pools:
                    out.setdefault(Cell(strategy, op, self.side_mib, pool=pool), self.seeds.get(self.side_mib, 1))
                for k in self.vcpus:
                    out.setdefault(Cell(strategy, op, self.side_mib, vcpus=k), self.seeds.get(self.side_mib, 1))
            for scale in self.scales:
                for mib in self.sizes:
                    if mib <= self.scale_upto:
                        out.setdefault(Cell(strategy, "decrease", mib, fence_scale=scale), 1)
        return list(out.items())


GRIDS = {
    "full": Grid("full", (16, 64, 256, 1024, 4096), {16: 3, 64: 3, 256: 2}),
    "quick": Grid(
        "quick",
        (8, 32, 128),
        {},
        orders=(0,),
        harts=(1, 4),
        pools=("tight", "ample"),
        side_mib=8,
        scales=(0.5, 2.0),
        scale_upto=8,
        hunts=("teardown-under-load", "superpage-shatter", "pool-churn"),
        hunt_seeds=2,
    ),
    "tiny": Grid(
        "tiny",
        (16,),
        {},
        orders=(0,),
        harts=(2,),
        pools=("tight",),
        side_mib=16,
        scales=(2.0,),
        scale_upto=16,
        hunts=("superpage-shatter",),
        hunt_seeds=1,
        side_ops=("shatter",),
    ),
}


# -- the runs (in pool workers) ---------------------------------------------------------------------


def _cost_file(scale: float, where: Path) -> str:
    """A cost table with the fence costs scaled (the sensitivity), written once per scale."""
    if scale == 1.0:
        return ""
    path = where / f"costs-fences-x{scale:g}.toml"
    if not path.exists():
        path.write_text(load_costs().scaled(scale).to_toml())
    return str(path)


def _timed_run(cell: Cell, seed: int, costs: str) -> dict[str, Any]:
    cfg = Config(
        "table-free",
        seed=seed,
        strategy="timed",
        pcpus=cell.harts,
        profile=profile_of(cell.strategy),
        params=(("mib", str(cell.mib)), ("order", str(cell.order)), ("op", cell.op), ("pool", cell.pool))
        + ((("vcpus", str(cell.vcpus)),) if cell.vcpus != 1 else ()),
        costs=costs,
    )
    r = run(cfg)
    t = r.stats["timing"]
    call = t["hypercalls"].get(HYPERCALL[cell.op], {"total": 0, "flushing": 0})
    holds = t["lock_holds"].get("p2m lock of dom1", {"max": 0})
    m = r.measures
    return {
        "fences": m.get("fences", 0),
        "duration": call["total"],
        "flushing": call["flushing"],
        "lock_hold_max": holds["max"],
        "guest_stall": t["guest_stall"]["total"],
        "pool_least_free": m.get("pool_least_free", 0),
        "failed": int(m.get("rc", 0) != 0),
        "violations": r.violation_count,
        "replay": r.replay_command if r.violations else "",
    }


def _hunt_run(strategy: str, workload: str, seed: int) -> dict[str, Any]:
    r = run(Config(workload, seed=seed, profile=profile_of(strategy)))
    return {
        "violations": r.violation_count,
        "verdict": r.verdict,
        "replay": r.replay_command if r.violations else "",
        "classes": sorted({v.cls for v in r.violations}),
    }


def _call(task: tuple[Callable[..., dict[str, Any]], tuple[Any, ...]]) -> dict[str, Any]:
    fn, args = task
    return fn(*args)


def _map(tasks: list[tuple[Callable[..., dict[str, Any]], tuple[Any, ...]]], jobs: int) -> Iterator[dict[str, Any]]:
    """The tasks' results in order, on ``jobs`` processes (1: in this one)."""
    if jobs <= 1:
        yield from map(_call, tasks)
        return
    pool = ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init)
    try:
        yield from pool.map(_call, tasks)
    except BaseException:
        stop_pool(pool)
        raise
    pool.shutdown()


# -- the study --------------------------------------------------------------------------------------


def _mean(rows: list[dict[str, Any]], k: str) -> float:
    return sum(r[k] for r in rows) / len(rows)


def study(grid: Grid, jobs: int = 1, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the grid and the hunts; the report's body (see ``SCHEMA``)."""
    say = progress or (lambda _s: None)
    plan = grid.cells()
    with tempfile.TemporaryDirectory(prefix="p2msim-study-") as tmp:
        tasks: list[tuple[Callable[..., dict[str, Any]], tuple[Any, ...]]] = []
        owners: list[int] = []
        for i, (cell, seeds) in enumerate(plan):
            costs = _cost_file(cell.fence_scale, Path(tmp))
            for seed in range(seeds):
                tasks.append((_timed_run, (cell, seed, costs)))
                owners.append(i)
        hunts = [(s, w, seed) for s in TABLE_FREE for w in grid.hunts or hunting_workloads()
                 for seed in range(grid.hunt_seeds)]  # fmt: skip
        tasks += [(_hunt_run, h) for h in hunts]
        say(f"study {grid.name}: {len(plan)} cells in {len(owners)} timed runs, {len(hunts)} hunts, {jobs} process(es)")
        results = list(_progress(_map(tasks, jobs), len(tasks), say))
    per_cell: list[list[dict[str, Any]]] = [[] for _ in plan]
    for i, res in zip(owners, results, strict=False):
        per_cell[i].append(res)
    cells = []
    for (cell, seeds), rows in zip(plan, per_cell, strict=True):
        cells.append(
            {
                "key": cell.key(),
                "strategy": cell.strategy,
                "op": cell.op,
                "mib": cell.mib,
                "mapping": "mixed" if cell.op == "shatter" else ("2M" if cell.order else "4K"),
                "harts": cell.harts,
                "pool": cell.pool,
                "fence_scale": cell.fence_scale,
                "vcpus": cell.vcpus,
                "seeds": seeds,
                **{
                    k: round(_mean(rows, k), 1)
                    for k in ("fences", "duration", "flushing", "lock_hold_max", "guest_stall", "pool_least_free")
                },
                "failed": sum(r["failed"] for r in rows),
                "violations": sum(r["violations"] for r in rows),
                "replay": next((r["replay"] for r in rows if r["replay"]), ""),
            }
        )
    hunt_rows = results[len(owners) :]
    safety: dict[str, Any] = {}
    for s in TABLE_FREE:
        mine = [(h, r) for h, r in zip(hunts, hunt_rows, strict=True) if h[0] == s]
        caught = [(h, r) for h, r in mine if r["violations"]]
        safety[s] = {
            "runs": len(mine),
            "failing": len(caught),
            "violations": sum(r["violations"] for _h, r in mine),
            "classes": sorted({c for _h, r in caught for c in r["classes"]}),
            "incomplete": sum(1 for _h, r in mine if r["verdict"] == "incomplete"),
            "first": caught[0][1]["replay"] if caught else "",
            "workloads": sorted({h[1] for h, _r in mine}),
            "seeds": grid.hunt_seeds,
        }
    body = {
        "schema": SCHEMA,
        "grid": grid.name,
        "costs": load_costs().to_json(),
        "cells": cells,
        "safety": safety,
    }
    body["findings"] = findings(body)
    return body


def reload(path: str) -> dict[str, Any]:
    """A study's JSON read back, its findings computed again from its cells and hunts (for ``--from``)."""
    body = json.loads(Path(path).read_text())
    if body.get("schema") != SCHEMA:
        raise ValueError(f"its schema is {body.get('schema')!r}, not {SCHEMA!r}")
    body["findings"] = findings(body)
    return body


def _progress(results: Iterator[dict[str, Any]], n: int, say: Callable[[str], None]) -> Iterator[dict[str, Any]]:
    step = max(1, n // 10)
    for i, r in enumerate(results, 1):
        if i % step == 0 or i == n:
            say(f"  {i}/{n} runs")
        yield r


# -- what the numbers say -----------------------------------------------------------------------------


def _select(body: dict[str, Any], **want: Any) -> list[dict[str, Any]]:
    base = {"harts": 4, "pool": "tight", "fence_scale": 1.0, "vcpus": 1}
    want = {**base, **want}
    return [c for c in body["cells"] if all(c[k] == v for k, v in want.items())]


def _by(cells: list[dict[str, Any]], metric: str) -> dict[str, dict[int, float]]:
    """strategy -> size -> metric."""
    out: dict[str, dict[int, float]] = {}
    for c in cells:
        out.setdefault(c["strategy"], {})[c["mib"]] = c[metric]
    return out


def crossovers(series: dict[str, dict[int, float]], a: str, b: str) -> list[float]:
    """Guest sizes (MiB, interpolated on a log scale) where ``a`` and ``b`` change places."""
    sizes = sorted(set(series.get(a, {})) & set(series.get(b, {})))
    out = []
    for lo, hi in itertools.pairwise(sizes):
        d0 = series[a][lo] - series[b][lo]
        d1 = series[a][hi] - series[b][hi]
        if d0 * d1 < 0:
            x = d0 / (d0 - d1)
            out.append(round(lo * (hi / lo) ** x, 1))
    return out


def findings(body: dict[str, Any]) -> dict[str, Any]:
    """The conclusions, each computed from the cells and hunts."""
    safety = body["safety"]
    control = safety["deferred-flush-pool-free"]
    safe = [s for s in SAFE if not safety[s]["failing"]]
    unsafe = [s for s in SAFE if safety[s]["failing"]]
    dec = _select(body, op="decrease", mapping="4K")
    dur = _by(dec, "duration")
    fences = _by(dec, "fences")
    sizes = sorted({c["mib"] for c in dec})
    largest = sizes[-1] if sizes else 0
    base = "flush-per-table"
    # the best is the tree's own strategy unless another is cheaper by more than a tie
    at = {s: dur.get(s, {}).get(largest, float("inf")) for s in safe}
    ranking = _ranked(safe, at)
    best = ranking[0] if ranking else ""
    if best and base in at and not cheaper(at[best], at[base]):
        best = base
    out: dict[str, Any] = {
        "control_caught": bool(control["failing"]),
        "control": control,
        "safe": safe,
        "unsafe": unsafe,
        "largest_mib": largest,
        "best": best,
        "ranking": ranking,
        "fences": {s: fences.get(s, {}) for s in TABLE_FREE},
        "duration": {s: dur.get(s, {}) for s in TABLE_FREE},
        "crossovers": {f"{base}/{s}": crossovers(dur, base, s) for s in safe if s != base},
        "lock_hold": {s: _by(dec, "lock_hold_max").get(s, {}) for s in TABLE_FREE},
        # the safe strategies as cheap as the best (within a tie), in the strategies' order
        "tied": [s for s in TABLE_FREE if s in safe and best and not cheaper(at[best], at[s]) and s != base]
        or ([best] if best else []),
    }
    if best and base in dur and largest in dur[base]:
        out["duration_saved"] = round(1 - dur[best][largest] / dur[base][largest], 3) if dur[base][largest] else 0.0
        out["fences_saved"] = (
            round(1 - fences[best][largest] / fences[base][largest], 3) if fences[base][largest] else 0.0
        )
    # tight pool: did a strategy that holds tables back fail the split (op=shatter)?
    out["tight_pool_failures"] = {
        s: sum(c["failed"] for c in body["cells"] if c["strategy"] == s and c["pool"] == "tight") for s in TABLE_FREE
    }
    out["pool_least_free"] = {
        s: min((c["pool_least_free"] for c in body["cells"] if c["strategy"] == s and c["op"] == "shatter"
                and c["pool"] == "tight"), default=None)
        for s in TABLE_FREE
    }  # fmt: skip
    # what a pool with no spare page costs each strategy: op=shatter's fences, tight against ample
    pool: dict[str, dict[str, float]] = {}
    for c in body["cells"]:
        if c["op"] == "shatter" and c["harts"] == 4 and c["fence_scale"] == 1.0 and c["vcpus"] == 1:
            pool.setdefault(c["strategy"], {}).setdefault(c["pool"] + "@" + str(c["mib"]), c["fences"])
    out["shatter_fences"] = pool
    teardown = _select(body, op="teardown", mapping="4K")
    td = _by(teardown, "fences")
    out["teardown_same"] = all(
        len({td[s].get(m) for s in td}) == 1 for m in {c["mib"] for c in teardown}
    )  # ARM-style teardown frees tables after one flush of the cleared root
    # sensitivity: the ranking of the safe strategies at each size with the fence costs scaled
    sens = {}
    for scale in sorted({c["fence_scale"] for c in body["cells"]} - {1.0}):
        scaled = _by(_select(body, op="decrease", mapping="4K", fence_scale=scale), "duration")
        ranks: dict[int, list[str]] = {}
        changes = False
        for m in sorted(set().union(*(scaled[s].keys() for s in scaled)) if scaled else []):
            here = [s for s in safe if m in scaled.get(s, {})]
            ranks[m] = _ranked(here, {s: scaled[s][m] for s in here})
            # the conclusion changes where another safe strategy is strictly cheaper than the best
            changes |= bool(best in here and cheaper(scaled[ranks[m][0]][m], scaled[best][m]))
        sens[f"x{scale:g}"] = {
            "ranking": ranks,
            "durations": {s: scaled.get(s, {}) for s in safe},
            "best_changes": changes,
        }
    out["sensitivity"] = sens
    out["conclusion_holds"] = not any(v["best_changes"] for v in sens.values())
    return out


def answer(body: dict[str, Any]) -> str:
    """Two or three sentences: the seed's question answered from the findings."""
    f = body["findings"]
    c = f["control"]
    if not f["best"]:
        return "No strategy stayed silent through the hunts: there is no safe answer in this grid."
    base, m = "flush-per-table", f["largest_mib"]
    size = f"{m:,} MiB"

    def at(key: str, s: str) -> float:
        series = f[key].get(s, {})
        return series.get(m, series.get(str(m), 0.0))  # (str: the findings as JSON, e.g. study --json's)

    lines = []
    if f["best"] == base:
        lines.append(f"No: flushing before each freed table (the tree) was as cheap as any safe strategy at {size}.")
    else:
        tied = f["tied"]
        names = " and ".join(f"`{s}`" for s in tied) + (" (tied)" if len(tied) > 1 else "")
        hunts = min(body["safety"][s]["runs"] for s in tied)
        lines.append(
            f"Yes, once per lock hold: {names} took a `decrease_reservation` of {size} of 4K pages on 4 harts from "
            f"{at('fences', base):,.0f} remote fences to {at('fences', f['best']):,.0f}, its p2m write-lock hold "
            f"from {at('lock_hold', base):,.0f} to {at('lock_hold', f['best']):,.0f} cycles and the hypercall "
            f"from {at('duration', base):,.0f} to {at('duration', f['best']):,.0f} "
            f"({100 * f.get('duration_saved', 0):.0f}% less) against the tree's flush per table, and "
            f"stayed silent through {hunts} race hunts{' each' if len(tied) > 1 else ''}."
        )
    caught = (
        f"was caught ({c['failing']} of {c['runs']} hunts failing: {', '.join(c['classes'])})"
        if c["failing"]
        else f"was NOT caught in {c['runs']} hunts"
    )
    lines.append(f"Freeing to the pool with the flush deferred (`deferred-flush-pool-free`, XSA-480's shape) {caught}.")
    sens = "does not change" if f["conclusion_holds"] else "changes"
    tail = ""
    g = f.get("shatter_fences", {}).get("gather", {})
    tight = [k for k in g if k.startswith("tight@") and "ample@" + k.split("@")[1] in g]
    if tight:
        k = tight[0]
        tail = (
            f"; with no spare pool page, a split in the same hypercall makes `gather` flush early "
            f"({g[k]:,.0f} fences against {g['ample@' + k.split('@')[1]]:,.0f} with room), and no strategy "
            + ("failed it" if not any(f["tight_pool_failures"].values()) else "failed it but: "
               + ", ".join(s for s, n in f["tight_pool_failures"].items() if n))
        )  # fmt: skip
    lines.append(f"Halving or doubling every fence cost {sens} which safe strategy is cheapest{tail}.")
    return " ".join(lines)
