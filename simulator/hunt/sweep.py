"""`p2msim sweep`: one configuration over a range of seeds, in parallel, with the failing seeds summarised.

A single seed answers "does this schedule fail"; a sweep answers "how often,
how, and which seed do I replay".  Every seed runs ``simulation.run`` in a
separate process (a ``ProcessPoolExecutor``; or one task per seed on a Dask
cluster with ``--cluster``), and its result line goes to ``--out`` the moment
it finishes, flushed, so an interrupted sweep loses nothing that finished.

Semantics worth knowing:

* ``--seeds A:B`` is half-open like a Python range: seeds A, A+1, ..., B-1.
* Result lines arrive in completion order, not seed order; each carries its
  seed, so ``sort`` restores the order.  Per-seed content is deterministic
  (the run's own digest, classes, first violation step); only ``seconds`` is
  wall-clock time.
* A worker process that dies (``os._exit``, a signal, the OOM killer) breaks
  the whole pool, and every seed in flight loses its result.  The pool is
  recreated and those seeds run again one at a time: the one that kills its
  worker alone is reported as ``crashed``, the others get their real result.
  A worker that raises an unexpected exception is ``crashed`` too, with the
  message.  The sweep always goes on.
* A workload that raises (``WorkloadError``) or a configuration p2msim
  rejects (``ConfigError``) is bad input, not a finding: the sweep stops and
  the CLI prints one line naming the seed (exit code 2).
* ``--stop-on-first`` stops drawing new seeds at the first failing seed F but
  lets every seed below F that is still running finish, so the reported first
  failing seed is the lowest failing seed, the one a sequential sweep would
  report.  Seeds above F that were already running finish, and their results
  are discarded.  Only violations stop the sweep; a crash does not.
* ``--swarm`` draws, per seed and from the seed alone, the harts, TLB sizes,
  VMID width, strategy, PCT depth and speculation (swarm testing, like
  TigerBeetle's VOPR), so one sweep covers many configurations; each result
  line holds what was drawn and the exact command that replays it.
* ``--log DIR`` keeps the logs of failing seeds only: a seed runs without a
  log (logging doubles the cost of a run), and a failing one runs again, with
  its log and schedule written to ``DIR/WORKLOAD-seedN.jsonl``, which is
  cheap because the run is deterministic; the re-run must give the same
  digest, or the seed is reported as crashed (nondeterminism is a p2msim bug).

This module imports nothing heavy at import time, so ``p2msim --help`` stays
fast when the CLI builds its parser.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import signal
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import orjson

from simulator.engine import windows

if TYPE_CHECKING:
    from simulator.engine.simulation import Config

EXIT_CLEAN, EXIT_VIOLATION, EXIT_BAD_INPUT, EXIT_INCOMPLETE, EXIT_VACUOUS, EXIT_INTERRUPTED = 0, 1, 2, 3, 5, 130
REPLAYS_SHOWN = 10  # failing seeds whose replay command the human summary prints
SEED_TIMEOUT = 900.0  # seconds a seed may take before it is a TIMEOUT: generous (the slowest built-in takes a few)

# --swarm: inclusive ranges drawn per seed.  Every built-in workload needs at most 3 harts, so drawing
# from 3 up never asks a workload for fewer harts than it can run on.
SWARM_PCPUS = (3, 6)
SWARM_TLB_LEAF = (8, 128)
SWARM_TLB_NONLEAF = (0, 32)
SWARM_VMID_BITS = (2, 8)
SWARM_PCT_DEPTH = (1, 5)
SWARM_STRATEGIES = ("random", "pct")
SWARM_SPECULATE = (0.005, 0.3)  # drawn three times in four; otherwise speculation is off
# the run options --swarm draws, with their flags: giving one explicitly as well is a contradiction
SWARM_OPTIONS = {
    "pcpus": "--pcpus",
    "tlb_leaf": "--tlb-leaf",
    "tlb_nonleaf": "--tlb-nonleaf",
    "vmid_bits": "--vmid-bits",
    "strategy": "--strategy",
    "pct_depth": "--pct-depth",
    "speculate": "--speculate",
}


class SweepError(Exception):
    """Bad input found while sweeping (a workload raised, a file cannot be written): exit code 2."""


# -- what one seed runs ---------------------------------------------------------------------------


def swarm_draw(seed: int) -> dict[str, Any]:
    """The configuration --swarm gives ``seed``: a pure function of the seed, the same on every machine.

    The stream is seeded from blake2b of ``swarm/SEED`` (never Python's salted ``hash()``), and draws
    always happen in the same order, so adding a range later does not shift the earlier draws.
    """
    digest = hashlib.blake2b(f"swarm/{seed}".encode(), digest_size=8).digest()
    rng = random.Random(int.from_bytes(digest, "little"))
    pcpus = rng.randint(*SWARM_PCPUS)
    tlb_leaf = rng.randint(*SWARM_TLB_LEAF)
    tlb_nonleaf = rng.randint(*SWARM_TLB_NONLEAF)
    vmid_bits = rng.randint(*SWARM_VMID_BITS)
    strategy = rng.choice(SWARM_STRATEGIES)
    pct_depth = rng.randint(*SWARM_PCT_DEPTH)
    speculate = 0.0 if rng.random() < 0.25 else round(rng.uniform(*SWARM_SPECULATE), 3)
    if strategy != "pct":
        pct_depth = 3  # unused by `random`: keep the default so the replay command stays short
    return {
        "pcpus": pcpus,
        "tlb_leaf": tlb_leaf,
        "tlb_nonleaf": tlb_nonleaf,
        "vmid_bits": vmid_bits,
        "strategy": strategy,
        "pct_depth": pct_depth,
        "speculate": speculate,
    }


@dataclass(frozen=True)
class Task:
    """One seed's work, small and picklable: it crosses a process (or network) boundary."""

    seed: int
    config: Config
    log: str | None = None  # where a failing run's log goes (None: no log)
    drawn: dict[str, Any] | None = None  # the --swarm draw, reported with the result
    time_limit: float | None = None  # --seed-timeout: longer than this is a timeout, not a hang


@dataclass(frozen=True)
class Sweep:
    """What to sweep: a base configuration (its seed is ignored) over a range of seeds."""

    base: Config
    seeds: range
    swarm: bool = False
    log_dir: str | None = None
    seed_timeout: float | None = None

    def task(self, seed: int) -> Task:
        config = replace(self.base, seed=seed)
        drawn = None
        if self.swarm:
            drawn = swarm_draw(seed)
            config = replace(config, **drawn)
            bits = self.vmid_bits_needed
            if bits > config.vmid_bits:
                # only configurations the profile supports: one VMID per domain needs enough of them
                drawn = dict(drawn, vmid_bits=bits)
                config = replace(config, vmid_bits=bits)
        log = str(Path(self.log_dir) / log_name(self.base.workload, seed)) if self.log_dir else None
        return Task(seed, config, log, drawn, self.seed_timeout)

    @cached_property
    def vmid_bits_needed(self) -> int:
        from simulator.engine.simulation import vmid_bits_needed

        return vmid_bits_needed(replace(self.base, vmid_bits=8))

    def tasks(self) -> Iterator[Task]:
        """Lazily: a sweep over a million seeds never holds a million configurations."""
        return (self.task(seed) for seed in self.seeds)


def log_name(workload: str, seed: int) -> str:
    """``WORKLOAD-seedN.jsonl``; a workload given as a path is named by its file's stem."""
    stem = Path(workload).stem if workload.endswith(".py") else workload
    return f"{stem}-seed{seed}.jsonl"


@dataclass
class SeedResult:
    """One seed's outcome, as written to --out.  ``verdict``: clean, violation, incomplete (the step
    budget ended the run: not clean), vacuous (it opened no race window), timeout (--seed-timeout
    ended it), crashed or error."""

    seed: int
    verdict: str
    replay: str
    seconds: float
    classes: list[str] = field(default_factory=list)  # distinct violation classes, sorted
    violations: int = 0  # stale uses in all (the run's violation_count)
    first_violation_seq: int | None = None
    stop: str | None = None  # done, budget, deadlock or panic (None if the run did not finish)
    steps: int | None = None
    digest: str | None = None
    drawn: dict[str, Any] | None = None
    log: str | None = None
    schedule: str | None = None
    error: str | None = None
    warnings: int = 0
    windows: dict[str, Any] | None = None  # the run's race windows (engine.windows)

    @property
    def failing(self) -> bool:
        return self.verdict == "violation"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seed": self.seed,
            "verdict": self.verdict,
            "classes": self.classes,
            "violations": self.violations,
            "first_violation_seq": self.first_violation_seq,
            "stop": self.stop,
            "steps": self.steps,
            "digest": self.digest,
            "replay": self.replay,
            "seconds": self.seconds,
            "warnings": self.warnings,
        }
        for key in ("windows", "drawn", "log", "schedule", "error"):
            value = getattr(self, key)
            if value is not None:
                out["swarm" if key == "drawn" else key] = value
        return out


_IN_POOL_WORKER = False  # set by the pool's initializer: signal handling differs in a worker


def _worker_init() -> None:
    """Pool workers ignore Ctrl-C while idle (no traceback from a worker waiting for work) and end on SIGTERM."""
    global _IN_POOL_WORKER
    _IN_POOL_WORKER = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the command line's SIGTERM handler (turn it into Ctrl-C) is the parent's: a worker the sweep
    # stops with SIGTERM just ends, with nothing on the shared stderr
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C stops a pool worker's run at once (the run raises Interrupted), but only while it runs.

    In a Dask worker thread there is nothing to do: only the main thread handles signals.
    """
    if not _IN_POOL_WORKER:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_seed(task: Task) -> SeedResult:
    """Run one seed (in a worker process or on a Dask worker) and describe the outcome.

    Never raises for a failing or broken run: a crash inside p2msim comes back as a ``crashed``
    result with the message, bad input as an ``error`` result, so the sweep decides what to do.
    Only Ctrl-C propagates.
    """
    from simulator.engine.scenario import WorkloadError
    from simulator.engine.simulation import ConfigError, SeedTimeout, replay_command
    from simulator.engine.simulation import run as run_config

    def run(config: Config) -> Any:
        return run_config(config, time_limit=task.time_limit)

    started = time.monotonic()
    config = task.config

    def outcome(verdict: str, **fields: Any) -> SeedResult:
        seconds = round(time.monotonic() - started, 3)
        return SeedResult(task.seed, verdict, replay_command(config), seconds, drawn=task.drawn, **fields)

    log = schedule = None
    try:
        with _interruptible():
            if task.log and config.strategy == "uncontrolled":
                # not reproducible: the only run that can be logged is this one
                result = run(replace(config, log=task.log))
                if result.violations:
                    log, schedule = task.log, result.schedule_path
                else:
                    Path(task.log).unlink(missing_ok=True)
            else:
                result = run(config)
                if result.violations and task.log:
                    logged = run(replace(config, log=task.log))
                    log, schedule = task.log, logged.schedule_path
                    if logged.digest != result.digest:
                        why = f"nondeterminism: the logged re-run's digest {logged.digest} differs from {result.digest}"
                        return outcome("crashed", log=log, schedule=schedule, error=why)
    except KeyboardInterrupt:
        # simulation.Interrupted does not survive pickling back to the parent; a plain one does
        raise KeyboardInterrupt from None
    except SeedTimeout as exc:
        return outcome("timeout", error=str(exc))
    except (ConfigError, WorkloadError) as exc:
        return outcome("error", error=str(exc))
    except Exception as exc:  # p2msim itself failed on this seed: report it, keep sweeping
        return outcome("crashed", error=f"{type(exc).__name__}: {exc}")
    return outcome(
        result.verdict,
        classes=sorted({v.cls for v in result.violations}),
        violations=result.violation_count,
        first_violation_seq=min((v.seq for v in result.violations), default=None),
        stop=result.stop_reason,
        steps=result.stats["steps"],
        digest=result.digest,
        log=log,
        schedule=schedule,
        warnings=result.warning_count,
        windows=result.windows,
    )


def _crashed(task: Task, error: str) -> SeedResult:
    from simulator.engine.simulation import replay_command

    return SeedResult(task.seed, "crashed", replay_command(task.config), 0.0, drawn=task.drawn, error=error)


# -- bookkeeping and progress ---------------------------------------------------------------------


class Reporter(Protocol):
    """Progress while the sweep runs; the summary itself is printed by the caller.

    ``start`` comes once the input is validated, so a bad option never leaves a half-drawn bar.
    """

    def start(self, total: int) -> None: ...

    def update(self, tally: Tally) -> None: ...

    def close(self, tally: Tally) -> None: ...


class Tally:
    """Everything the summary needs, built one result at a time (a sweep may be long: no result list)."""

    def __init__(
        self, sweep: Sweep, out: IO[bytes] | None, stop_on_first: bool, reporter: Reporter | None = None
    ) -> None:
        self.sweep = sweep
        self.total = len(sweep.seeds)
        self.out = out
        self.stop_on_first = stop_on_first
        self.reporter = reporter
        self.started = time.monotonic()
        self.runs = 0
        self.failing: list[int] = []
        self.classes: Counter[str] = Counter()
        self.crashed: dict[int, str] = {}
        self.timeouts: dict[int, str] = {}
        self.worker_deaths = 0  # worker processes lost (their seeds ran again alone)
        self.budget_hits = 0
        self.replays: dict[int, str] = {}
        self.logs: dict[int, str] = {}
        self.bound: int | None = None  # --stop-on-first: the lowest failing seed so far
        self.vacuous: list[int] = []  # seeds that finished clean but opened no race window
        self.warnings = 0
        self.windows: dict[str, Any] = {}  # the race windows of every seed, added up

    def record(self, r: SeedResult) -> None:
        """Write the result line at once (flushed: an interrupted sweep keeps it) and count it."""
        if self.bound is not None and r.seed > self.bound:
            return  # above the first failing seed: abandoned by --stop-on-first
        if self.out is not None:
            try:
                self.out.write(orjson.dumps(r.to_json()) + b"\n")
                self.out.flush()
            except OSError as exc:
                self._out_failed(exc)
        if r.verdict == "error":
            raise SweepError(f"seed {r.seed}: {r.error}")
        self.runs += 1
        if r.verdict == "crashed":
            self.crashed[r.seed] = r.error or "crashed"
        if r.verdict == "timeout":
            self.timeouts[r.seed] = r.error or "timeout"
        if r.stop == "budget":
            self.budget_hits += 1
        if r.verdict == "vacuous":
            self.vacuous.append(r.seed)
        self.warnings += r.warnings
        if r.windows:
            windows.add(self.windows, r.windows)
        if r.failing:
            self.failing.append(r.seed)
            self.classes.update(r.classes)
            self.replays[r.seed] = r.replay
            if r.log:
                self.logs[r.seed] = r.log
            if self.stop_on_first:
                self.bound = r.seed if self.bound is None else min(self.bound, r.seed)
        if self.reporter is not None:
            self.reporter.update(self)

    def _out_failed(self, exc: OSError) -> None:
        """--out cannot be written (a full disk): stop writing it and remove the partial file; the sweep
        goes on, and its summary names the error."""
        self.out_error = exc
        fh, self.out = self.out, None
        if fh is not None:
            with contextlib.suppress(OSError):
                fh.close()
        name = getattr(fh, "name", None)
        if isinstance(name, str) and Path(name).is_file():
            with contextlib.suppress(OSError):
                Path(name).unlink()

    out_error: OSError | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


class PlainReporter:
    """A line every tenth of the sweep or every ``every`` seconds, for logs and CI (stderr not a terminal)."""

    def __init__(self, stream: IO[str], every: float = 10.0) -> None:
        self.stream = stream
        self.every = every
        self.last = time.monotonic()
        self.next_tenth = 1

    def start(self, total: int) -> None:
        self.last = time.monotonic()

    def update(self, tally: Tally) -> None:
        now = time.monotonic()
        tenth = 10 * tally.runs // max(1, tally.total)
        if tenth < self.next_tenth and now - self.last < self.every:
            return
        self.next_tenth = tenth + 1
        self.last = now
        rate = tally.runs / max(tally.elapsed, 1e-9)
        print(
            f"sweep: {tally.runs}/{tally.total} seeds ({100 * tally.runs / max(1, tally.total):.0f}%)"
            f"  failing {len(tally.failing)}  crashed {len(tally.crashed)}  {rate:.1f} runs/s",
            file=self.stream,
            flush=True,
        )

    def close(self, tally: Tally) -> None:
        pass


class RichReporter:
    """A live bar on a terminal.  No refresh thread: worker processes may be forked while it shows."""

    def __init__(self) -> None:
        self.progress: Any = None
        self.task: Any = None

    def start(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("sweep"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            auto_refresh=False,
        )
        self.task = self.progress.add_task("sweep", total=total, status="failing 0")
        self.progress.start()
        self.progress.refresh()

    def update(self, tally: Tally) -> None:
        rate = tally.runs / max(tally.elapsed, 1e-9)
        status = f"failing {len(tally.failing)}  crashed {len(tally.crashed)}  {rate:.1f} runs/s"
        self.progress.update(self.task, completed=tally.runs, status=status, refresh=True)

    def close(self, tally: Tally) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=tally.runs, refresh=True)
            self.progress.stop()


# -- the summary ----------------------------------------------------------------------------------


@dataclass
class Summary:
    """The outcome of a sweep.  Wall-clock fields (seconds, runs_per_s) are the only non-deterministic ones."""

    sweep: Sweep
    runs: int  # seeds that finished (crashed ones included)
    failing: list[int]  # seeds with a violation, ascending
    classes: dict[str, int]  # violation class -> number of failing seeds that showed it
    crashed: dict[int, str]
    budget_hits: int
    seconds: float
    timeouts: dict[int, str]
    worker_deaths: int
    replays: dict[int, str]
    logs: dict[int, str]
    executor: str
    out: str | None = None
    out_error: str | None = None  # --out could not be written: the summary stands, the exit code is 2
    stopped_early: bool = False
    interrupted: bool = False
    vacuous: list[int] = field(default_factory=list)  # seeds that opened no race window, ascending
    warnings: int = 0
    windows: dict[str, Any] = field(default_factory=dict)  # race windows over all seeds

    @property
    def first_failing(self) -> int | None:
        return self.failing[0] if self.failing else None

    @property
    def runs_per_s(self) -> float:
        return round(self.runs / self.seconds, 2) if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.failing or self.crashed:
            return EXIT_VIOLATION
        if self.budget_hits or self.timeouts:
            return EXIT_INCOMPLETE
        return EXIT_VACUOUS if self.runs and len(self.vacuous) == self.runs else EXIT_CLEAN

    def to_json(self) -> dict[str, Any]:
        c = self.sweep.base
        seeds = self.sweep.seeds
        return {
            "workload": c.workload,
            "seeds": f"{seeds.start}:{seeds.stop}",
            "profile": c.profile,
            "bugs": list(c.bugs),
            "swarm": self.sweep.swarm,
            "runs": self.runs,
            "failing": self.failing,
            "first_failing": self.first_failing,
            "classes": self.classes,
            "crashed": sorted(self.crashed),
            "crash_errors": {str(s): e for s, e in sorted(self.crashed.items())},
            "budget_hits": self.budget_hits,
            "budget_fraction": round(self.budget_hits / self.runs, 4) if self.runs else 0.0,
            "timeouts": sorted(self.timeouts),
            "worker_deaths": self.worker_deaths,
            "runs_per_s": self.runs_per_s,
            "seconds": round(self.seconds, 2),
            "replay": [self.replays[s] for s in self.failing],
            "logs": [self.logs[s] for s in self.failing if s in self.logs],
            "stopped_early": self.stopped_early,
            "interrupted": self.interrupted,
            "vacuous": self.vacuous,
            "warnings": self.warnings,
            "windows": self.windows,
            "out": self.out,
        }

    def render(self) -> str:
        from simulator import __version__

        c = self.sweep.base
        seeds = self.sweep.seeds
        runs = max(1, self.runs)
        strategy = "swarm (drawn per seed)" if self.sweep.swarm else c.strategy
        out = [
            f"p2msim {__version__} sweep  workload {c.workload}  seeds {seeds.start}:{seeds.stop}  "
            f"profile {c.profile}  strategy {strategy}" + (f"  bugs {', '.join(c.bugs)}" if c.bugs else ""),
            f"{self.runs:,} runs in {self.seconds:.1f} s on {self.executor}: {self.runs_per_s:.2f} runs/s",
        ]
        if self.stopped_early:
            out.append(f"stopped at the first failing seed (--stop-on-first): {self.runs:,} of {len(seeds):,} run")
        if self.interrupted:
            out.append(f"INTERRUPTED: {self.runs:,} of {len(seeds):,} seeds finished")
        classes = ", ".join(f"{k} {v}" for k, v in self.classes.items())
        first = f"   first: {self.first_failing}   classes: {classes}" if self.failing else ""
        out.append(f"failing seeds: {len(self.failing):,} ({100 * len(self.failing) / runs:.1f}%){first}")
        incomplete = " (INCOMPLETE: not clean; give --steps more)" if self.budget_hits else ""
        out.append(f"hit step budget: {self.budget_hits:,} ({100 * self.budget_hits / runs:.1f}%){incomplete}")
        if self.vacuous:
            every = " (every seed: VACUOUS, exit 5)" if len(self.vacuous) == self.runs else ""
            shown = ", ".join(str(s) for s in self.vacuous[:REPLAYS_SHOWN])
            more = f", ... {len(self.vacuous) - REPLAYS_SHOWN:,} more" if len(self.vacuous) > REPLAYS_SHOWN else ""
            out.append(f"vacuous seeds (no race window opened): {len(self.vacuous):,}{every}: {shown}{more}")
        if self.crashed:
            out.append(f"CRASHED seeds: {len(self.crashed):,}: {', '.join(str(s) for s in sorted(self.crashed))}")
            for s, err in sorted(self.crashed.items())[:REPLAYS_SHOWN]:
                out.append(f"  seed {s}: {err}")
        else:
            out.append("crashed seeds: 0")
        if self.timeouts:
            out.append(
                f"TIMEOUT seeds: {len(self.timeouts):,} (INCOMPLETE: no verdict within --seed-timeout): "
                + ", ".join(str(s) for s in sorted(self.timeouts))
            )
        if self.windows:
            out.append(f"warnings: {self.warnings:,} (stale uses that could do no harm)")
            out.extend(
                line.replace("race windows:", f"race windows over {self.runs:,} seeds:", 1)
                for line in windows.block(self.windows, indent="")
            )
        if self.worker_deaths:
            out.append(
                f"worker processes lost: {self.worker_deaths} (killed from outside, or a run that exits the "
                "process); their seeds ran again alone, and one that dies alone is a crashed seed"
            )
        if self.failing and c.strategy == "uncontrolled" and not self.sweep.swarm:
            out.append("")
            out.append("replay: none - the uncontrolled strategy lets the event loop schedule, so runs do not repeat")
        elif self.failing:
            out.append("")
            out.append("replay the failing seeds:")
            for s in self.failing[:REPLAYS_SHOWN]:
                out.append(f"  {self.replays[s]}")
            if len(self.failing) > REPLAYS_SHOWN:
                where = f" (all in {self.out})" if self.out else ""
                out.append(f"  ... and {len(self.failing) - REPLAYS_SHOWN:,} more{where}")
            if self.logs:
                first_log = self.logs[min(self.logs)]
                out.append(f"logs of failing seeds in {Path(first_log).parent}/ (schedules beside them)")
                out.append(f"  p2msim inspect {first_log} --violation 1")
        if self.out:
            out.append(f"results: {self.out}")
        return "\n".join(out)


# -- running it -----------------------------------------------------------------------------------


def prepare(sweep: Sweep) -> None:
    """Reject bad input once, before any process starts: names, ranges, the workload and its parameters.

    Raises ConfigError.  A workload that raises only once it runs is caught per seed (an ``error``).
    """
    from simulator.engine.simulation import ConfigError, _params, load_workload, validate

    if len(sweep.seeds) == 0:
        raise ConfigError("the seed range is empty")
    first = sweep.task(sweep.seeds.start).config
    validate(first, bugs=False)
    mod = load_workload(first.workload)
    validate(first)  # now with the bugs a workload file may register
    _params(mod, first)


def run_sweep(
    sweep: Sweep,
    *,
    jobs: int = 2,
    stop_on_first: bool = False,
    out: str | None = None,
    cluster: str | None = None,
    reporter: Reporter | None = None,
) -> Summary:
    """Run every seed of ``sweep`` and summarise.  Raises ConfigError or SweepError for bad input.

    Ctrl-C does not raise: the summary comes back with ``interrupted`` set, covering the seeds that
    finished (every one of them is already in ``out``).
    """
    prepare(sweep)
    if jobs < 1:
        raise SweepError(f"--jobs must be at least 1, not {jobs}")
    if sweep.log_dir is not None:
        d = Path(sweep.log_dir)
        if d.exists() and not d.is_dir():
            raise SweepError(f"--log {sweep.log_dir} is a file: a sweep's --log names a directory")
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SweepError(f"cannot create log directory {sweep.log_dir}: {exc.strerror}") from None
        sweep = replace(sweep, log_dir=str(d.resolve()))
    if out and sweep.base.workload.endswith(".py") and Path(out).resolve() == Path(sweep.base.workload).resolve():
        raise SweepError(f"--out {out} is the workload file itself: the results would overwrite it")
    try:
        fh = open(out, "wb") if out else None  # noqa: SIM115 - closed in the finally below
    except OSError as exc:
        raise SweepError(f"cannot write {out}: {exc.strerror}") from None
    tally = Tally(sweep, fh, stop_on_first, reporter)
    if reporter is not None:
        reporter.start(tally.total)
    interrupted = False
    workers = min(jobs, len(sweep.seeds))
    executor = f"the Dask cluster at {cluster}" if cluster else f"{workers} local process{'es' if workers > 1 else ''}"
    try:
        if cluster:
            _run_cluster(sweep.tasks(), cluster, tally)
        else:
            _run_local(sweep.tasks(), workers, tally)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if tally.out is not None:
            try:
                tally.out.close()
            except OSError as exc:
                tally._out_failed(exc)
        if reporter is not None:
            reporter.close(tally)
    return Summary(
        sweep=sweep,
        runs=tally.runs,
        failing=sorted(tally.failing),
        classes=dict(sorted(tally.classes.items(), key=lambda kv: (-kv[1], kv[0]))),
        crashed=dict(sorted(tally.crashed.items())),
        budget_hits=tally.budget_hits,
        timeouts=dict(sorted(tally.timeouts.items())),
        worker_deaths=tally.worker_deaths,
        seconds=tally.elapsed,
        replays=tally.replays,
        logs=tally.logs,
        executor=executor,
        out=out if tally.out_error is None else None,
        out_error=None
        if tally.out_error is None
        else f"cannot write {out}: {tally.out_error.strerror or tally.out_error}",
        stopped_early=tally.bound is not None,
        interrupted=interrupted,
        vacuous=sorted(tally.vacuous),
        warnings=tally.warnings,
        windows=tally.windows,
    )


BROKEN_POOL_SECONDS = 10.0  # how long a broken pool may take to fail its other futures


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """End a pool now: queued work cancelled, its processes terminated (a worker busy in a run, or one
    that missed the interrupt, must not be left behind), nobody waited for."""
    processes = list(getattr(pool, "_processes", {}).values())  # the executor has no public handle on them
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for proc in processes:
        proc.join(timeout=2)
        if proc.is_alive():
            proc.kill()


def _new_pool(jobs: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init)


def _run_local(tasks: Iterator[Task], jobs: int, tally: Tally) -> None:
    """Seeds on local processes, at most ``jobs`` in flight, surviving workers that die.

    In-flight work is bounded (rather than everything submitted at once) so that a broken pool
    implicates few seeds and --stop-on-first wastes at most ``jobs`` runs.
    """
    suspects: deque[Task] = deque()  # in flight when a worker died: each runs again alone
    alone: set[int] = set()  # seeds whose worker died while they ran alone: the next death is theirs
    inflight: dict[Future[SeedResult], Task] = {}
    unsent: deque[Task] = deque()  # drawn, but the pool broke under its submit: it never ran
    exhausted = False
    pool = _new_pool(jobs)

    def submit(t: Task) -> bool:
        """False if the pool is already broken (a worker died since the last wait): ``t`` did not start."""
        try:
            inflight[pool.submit(run_seed, t)] = t
        except BrokenProcessPool:
            return False
        return True

    try:
        while True:
            if tally.bound is not None:
                exhausted = True  # every seed not yet drawn is above the first failing one
                suspects = deque(t for t in suspects if t.seed < tally.bound)
                unsent = deque(t for t in unsent if t.seed < tally.bound)
            sent = True
            if suspects:
                if not inflight:  # a suspect runs alone, so a broken pool names it
                    t = suspects.popleft()
                    alone.add(t.seed)
                    if not submit(t):
                        alone.discard(t.seed)
                        suspects.appendleft(t)
                        sent = False
            else:
                while len(inflight) < jobs and (unsent or not exhausted):
                    t = unsent.popleft() if unsent else next(tasks, None)
                    if t is None:
                        exhausted = True
                        break
                    if not submit(t):
                        unsent.appendleft(t)
                        sent = False
                        break
            if not inflight:
                if sent:
                    return
                stop_pool(pool)  # broken with nothing of ours in flight: the death was already counted
                pool = _new_pool(jobs)
                continue
            done, _ = wait(inflight, return_when=FIRST_COMPLETED)
            broken = _collect(sorted(done, key=lambda f: inflight[f].seed), inflight, tally)
            if not broken:
                continue
            # the pool is dead: every future still in flight fails the same way (or finished just before);
            # one the dead pool never settles is a suspect too, and the pool is ended, not waited for
            finished, unsettled = wait(list(inflight), timeout=BROKEN_POOL_SECONDS)
            broken += _collect(sorted(finished, key=lambda f: inflight[f].seed), inflight, tally)
            broken += [inflight.pop(f) for f in sorted(unsettled, key=lambda f: inflight[f].seed)]
            stop_pool(pool)
            pool = _new_pool(jobs)
            tally.worker_deaths += 1
            if len(broken) == 1 and broken[0].seed in alone:
                tally.record(_crashed(broken[0], "the worker process died (killed, or exited from inside the run)"))
            else:  # the same with --jobs 1 or 2: each runs again alone, and dies alone to be a crashed seed
                suspects.extend(sorted(broken, key=lambda t: t.seed))
    except BaseException:
        stop_pool(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _collect(done: list[Future[SeedResult]], inflight: dict[Future[SeedResult], Task], tally: Tally) -> list[Task]:
    """Record finished futures; return the tasks whose worker died under them."""
    broken: list[Task] = []
    for fut in done:
        t = inflight.pop(fut)
        try:
            r = fut.result()
        except BrokenProcessPool:
            broken.append(t)
            continue
        except Exception as exc:  # e.g. the result could not be pickled back
            r = _crashed(t, f"{type(exc).__name__}: {exc}")
        tally.record(r)
    return broken


CLUSTER_CONNECT_TIMEOUT = 10  # seconds to reach the scheduler


def _probe_scheduler(address: str) -> None:
    """Connect once before making a Client: a Client that fails to connect prints a traceback when collected.

    Raises SweepError with one line (bad address, nobody listening).
    """
    import asyncio

    from distributed.comm import connect

    async def probe() -> None:
        comm = await connect(address, timeout=CLUSTER_CONNECT_TIMEOUT)
        await comm.close()

    try:
        asyncio.run(probe())
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise SweepError(f"cannot reach the Dask scheduler at {address}: {exc}") from None


def _run_cluster(tasks: Iterator[Task], address: str, tally: Tally) -> None:
    """Seeds as Dask tasks on an existing cluster: one task per seed, a window of them in flight.

    Workers need p2msim installed (and a workload file at the same path); logs land on the workers.
    A worker that dies is Dask's business: it retries the task elsewhere and, past its limit,
    raises KilledWorker, which we report as that seed crashing.
    """
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        raise SweepError("--cluster needs Dask: install p2msim[cluster] (pip install 'p2msim[cluster]')") from None
    _probe_scheduler(address)
    try:
        client = Client(address, timeout=CLUSTER_CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise SweepError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    futures: dict[Any, Task] = {}
    try:
        window = max(8, 4 * sum(client.nthreads().values()))
        pending = as_completed(loop=client.loop)
        exhausted = False

        def top_up() -> None:
            nonlocal exhausted
            while not exhausted and len(futures) < window:
                t = next(tasks, None)
                if t is None:
                    exhausted = True
                    return
                fut = client.submit(run_seed, t, pure=False)
                futures[fut] = t
                pending.add(fut)

        top_up()
        for fut in pending:
            t = futures.pop(fut, None)
            if t is None:
                continue  # cancelled by --stop-on-first
            try:
                r = fut.result()
            except Exception as exc:  # KilledWorker, or the task could not run there
                r = _crashed(t, f"{type(exc).__name__}: {exc}")
            tally.record(r)
            if tally.bound is not None:
                exhausted = True
                above = [f for f, task in futures.items() if task.seed > tally.bound]
                for f in above:
                    del futures[f]
                client.cancel(above)
            top_up()
    finally:
        if futures:
            client.cancel(list(futures))
        client.close()
