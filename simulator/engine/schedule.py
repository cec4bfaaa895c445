"""Schedules: a run's identity plus the conductor's decisions, saved so it can be replayed.

A schedule file is one JSON object::

    {"p2msim_schedule": 1, "version": "0.1.0", "config": {...Config.identity()...},
     "decisions": [[seq, actor], ...], "verdict": {"classes": [...], "digest": "..."}}

``decisions`` are the conductor's switches: at logical step ``seq`` the actor
with index ``actor`` (harts 0..n-1, then the driver) runs.  Replaying them
with the same seed re-derives every data choice, so the run repeats exactly;
a shrunk schedule keeps fewer switches and lets a sticky fallback fill in.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from simulator import __version__

if TYPE_CHECKING:
    from simulator.engine.simulation import Config, Result

SCHEDULE_VERSION = 1


class ScheduleError(Exception):
    """Not a schedule we can read (exit code 2)."""


def schedule_path_for(log: str) -> Path:
    return Path(log).with_name(Path(log).name + ".schedule.json")


def to_schedule(result: Result, fallback: str = "exact") -> dict[str, Any]:
    return {
        "p2msim_schedule": SCHEDULE_VERSION,
        "version": __version__,
        "config": result.config.identity(),
        "fallback": fallback,
        "decisions": [list(d) for d in result.decisions],
        "verdict": verdict(result),
    }


def verdict(result: Result) -> dict[str, Any]:
    return {
        "classes": sorted({v.cls for v in result.violations}),
        "violations": result.violation_count,
        "first": result.violations[0].seq if result.violations else None,
        "stop": result.stop_reason,
        "digest": result.digest,
        "steps": result.stats["steps"],
        "switches": result.stats["switches"],
    }


def save(path: str | Path, schedule: dict[str, Any]) -> Path:
    p = Path(path)
    p.write_bytes(orjson.dumps(schedule, option=orjson.OPT_INDENT_2) + b"\n")
    return p


def config_from_identity(identity: dict[str, Any], **overrides: Any) -> Config:
    from simulator.engine.simulation import Config

    fields = set(Config.__dataclass_fields__)
    unknown = set(identity) - fields
    if unknown:
        raise ScheduleError(f"unknown configuration fields {sorted(unknown)}")
    kw = dict(identity)
    kw["bugs"] = tuple(kw.get("bugs", ()))
    kw["params"] = tuple((str(k), str(v)) for k, v in dict(kw.get("params", {})).items())
    kw.update(overrides)
    return Config(**kw)


def load(path: str | Path) -> tuple[Config, list[tuple[int, int]], dict[str, Any]]:
    """A schedule file, or a log (its run.start identity and run.end decisions)."""
    p = Path(path)
    if not p.is_file():
        raise ScheduleError(f"{path} does not exist")
    with p.open("rb") as fh:
        head = fh.read(1)
    if head == b"{" and p.suffix == ".json":
        try:
            data = orjson.loads(p.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise ScheduleError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("p2msim_schedule") != SCHEDULE_VERSION:
            raise ScheduleError(f"{path}: not a p2msim schedule (version {SCHEDULE_VERSION})")
        try:
            decisions = [(int(s), int(a)) for s, a in data["decisions"]]
            verdict_ = data.get("verdict", {})
            if not isinstance(verdict_, dict):
                raise TypeError(f"verdict is {type(verdict_).__name__}, not an object")
            recorded = dict(verdict_, fallback=data.get("fallback", "exact"))
            config = config_from_identity(data["config"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ScheduleError(f"{path}: malformed schedule ({exc})") from None
        _check_beside_its_log(p, config, data.get("version"))
        return config, decisions, recorded
    return _from_log(p)


def _check_beside_its_log(p: Path, config: Config, version: Any) -> None:
    """A schedule named LOG.schedule.json must belong to the run LOG records: the same configuration
    and version (a later run at that path removes the schedule; this catches one copied back)."""
    if not p.name.endswith(".schedule.json"):
        return
    log = p.with_name(p.name[: -len(".schedule.json")])
    if not log.is_file():
        return
    from simulator.engine.logread import LogError, read_events

    try:
        start = next((ev for ev in read_events(log) if ev["event"] == "run.start"), None)
    except LogError:
        return  # not a log we can read: nothing says the schedule is not its own
    if start is None:
        return
    if start.get("config_digest") != config.digest() or start.get("version") != version:
        raise ScheduleError(
            f"{p} was written for an earlier run: {log} now records another run (configuration or version "
            f"differs); replay {log} itself, or move the schedule away"
        )


def _from_log(p: Path) -> tuple[Config, list[tuple[int, int]], dict[str, Any]]:
    from simulator.engine.logread import LogError, read_events

    start = end = None
    try:
        for ev in read_events(p):
            if ev["event"] == "run.start":
                start = ev
            elif ev["event"] in ("run.end", "run.interrupted", "run.error"):
                end = ev
    except LogError as exc:
        raise ScheduleError(str(exc)) from None
    if start is None:
        raise ScheduleError(f"{p}: no run.start line: not a p2msim log")
    if end is None or "decisions" not in end:
        raise ScheduleError(f"{p}: the run did not finish (no run.end line), so its schedule is incomplete")
    try:
        decisions = [(int(s), int(a)) for s, a in end["decisions"]]
    except (TypeError, ValueError) as exc:
        raise ScheduleError(f"{p}: malformed decisions in its last line ({exc})") from None
    recorded = {"digest": end.get("digest"), "stop": end.get("stop"), "fallback": "exact"}
    if end["event"] == "run.end":
        recorded["violations"] = end.get("violations")
        if "classes" in end:
            recorded["classes"] = end["classes"]
    return config_from_identity(start["config"]), decisions, recorded
