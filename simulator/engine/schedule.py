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

import contextlib
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
        "sources": result.sources,  # the files that ran, by path and hash (engine.provenance)
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
    """Written whole or not at all: to a temporary file beside it, then renamed (raises OSError).

    A path that exists and is not a regular file (a device, a pipe) is written to as it is: it must
    never be replaced by a file.
    """
    p = Path(path)
    data = orjson.dumps(schedule, option=orjson.OPT_INDENT_2) + b"\n"
    if p.exists() and not p.is_file():
        with p.open("wb") as fh:
            fh.write(data)
        return p
    tmp = p.with_name(p.name + ".tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(p)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    return p


def config_from_identity(identity: dict[str, Any], **overrides: Any) -> Config:
    from simulator.engine.simulation import Config

    fields = set(Config.__dataclass_fields__)
    unknown = set(identity) - fields
    if unknown:
        raise ScheduleError(f"unknown configuration fields {sorted(unknown)}")
    from simulator.engine.simulation import DEFAULTS

    if not isinstance(identity, dict):
        raise ScheduleError(f"the configuration is {type(identity).__name__}, not an object")
    for name, value in identity.items():
        want = type(getattr(DEFAULTS, name))
        if want is tuple:
            want = dict if name in ("params", "xen_opts") else list
        if want is float and type(value) is int:
            continue
        if type(value) is not want:
            raise ScheduleError(f"configuration field {name!r} is {type(value).__name__}, not {want.__name__}")
    kw = dict(identity)
    kw["bugs"] = tuple(str(b) for b in kw.get("bugs", ()))
    kw["variants"] = tuple(str(v) for v in kw.get("variants", ()))
    kw["params"] = tuple((str(k), str(v)) for k, v in dict(kw.get("params", {})).items())
    if "xen_opts" in kw:
        kw["xen_opts"] = tuple((str(k), str(v)) for k, v in dict(kw["xen_opts"]).items())
    kw.update(overrides)
    return Config(**kw)


def load(path: str | Path) -> tuple[Config, list[tuple[int, int]], dict[str, Any]]:
    """A schedule file, or a log (its run.start identity and run.end decisions)."""
    p = Path(path)
    if p.is_dir():
        raise ScheduleError(f"{path} is a directory, not a log or a schedule")
    if not p.exists():
        raise ScheduleError(f"{path} does not exist")
    if not p.is_file():
        raise ScheduleError(f"{path} is not a regular file (a log or a schedule)")
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
            recorded = dict(verdict_, fallback=data.get("fallback", "exact"), version=data.get("version"))
            recorded["sources"] = data.get("sources")
            config = config_from_identity(data["config"])
        except ScheduleError as exc:
            raise ScheduleError(f"{path}: {exc}") from None
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
    recorded = {
        "digest": end.get("digest"),
        "stop": end.get("stop"),
        "fallback": "exact",
        "version": start.get("version"),
        "sources": start.get("sources"),
    }
    if end["event"] == "run.end":
        recorded["violations"] = end.get("violations")
        if "classes" in end:
            recorded["classes"] = end["classes"]
    try:
        return config_from_identity(start["config"]), decisions, recorded
    except ScheduleError as exc:
        raise ScheduleError(f"{p}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ScheduleError(f"{p}: malformed run.start configuration ({exc})") from None
