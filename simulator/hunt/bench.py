"""`p2msim bench`: how fast the hot path is, against a baseline measured in the same process.

Three numbers:
* accesses_per_s - guest accesses on a TLB-hit-heavy 4-hart run, oracle on, log off;
* switches_per_s - conductor task switches between two actors that always hand over;
* baseline_lookups_per_s - a plain Python dict-lookup loop, so ratios mean something
  on a noisy machine.

``bench --workloads`` runs every built-in workload at one seed instead, each
beside its own baseline measurement: a step costs so many dict lookups, a
figure that moves with the code, not with the machine's load.

``bench --sweep`` runs one sweep with ``--jobs 1`` and with ``--jobs N`` and
sets the speed-up beside the machine's own: the same dict loop in one process
and in N at once, measured in the same run (virtual cores that share a
physical one, or a busy host, give less than N, and no sweep can beat that).

This module is also a workload file (``NAME``/``main``), loaded by path.
"""

from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import anyio

from simulator.engine.conductor import Actor, Conductor
from simulator.engine.scenario import Scenario
from simulator.engine.strategies.base import Strategy

NAME = ""  # not listed among the built-in workloads
PARAMS = {"pages": 24}


async def main(sim: Scenario) -> None:
    """One domain, a vCPU per hart, each touching few enough pages to live in its TLB."""
    pages = sim.params["pages"]
    d = await sim.create_domain(1, vcpus=sim.nr_harts, pool_pages=4)
    await sim.populate(d, 0x100, pages * sim.nr_harts)
    for i, v in enumerate(d.vcpus):
        await sim.run_vcpu(v, i, sim.pattern([(0x100 + i * pages, pages)], write_ratio=0.3))
    await sim.elapse(1 << 40)  # until the step budget ends the run


def baseline_lookups_per_s(n: int = 2_000_000) -> float:
    table = {i: i for i in range(1024)}
    keys = list(range(1024)) * (n // 1024)
    t = time.perf_counter()
    for k in keys:
        table[k]
    return len(keys) / (time.perf_counter() - t)


class _Alternate(Strategy):
    name = "alternate"

    def next_actor(self, current: Actor | None, enabled: list[Actor], seq: int) -> tuple[Actor, int]:
        for a in enabled:
            if a is not current:
                return a, 1
        return enabled[0], 1


def switches_per_s(n: int = 20_000, backend: str = "trio") -> float:
    async def go() -> float:
        c = Conductor(_Alternate(0), n * 4)
        actors = [c.add_actor("a"), c.add_actor("b")]

        async def body(a: Actor) -> None:
            for _ in range(n):
                await c.step(a)

        t = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for a in actors:
                tg.start_soon(c.run_actor, a, lambda a=a: body(a))
            c.begin()
        return c.switches / (time.perf_counter() - t)

    return anyio.run(go, backend=backend)


def accesses_per_s(steps: int = 1_500_000, backend: str = "trio") -> tuple[float, dict[str, Any]]:
    from simulator.engine.simulation import Config, run

    cfg = Config(workload=__file__, seed=1, steps=steps, backend=backend, pcpus=4)
    t = time.perf_counter()
    result = run(cfg)
    dt = time.perf_counter() - t
    return result.stats["accesses"] / dt, result.stats


def bench(backend: str = "trio", steps: int = 600_000, repeat: int = 3) -> dict[str, Any]:
    """Median of ``repeat`` interleaved measurements of each number."""
    baselines: list[float] = []
    accs: list[float] = []
    sws: list[float] = []
    stats: dict[str, Any] = {}
    for _ in range(max(1, repeat)):
        baselines.append(baseline_lookups_per_s())
        a, stats = accesses_per_s(steps, backend)
        accs.append(a)
        sws.append(switches_per_s(backend=backend))
    baseline, acc, sw = (statistics.median(x) for x in (baselines, accs, sws))
    return {
        "backend": backend,
        "accesses_per_s": round(acc),
        "switches_per_s": round(sw),
        "baseline_lookups_per_s": round(baseline),
        "baseline_ratio": round(baseline / acc, 1),
        "target_ratio": 20,
        "repeat": repeat,
        "tlb_hit_rate": round(stats["tlb_hits"] / max(1, stats["accesses"]), 4),
        "accesses": stats["accesses"],
        "steps": stats["steps"],
    }


def workloads_bench(
    seed: int = 1, repeat: int = 3, backend: str = "trio", names: list[str] | None = None
) -> dict[str, Any]:
    """Each workload ``repeat`` times, interleaved with the baseline; the medians, and their sum."""
    from simulator.engine.simulation import Config, builtin_workloads, run

    rows: list[dict[str, Any]] = []
    for name in names or list(builtin_workloads()):
        seconds: list[float] = []
        bases: list[float] = []
        steps, verdict = 0, ""
        for _ in range(max(1, repeat)):
            bases.append(baseline_lookups_per_s())
            t = time.perf_counter()
            r = run(Config(name, seed=seed, backend=backend))
            seconds.append(time.perf_counter() - t)
            steps, verdict = r.stats["steps"], r.verdict
        dt, base = statistics.median(seconds), statistics.median(bases)
        rows.append(
            {
                "workload": name,
                "verdict": verdict,
                "steps": steps,
                "seconds": round(dt, 4),
                "steps_per_s": round(steps / dt),
                "runs_per_s": round(1 / dt, 3),
                "baseline_lookups_per_s": round(base),
                "lookups_per_step": round(base * dt / max(1, steps), 1),
            }
        )
    steps = sum(r["steps"] for r in rows)
    dt = sum(r["seconds"] for r in rows)
    lookups = sum(r["baseline_lookups_per_s"] * r["seconds"] for r in rows)
    return {
        "backend": backend,
        "seed": seed,
        "repeat": repeat,
        "workloads": rows,
        "total": {
            "steps": steps,
            "seconds": round(dt, 3),
            "steps_per_s": round(steps / dt) if dt else 0,
            "lookups_per_step": round(lookups / max(1, steps), 1),
        },
    }


def _spin(n: int) -> None:
    """``n`` dict lookups over 1,024 keys (no large list: memory bandwidth is not what is measured)."""
    table = {i: i for i in range(1024)}
    keys = list(range(1024))
    for _ in range(n // 1024):
        for k in keys:
            table[k]


def _parallel_lookups(pool: ProcessPoolExecutor, workers: int, n: int) -> float:
    """Dict lookups per second over ``workers`` processes each running ``n`` of them at once."""
    t = time.perf_counter()
    list(pool.map(_spin, [n] * workers))
    return workers * n / (time.perf_counter() - t)


def machine_speedup(jobs: int, n: int = 20_000_000, repeat: int = 3) -> float:
    """What ``jobs`` processes give over one on this machine now: the dict loop's throughput in ``jobs``
    processes at once over its throughput in one (the median of ``repeat``, interleaved)."""
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(_spin, [1024] * jobs))  # every worker started before anything is timed
        ratios = [_parallel_lookups(pool, jobs, n) / _parallel_lookups(pool, 1, n) for _ in range(max(1, repeat))]
    return statistics.median(ratios)


def sweep_bench(
    workload: str = "teardown-under-load", seeds: int = 40, jobs: int = 0, backend: str = "trio", repeat: int = 1
) -> dict[str, Any]:
    """A sweep of ``seeds`` seeds with one process and with ``jobs`` (0: one per core), interleaved
    ``repeat`` times, and the machine's speed-up measured between them."""
    from simulator.engine.simulation import Config
    from simulator.hunt.sweep import Sweep, SweepError, run_sweep

    jobs = jobs or os.cpu_count() or 1
    sweep = Sweep(Config(workload, backend=backend), range(seeds))
    one: list[float] = []
    many: list[float] = []
    machine: list[float] = []
    for _ in range(max(1, repeat)):
        for out, j in ((one, 1), (many, jobs)):
            t = time.perf_counter()
            summary = run_sweep(sweep, jobs=j)
            out.append(time.perf_counter() - t)
            if summary.runs != seeds or summary.crashed:  # a sweep that did not run every seed times nothing
                crashed = "; ".join(f"seed {k}: {v}" for k, v in summary.crashed.items())
                raise SweepError(f"the sweep ran {summary.runs} of {seeds} seeds{'; ' + crashed if crashed else ''}")
        machine.append(machine_speedup(jobs))
    t1, tj, m = statistics.median(one), statistics.median(many), statistics.median(machine)
    speedup = t1 / tj
    return {
        "backend": backend,
        "workload": workload,
        "seeds": seeds,
        "jobs": jobs,
        "repeat": repeat,
        "seconds_1": round(t1, 3),
        "seconds_n": round(tj, 3),
        "runs_per_s_1": round(seeds / t1, 3),
        "runs_per_s_n": round(seeds / tj, 3),
        "speedup": round(speedup, 3),
        "machine_speedup": round(m, 3),
        "efficiency": round(speedup / m, 3),
        "target_speedup": round(0.9 * jobs, 2),
    }
