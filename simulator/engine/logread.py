"""Reading logs back: streamed line by line, so a million-line log costs little memory.

Every line must be a JSON object with ``seq``, ``hart`` and ``event``; the
first must be ``run.start`` with a schema version this p2msim understands.
Anything else is a ``LogError`` naming the file and line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from simulator.engine.log import LOG_SCHEMA_VERSION, READABLE_VERSIONS


class LogError(Exception):
    """A log we cannot read: the message names the line (exit code 2)."""


def read_events(path: str | Path) -> Iterator[dict[str, Any]]:
    p = Path(path)
    try:
        fh = p.open("rb")
    except OSError as exc:
        raise LogError(f"cannot read log {path}: {exc.strerror}") from None
    with fh:
        lineno = 0
        for raw in fh:
            lineno += 1
            if not raw.endswith(b"\n"):
                raise LogError(f"{path}:{lineno}: truncated line (no newline at the end of the log)")
            try:
                ev = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise LogError(f"{path}:{lineno}: not valid JSON") from None
            if not isinstance(ev, dict) or "event" not in ev or "seq" not in ev:
                raise LogError(f"{path}:{lineno}: not a p2msim event (needs seq and event)")
            if (
                not isinstance(ev["event"], str)
                or type(ev["seq"]) is not int
                or (ev.get("hart") is not None and type(ev["hart"]) is not int)
            ):
                raise LogError(f"{path}:{lineno}: not a p2msim event (seq and hart are numbers, event a name)")
            if lineno == 1:
                if ev["event"] != "run.start":
                    raise LogError(f"{path}:1: the first line is {ev['event']!r}, not run.start: not a p2msim log")
                if ev.get("v") not in READABLE_VERSIONS:
                    raise LogError(
                        f"{path}:1: log schema version {ev.get('v')!r}, this p2msim reads {LOG_SCHEMA_VERSION}"
                    )
            yield ev
        if lineno == 0:
            raise LogError(f"{path}: empty log")
