"""The JSON-lines event log: structlog, configured for speed, logical time only.

One JSON object per line.  Every line starts with ``seq`` (the conductor's
logical step), ``hart`` (or null for the driver) and ``event``; the first line
is ``run.start`` with the schema version ``v`` and the run's identity.  A
timed run (``--strategy timed``) adds ``t``, the virtual time in cycles, after
``seq``.  No wall-clock time ever appears, so equal runs give byte-identical logs.

Levels: every step's event at debug, the run summary at info, violations at
error; the first line (``run.start``) and the last (``run.end``,
``run.interrupted`` or ``run.error``) are written at every level.  The sink
is a buffered binary file, flushed when the run ends on any path (normal end,
budget, deadlock, exception, Ctrl-C, SIGTERM).  A write that fails (a full
disk) stops the log: the partial file is removed, and the run says so
(``failed``) rather than leave a line cut mid-JSON.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson
import structlog

if TYPE_CHECKING:
    from simulator.engine.conductor import Conductor

LOG_SCHEMA_VERSION = 4  # 2: frame.assign, frame.scrub, warning kinds, p2m_free_subtree.leaf; 3: a violation's cause;
# 4: tlb.gone (an entry leaves a TLB, with the race window it was in), the windows, findings and causes in
# run.end, and 64-bit values (WIDE) as hex strings
READABLE_VERSIONS = (3, 4)  # a v3 log reads the same (readers take a PTE value as an int or a hex string)
# 64-bit values: PTEs and hgatp.  As hex strings, so that jq and browsers (IEEE doubles) never round them.
WIDE = frozenset({"old", "new", "pte", "hgatp", "src_pte"})
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "error": logging.ERROR}


def _dumps(obj: Any, **_: Any) -> bytes:
    return orjson.dumps(obj)


def _hex_wide(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """64-bit values as "0x..." strings (WIDE): a JSON number above 2**53 is rounded by most readers."""
    for k in WIDE.intersection(event_dict):
        v = event_dict[k]
        if type(v) is int:
            event_dict[k] = f"{v:#x}"
    return event_dict


def wide(v: int | str | None) -> int | None:
    """A 64-bit field read back from a log (a hex string since schema 4, an int before)."""
    return int(v, 16) if isinstance(v, str) else v


def _schema_order(_logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """seq, hart, event first; the log level last, as ``log_level`` (``level`` is a page-table level)."""
    ordered = {"seq": event_dict.pop("seq")}
    if "t" in event_dict:
        ordered["t"] = event_dict.pop("t")  # a timed run: the virtual time, in cycles, beside seq
    ordered["hart"] = event_dict.pop("hart")
    ordered["event"] = event_dict.pop("event")
    ordered.update(event_dict)
    ordered["log_level"] = method
    return ordered


ALWAYS = ("run.start", "run.end", "run.interrupted", "run.error")  # written whatever the level


class EventLog:
    def __init__(self, path: str | None, conductor: Conductor, level: str = "debug") -> None:
        self.conductor = conductor
        self.timed = getattr(conductor, "timed", False)  # (a test may hand in a bare conductor)
        self.path = path
        self._fh: IO[bytes] | None = None
        self.enabled = path is not None
        self.lines = 0
        self.failed: OSError | None = None  # the write that stopped the log
        if path is None:
            return
        if level not in LEVELS:
            raise ValueError(f"unknown log level {level!r} (choose from {', '.join(LEVELS)})")
        self._fh = open(path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed in close()
        self.level = LEVELS[level]
        self.debug_enabled = LEVELS[level] <= logging.DEBUG
        self._logger = structlog.wrap_logger(
            structlog.BytesLogger(self._fh),
            processors=[_hex_wide, _schema_order, structlog.processors.JSONRenderer(serializer=_dumps)],
            wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
            cache_logger_on_first_use=True,
        )

    def _emit(self, method: str, hart: int | None, event: str, fields: dict[str, Any]) -> None:
        self.lines += 1
        try:
            if event in ALWAYS and LEVELS[method] < self.level:
                # past the level filter: the same line the logger would write
                ev = {"seq": self.conductor.seq, "hart": hart, "event": event, **fields}
                if self.timed:
                    ev["t"] = self.conductor.now()
                line = _schema_order(None, method, _hex_wide(None, method, ev))
                assert self._fh is not None
                self._fh.write(orjson.dumps(line) + b"\n")
            elif self.timed:
                getattr(self._logger, method)(
                    event, seq=self.conductor.seq, t=self.conductor.now(), hart=hart, **fields
                )
            else:
                getattr(self._logger, method)(event, seq=self.conductor.seq, hart=hart, **fields)
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        """The disk is full (or gone): stop, and remove what would be a log cut mid-line."""
        self.failed = exc
        self.enabled = False
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(OSError):
                fh.close()
        if self.path is not None and Path(self.path).is_file():
            with contextlib.suppress(OSError):
                Path(self.path).unlink()

    def debug(self, hart: int | None, event: str, **fields: Any) -> None:
        if self.enabled and self.debug_enabled:
            self._emit("debug", hart, event, fields)

    def info(self, hart: int | None, event: str, **fields: Any) -> None:
        if self.enabled:
            self._emit("info", hart, event, fields)

    def error(self, hart: int | None, event: str, **fields: Any) -> None:
        if self.enabled:
            self._emit("error", hart, event, fields)

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.flush()
                self._fh.close()
            except OSError as exc:
                self._fail(exc)
            self._fh = None
