"""`p2msim sweep`: its options, and the summary printed from a sweep (simulator.hunt.sweep runs it)."""

from __future__ import annotations

import argparse
import sys

import orjson

from simulator.cli.args import CliError, Parser, param, positive, seconds, shared_config, xen_tree_option
from simulator.hunt.sweep import (
    EXIT_BAD_INPUT,
    SEED_TIMEOUT,
    SWARM_OPTIONS,
    PlainReporter,
    Reporter,
    RichReporter,
    Sweep,
    SweepError,
    run_sweep,
)


def seed_range(text: str) -> range:
    start, sep, stop = text.partition(":")
    try:
        a, b = int(start, 0), int(stop, 0)
    except ValueError:
        a = b = -1
    if not sep or a < 0 or b <= a:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed range A:B (seeds A to B-1, 0 <= A < B)")
    return range(a, b)


def _jobs(text: str) -> int:
    v = positive(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: at least one job")
    return v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `sweep` subcommand's options: those of `p2msim run` plus the sweep's own.

    The options --swarm draws default to None, so run_cli can tell "given" from "default".
    """
    p = parser
    p.add_argument("workload", help="a built-in workload name (see `p2msim list`) or a path to a .py file")
    p.add_argument("--seeds", type=seed_range, required=True, metavar="A:B", help="seeds A to B-1")
    p.add_argument("--jobs", type=_jobs, default=2, help="local worker processes (default 2; unused with --cluster)")
    p.add_argument("--stop-on-first", action="store_true", help="stop at the lowest failing seed")
    p.add_argument("--out", metavar="FILE.jsonl", help="one JSON line per seed, written as each finishes (overwritten)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    p.add_argument(
        "--swarm", action="store_true", help="draw harts, TLB sizes, VMID bits, strategy and speculation per seed"
    )
    p.add_argument("--cluster", metavar="ADDRESS", help="run on this Dask scheduler (needs p2msim[cluster])")
    p.add_argument(
        "--seed-timeout",
        type=seconds,
        default=SEED_TIMEOUT,
        metavar="S",
        help=f"a seed with no verdict after S seconds is a TIMEOUT, not a hang (default {SEED_TIMEOUT:g})",
    )
    p.add_argument("--strategy", default=None, help="random or pct (default random)")
    p.add_argument("--pct-depth", type=positive, default=None, help="bug depth for --strategy pct (default 3)")
    p.add_argument("--pcpus", type=positive, default=None, help="harts (default 4)")
    p.add_argument("--profile", default="fixed", help="which version of Xen's bookkeeping runs")
    p.add_argument("--bug", action="append", default=[], help="inject a catalogued bug (repeatable)")
    p.add_argument("--variant", action="append", default=[], metavar="FILE", help="a variant file (repeatable)")
    p.add_argument("--steps", type=positive, default=0, help="step budget per run (default: 25,000 x harts squared)")
    p.add_argument("--mode", default="sv39x4", help="G-stage mode: sv39x4, sv48x4 or sv57x4")
    p.add_argument("--vmid-bits", type=positive, default=None, help="(default 7)")
    p.add_argument("--tlb-leaf", type=positive, default=None, help="leaf TLB entries per hart (default 64)")
    p.add_argument("--tlb-nonleaf", type=positive, default=None, help="walk-cache entries per hart (default 16)")
    p.add_argument("--frames", type=positive, default=16384, help="host memory in 4 KiB frames")
    p.add_argument("--speculate", type=float, default=None, metavar="P", help="speculative walk probability (0.02)")
    p.add_argument("--xen-opt", type=param, action="append", default=[], metavar="KEY=VALUE", help="Xen boot option")
    p.add_argument("--debug-build", action="store_true", help="CONFIG_DEBUG: a failed ASSERT() is a panic finding")
    xen_tree_option(p)
    p.add_argument("--ad", default="svade", help="the machine's A/D scheme: svade or svadu (walks set A/D)")
    p.add_argument("--svinval", default="", metavar="HARTS", help="harts with Svinval ('all' or IDs like 0,2)")
    p.add_argument("--tlb-negative", type=positive, default=0, help="negative TLB entries per hart (default 0)")
    p.add_argument("--tlb-multi", action="store_true", help="the TLB may hold several entries for one address")
    p.add_argument("-p", "--param", type=param, action="append", default=[], help="workload parameter key=value")
    p.add_argument("--strict", action="store_true", help="stale use of a freed (not yet reused) frame is a violation")
    p.add_argument("--log", metavar="DIR", help="write each failing seed's log (and schedule) into DIR")
    p.add_argument("--backend", default="trio", help="trio or asyncio")


def _resolved_profile(name: str) -> str:
    """An old profile name runs under its new one, with the one-line note `p2msim run` prints."""
    from simulator.xen.profiles import resolve

    new, note = resolve(name)
    if note:
        print(f"p2msim: note: {note}", file=sys.stderr)
    return new


def sweep_from_args(args: argparse.Namespace) -> Sweep:
    """The Sweep the options describe.  Raises ConfigError when --swarm meets an option it draws."""
    from simulator.engine.simulation import DEFAULTS, Config, ConfigError

    drawn = {name: getattr(args, name) for name in SWARM_OPTIONS}
    if args.swarm:
        given = [SWARM_OPTIONS[name] for name, value in drawn.items() if value is not None]
        if given:
            raise ConfigError(f"--swarm draws {', '.join(given)} per seed: leave it out, or sweep without --swarm")
    chosen = {name: getattr(DEFAULTS, name) if value is None else value for name, value in drawn.items()}
    base = Config(**shared_config(args), profile=_resolved_profile(args.profile), **chosen)
    return Sweep(base, args.seeds, swarm=args.swarm, log_dir=args.log, seed_timeout=args.seed_timeout)


def run_cli(args: argparse.Namespace) -> int:
    """`p2msim sweep`: the summary (or --json) on stdout, progress on stderr; exit 0, 1, 2 or 130."""
    from simulator.engine.simulation import ConfigError

    try:
        sweep = sweep_from_args(args)
        reporter: Reporter | None = None
        if not args.json:
            reporter = RichReporter() if sys.stderr.isatty() else PlainReporter(sys.stderr)
        summary = run_sweep(
            sweep,
            jobs=args.jobs,
            stop_on_first=args.stop_on_first,
            out=args.out,
            cluster=args.cluster,
            reporter=reporter,
        )
    except (ConfigError, SweepError) as exc:
        raise CliError(str(exc)) from None
    if args.json:
        sys.stdout.write(orjson.dumps(summary.to_json()).decode() + "\n")
    else:
        print(summary.render())
    if summary.interrupted:
        kept = f"; {summary.out} holds every finished seed" if summary.out else ""
        import simulator.cli

        how = "terminated" if simulator.cli._terminated else "interrupted"
        print(f"p2msim: {how} after {summary.runs:,} seeds{kept}", file=sys.stderr)
    if summary.out_error:
        print(f"p2msim: error: {summary.out_error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return summary.exit_code


def main(argv: list[str] | None = None) -> int:
    """`python -m simulator.hunt.sweep ...`: the command on its own, with the CLI's error handling."""
    parser = Parser(prog="p2msim sweep", description="Run a range of seeds and summarise the failing ones.")
    add_arguments(parser)
    try:
        return run_cli(parser.parse_args(argv))
    except CliError as exc:
        print(f"p2msim: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
