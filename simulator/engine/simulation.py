"""Wiring: a configuration becomes a machine, a hypervisor, tasks, and a result.

``run(config)`` is deterministic: the same configuration (seed included) gives
the same result, digest and log bytes on the trio and asyncio backends.  A
run ends when the workload finishes, the step budget runs out, the model
deadlocks or panics; the log is flushed on every one of those paths and on
Ctrl-C.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import math
import os
import pkgutil
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import anyio
import orjson

from simulator import __version__
from simulator.ctree import p2m as ctree_p2m
from simulator.ctree.build import CTreeError
from simulator.engine import calls, findings, invariants, provenance, variants, windows
from simulator.engine.bugs import BUGS
from simulator.engine.conductor import Conductor, Deadlock, SimulationStop, TimedConductor, UncontrolledConductor
from simulator.engine.log import LEVELS as LOG_LEVELS
from simulator.engine.log import LOG_SCHEMA_VERSION, EventLog
from simulator.engine.oracle import Oracle, Violation
from simulator.engine.scenario import MachinePanic, Scenario, WorkloadError
from simulator.engine.strategies import STRATEGIES, ReplayStrategy, Strategy, make_strategy
from simulator.engine.userfile import UserFileError, import_file
from simulator.engine.watchdog import STALL_SECONDS, Watchdog
from simulator.riscv.costs import DEFAULTS_FILE as DEFAULT_COSTS
from simulator.riscv.costs import ZERO as ZERO_COSTS
from simulator.riscv.costs import Costs, CostsError
from simulator.riscv.costs import load as costs_table
from simulator.riscv.hart import Hart, IllegalInstruction
from simulator.riscv.memory import Memory
from simulator.riscv.observer import Observer
from simulator.riscv.pte import MODES
from simulator.riscv.sbi import Sbi
from simulator.riscv.tlb import Tlb
from simulator.xen.base import HypercallFailed, XenPanic
from simulator.xen.hypervisor import Xen
from simulator.xen.profiles import ALIASES as PROFILE_ALIASES
from simulator.xen.profiles import PROFILES
from simulator.xen.profiles import lookup as lookup_profile
from simulator.xen.profiles import resolve as resolve_profile


class ConfigError(Exception):
    """Bad input: an unknown name or an impossible configuration (exit code 2)."""


class SeedTimeout(Exception):
    """The run took longer than its time limit (sweep's and matrix's --seed-timeout)."""

    def __init__(self, seq: int, limit: float) -> None:
        super().__init__(seq, limit)
        self.seq = seq
        self.limit = limit

    def __str__(self) -> str:
        return f"no result in {self.limit:g} s (stopped at step {self.seq:,})"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C: the run stopped at ``seq``; the log is complete up to there."""

    def __init__(self, seq: int, log: str | None) -> None:
        super().__init__(seq, log)  # both, so it pickles across processes
        self.seq = seq
        self.log = log


@dataclass(frozen=True)
class Config:
    workload: str
    seed: int = 0
    strategy: str = "random"
    pct_depth: int = 3
    pcpus: int = 4
    profile: str = "fixed"
    bugs: tuple[str, ...] = ()
    steps: int = 0  # the step budget; 0: the default, which grows with the harts (see ``budget``)
    mode: str = "sv39x4"
    vmid_bits: int = 7
    tlb_leaf: int = 64
    tlb_nonleaf: int = 16
    frames: int = 16384
    backend: str = "trio"
    log: str | None = None
    log_level: str = "debug"
    strict: bool = False
    params: tuple[tuple[str, str], ...] = ()
    stop_at_first: bool = False  # end the run at the first violation (the shrinker's fast mode)
    # probability of a speculative walk per hypervisor instruction boundary with hgatp active,
    # and per guest quantum (0: off); the spec allows them at any time, so they are on by default
    speculate: float = 0.02
    xen_opts: tuple[tuple[str, str], ...] = ()  # Xen boot options (the command line), e.g. vmid=0
    debug_build: bool = False  # CONFIG_DEBUG: ASSERT() checked, a failure is a panic finding
    # the machine's A/D scheme: svade (a clear A or D faults; the DT lists Svade, so Xen sets them)
    # or svadu (the DT lists Svadu only; the firmware sets menvcfg.ADUE: walks update A/D)
    ad: str = "svade"
    # the harts with Svinval ("all", or hart IDs "0,2"): their firmware fences as
    # SFENCE.W.INVAL; HINVAL.GVMA...; SFENCE.INVAL.IR, and Xen code may use the instructions
    svinval: str = ""
    # negative TLB entries per hart: invalid PTEs a faulting walk caches (0: none are cached)
    tlb_negative: int = 0
    # the TLB may hold several entries for one address: a refill keeps the old one, a lookup uses any
    tlb_multi: bool = False
    # variant files (engine/variants.py): proposed changes to the model, applied before the bugs
    variants: tuple[str, ...] = ()
    # a Xen tree whose own p2m.c is the hypervisor's P2M (simulator/ctree/); "" for the Python model
    xen_tree: str = ""
    # the cost table over the defaults (simulator/riscv/costs.toml), for --strategy timed; "" for none
    costs: str = ""
    # where a recorded workload or variant file is now, by the name the run gave it (a replay from
    # another directory); not part of the run's identity
    paths: tuple[tuple[str, str], ...] = ()

    def where(self, name: str) -> str:
        """The file to load for ``name`` (a workload or a variant, as the run names it)."""
        return dict(self.paths).get(name, name)

    def identity(self) -> dict[str, Any]:
        """What determines the run (not where it logs or which event loop runs it)."""
        d = asdict(self)
        for k in ("backend", "log", "log_level", "paths"):
            d.pop(k)
        d["bugs"] = list(self.bugs)
        d["params"] = dict(self.params)
        d["xen_opts"] = dict(self.xen_opts)
        d["variants"] = list(self.variants)
        for k in MACHINE_OPTIONS:
            if d[k] == getattr(DEFAULTS, k) or (k == "variants" and not d[k]):
                del d[k]  # machine options added later appear only when set: older logs keep their digests
        return d

    @property
    def budget(self) -> int:
        """The step budget: given, or STEPS_PER_HART2 per hart squared, at least MIN_STEPS.

        The square: workloads run a vCPU per hart, and each hypercall's share of the
        steps shrinks as one over the harts (measured: 106k steps on 4 harts, 1.5M on 16,
        19M on 64 for teardown-under-load; 461k on 6 with arm-broadcast's flushes to every hart).
        """
        return self.steps or max(MIN_STEPS, STEPS_PER_HART2 * self.pcpus * self.pcpus)

    def boot_option(self, name: str, default: bool) -> bool:
        """A boolean Xen boot option (parse_bool): the last occurrence wins."""
        value = default
        for k, v in self.xen_opts:
            if k == name:
                value = parse_bool(v)
        return value

    def digest(self) -> str:
        return hashlib.blake2b(orjson.dumps(self.identity(), option=orjson.OPT_SORT_KEYS), digest_size=8).hexdigest()


BYTES_PER_FRAME = 128  # the machine's, the heap's and the oracle's arrays per frame (measured: about 112)


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 40  # not knowable here: do not refuse


STALL_ENV = "P2MSIM_STALL_SECONDS"


def stall_seconds() -> float:
    """How long a run may go without a step (the environment may change it, 0: never stop it)."""
    try:
        v = float(os.environ.get(STALL_ENV, STALL_SECONDS))
    except ValueError:
        v = STALL_SECONDS
    return v if v > 0 else float("inf")


MACHINE_OPTIONS = ("ad", "svinval", "tlb_negative", "tlb_multi", "variants", "xen_tree", "costs")
AD_SCHEMES = {"svade": frozenset({"svade", "svpbmt"}), "svadu": frozenset({"svadu", "svpbmt"})}
MAX_HARTS = 1024  # hart IDs beyond 64 take several SBI hart-mask windows
STEPS_PER_HART2 = 25_000
MIN_STEPS = 400_000
DEFAULTS = Config(workload="")
XEN_OPTS = {"vmid": "use VMIDs (boolean; vmid=0 turns them off, every vCPU then runs with VMID 0)"}
_TRUE, _FALSE = ("1", "yes", "on", "true", "enable"), ("0", "no", "off", "false", "disable")


def svinval_harts(config: Config) -> frozenset[int]:
    """The harts ``--svinval`` names; raises ConfigError on anything else."""
    text = config.svinval.strip()
    if not text:
        return frozenset()
    if text == "all":
        return frozenset(range(config.pcpus))
    try:
        harts = frozenset(int(t) for t in text.split(","))
    except ValueError:
        raise ConfigError(f"--svinval takes 'all' or hart IDs like 0,2, not {config.svinval!r}") from None
    bad = sorted(h for h in harts if not 0 <= h < config.pcpus)
    if bad:
        raise ConfigError(f"--svinval names hart {bad[0]}, but the machine has harts 0-{config.pcpus - 1}")
    return harts


def parse_bool(text: str) -> bool:
    """Xen's parse_bool()."""
    v = text.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"{text!r} is not a boolean (Xen takes {'/'.join(_TRUE)} or {'/'.join(_FALSE)})")


def did_you_mean(name: str, choices: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


PCT_HORIZON = 120_000  # change points are drawn over the first steps, where workloads do their work


# -- workloads ------------------------------------------------------------------------------


def hunting_workloads() -> list[str]:
    """The built-in workloads compare and matrix run by default: each races a teardown against running
    vCPUs.  One that says ``HUNT = False`` (big-guest: it measures scale) runs only when named."""
    return [n for n, m in builtin_workloads().items() if getattr(m, "HUNT", True)]


def builtin_workloads() -> dict[str, ModuleType]:
    import workloads

    found: dict[str, ModuleType] = {}
    for info in sorted(pkgutil.iter_modules(workloads.__path__), key=lambda i: i.name):
        mod = importlib.import_module(f"workloads.{info.name}")
        name = getattr(mod, "NAME", None)
        if name:
            found[name] = mod
    return found


def load_workload(name_or_path: str) -> ModuleType:
    builtins = builtin_workloads()
    if name_or_path in builtins:
        return builtins[name_or_path]
    path = Path(name_or_path)
    if path.suffix == ".py" or path.exists():
        if not path.is_file():
            raise ConfigError(f"workload file {name_or_path} does not exist")
        try:
            mod = import_file(path, "p2msim_workload")
        except UserFileError as exc:  # the user's script failed to import
            raise ConfigError(f"workload file {name_or_path} raised {exc}") from None
        if not callable(getattr(mod, "main", None)):
            raise ConfigError(f"workload file {name_or_path} has no async main(sim) function")
        return mod
    raise ConfigError(
        f"unknown workload {name_or_path!r} (built-in: {', '.join(builtins)}; or give a path to a .py file)"
        + did_you_mean(name_or_path, list(builtins))
    )


def validate(config: Config, bugs: bool = True) -> None:
    if config.strategy not in STRATEGIES and config.strategy != "replay":
        raise ConfigError(f"unknown strategy {config.strategy!r} (choose from {', '.join(STRATEGIES)})")
    name = resolve_profile(config.profile)[0]
    if name.split("+")[0] not in PROFILES:
        raise ConfigError(
            f"unknown profile {config.profile!r} (choose from {', '.join(PROFILES)}; base+knob adds a fix or a policy)"
            + did_you_mean(config.profile, [*PROFILES, *PROFILE_ALIASES])
        )
    try:
        lookup_profile(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for b in config.bugs if bugs else ():
        if b not in BUGS:
            raise ConfigError(
                f"unknown bug {b!r} (see `p2msim list`; a workload file may register its own)"
                + did_you_mean(b, list(BUGS))
            )
    if config.xen_tree and lookup_profile(name).vmid_per_domain:
        raise ConfigError(
            f"--profile {config.profile} gives each domain one VMID for life (ARM's scheme) in place of the "
            "tree's vmid.c: it cannot run with --xen-tree (use upstream or fixed)"
        )
    if config.mode not in MODES:
        raise ConfigError(f"unknown G-stage mode {config.mode!r} (choose from {', '.join(MODES)})")
    if not 1 <= config.pcpus <= MAX_HARTS:
        raise ConfigError(f"--pcpus must be between 1 and {MAX_HARTS}, not {config.pcpus}")
    if not 0 <= config.vmid_bits <= 14:
        raise ConfigError(
            f"VMID bits must be between 0 and 14 (hgatp.VMID is 14 bits; 0 or 1 turns VMIDs off), "
            f"not {config.vmid_bits}"
        )
    for k, v in config.xen_opts:
        if k not in XEN_OPTS:
            raise ConfigError(
                f"unknown Xen boot option {k!r} (p2msim models: {', '.join(XEN_OPTS)})"
                + did_you_mean(k, list(XEN_OPTS))
            )
        parse_bool(v)
    if config.steps < 0:
        raise ConfigError(f"--steps must be positive (or 0 for the default budget), not {config.steps}")
    if config.frames < 4096 or config.frames % 512:
        raise ConfigError(
            f"memory must be a whole number of 2 MiB (512 frames), at least 4096 frames, not {config.frames}"
        )
    if config.log_level not in LOG_LEVELS:
        raise ConfigError(f"unknown log level {config.log_level!r} (choose from {', '.join(LOG_LEVELS)})")
    if config.frames * BYTES_PER_FRAME > physical_memory() // 2:
        need = config.frames * BYTES_PER_FRAME / 2**30
        raise ConfigError(
            f"--frames {config.frames} needs about {need:.1f} GiB for the machine's per-frame state, more than "
            f"half of this machine's {physical_memory() / 2**30:.1f} GiB"
        )
    if config.tlb_negative < 0:
        raise ConfigError(f"--tlb-negative is a number of entries (0: none), not {config.tlb_negative}")
    if config.tlb_leaf < 1 or config.tlb_nonleaf < 0:
        raise ConfigError("the TLB needs at least one leaf entry and a non-negative walk cache")
    if config.backend not in ("trio", "asyncio"):
        raise ConfigError(f"unknown backend {config.backend!r} (trio or asyncio)")
    if config.ad not in AD_SCHEMES:
        raise ConfigError(
            f"unknown A/D scheme {config.ad!r} (--ad {' or '.join(AD_SCHEMES)})"
            + did_you_mean(config.ad, list(AD_SCHEMES))
        )
    svinval_harts(config)
    if not 0.0 <= config.speculate <= 1.0:
        raise ConfigError(f"--speculate is a probability between 0 and 1, not {config.speculate}")
    if config.pct_depth < 1:
        raise ConfigError(f"pct depth must be at least 1, not {config.pct_depth}")
    if config.costs and config.strategy != "timed":
        raise ConfigError(f"--costs {config.costs} sets what actions cost in virtual time: it needs --strategy timed")
    if config.strategy == "timed":
        load_costs(config)
    if config.strategy == "pct" and config.pct_depth > min(config.budget, PCT_HORIZON):
        raise ConfigError(
            f"--pct-depth {config.pct_depth} is more change points than the run has steps "
            f"({min(config.budget, PCT_HORIZON):,}): PCT's depth is bounded by them"
        )


def load_costs(config: Config) -> Costs:
    """The run's cost table (the defaults, with ``--costs`` over them); ConfigError names what is wrong."""
    try:
        return costs_table(config.costs or None)
    except CostsError as exc:
        raise ConfigError(str(exc)) from None


# -- results ----------------------------------------------------------------------------------


@dataclass
class Result:
    config: Config
    stats: dict[str, int]
    violations: list[Violation]
    violation_count: int
    warnings: list[str]
    warning_count: int
    stop_reason: str
    destroyed: list[int]
    decisions: list[tuple[int, int]] = field(repr=False, default_factory=list)
    preemptive: list[bool] = field(repr=False, default_factory=list)
    digest: str = ""
    schedule_path: str | None = None  # where a failing run with a log saved its schedule
    notes: list[str] = field(default_factory=list)  # one-line notes for the user (a deprecated name, ...)
    measures: dict[str, int] = field(default_factory=dict)  # what the workload measured (Scenario.measures)
    # files the run could not write (a full disk): the verdict stands, the command exits 2 naming them
    output_errors: list[str] = field(default_factory=list)
    warning_kinds: dict[str, int] = field(default_factory=dict)  # warnings by kind (see engine.oracle)
    # race windows: {"opened": {window: n}, "closed_by": {defence: n}, "first": {defence: step}} (engine.windows)
    windows: dict[str, Any] = field(default_factory=dict, repr=False)
    # every violation recorded (``violations`` keeps the first MAX_REPORTED and the first of each cause)
    findings: int = 0
    causes: list[dict[str, Any]] = field(default_factory=list, repr=False)  # by root cause (engine.findings)
    sources: dict[str, Any] = field(default_factory=dict, repr=False)  # what ran (engine.provenance)

    @property
    def clean(self) -> bool:
        """No violation in a run that finished (a budget stop checked no invariant: not clean)."""
        return not self.violations and self.stop_reason != "budget"

    @property
    def verdict(self) -> str:
        """violation, incomplete (the step budget ended the run first), vacuous (it finished but opened
        no race window or made no guest access: it could not have found anything) or clean."""
        if self.violations:
            return "violation"
        if self.stop_reason == "budget":
            return "incomplete"
        return "vacuous" if self.vacuous else "clean"

    @property
    def vacuous(self) -> str:
        """Why this run could not have found a stale use ('' when it could)."""
        return windows.vacuous(self.windows, self.stats.get("accesses", 0)) if self.windows else ""

    @property
    def replay_command(self) -> str:
        return replay_command(self.config)

    def to_json(self) -> dict[str, Any]:
        c = self.config
        return {
            "workload": c.workload,
            "seed": c.seed,
            "profile": c.profile,
            "strategy": c.strategy,
            "bugs": list(c.bugs),
            "steps": self.stats["steps"],
            "stats": {
                k: self.stats[k]
                for k in (
                    "accesses",
                    "tlb_hits",
                    "walks",
                    "fences_sent",
                    "fences_acked",
                    "frames_freed",
                    "frames_reused",
                    "stale_benign",
                    "ad_updates",
                    "negative_faults",
                    "tlbflush_filtered",
                    "timing",
                )
                if k in self.stats
            },
            "warnings": self.warning_count,
            "windows": self.windows,
            "violations": [v.to_json() for v in self.violations],
            "violation_count": self.violation_count,
            "findings": self.findings,
            "causes": self.causes,
            "stop": self.stop_reason,
            "verdict": self.verdict,
            "digest": self.digest,
            "replay": self.replay_command,
        }

    def explain(self) -> str:
        if self.stop_reason == "budget" and not self.violations:
            return (
                f"incomplete: the step budget ({self.config.budget:,}) ended the run before the workload finished; "
                f"no violation so far, invariants not checked ({self.replay_command} --steps N)"
            )
        if not self.violations and self.vacuous:
            return f"vacuous: no violation, but {self.vacuous} ({self.replay_command})"
        if not self.violations:
            why = windows.summary(self.windows)
            return f"clean: no violation in {self.stats['steps']:,} steps; {why} ({self.replay_command})"
        lines = [f"VIOLATIONS: {self.counts}"]
        lines += findings.render(
            self.causes, {v.n: v.explain() for v in self.violations}, len(self.violations), self.findings
        )
        return "\n".join(lines) + f"\n\nreplay: {self.replay_command}"

    @property
    def counts(self) -> str:
        """'2 violations, 1 cause (3 harmful uses, ...)': the numbers run, replay and inspect all print."""
        return findings.counts(self.violation_count, self.findings, len(self.causes))


def replay_command(c: Config) -> str:
    args = ["p2msim", "run", c.workload, "--seed", str(c.seed)]
    for name, flag in (
        ("strategy", "--strategy"),
        ("pcpus", "--pcpus"),
        ("profile", "--profile"),
        ("steps", "--steps"),
        ("mode", "--mode"),
        ("vmid_bits", "--vmid-bits"),
        ("tlb_leaf", "--tlb-leaf"),
        ("tlb_nonleaf", "--tlb-nonleaf"),
        ("tlb_negative", "--tlb-negative"),
        ("frames", "--frames"),
        ("pct_depth", "--pct-depth"),
        ("speculate", "--speculate"),
        ("ad", "--ad"),
        ("svinval", "--svinval"),
        ("costs", "--costs"),
    ):
        value = getattr(c, name)
        if value != getattr(DEFAULTS, name):
            args += [flag, str(value)]
    for k, v in c.xen_opts:
        args += ["--xen-opt", f"{k}={v}"]
    if c.tlb_multi:
        args.append("--tlb-multi")
    for v in c.variants:
        args += ["--variant", v]
    if c.xen_tree:
        args += ["--xen-tree", c.xen_tree]
    if c.debug_build:
        args.append("--debug-build")
    for b in c.bugs:
        args += ["--bug", b]
    for k, v in c.params:
        args += ["-p", f"{k}={v}"]
    if c.strict:
        args.append("--strict")
    return " ".join(shlex.quote(a) for a in args)


# -- the run ------------------------------------------------------------------------------------


def _params(mod: Any, config: Config) -> dict[str, Any]:
    raw = getattr(mod, "PARAMS", {})
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise ConfigError(
            f"workload {config.workload}: PARAMS must be a dict of parameter name -> default, not {type(raw).__name__}"
        )
    declared: dict[str, Any] = dict(raw)
    out = dict(declared)
    for k, v in config.params:
        if k not in declared:
            raise ConfigError(
                f"workload {config.workload} has no parameter {k!r} (it has: {', '.join(declared) or 'none'})"
            )
        kind = type(declared[k])
        try:
            out[k] = parse_bool(v) if kind is bool else kind(v)
        except (ValueError, TypeError, ConfigError):
            raise ConfigError(f"parameter {k}={v!r} is not of type {kind.__name__}") from None
        if kind is float and not math.isfinite(out[k]):
            raise ConfigError(f"parameter {k}={v!r} is not a finite number")
    return out


def live_domains(mod: Any, params: dict[str, Any]) -> int:
    """The most domains a workload keeps alive at once (its ``DOMAINS``: a number, or a function of its
    parameters); 0 when it does not say."""
    domains = getattr(mod, "DOMAINS", 0)
    return int(domains(params) if callable(domains) else domains)


def _sized_for(mod: Any, params: dict[str, Any], config: Config) -> tuple[Config, str]:
    """The machine and the budget grown to what the workload says it needs (its ``FRAMES`` and ``STEPS``, a
    number or a function of its parameters), with a note saying so; a config already big enough is kept."""
    grown: dict[str, int] = {}
    frames = getattr(mod, "FRAMES", None)
    need = int(frames(params) if callable(frames) else frames or 0)
    if need > config.frames:
        grown["frames"] = need
    steps = getattr(mod, "STEPS", None)
    want = int(steps(params) if callable(steps) else steps or 0)
    if not config.steps and want > config.budget:  # an explicit --steps is the user's to keep
        grown["steps"] = want
    if not grown:
        return config, ""
    said = ", ".join(f"--{k} {v}" for k, v in grown.items())
    return replace(config, **grown), f"workload {config.workload} runs with {said} (what it needs for its parameters)"


def vmid_bits_needed(config: Config, mod: Any = None, params: dict[str, Any] | None = None) -> int:
    """The fewest --vmid-bits a profile with one VMID per domain needs for this workload (0: any will do).

    Running out is a configuration limit, not a race: ARM's p2m_alloc_vmid fails and the domain is
    not created.  With VMIDs off (VMIDLEN 0 or 1, or vmid=0) every domain shares VMID 0.
    """
    if not lookup_profile(resolve_profile(config.profile)[0]).vmid_per_domain:
        return 0
    if config.vmid_bits <= 1 or not config.boot_option("vmid", True):
        return 0
    if mod is None:
        mod = load_workload(config.where(config.workload))
    n = live_domains(mod, _params(mod, config) if params is None else params)
    return max(n, 1).bit_length() if n else 0


def run(
    config: Config,
    decisions: list[tuple[int, int]] | None = None,
    main: Callable[[Scenario], Awaitable[None]] | None = None,
    fallback: str = "exact",
    time_limit: float | None = None,
) -> Result:
    """Run one simulation.  Raises ConfigError for bad input, WorkloadError if the script fails.

    ``main`` replaces the workload's driver (tests and the Python API use it
    for inline scenarios); ``config.workload`` then only names the run.
    """
    profile, note = resolve_profile(config.profile)
    if note:
        config = replace(config, profile=profile)
    validate(config, bugs=False)
    mod = SimpleNamespace(main=main, PARAMS={}) if main is not None else load_workload(config.where(config.workload))
    validate(config)  # now with the bugs a workload file may have registered
    params = _params(mod, config)
    config, sized = _sized_for(mod, params, config)
    if sized:
        note = "; ".join(x for x in (note, sized) if x)
        validate(config)
    least, why = getattr(mod, "PCPUS", (1, ""))
    if config.pcpus < least:
        raise ConfigError(f"workload {config.workload} needs --pcpus {least} or more: {why}")
    bits = vmid_bits_needed(config, mod, params)
    if bits > config.vmid_bits:
        raise ConfigError(
            f"workload {config.workload} keeps {live_domains(mod, params)} domains alive at once, and profile "
            f"{config.profile} gives each its own VMID for life (as ARM does): --vmid-bits {config.vmid_bits} has "
            f"{(1 << config.vmid_bits) - 1}; use --vmid-bits {bits} or more"
        )
    if decisions is None and config.strategy == "replay":
        raise ConfigError("--strategy replay needs the decisions of a recorded run: use `p2msim replay LOG`")
    if decisions is not None:
        strategy: Strategy = ReplayStrategy(config.seed, decisions, fallback)
    else:
        strategy = make_strategy(
            config.strategy, config.seed, pct_depth=config.pct_depth, horizon=min(config.budget, PCT_HORIZON)
        )
    box: dict[str, Any] = {}
    if config.log:
        from simulator.engine import schedule

        inputs = [Path(config.workload)] if config.workload.endswith(".py") else []
        inputs += [Path(getattr(mod, "__file__", "") or "")] if getattr(mod, "__file__", None) else []
        for src in inputs:
            if src.is_file() and Path(config.log).exists() and Path(config.log).samefile(src):
                raise ConfigError(f"--log {config.log} is the workload file itself: the log would overwrite it")

        # the log is about to be replaced: a schedule beside it belongs to an earlier run
        with contextlib.suppress(OSError):  # (a path that cannot hold a log fails at its open, in one line)
            schedule.schedule_path_for(config.log).unlink(missing_ok=True)
    dog = Watchdog(lambda: box["conductor"].seq if "conductor" in box else 0, time_limit, stall_seconds())
    box["watchdog"] = dog
    if config.backend == "asyncio":
        # a run stopped by a second interrupt leaves its task's exception unretrieved; the run reports it
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    try:
        with dog:
            try:
                result: Result = anyio.run(_run, config, mod, params, strategy, box, backend=config.backend)
            finally:
                calls.forget_stacks()  # (the frames c_stack kept would keep this run alive)
    except KeyboardInterrupt as exc:
        # asyncio cancels the run's task and raises here, outside it
        seq = box["conductor"].seq if "conductor" in box else 0
        if dog.reason == "timeout":
            raise SeedTimeout(seq, time_limit or 0.0) from None
        if dog.reason == "stall" and config.xen_tree and ctree_p2m.stalled_in():
            raise WorkloadError(
                f"the tree's C took no step for {dog.stall:g} s at step {seq:,}, in "
                f"{' <- '.join(ctree_p2m.stalled_in())}: it loops without a PTE store, lock or fence (Xen would "
                f"hang there); {STALL_ENV}=0 turns this check off"
            ) from None
        if dog.reason == "stall":
            raise WorkloadError(
                f"workload {config.workload} stopped taking steps at step {seq:,} (none for {dog.stall:g} s): it "
                "loops without awaiting the simulation (a busy loop, or anyio.sleep in a loop); "
                f"{STALL_ENV}=0 turns this check off"
            ) from None
        if isinstance(exc, Interrupted):
            raise
        raise Interrupted(seq, config.log) from None
    if note:
        result.notes.append(note)
    if result.violations and config.log and not result.output_errors:
        from simulator.engine import schedule

        path = schedule.schedule_path_for(config.log)
        try:
            result.schedule_path = str(schedule.save(path, schedule.to_schedule(result)))
        except OSError as exc:
            result.output_errors.append(_write_error(str(path), exc, "the schedule"))
    return result


_PACKAGE = str(Path(__file__).resolve().parents[1]) + os.sep  # simulator/


def user_frame(exc: BaseException) -> str:
    """' (at FILE:LINE in FUNCTION)' for the innermost frame of the user's own code (a workload, a variant,
    a bug file) in ``exc``'s traceback; '' when the error came from p2msim alone."""
    tb, found = exc.__traceback__, None
    while tb is not None:
        path = tb.tb_frame.f_code.co_filename
        ours = path.startswith((_PACKAGE, "<")) or "site-packages" in path or "/lib/python" in path
        if not ours:
            found = tb
        tb = tb.tb_next
    if found is None:
        return ""
    return f" (at {found.tb_frame.f_code.co_filename}:{found.tb_lineno} in {found.tb_frame.f_code.co_name})"


def _user_error(exc: BaseException, message: str) -> WorkloadError:
    """The one-line error for a workload that failed, naming the user's line; the original exception is kept
    (``original``) for ``--traceback``."""
    err = WorkloadError(message + user_frame(exc))
    err.original = exc  # type: ignore[attr-defined]
    err.reason = str(exc)  # type: ignore[attr-defined]  # what failed, without the step or the place
    return err


def _write_error(path: str | None, exc: OSError, what: str) -> str:
    gone = "" if path is None or Path(path).exists() else "; nothing partial is left"
    return f"cannot write {what} {path}: {exc.strerror or exc}{gone}"


async def _run(config: Config, mod: Any, params: dict[str, Any], strategy: Strategy, box: dict[str, Any]) -> Result:
    timed = config.strategy == "timed"  # (also when a timed run is replayed: its decisions pick)
    costs = load_costs(config) if timed else ZERO_COSTS
    if timed:
        conductor: Conductor = TimedConductor(strategy, config.budget, costs)
    else:
        conductor = (UncontrolledConductor if config.strategy == "uncontrolled" else Conductor)(strategy, config.budget)
    box["conductor"] = conductor
    try:
        log = EventLog(config.log, conductor, config.log_level)
    except OSError as exc:
        raise ConfigError(f"cannot write log {config.log}: {exc.strerror}") from None
    mode = MODES[config.mode]
    stop_reason = "done"
    ended = False
    sources = provenance.record(
        config.workload,
        getattr(mod, "__file__", None),
        [(v, str(variants.resolve(config.where(v)))) for v in config.variants],
        (config.costs or "(defaults)", [DEFAULT_COSTS, *([Path(config.costs)] if config.costs else [])])
        if timed
        else None,
    )
    try:
        log.info(
            None,
            "run.start",
            v=LOG_SCHEMA_VERSION,
            version=__version__,
            config=config.identity(),
            config_digest=config.digest(),
            sources=sources,
            **({"costs": costs.to_json()} if timed else {}),
        )
        memory = Memory(config.frames, Observer(), contiguous=bool(config.xen_tree))  # C reads a direct map
        if timed:
            memory.charge_to, memory.costs = conductor, costs
        harts: list[Hart] = []
        for i in range(config.pcpus):
            actor = conductor.add_actor(f"hart{i}")
            tlb = Tlb(
                config.tlb_leaf, config.tlb_nonleaf, strategy.stream(f"tlb/hart{i}"), config.tlb_negative,
                config.tlb_multi, watched=True,
            )  # fmt: skip
            harts.append(
                Hart(i, conductor, actor, memory, tlb, memory.observer, strategy.stream, speculate=config.speculate)
            )
        oracle = Oracle(
            memory,
            conductor,
            log,
            harts,
            mode,
            list(config.bugs),
            strict=config.strict,
            stop_at_first=config.stop_at_first,
        )
        memory.observer = oracle
        svinval = svinval_harts(config)
        for h in harts:
            h.observer = oracle
            h.timed, h.costs = timed, costs
            h.set_extensions(AD_SCHEMES[config.ad] | ({"svinval"} if h.id in svinval else set()))
        sbi = Sbi(harts)
        for h in harts:
            h.sbi = sbi
        xen_cls = Xen
        if config.xen_tree:
            try:
                xen_cls = ctree_p2m.xen_class(config.xen_tree)
            except CTreeError as exc:
                ended = True
                log.error(None, "run.error", error=str(exc))
                raise ConfigError(str(exc)) from None
        xen = xen_cls(
            memory=memory,
            harts=harts,
            sbi=sbi,
            conductor=conductor,
            profile=lookup_profile(config.profile),
            observer=oracle,
            gstage_mode=mode,
            vmid_bits=config.vmid_bits,
            xen_frames=64,
            opt_vmid=config.boot_option("vmid", True),
            debug_build=config.debug_build,
        )
        try:
            for path in config.variants:  # the change under review, then any known-wrong mutation on top
                for v in variants.load(config.where(path)):
                    v.apply(xen)
                variants.check_overrides(xen, f"variant file {path}")
            for b in config.bugs:
                BUGS[b].apply(xen)
                variants.check_overrides(xen, f"bug {b}")
        except variants.VariantError as exc:
            ended = True
            log.error(None, "run.error", error=str(exc))
            raise ConfigError(str(exc)) from None
        calls.observe(xen, oracle)  # after the bugs: a mutated hypercall or flush is still seen as one
        driver = conductor.add_actor("driver")
        scenario = Scenario(xen, conductor, driver, strategy.stream("workload"), params)

        async def drive() -> None:
            try:
                await mod.main(scenario)
            finally:
                for h in harts:
                    h.stopping = True
                conductor.notify()

        try:
            async with anyio.create_task_group() as tg:
                for h in harts:
                    tg.start_soon(conductor.run_actor, h.actor, h.main)
                tg.start_soon(conductor.run_actor, driver, drive)
                conductor.begin()
        except* SimulationStop as eg:
            stop_reason = eg.exceptions[0].args[0]
        except* Deadlock as eg:
            stop_reason = "deadlock"
            oracle.stopped("deadlock", f"deadlock: {eg.exceptions[0]}")
        except* (XenPanic, MachinePanic) as eg:
            stop_reason = "panic"
            oracle.stopped("panic", f"Xen panicked: {eg.exceptions[0]}")
        except* IllegalInstruction as eg:
            # Xen's own code trapped: do_trap -> do_unexpected_trap -> die(), as for any HS-mode trap
            stop_reason = "panic"
            oracle.stopped(
                "panic", f"Xen panicked: die(): Unhandled exception: Illegal instruction: {eg.exceptions[0]}"
            )
        except* KeyboardInterrupt:
            raise Interrupted(conductor.seq, config.log) from None  # the finally writes run.interrupted
        except* SystemExit as eg:
            code = eg.exceptions[0].code
            ended = True
            log.error(None, "run.error", error=f"SystemExit: {code}")
            raise WorkloadError(
                f"workload {config.workload} called sys.exit({code!r}) at step {conductor.seq:,}: a workload "
                "raises WorkloadError to fail a run"
            ) from None
        except* (WorkloadError, ValueError, HypercallFailed) as eg:
            exc = eg.exceptions[0]
            ended = True
            log.error(None, "run.error", error=f"{type(exc).__name__}: {exc}")
            raise _user_error(exc, f"workload {config.workload} failed at step {conductor.seq:,}: {exc}") from None
        except* Exception as eg:
            exc = eg.exceptions[0]
            ended = True
            log.error(None, "run.error", error=f"{type(exc).__name__}: {exc}")
            raise _user_error(
                exc, f"workload {config.workload} raised {type(exc).__name__} at step {conductor.seq:,}: {exc}"
            ) from None

        if "watchdog" in box:
            box["watchdog"].stall = float("inf")  # no more steps: the end-of-run checks may take a while
        if stop_reason == "done":
            for problem in invariants.check(xen):
                oracle.invariant(problem, mfn=problem.mfn, at_end=True)
        oracle.close_windows()

        stats = {
            "steps": conductor.seq,
            "switches": conductor.switches,
            "preemptions": sum(conductor.preemptive),
            "accesses": sum(h.hits + h.walks for h in harts),
            "tlb_hits": sum(h.hits for h in harts),
            "walks": sum(h.walks for h in harts),
            "speculative_walks": sum(h.speculative_walks for h in harts),
            "faults": sum(h.faults for h in harts),
            "fences_sent": sbi.sent,
            "fences_acked": sbi.acked,
            **oracle.stats(),
            **({"ad_updates": sum(h.ad_updates for h in harts)} if config.ad != DEFAULTS.ad else {}),
            **({"negative_faults": sum(h.negative_faults for h in harts)} if config.tlb_negative else {}),
            **({"tlbflush_filtered": oracle.tlbflush_filtered} if xen.profile.tlbflush_clock else {}),
        }
        if isinstance(conductor, TimedConductor):
            stats["timing"] = conductor.timing.to_json(
                max(a.t for a in conductor.actors), [h.stalled for h in harts], sbi.sent
            )
        result = Result(
            config,
            stats,
            oracle.violations,
            oracle.violation_count,
            oracle.warnings,
            oracle.warning_count,
            stop_reason,
            scenario.destroyed,
            list(conductor.decisions),
            list(conductor.preemptive),
        )
        result.warning_kinds = dict(oracle.warning_kinds)
        result.sources = sources
        result.measures = dict(scenario.measures)
        result.windows = oracle.windows.to_json()
        result.findings = oracle.distinct
        result.causes = oracle.groups.to_json()
        body = result.to_json()
        body.pop("digest")
        for derived in ("windows", "findings", "causes"):
            body.pop(derived)  # derived from the run: the digest is of what happened, as before these existed
        body["decisions"] = result.decisions
        body["version"] = __version__
        result.digest = hashlib.blake2b(orjson.dumps(body, option=orjson.OPT_SORT_KEYS), digest_size=8).hexdigest()
        log.info(
            None,
            "run.end",
            stop=stop_reason,
            stats=stats,
            violations=oracle.violation_count,
            findings=oracle.distinct,
            causes=result.causes,
            classes=sorted({v.cls for v in oracle.violations}),
            warnings=oracle.warning_count,
            windows=result.windows,
            digest=result.digest,
            decisions=result.decisions,
        )
        ended = True
        log.close()
        if log.failed is not None:
            result.output_errors.append(_write_error(config.log, log.failed, "the log"))
        return result
    finally:
        if not ended:
            # Ctrl-C, or p2msim itself failed: say where the run stopped, keep what is known
            log.error(None, "run.interrupted", decisions=list(conductor.decisions))
        log.close()
