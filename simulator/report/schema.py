"""The log's events, the schedule and every ``--json`` output, defined once; JSON Schemas generated from them.

``EVENTS`` is the one definition of the log: every event by name, the log
level it is written at, what it means, and its fields, each with a JSON type,
a one-line meaning, whether it is always there, and the schema versions that
have it (``since``/``until``: version 4 turned the 64-bit values into hex
strings and renamed ``pte.write``'s ``mfn`` to ``table``).  ``COMMON`` are the
fields every line has.  From them come the JSON Schemas (draft 2020-12) of one
log line, one per readable log version; the schedule file and each command's
``--json`` are defined here too, from the same building blocks.  Every schema
has a versioned ``$id``; the files in ``simulator/schemas/`` are written by
``python3 -m simulator.report.schema --write`` and a test keeps them equal to
what this module generates.

``check_log(path)`` validates a log line by line (streamed: a million-line log
costs little memory) with one compiled validator per event, plus the rules a
schema of one line cannot say: the first line is ``run.start``, the last is
``run.end``, ``run.error`` or ``run.interrupted``, and ``seq`` never decreases.
Each problem is one message naming the line.

Speed: jsonschema takes about 40 microseconds a line.  Most lines are proved
valid first by a checker compiled from the same JSON Schema (``_fast``): it
understands only a few keywords and answers "valid" only when it is sure, so
anything else goes to jsonschema, whose verdict and messages stand.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from simulator.engine.log import LEVELS, LOG_SCHEMA_VERSION, READABLE_VERSIONS
from simulator.engine.logread import LogError
from simulator.engine.schedule import SCHEDULE_VERSION
from simulator.engine.windows import CACHED, WINDOWS
from simulator.riscv.memory import STATE_NAMES

DRAFT = "https://json-schema.org/draft/2020-12/schema"
GENERATED = "generated from simulator/report/schema.py by `python3 -m simulator.report.schema --write`: do not edit"
BASE = "https://p2msim.invalid/schema"
OUTPUT_VERSION = 1  # the version of every --json output's schema (each changes on its own from here)
SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"
MAX_MESSAGES = 20  # check_log's messages; the rest are counted
HEX_PATTERN = "^0x[0-9a-f]{1,16}$"  # as log.py writes them: f"{v:#x}"

# -- JSON types -----------------------------------------------------------------------------------


class Type:
    """A JSON type: its JSON Schema (which may depend on the log version) and how a message names it."""

    noun = "a value"

    def json(self, version: int) -> dict[str, Any]:
        raise NotImplementedError

    def describe(self, version: int) -> str:
        return self.noun

    def at(self, key: str | int) -> Type | None:
        """The type of a part (an object's field, an array's item), for messages about nested values."""
        return None


class Scalar(Type):
    def __init__(self, schema: dict[str, Any], noun: str) -> None:
        self.schema = schema
        self.noun = noun

    def json(self, version: int) -> dict[str, Any]:
        return dict(self.schema)


class Wide(Type):
    """A 64-bit value (a PTE, hgatp): a hex string "0x..." since log version 4, an integer before."""

    def json(self, version: int) -> dict[str, Any]:
        if version >= 4:
            return {"type": "string", "pattern": HEX_PATTERN}
        return {"type": "integer", "minimum": 0, "maximum": 2**64 - 1}

    def describe(self, version: int) -> str:
        return 'a hex string ("0x...")' if version >= 4 else "an integer >= 0"


class Nullable(Type):
    def __init__(self, inner: Type) -> None:
        self.inner = inner

    def json(self, version: int) -> dict[str, Any]:
        s = self.inner.json(version)
        t = s.get("type")
        if isinstance(t, str) and "const" not in s:
            out = dict(s, type=[t, "null"])
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
            return out
        return {"anyOf": [s, {"type": "null"}]}

    def describe(self, version: int) -> str:
        return f"{self.inner.describe(version)} or null"

    def at(self, key: str | int) -> Type | None:
        return self.inner.at(key)


class ArrayOf(Type):
    def __init__(self, items: Type, noun: str | None = None) -> None:
        self.items = items
        self._noun = noun

    def json(self, version: int) -> dict[str, Any]:
        return {"type": "array", "items": self.items.json(version)}

    def describe(self, version: int) -> str:
        return self._noun or f"an array of {_bare(self.items.describe(version))}"

    def at(self, key: str | int) -> Type | None:
        return self.items


class MapOf(Type):
    """An object used as a map: any keys (or those of ``keys``), every value of one type."""

    def __init__(self, values: Type, noun: str, keys: list[str] | None = None) -> None:
        self.values = values
        self.noun = noun
        self.keys = keys

    def json(self, version: int) -> dict[str, Any]:
        s: dict[str, Any] = {"type": "object", "additionalProperties": self.values.json(version)}
        if self.keys is not None:
            s["propertyNames"] = {"enum": list(self.keys)}
        return s

    def at(self, key: str | int) -> Type | None:
        return self.values


@dataclass(frozen=True)
class Field:
    type: Type
    meaning: str
    optional: bool = False  # not always there
    since: int = 1  # the first version that has it (log versions for log events, else the schema's)
    until: int | None = None  # the last version that has it

    def in_version(self, version: int) -> bool:
        return self.since <= version and (self.until is None or version <= self.until)


class Object(Type):
    """An object with known fields, and no others."""

    def __init__(self, fields: dict[str, Field], noun: str = "an object") -> None:
        self.fields = fields
        self.noun = noun

    def json(self, version: int) -> dict[str, Any]:
        return _object(self.fields, version)

    def at(self, key: str | int) -> Type | None:
        f = self.fields.get(key) if isinstance(key, str) else None
        return f.type if f is not None else None


def _object(fields: dict[str, Field], version: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    live = {k: f for k, f in fields.items() if f.in_version(version)}
    s: dict[str, Any] = {"type": "object"}
    if extra:
        s.update(extra)
    s["required"] = [k for k, f in live.items() if not f.optional]
    s["properties"] = {k: {"description": f.meaning, **f.type.json(version)} for k, f in live.items()}
    s["additionalProperties"] = False
    return s


def _bare(noun: str) -> str:
    """The noun without its article ('an integer' -> 'integer'), for 'an array of ...'."""
    for article in ("an ", "a "):
        if noun.startswith(article):
            return noun[len(article) :]
    return noun


def Enum(values: list[str] | tuple[str, ...], noun: str | None = None) -> Scalar:
    """A string, one of ``values`` (named like the other types)."""
    return Scalar({"type": "string", "enum": list(values)}, noun or "one of " + ", ".join(values))


def f(t: Type, meaning: str, **kw: Any) -> Field:
    return Field(t, meaning, **kw)


def opt(t: Type, meaning: str, **kw: Any) -> Field:
    return Field(t, meaning, optional=True, **kw)


INT = Scalar({"type": "integer"}, "an integer")
NAT = Scalar({"type": "integer", "minimum": 0}, "an integer >= 0")
POS = Scalar({"type": "integer", "minimum": 1}, "an integer >= 1")
STR = Scalar({"type": "string"}, "a string")
BOOL = Scalar({"type": "boolean"}, "true or false")
NUM = Scalar({"type": "number"}, "a number")
MFN = Scalar({"type": "integer", "minimum": 0}, "a frame number (an integer >= 0)")
GFN = Scalar({"type": "integer"}, "a guest frame number (an integer; -1: not known)")
DOM = Scalar({"type": "integer", "minimum": 0}, "a domain id (an integer >= 0)")
HART = Scalar({"type": "integer", "minimum": 0}, "a hart index (an integer >= 0)")
DIGEST = Scalar({"type": "string", "pattern": "^[0-9a-f]{16}$"}, "a digest (16 hex digits)")
WIDE64 = Wide()
HARTS = ArrayOf(HART, "an array of hart indexes")
STRS = ArrayOf(STR, "an array of strings")
INTS = ArrayOf(INT, "an array of integers")
COUNTS = MapOf(NAT, "an object of counts (name -> integer >= 0)")
STR_MAP = MapOf(STR, "an object of strings (name -> string)")
DECISIONS = Scalar(
    {
        "type": "array",
        "items": {
            "type": "array",
            "prefixItems": [{"type": "integer", "minimum": 0}, {"type": "integer", "minimum": 0}],
            "minItems": 2,
            "items": False,
        },
    },
    "an array of [seq, actor] pairs",
)
STOPS = ("done", "budget", "deadlock", "panic", "livelock", "violation")
STOP = Enum(STOPS)
VERDICT = Enum(("clean", "violation", "incomplete", "vacuous"))
STATE = Enum(STATE_NAMES)

# -- shared shapes ---------------------------------------------------------------------------------

CONFIG = Object(
    {
        "workload": f(STR, "the workload: a built-in name or the path of a .py file"),
        "seed": f(NAT, "the seed every choice of the run derives from"),
        "strategy": f(Enum(("random", "pct", "uncontrolled", "timed")), "the scheduling strategy"),
        "pct_depth": f(POS, "PCT's depth (change points + 1)"),
        "pcpus": f(POS, "the number of harts"),
        "profile": f(STR, "the Xen profile (fixed, upstream, seed-v5, arm-broadcast, or BASE+policy)"),
        "bugs": f(STRS, "the bugs injected, by name"),
        "steps": f(NAT, "the step budget given (0: the default, which grows with the harts)"),
        "mode": f(Enum(("sv39x4", "sv48x4", "sv57x4")), "the G-stage translation mode"),
        "vmid_bits": f(Scalar({"type": "integer", "minimum": 0, "maximum": 14}, "an integer 0..14"), "VMID width"),
        "tlb_leaf": f(POS, "leaf TLB entries per hart"),
        "tlb_nonleaf": f(NAT, "non-leaf (walk cache) entries per hart"),
        "frames": f(POS, "machine frames"),
        "strict": f(BOOL, "--strict: warnings that could do harm are violations"),
        "params": f(STR_MAP, "the workload's parameters (-p key=value)"),
        "stop_at_first": f(BOOL, "the run ends at its first violation (the shrinker's fast mode)"),
        "speculate": f(
            Scalar({"type": "number", "minimum": 0, "maximum": 1}, "a number 0..1"), "speculative walk probability"
        ),
        "xen_opts": f(STR_MAP, "Xen boot options (--xen-opt key=value)"),
        "debug_build": f(BOOL, "CONFIG_DEBUG: ASSERT() is checked"),
        "ad": opt(Enum(("svade", "svadu")), "the A/D scheme (only when not the default, svade)"),
        "svinval": opt(STR, 'the harts with Svinval ("all" or "0,2"; only when set)'),
        "tlb_negative": opt(NAT, "negative TLB entries per hart (only when set)"),
        "tlb_multi": opt(BOOL, "several TLB entries per address (only when set)"),
        "variants": opt(STRS, "variant files applied before the bugs (only when set)"),
        "xen_tree": opt(
            STR, "the Xen tree whose p2m.c, paging.c and vmid.c ran as the hypervisor (--xen-tree; only when set)"
        ),
        "costs": opt(STR, "the cost table over the defaults, for --strategy timed (--costs; only when set)"),
    },
    "a run's configuration (Config.identity())",
)
SWARM = Object(
    {k: Field(fld.type, fld.meaning, optional=True) for k, fld in CONFIG.fields.items()},
    "the configuration a swarm seed drew (some of the run's configuration fields)",
)
_FILE = Object(
    {
        "name": f(STR, "the name the run gave it (as on the command line)"),
        "path": f(Nullable(STR), "its resolved absolute path (null: not a file)"),
        "hash": f(Nullable(STR), "a hash of its source (null: not read)"),
    },
    "a source file",
)
SOURCES = Object(
    {
        "model": f(STR, "a hash of the model's source (riscv, xen, engine)"),
        "workload": f(_FILE, "the workload file"),
        "variants": f(ArrayOf(_FILE), "the variant files"),
        "costs": opt(_FILE, "a timed run's cost table: the defaults and --costs, hashed together"),
    },
    "the code that ran (engine.provenance)",
)
_STAT_NAMES = {
    "steps": "logical steps (atomic actions)",
    "switches": "context switches",
    "preemptions": "switches away from an actor that could have gone on",
    "accesses": "guest accesses (TLB hits + walks)",
    "tlb_hits": "guest accesses served by the TLB",
    "walks": "G-stage walks",
    "speculative_walks": "walks the hardware made on its own",
    "faults": "guest page faults",
    "fences_sent": "remote fences sent",
    "fences_acked": "remote fences acknowledged",
    "frames_freed": "frames freed",
    "frames_reused": "frames handed out again",
    "stale_benign": "stale uses that could do no harm",
    "freed_mapped_dying": "frames freed while only a dying domain's p2m mapped them",
}
_STAT_OPTIONAL = {
    "ad_updates": "hardware A/D updates (with --ad svadu)",
    "negative_faults": "faults from negative TLB entries (with --tlb-negative)",
    "tlbflush_filtered": "harts the TLB flush clock left out (profiles with tlbflush_clock)",
}
_SPAN = Object(
    {
        "count": f(NAT, "how many"),
        "total": f(NAT, "their cycles added up"),
        "max": f(NAT, "the longest, in cycles"),
        "mean": f(NAT, "total // count"),
    },
    "spans of one name (virtual cycles)",
)
TIMING = Object(
    {
        "cycles": f(NAT, "the latest clock when the run ended (virtual cycles)"),
        "hypercalls": f(
            MapOf(
                Object(
                    {**_SPAN.fields, "flushing": f(NAT, "the cycles of the flushes inside them")},
                    "a hypercall's spans (virtual cycles)",
                ),
                "an object: hypercall -> its spans",
            ),
            "each hypercall, call to return",
        ),
        "flushes": f(
            MapOf(_SPAN, "an object: flush function -> its spans"), "each flush, call to its last acknowledgement"
        ),
        "lock_holds": f(MapOf(_SPAN, "an object: lock -> its write holds"), "each write hold of a p2m lock"),
        "guest_stall": f(
            Object(
                {"total": f(NAT, "all harts"), "per_hart": f(ArrayOf(NAT, "an array of integers"), "by hart")},
                "cycles incoming fences took from running vCPUs",
            ),
            "cycles incoming fences took from running vCPUs",
        ),
        "ipis": f(NAT, "IPIs sent (one per remote fence request)"),
    },
    "what a timed run measured (engine.timing)",
)
STATS = Object(
    {k: f(NAT, m) for k, m in _STAT_NAMES.items()}
    | {k: opt(NAT, m) for k, m in _STAT_OPTIONAL.items()}
    | {"timing": opt(TIMING, "durations in virtual cycles (--strategy timed)")},
    "the run's counters",
)
_RUN_STATS = ("accesses", "tlb_hits", "walks", "fences_sent", "fences_acked", "frames_freed", "frames_reused")
RUN_STATS = Object(
    {k: f(NAT, _STAT_NAMES[k]) for k in (*_RUN_STATS, "stale_benign")}
    | {k: opt(NAT, m) for k, m in _STAT_OPTIONAL.items()}
    | {"timing": opt(TIMING, "durations in virtual cycles (--strategy timed)")},
    "the run's counters that matter",
)
_OPENED = MapOf(NAT, "an object: race window -> how many", keys=list(WINDOWS))
WINDOWS_RUN = Object(
    {
        "opened": f(_OPENED, "race windows opened, by kind (engine.windows.WINDOWS)"),
        "closed_by": f(COUNTS, "what removed the stale entries (a defence, an eviction, nothing) -> how many"),
        "first": f(COUNTS, "defence -> the step it first closed a window"),
        "in_flight": opt(
            _OPENED,
            "freed- and reused-cached windows whose frame was freed while the fence that "
            "removed the entry was in flight",
        ),
    },
    "the run's race windows",
)
WINDOWS_SUM = Object(
    {
        "opened": opt(_OPENED, "race windows opened, by kind, over the runs"),
        "closed_by": opt(COUNTS, "what removed the stale entries -> how many, over the runs"),
        "first": opt(COUNTS, "defence -> the step it first closed a window"),
        "in_flight": opt(_OPENED, "windows whose frame was freed while the removing fence was in flight"),
    },
    "race windows added up over runs (empty: none ran)",
)
CAUSE = Nullable(
    Object(
        {
            "defence": f(STR, "the defence the events show missing (engine.cause)"),
            "case": f(STR, "how the schedule met it (no flush at all, one too late, ...)"),
            "function": f(STR, "the Xen function the defence belongs in"),
        },
        "a root cause",
    )
)
CAUSES = ArrayOf(
    Object(
        {
            "title": f(STR, "the missing step, or the class and headline"),
            "classes": f(STRS, "the violation classes, in the order seen"),
            "violations": f(POS, "violations of this cause"),
            "defence": opt(STR, "the missing defence (for causes the decision procedure explains)"),
            "function": opt(STR, "the function it belongs in"),
            "cases": opt(STRS, "the decision procedure's cases, in the order seen"),
            "first": f(POS, "the number of its first violation"),
            "members": f(ArrayOf(POS), "its violations' numbers (the first 64)"),
        },
        "a cause",
    ),
    "an array of causes",
)
CHAIN = ArrayOf(
    Object(
        {
            "seq": f(NAT, "the step"),
            "hart": f(Nullable(HART), "the hart (null: the workload driver)"),
            "kind": f(STR, "what happened (fill, unmap, free, reuse, flush, use, ...)"),
            "text": f(STR, "the event, in words"),
        },
        "a step of a causal chain",
    ),
    "an array of chain steps",
)

# -- the log ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    level: str  # the log level it is written at (the line's log_level)
    meaning: str
    fields: dict[str, Field] = field(default_factory=dict)
    since: int = 3
    # one field whose value decides which of the optional fields are there: (field, {value: [fields]})
    cases: tuple[str, dict[str, tuple[str, ...]]] | None = None

    def live(self, version: int) -> dict[str, Field]:
        return {k: x for k, x in self.fields.items() if x.in_version(version)}


COMMON: dict[str, Field] = {
    "seq": f(NAT, "the logical step: atomic actions executed so far (never decreases)"),
    "t": opt(NAT, "the virtual time in cycles of the hart (or driver) that acted (--strategy timed only)", since=4),
    "hart": f(Nullable(HART), "the hart that acted (null: the workload driver)"),
    "event": f(STR, "the event's name"),
    "log_level": f(Enum(tuple(LEVELS)), "the level it was written at (debug, info or error)"),
}
_FENCE = {
    "id": f(NAT, "the request id"),
    "src": f(HART, "the hart that asked"),
    "dst": f(HART, "the hart that fences"),
    "vmid": f(Nullable(NAT), "the VMID fenced (null: all)"),
    "gfns": f(Nullable(INTS), "the guest frames fenced (null: all addresses)"),
}
_TLB_ENTRY = {
    "leaf": f(BOOL, "a leaf entry (false: a non-leaf walk-cache entry)"),
    "vmid": f(NAT, "its VMID tag"),
    "level": f(NAT, "its page-table level"),
    "gfn": f(GFN, "the first guest frame it translates"),
    "mfn": f(MFN, "the frame it reaches (a page, or the next table)"),
}
HYPERCALLS = {
    "populate_physmap": ("gfn", "nr", "order"),
    "decrease_reservation": ("gfn", "nr"),
    "map_foreign": ("gfn", "fdom", "fgfn", "order"),
    "unmap_foreign": ("gfn", "nr"),
    "map_mmio_regions": ("gfn", "nr", "mfn"),
    "domain_kill": (),
    "set_paging_mempool_size": ("pages",),
}
_END = {"run.end", "run.error", "run.interrupted"}

EVENTS: dict[str, Event] = {
    # the run (engine.simulation)
    "run.start": Event(
        "info",
        "the first line: the schema version, the p2msim version and the run's configuration",
        {
            "v": f(INT, "the log schema version"),
            "version": f(STR, "the p2msim version that wrote the log"),
            "config": f(CONFIG, "the run's configuration (what determines it)"),
            "config_digest": f(DIGEST, "a digest of the configuration"),
            "sources": opt(SOURCES, "the workload and variant files and the model, by hash", since=4),
            "costs": opt(
                MapOf(Scalar({}, "a number of cycles, or the IPI latency's low, mode and high"), "the cost table"),
                "the cost table a timed run charged (--strategy timed)",
                since=4,
            ),
        },
    ),
    "run.end": Event(
        "info",
        "the last line of a run that finished: its stats, findings, digest and the conductor's decisions",
        {
            "stop": f(STOP, "why it stopped (done, budget, deadlock, panic, livelock, violation)"),
            "stats": f(STATS, "the run's counters"),
            "violations": f(NAT, "harmful uses, repeats included (the run's violation_count)"),
            "findings": f(NAT, "violations recorded, each an oracle.violation line", since=4),
            "causes": f(CAUSES, "the violations by root cause (engine.findings)", since=4),
            "classes": f(STRS, "the violation classes, sorted"),
            "warnings": f(NAT, "warnings counted"),
            "windows": f(WINDOWS_RUN, "the race windows opened and what closed them", since=4),
            "digest": f(DIGEST, "the digest of what happened (replay compares it)"),
            "decisions": f(DECISIONS, "the conductor's context switches: [seq, actor]"),
        },
    ),
    "run.error": Event(
        "error", "the last line of a run whose workload failed", {"error": f(STR, "what failed, in one line")}
    ),
    "run.interrupted": Event(
        "error",
        "the last line of a run stopped by Ctrl-C, SIGTERM or p2msim itself",
        {"decisions": f(DECISIONS, "the conductor's context switches so far")},
    ),
    # frames (the machine, through the oracle)
    "frame.hand_out": Event(
        "debug",
        "a frame starts a new life (a heap or pool hand-out)",
        {
            "mfn": f(MFN, "the frame"),
            "gen": f(POS, "its allocation generation (1: its first life)"),
            "state": f(STATE, "what it becomes"),
            "owner": f(INT, "whom it is for (a domain; -1: Xen's own)"),
            "why": f(STR, "who asked, in words"),
        },
    ),
    "frame.assign": Event(
        "debug",
        "the new owner has the frame (assign_pages)",
        {
            "mfn": f(MFN, "the frame"),
            "gen": f(NAT, "its allocation generation"),
            "owner": f(INT, "the owner (-1: Xen's own table, metadata or struct domain)"),
        },
    ),
    "frame.scrub": Event(
        "debug",
        "a frame's contents are zeroed",
        {"mfn": f(MFN, "the frame"), "gen": f(NAT, "its allocation generation"), "why": f(STR, "which scrub")},
    ),
    "frame.free": Event(
        "debug",
        "a frame goes back to the heap or a pool",
        {
            "mfn": f(MFN, "the frame"),
            "gen": f(NAT, "the generation that ends"),
            "to": f(STATE, "where it goes (free: the heap, pool: a domain's p2m pool)"),
            "why": f(STR, "who freed it, in words"),
        },
    ),
    # the machine
    "pte.write": Event(
        "debug",
        "one 64-bit PTE store",
        {
            "mfn": f(MFN, "the table frame written (version 3's name for table)", until=3),
            "table": f(MFN, "the table frame written", since=4),
            "idx": f(Scalar({"type": "integer", "minimum": 0, "maximum": 2047}, "an index 0..2047"), "the slot"),
            "old": f(WIDE64, "the PTE before"),
            "new": f(WIDE64, "the PTE after"),
            "level": opt(NAT, "the table's level (where the slot is known)", since=4),
            "dom": opt(DOM, "whose p2m the table is in (where known)", since=4),
            "gfn": opt(GFN, "the first guest frame the slot translates (where known)", since=4),
            "target_mfn": opt(MFN, "the frame the PTE names (a valid PTE in a known slot)", since=4),
        },
    ),
    "tlb.fill": Event(
        "debug",
        "a walk cached an entry",
        {
            "dom": f(Nullable(DOM), "whose p2m it was read from (null: not known)", since=4),
            **_TLB_ENTRY,
            "path": f(ArrayOf(MFN, "an array of frame numbers"), "the tables the walk read, root first"),
        },
    ),
    "tlb.gone": Event(
        "debug",
        "an entry left the TLB",
        {
            **_TLB_ENTRY,
            "why": f(Enum(("fence", "capacity", "refill")), "why it left"),
            "fence": f(Nullable(NAT), "the remote fence request's id (null: a local fence, or not a fence)"),
            "by": f(STR, "what removed it: the fence and the Xen function that asked, or an eviction"),
            "window": f(Nullable(Enum(CACHED)), "the race window it was in (null: it was current)"),
        },
        since=4,
    ),
    "fence.sent": Event("debug", "a remote fence request left its hart", dict(_FENCE)),
    "fence.taken": Event("debug", "the target hart took the request and fenced", dict(_FENCE)),
    "fence.acked": Event("debug", "the target hart acknowledged the request", dict(_FENCE)),
    "fence.local": Event("debug", "a hart fenced itself", dict(_FENCE)),
    "hgatp.write": Event("debug", "a hart loaded hgatp", {"hgatp": f(WIDE64, "the value written")}),
    "guest.fault": Event(
        "debug",
        "a guest access faulted",
        {
            "gfn": f(GFN, "the guest frame"),
            "write": f(BOOL, "a write (false: a read)"),
            "why": f(STR, "the PTE and the reason, in words"),
        },
    ),
    "hsm.started": Event("debug", "the hart started (SBI HSM)"),
    "hsm.stop": Event("debug", "the hart stops (SBI HSM hart_stop)"),
    "hsm.start": Event("debug", "the hart starts another (SBI HSM hart_start)", {"target": f(HART, "the hart")}),
    "hsm.suspend": Event("debug", "the hart suspends until an interrupt (SBI HSM hart_suspend)"),
    # Xen (the model's emit(), through the oracle's event())
    "domain_create": Event(
        "debug",
        "domain_create",
        {"dom": f(DOM, "the domain"), "vcpus": f(POS, "its vCPUs"), "pool": f(NAT, "its p2m pool pages")},
    ),
    "domain_create_failed": Event("debug", "domain_create failed", {"dom": f(DOM, "the domain")}),
    "p2m_alloc_root_table": Event(
        "debug", "a domain's p2m root", {"dom": f(DOM, "the domain"), "mfn": f(MFN, "its first root frame")}
    ),
    "domain_destroyed": Event(
        "debug",
        "domain_kill finished",
        {"dom": f(DOM, "the domain"), "zombie_pages": f(NAT, "pages it still owned")},
    ),
    "domain_crash": Event("debug", "domain_crash", {"dom": f(DOM, "the domain")}),
    "hypercall": Event(
        "debug",
        "a hypercall began (its end is not logged)",
        {
            "op": f(Enum(tuple(HYPERCALLS)), "which"),
            "dom": f(DOM, "the domain it acts on"),
            "gfn": opt(GFN, "the first guest frame"),
            "nr": opt(NAT, "how many frames"),
            "order": opt(NAT, "the extent order"),
            "fdom": opt(DOM, "the foreign domain"),
            "fgfn": opt(GFN, "the foreign domain's guest frame"),
            "mfn": opt(MFN, "the first machine frame (MMIO)"),
            "pages": opt(NAT, "the pool size asked for"),
        },
        cases=("op", HYPERCALLS),
    ),
    "switch_in": Event(
        "debug",
        "a vCPU was switched in",
        {"dom": f(DOM, "its domain"), "vcpu": f(NAT, "the vCPU"), "vmid": f(NAT, "its VMID")},
    ),
    "switch_out": Event("debug", "a vCPU was switched out", {"dom": f(DOM, "its domain"), "vcpu": f(NAT, "the vCPU")}),
    "vmid.assign": Event(
        "debug",
        "a VMID was given out",
        {
            "dom": f(DOM, "the domain"),
            "vcpu": f(INT, "the vCPU (-1: the domain's, for life)"),
            "vmid": f(NAT, "the VMID"),
            "generation": f(NAT, "the VMID generation"),
        },
    ),
    "vmid.rollover": Event("debug", "the VMIDs ran out: a new generation", {"generation": f(NAT, "the generation")}),
    "vmid.rollover_flush_skipped": Event(
        "debug", "the rollover's flush was left out (a bug injected)", {"vmid": f(NAT, "the VMID")}
    ),
    "dirty_cpumask": Event(
        "debug",
        "a bit of d->dirty_cpumask changed",
        {
            "dom": f(DOM, "the domain"),
            "cpu": f(HART, "the bit"),
            "set": f(BOOL, "set (false: cleared)"),
            "fn": f(STR, "the function that changed it"),
        },
    ),
    "p2m_tlb_flush": Event(
        "debug",
        "p2m_tlb_flush fences harts",
        {
            "dom": f(DOM, "the domain"),
            "mask": f(HARTS, "the harts fenced"),
            "dirty": f(HARTS, "d->dirty_cpumask then"),
            "locked": f(BOOL, "this hart holds the p2m write lock"),
        },
    ),
    "p2m_free_subtree.table_freed": Event(
        "debug", "p2m_free_subtree frees a table", {"dom": f(DOM, "the domain"), "mfn": f(MFN, "the table")}
    ),
    "p2m_free_subtree.leaf": Event(
        "debug",
        "a leaf with an external type is put, with the type read",
        {
            "dom": f(DOM, "the domain"),
            "table": f(MFN, "the table frame"),
            "idx": f(NAT, "the slot"),
            "level": f(NAT, "the table's level"),
            "pte": f(WIDE64, "the leaf PTE"),
            "mfn": f(MFN, "the frame it maps"),
            "type": f(STR, "the p2m type read"),
            "gfn": f(GFN, "the guest frame it translates (-1: not known)"),
        },
    ),
    "put_page": Event("debug", "put_page", {"mfn": f(MFN, "the page"), "count": f(NAT, "the references left")}),
    "page_alloc.reuse_flush": Event(
        "debug",
        "alloc_heap_pages flushes before handing out pages that need it",
        {
            "mfn": f(MFN, "the first page"),
            "order": f(NAT, "the order"),
            "mask": f(HARTS, "the harts fenced"),
            "filtered": opt(
                ArrayOf(Scalar(DECISIONS.schema["items"], "a [cpu, time] pair"), "an array of [cpu, time] pairs"),
                "harts the TLB flush clock left out, with their clocks (tlbflush_clock profiles)",
            ),
            "stamp": opt(NAT, "the pages' TLB flush timestamp (tlbflush_clock profiles)"),
        },
    ),
    "page_alloc.reuse_flush_skipped": Event(
        "debug", "that flush was left out (a bug injected)", {"mfn": f(MFN, "the first page"), "order": f(NAT, "order")}
    ),
    "page_alloc.no_tlbflush": Event(
        "debug",
        "pages that needed a flush, handed out with MEMF_no_tlbflush",
        {"mfn": f(MFN, "the first page"), "order": f(NAT, "the order")},
    ),
    "tlbflush.stamp": Event(
        "debug", "a hart's TLB flush clock ticked", {"cpu": f(HART, "the hart"), "time": f(NAT, "its clock")}
    ),
    "cpu_down": Event("debug", "Xen takes a hart offline", {"cpu": f(HART, "the hart")}),
    "cpu_up": Event("debug", "Xen brings a hart online", {"cpu": f(HART, "the hart")}),
    "guest_fault.resolved": Event(
        "debug",
        "Xen resolved a guest fault",
        {"gfn": f(GFN, "the guest frame"), "why": f(STR, "the reason")},
    ),
    "guest_fault.injected": Event(
        "debug",
        "Xen passed a guest fault on to the guest",
        {"gfn": f(GFN, "the guest frame"), "why": f(STR, "the reason"), "write": f(BOOL, "a write")},
    ),
    "printk": Event(
        "debug",
        "what Xen prints",
        {"text": f(STR, "the message"), "rc": opt(INT, "the error code it reports (an SBI call's)")},
    ),
    "sbi.error_ignored": Event(
        "debug",
        "an SBI error the C code ignores",
        {
            "where": f(STR, "the function"),
            "dom": opt(DOM, "the domain (p2m_tlb_flush)"),
            "rc": f(INT, "the error"),
            "mask": f(HARTS, "the harts it was for"),
        },
    ),
    "ASSERT.unchecked": Event(
        "debug", "an ASSERT() a release build does not check, and that would have failed", {"what": f(STR, "it")}
    ),
    "ASSERT_UNREACHABLE": Event(
        "debug",
        "ASSERT_UNREACHABLE() reached in a release build",
        {
            "where": f(STR, "the function"),
            "level": opt(NAT, "the level (p2m_put_page)"),
            "type": opt(INT, "the p2m type (p2m_set_permission, p2m_put_page)"),
        },
    ),
    # the oracle
    "oracle.violation": Event(
        "error",
        "a violation, with its causal chain",
        {
            "n": f(POS, "its number in the run (1-based)"),
            "cls": f(STR, "its class (version 3's name for class)", until=3),
            "class": f(STR, "its class", since=4),
            "dom": f(Nullable(DOM), "the domain (null: not known)"),
            "gfn": f(Nullable(GFN), "the guest frame (null: not known)"),
            "mfn": f(Nullable(MFN), "the frame (null: not known)"),
            "headline": f(STR, "what happened, in one line"),
            "chain": f(CHAIN, "the causal chain, in steps"),
            "missing": f(STR, "the defence missing or late, in words"),
            "cause": f(CAUSE, "the root cause (null: not one the decision procedure explains)"),
            "access": f(STR, "the access: read, write, walk, free, load, store, or empty"),
        },
    ),
    "oracle.warning": Event(
        "info",
        "a stale use that could do no harm",
        {"mfn": f(MFN, "the frame"), "gfn": f(Nullable(GFN), "the guest frame"), "text": f(STR, "what, in words")},
    ),
}


def events(version: int = LOG_SCHEMA_VERSION) -> list[str]:
    """The events a log of ``version`` may have."""
    return [k for k, e in EVENTS.items() if e.since <= version]


def _line_fields(name: str, version: int) -> dict[str, Field]:
    """An event's line: the common fields (its name and level fixed), then its own."""
    e = EVENTS[name]
    fields = {**{k: x for k, x in COMMON.items() if x.in_version(version)}, **e.live(version)}
    fields["event"] = f(Scalar({"const": name}, repr(name)), COMMON["event"].meaning)
    fields["log_level"] = f(
        Scalar({"const": e.level}, repr(e.level)), f"the log level ({name} is written at {e.level})"
    )
    if name == "run.start":
        fields["v"] = f(Scalar({"type": "integer", "const": version}, str(version)), fields["v"].meaning)
    return fields


def event_schema(name: str, version: int = LOG_SCHEMA_VERSION) -> dict[str, Any]:
    """One event's line, standalone (no references): the common fields, then its own."""
    e = EVENTS[name]
    s = _object(_line_fields(name, version), version, {"description": e.meaning})
    if e.cases is not None:
        key, cases = e.cases
        optional = [k for k, x in e.live(version).items() if x.optional]
        s["allOf"] = [
            {
                "if": {"properties": {key: {"const": value}}, "required": [key]},
                "then": {"required": list(want), "properties": {k: False for k in optional if k not in want}},
            }
            for value, want in cases.items()
        ]
    return s


def log_line_schema(version: int = LOG_SCHEMA_VERSION) -> dict[str, Any]:
    names = events(version)
    later = "" if version == LOG_SCHEMA_VERSION else f" (read, not written: this p2msim writes {LOG_SCHEMA_VERSION})"
    return {
        "$schema": DRAFT,
        "$id": f"{BASE}/log-line/{version}.json",
        "$comment": GENERATED,
        "title": f"p2msim log line, schema version {version}",
        "description": (
            f"One line of a p2msim --log file (JSON lines) of log schema version {version}{later}. Every line has "
            "seq, hart, event and log_level (and t, a timed run's virtual time); the first is run.start (with v, "
            "the version), the last run.end, "
            "run.error or run.interrupted, and seq never decreases (rules of the whole log, checked by "
            "`p2msim inspect --check LOG` and `python3 -m simulator.report.schema --check LOG`). "
            + (
                "64-bit values (old, new, pte, hgatp) are hex strings."
                if version >= 4
                else "64-bit values are integers."
            )
        ),
        "type": "object",
        "required": [k for k, x in COMMON.items() if not x.optional],
        "properties": {
            **{
                k: {"description": x.meaning, **x.type.json(version)}
                for k, x in COMMON.items()
                if x.in_version(version)
            },
            "event": {"description": COMMON["event"].meaning, "enum": names},
        },
        "allOf": [
            {"if": {"properties": {"event": {"const": n}}, "required": ["event"]}, "then": {"$ref": f"#/$defs/{n}"}}
            for n in names
        ],
        "$defs": {n: event_schema(n, version) for n in names},
    }


# -- the schedule and the --json outputs -------------------------------------------------------------

_SIZE = Object(
    {
        "harts": f(POS, "harts"),
        "preemptions": f(NAT, "switches away from an actor that could have gone on"),
        "switches": f(NAT, "context switches in all"),
        "steps": f(NAT, "steps"),
        "accesses": f(NAT, "guest accesses"),
    },
    "the size of a schedule",
)
SCHEDULE = Object(
    {
        "p2msim_schedule": f(Scalar({"const": SCHEDULE_VERSION}, str(SCHEDULE_VERSION)), "the schedule format"),
        "version": f(STR, "the p2msim version that wrote it"),
        "config": f(CONFIG, "the run's configuration"),
        "fallback": f(Enum(("exact", "fair")), "how a replay fills in where the decisions say nothing"),
        "decisions": f(DECISIONS, "the conductor's context switches: at step seq, actor runs (harts, then driver)"),
        "verdict": opt(
            Object(
                {
                    "classes": f(STRS, "the violation classes, sorted"),
                    "violations": f(NAT, "harmful uses, repeats included"),
                    "first": f(Nullable(NAT), "the step of the first violation (null: none)"),
                    "stop": f(STOP, "why the run stopped"),
                    "digest": f(DIGEST, "the run's digest"),
                    "steps": f(NAT, "steps"),
                    "switches": f(NAT, "context switches"),
                },
                "what the run ended with",
            ),
            "what a replay must end with (taken out: nothing to compare)",
        ),
        "sources": opt(SOURCES, "the code that ran, by hash (written since p2msim recorded it)"),
        "shrunk_from": opt(
            Object({"source": f(STR, "the log or schedule shrunk"), **_SIZE.fields}, "what a shrink started from"),
            "a shrunk schedule: the source and its size",
        ),
    },
    "a schedule",
)
RUN = Object(
    {
        "workload": f(STR, "the workload"),
        "seed": f(NAT, "the seed"),
        "profile": f(STR, "the profile"),
        "strategy": f(STR, "the strategy"),
        "bugs": f(STRS, "the bugs injected"),
        "steps": f(NAT, "logical steps"),
        "stats": f(RUN_STATS, "the run's counters"),
        "warnings": f(NAT, "warnings counted"),
        "windows": f(WINDOWS_RUN, "the race windows"),
        "violations": f(
            ArrayOf(
                Object(
                    {
                        "class": f(STR, "its class"),
                        "hart": f(Nullable(HART), "the hart"),
                        "dom": f(Nullable(DOM), "the domain"),
                        "gfn": f(Nullable(GFN), "the guest frame"),
                        "mfn": f(Nullable(MFN), "the frame"),
                        "seq": f(NAT, "the step"),
                        "explanation": f(STR, "the headline, the chain and what is missing, in lines"),
                        "cause": f(CAUSE, "the root cause"),
                        "access": f(STR, "the access"),
                    },
                    "a violation",
                )
            ),
            "the violations kept (the first of every cause among them)",
        ),
        "violation_count": f(NAT, "harmful uses, repeats included"),
        "findings": f(NAT, "violations recorded"),
        "causes": f(CAUSES, "the violations by root cause"),
        "stop": f(STOP, "why the run stopped"),
        "verdict": f(VERDICT, "clean, violation, incomplete or vacuous"),
        "digest": f(DIGEST, "the digest of what happened"),
        "replay": f(STR, "the command that replays it"),
    },
    "a run",
)
_VIOLATION_SUMMARY = Object(
    {
        "n": f(Nullable(POS), "its number"),
        "class": f(Nullable(STR), "its class"),
        "seq": f(NAT, "the step"),
        "hart": f(Nullable(HART), "the hart"),
        "dom": f(Nullable(DOM), "the domain"),
        "gfn": f(Nullable(GFN), "the guest frame"),
        "mfn": f(Nullable(MFN), "the frame"),
        "headline": f(Nullable(STR), "what happened"),
        "missing": f(Nullable(STR), "what is missing"),
    },
    "a violation of the log",
)
INSPECT = Object(
    {
        "log": f(STR, "the log file"),
        "schema": f(Nullable(INT), "its log schema version"),
        "version": f(Nullable(STR), "the p2msim version that wrote it"),
        "lines": f(NAT, "its lines"),
        "run": f(CONFIG, "the run's configuration (run.start)"),
        "stop": f(
            Nullable(Enum((*STOPS, "run.error", "run.interrupted"))),
            "why the run stopped, or the event that ended it early (null: the log has no last line)",
        ),
        "last_seq": f(NAT, "the last line's step"),
        "stats": f(Nullable(STATS), "the run's counters (null: it did not finish)"),
        "digest": f(Nullable(DIGEST), "the run's digest (null: it did not finish)"),
        "violations": f(ArrayOf(_VIOLATION_SUMMARY), "the violations (the first 1000)"),
        "violation_count": f(Nullable(NAT), "harmful uses, repeats included (null: it did not finish)"),
        "findings": f(NAT, "violations recorded"),
        "causes": f(CAUSES, "the violations by root cause"),
        "warnings": f(NAT, "warnings"),
        "windows": f(Nullable(WINDOWS_RUN), "the race windows (null: the run did not finish, or a version 3 log)"),
        "events": f(COUNTS, "lines by event"),
    },
    "a log's summary",
)
SWEEP = Object(
    {
        "workload": f(STR, "the workload"),
        "seeds": f(Scalar({"type": "string", "pattern": "^[0-9]+:[0-9]+$"}, 'a range "A:B"'), "the seeds, A..B-1"),
        "profile": f(STR, "the profile"),
        "bugs": f(STRS, "the bugs injected"),
        "swarm": f(BOOL, "each seed drew its configuration"),
        "runs": f(NAT, "seeds that finished (crashed ones included)"),
        "failing": f(ArrayOf(NAT), "seeds with a violation, ascending"),
        "first_failing": f(Nullable(NAT), "the first of them"),
        "classes": f(COUNTS, "violation class -> failing seeds that showed it"),
        "crashed": f(ArrayOf(NAT), "seeds p2msim itself failed on"),
        "crash_errors": f(STR_MAP, "seed -> its error"),
        "budget_hits": f(NAT, "seeds the step budget ended"),
        "budget_fraction": f(NUM, "their fraction"),
        "timeouts": f(ArrayOf(NAT), "seeds --seed-timeout ended"),
        "worker_deaths": f(NAT, "worker processes lost"),
        "runs_per_s": f(NUM, "runs per second (wall clock)"),
        "seconds": f(NUM, "seconds (wall clock)"),
        "replay": f(STRS, "the replay commands of the failing seeds"),
        "logs": f(STRS, "the logs of the failing seeds (--log DIR)"),
        "stopped_early": f(BOOL, "--stop-on-first stopped it"),
        "interrupted": f(BOOL, "Ctrl-C or SIGTERM stopped it"),
        "vacuous": f(ArrayOf(NAT), "seeds that opened no race window"),
        "warnings": f(NAT, "warnings over the seeds"),
        "windows": f(WINDOWS_SUM, "race windows over the seeds"),
        "out": f(Nullable(STR), "the --out file"),
    },
    "a sweep",
)
SWEEP_SEED = Object(
    {
        "seed": f(NAT, "the seed"),
        "verdict": f(
            Enum(("clean", "violation", "incomplete", "vacuous", "timeout", "crashed", "error")), "its outcome"
        ),
        "classes": f(STRS, "violation classes, sorted"),
        "violations": f(NAT, "harmful uses, repeats included"),
        "first_violation_seq": f(Nullable(NAT), "the step of the first violation"),
        "stop": f(Nullable(STOP), "why the run stopped (null: it did not finish)"),
        "steps": f(Nullable(NAT), "steps (null: it did not finish)"),
        "digest": f(Nullable(DIGEST), "the run's digest (null: it did not finish)"),
        "replay": f(STR, "the exact replay command"),
        "seconds": f(NUM, "seconds (wall clock)"),
        "warnings": f(NAT, "warnings counted"),
        "windows": opt(WINDOWS_RUN, "the run's race windows (a run that finished)"),
        "swarm": opt(SWARM, "the configuration the seed drew (--swarm)"),
        "log": opt(STR, "its log (--log DIR, a failing seed)"),
        "schedule": opt(STR, "its schedule (--log DIR, a failing seed)"),
        "error": opt(STR, "what went wrong (timeout, crashed, error)"),
    },
    "one seed of a sweep (a line of --out)",
)
_COMPARE_CAUSE = {
    "class": f(STR, "the violation class"),
    "case": f(STR, "the decision procedure's case (empty: none)"),
    "function": f(STR, "the C function (empty: none)"),
    "seeds": f(POS, "the seeds that showed it"),
}
_SIDE = Object(
    {
        "runs": f(NAT, "runs"),
        "failing": f(ArrayOf(NAT), "seeds with a finding"),
        "causes": f(ArrayOf(Object(dict(_COMPARE_CAUSE))), "findings by cause, with the seeds that showed each"),
        "incomplete": f(NAT, "budget stops and timeouts"),
        "compared": f(NAT, "runs whose numbers are summed (both sides ran to the end)"),
        "warnings": f(NAT, "warnings"),
        "fences_sent": f(NAT, "fences sent"),
        "frames_freed": f(NAT, "frames freed"),
        "frames_reused": f(NAT, "frames reused"),
        "steps": f(NAT, "steps"),
        "windows": f(WINDOWS_SUM, "race windows over the compared runs"),
    },
    "one side of a comparison",
)
_SIDES = Object({"baseline": f(_SIDE, "the baseline profile"), "variant": f(_SIDE, "with the variants")})
_CHANGE = ArrayOf(
    Object({**_COMPARE_CAUSE, "replay": f(STR, "the replay command of its first seed")}, "a cause that differs")
)
COMPARE = Object(
    {
        "variants": f(STRS, "the variant files or names"),
        "against": f(STR, "the baseline profile"),
        "seeds": f(NAT, "seeds per workload"),
        "workloads": f(MapOf(_SIDES, "an object: workload -> both sides"), "each workload's two sides"),
        "total": f(_SIDES, "both sides over every workload"),
        "adds": f(_CHANGE, "causes only the variant shows"),
        "removes": f(_CHANGE, "causes only the baseline shows"),
    },
    "a comparison",
)
REPLAY = Object(
    {
        "source": f(STR, "the log or schedule replayed"),
        "reproduced": f(BOOL, "the same digest and verdict (and, for an exact schedule, every switch)"),
        "compared": f(ArrayOf(Enum(("digest", "classes", "violations"))), "what the source recorded to compare"),
        "same_digest": f(BOOL, "the digest matched (or none was recorded)"),
        "same_verdict": f(BOOL, "the classes and count matched (or none were recorded)"),
        "diverged_at": f(Nullable(NAT), "the step where the schedules part ways (null: they do not)"),
        "changed": f(STRS, "recorded files or the model that differ now, one line each"),
        "digest": f(DIGEST, "the replay's digest"),
        "recorded_digest": f(Nullable(DIGEST), "the recorded digest"),
        "classes": f(STRS, "the replay's violation classes"),
        "violations": f(NAT, "the replay's harmful uses"),
    },
    "a replay",
)
MATRIX = Object(
    {
        "seeds": f(NAT, "seeds per cell at most"),
        "cells": f(
            ArrayOf(
                Object(
                    {
                        "bug": f(STR, "the bug"),
                        "workload": f(STR, "the workload"),
                        "strategy": f(STR, "the strategy"),
                        "detected": f(BOOL, "found"),
                        "seeds_to_first": f(Nullable(POS), "seeds run to the first detection"),
                        "seconds_to_first": f(Nullable(NUM), "seconds to it"),
                        "class": f(Nullable(STR), "the class found"),
                        "seeds_run": f(NAT, "seeds run"),
                        "incomplete": f(NAT, "seeds the budget or --seed-timeout ended"),
                    },
                    "a bug x workload x strategy cell",
                )
            ),
            "one per bug, workload and strategy",
        ),
        "clean": f(
            ArrayOf(
                Object(
                    {
                        "profile": f(STR, "the clean profile"),
                        "workload": f(STR, "the workload"),
                        "seeds": f(NAT, "seeds"),
                        "violations": f(NAT, "seeds with a violation"),
                        "failing": f(ArrayOf(NAT), "those seeds"),
                        "classes": f(COUNTS, "class -> seeds"),
                        "budget_hits": f(NAT, "seeds the budget ended"),
                        "timeouts": f(NAT, "seeds --seed-timeout ended"),
                        "vacuous": f(NAT, "seeds that opened no race window"),
                        "warnings": f(NAT, "warnings"),
                        "windows": f(WINDOWS_SUM, "race windows over the seeds"),
                        "first_error": f(STR, "the first seed whose workload could not run to its end, or ''"),
                    },
                    "a clean profile x workload row",
                )
            ),
            "one per clean profile and workload",
        ),
        "bugs_found": f(NAT, "bugs found by a controlled strategy"),
        "bugs": f(NAT, "bugs hunted"),
        "missed": f(STRS, "bugs not found"),
        "median_seconds_to_first": f(Nullable(NUM), "the median seconds to the first detection"),
        "clean_violations": f(NAT, "violations on the clean profiles (must be 0)"),
        "clean_incomplete": f(NAT, "clean runs without a verdict"),
        "skipped": f(STRS, "bugs not run (--xen-tree: they replace a function the tree's C provides)"),
    },
    "a detection matrix",
)

SHRINK = Object(
    {
        "class": f(STR, "the violation class kept"),
        "before": f(_SIZE, "the run shrunk"),
        "to_first_violation": f(_SIZE, "the run shrunk, up to its first violation"),
        "after": f(_SIZE, "the minimal schedule"),
        "tests": f(NAT, "runs it took"),
        "schedule": f(STR, "the minimal schedule written"),
    },
    "a shrink",
)
BENCH = Object(
    {
        "backend": f(Enum(("trio", "asyncio")), "the event loop"),
        "accesses_per_s": f(NAT, "guest accesses per second (oracle on, log off)"),
        "switches_per_s": f(NAT, "context switches per second"),
        "baseline_lookups_per_s": f(NAT, "plain dict lookups per second, same process"),
        "baseline_ratio": f(NUM, "baseline / accesses"),
        "target_ratio": f(NUM, "the ratio aimed at"),
        "repeat": f(POS, "runs (the median is taken)"),
        "tlb_hit_rate": f(NUM, "TLB hits / accesses"),
        "accesses": f(NAT, "guest accesses of one run"),
        "steps": f(NAT, "steps of one run"),
    },
    "a benchmark",
)
BENCH_WORKLOADS = Object(
    {
        "backend": f(Enum(("trio", "asyncio")), "the event loop"),
        "seed": f(INT, "the seed every workload ran with"),
        "repeat": f(POS, "runs per workload (the median is taken)"),
        "workloads": f(
            ArrayOf(
                Object(
                    {
                        "workload": f(STR, "the built-in workload"),
                        "verdict": f(STR, "its verdict at this seed"),
                        "steps": f(NAT, "steps of one run"),
                        "seconds": f(NUM, "the median wall-clock seconds of a run"),
                        "steps_per_s": f(NAT, "steps / seconds"),
                        "runs_per_s": f(NUM, "1 / seconds"),
                        "baseline_lookups_per_s": f(NAT, "plain dict lookups per second, measured beside it"),
                        "lookups_per_step": f(NUM, "a step's cost in dict lookups (lower is faster)"),
                    },
                    "one workload",
                )
            ),
            "one per workload",
        ),
        "total": f(
            Object(
                {
                    "steps": f(NAT, "steps of all the runs"),
                    "seconds": f(NUM, "their seconds"),
                    "steps_per_s": f(NAT, "steps / seconds"),
                    "lookups_per_step": f(NUM, "a step's cost in dict lookups over all of them"),
                },
                "the sum",
            ),
            "over every workload",
        ),
    },
    "a per-workload benchmark",
)
BENCH_SWEEP = Object(
    {
        "backend": f(Enum(("trio", "asyncio")), "the event loop"),
        "workload": f(STR, "the workload swept"),
        "seeds": f(POS, "seeds 0..seeds-1"),
        "jobs": f(POS, "the processes of the parallel sweep"),
        "repeat": f(POS, "sweeps of each kind (the median is taken)"),
        "seconds_1": f(NUM, "wall-clock seconds of the sweep with --jobs 1"),
        "seconds_n": f(NUM, "wall-clock seconds of the sweep with --jobs N"),
        "runs_per_s_1": f(NUM, "seeds / seconds_1"),
        "runs_per_s_n": f(NUM, "seeds / seconds_n"),
        "speedup": f(NUM, "seconds_1 / seconds_n"),
        "machine_speedup": f(NUM, "a dict loop's throughput in N processes at once over one, measured in this run"),
        "efficiency": f(NUM, "speedup / machine_speedup"),
        "target_speedup": f(NUM, "the speed-up aimed at: 0.9 per process"),
    },
    "a sweep's scaling",
)
_STRATEGY = Enum(("flush-per-table", "gather", "pool-stamp", "deferred-flush-pool-free"), "a table-freeing strategy")
_BY_SIZE = MapOf(NUM, "an object: guest size in MiB -> a mean")
STUDY = Object(
    {
        "schema": f(Scalar({"const": "study-table-free-1"}, "'study-table-free-1'"), "what this is"),
        "grid": f(Enum(("full", "quick", "tiny")), "the grid that ran"),
        "command": opt(STR, "the command that regenerates it"),
        "costs": f(MapOf(Scalar({}, "cycles, or the IPI latency's quantiles"), "the cost table"), "the cost table"),
        "cells": f(
            ArrayOf(
                Object(
                    {
                        "key": f(STR, "the cell, in words"),
                        "strategy": f(_STRATEGY, "the strategy"),
                        "op": f(Enum(("decrease", "shatter", "teardown")), "the operation"),
                        "mib": f(POS, "the guest's size in MiB"),
                        "mapping": f(Enum(("4K", "2M", "mixed")), "the guest's mapping"),
                        "harts": f(POS, "harts"),
                        "pool": f(Enum(("tight", "ample")), "the p2m pool"),
                        "fence_scale": f(NUM, "the factor on every fence cost (sensitivity; 1: the table's)"),
                        "vcpus": f(POS, "dom1's vCPUs per hart (above 1 they take turns)"),
                        "seeds": f(POS, "seeds run"),
                        "fences": f(NUM, "remote fence requests the operation sent (mean)"),
                        "duration": f(NUM, "the operation's hypercall, call to return, in cycles (mean)"),
                        "flushing": f(NUM, "of it in flushes (mean)"),
                        "lock_hold_max": f(NUM, "the longest p2m write-lock hold of the run (mean)"),
                        "guest_stall": f(NUM, "cycles incoming fences took from running vCPUs (mean)"),
                        "pool_least_free": f(NUM, "the fewest free pool pages at an allocation of the op (-1: none)"),
                        "failed": f(NAT, "seeds where the operation failed (a pool that ran dry)"),
                        "violations": f(NAT, "harmful uses found over its seeds"),
                        "replay": f(STR, "a failing seed's replay command ('' when none failed)"),
                    },
                    "a cell: means over its seeds",
                )
            ),
            "the grid's cells",
        ),
        "safety": f(
            MapOf(
                Object(
                    {
                        "runs": f(NAT, "hunts run"),
                        "failing": f(NAT, "hunts with a violation"),
                        "violations": f(NAT, "harmful uses over the hunts"),
                        "classes": f(STRS, "violation classes found"),
                        "incomplete": f(NAT, "hunts the step budget ended"),
                        "first": f(STR, "the first failing hunt's replay command"),
                        "workloads": f(STRS, "the hunting workloads"),
                        "seeds": f(NAT, "seeds per workload"),
                    },
                    "a strategy's hunts",
                ),
                "an object: strategy -> its hunts",
            ),
            "the race hunts per strategy (the profiles' hunting workloads, untimed)",
        ),
        "findings": f(
            Object(
                {
                    "control_caught": f(BOOL, "deferred-flush-pool-free failed some hunt"),
                    "control": f(Scalar({"type": "object"}, "an object"), "the control's hunts"),
                    "safe": f(STRS, "the strategies no hunt failed"),
                    "unsafe": f(STRS, "strategies meant to be safe that a hunt failed"),
                    "largest_mib": f(NAT, "the largest guest of the size sweep"),
                    "best": f(STR, "the cheapest safe strategy there (the tree's unless another beats it by a tie)"),
                    "ranking": f(STRS, "the safe strategies, cheapest first"),
                    "fences": f(MapOf(_BY_SIZE, "strategy -> size -> fences"), "decrease_reservation, 4K"),
                    "duration": f(MapOf(_BY_SIZE, "strategy -> size -> cycles"), "decrease_reservation, 4K"),
                    "crossovers": f(MapOf(ArrayOf(NUM), "pair -> sizes"), "where two strategies change places"),
                    "lock_hold": f(MapOf(_BY_SIZE, "strategy -> size -> cycles"), "the longest p2m write-lock hold"),
                    "tied": f(STRS, "the safe strategies within a tie of the best (not the tree's)"),
                    "shatter_fences": f(
                        MapOf(MapOf(NUM, "'tight@MiB' or 'ample@MiB' -> fences"), "strategy -> pool -> fences"),
                        "op=shatter's remote fences by pool (4 harts)",
                    ),
                    "duration_saved": opt(NUM, "1 - best / flush-per-table, at the largest size"),
                    "fences_saved": opt(NUM, "the same for remote fences"),
                    "tight_pool_failures": f(MapOf(NAT, "strategy -> runs"), "operations that failed, tight pool"),
                    "pool_least_free": f(MapOf(Nullable(NUM), "strategy -> pages"), "op=shatter, tight pool"),
                    "teardown_same": f(BOOL, "a teardown sends the same fences under every strategy"),
                    "sensitivity": f(Scalar({"type": "object"}, "an object"), "fence costs scaled: rankings"),
                    "conclusion_holds": f(BOOL, "no scaling makes another safe strategy the cheapest"),
                },
                "what the numbers say (computed from the cells and hunts)",
            ),
            "the conclusions",
        ),
    },
    "the table-freeing study",
)
INSPECT_VIOLATION = Object(
    {
        "violation": f(_VIOLATION_SUMMARY, "the violation"),
        "harts": f(HARTS, "the harts of its chain"),
        "timeline": f(
            ArrayOf(
                Object(
                    {
                        "seq": f(NAT, "the step"),
                        "hart": f(Nullable(HART), "the hart (null: the workload driver)"),
                        "kind": f(STR, "what happened (a chain step's kind, or fence.sent/taken/acked)"),
                        "text": f(STR, "the event, in words"),
                        "chain": f(BOOL, "a step of the causal chain (false: fence traffic of its harts)"),
                    },
                    "an event of the timeline",
                )
            ),
            "its causal chain and its harts' fences, in step order",
        ),
    },
    "a violation's timeline",
)

# name -> (version, what writes it, its type)
DOCUMENTS: dict[str, tuple[int, str, Object]] = {
    "schedule": (SCHEDULE_VERSION, "a schedule file (LOG.schedule.json, shrink's output)", SCHEDULE),
    "run": (OUTPUT_VERSION, "`p2msim run --json`", RUN),
    "inspect": (OUTPUT_VERSION, "`p2msim inspect LOG --json` (the summary)", INSPECT),
    "inspect-violation": (OUTPUT_VERSION, "`p2msim inspect LOG --violation N --json`", INSPECT_VIOLATION),
    "sweep": (OUTPUT_VERSION, "`p2msim sweep --json`", SWEEP),
    "sweep-seed": (OUTPUT_VERSION, "one line of `p2msim sweep --out FILE.jsonl`", SWEEP_SEED),
    "compare": (OUTPUT_VERSION, "`p2msim compare --json`", COMPARE),
    "replay": (OUTPUT_VERSION, "`p2msim replay --json`", REPLAY),
    "matrix": (OUTPUT_VERSION, "`p2msim matrix --json`", MATRIX),
    "shrink": (OUTPUT_VERSION, "`p2msim shrink --json`", SHRINK),
    "bench": (OUTPUT_VERSION, "`p2msim bench --json`", BENCH),
    "bench-workloads": (OUTPUT_VERSION, "`p2msim bench --workloads --json`", BENCH_WORKLOADS),
    "bench-sweep": (OUTPUT_VERSION, "`p2msim bench --sweep --json`", BENCH_SWEEP),
    "study-table-free": (OUTPUT_VERSION, "`p2msim study table-free --json` (and its -o DIR/table-free.json)", STUDY),
}


def document_schema(name: str) -> dict[str, Any]:
    version, what, t = DOCUMENTS[name]
    return {
        "$schema": DRAFT,
        "$id": f"{BASE}/{name}/{version}.json",
        "$comment": GENERATED,
        "title": f"p2msim {name}, version {version}",
        "description": f"{what}: {t.noun}.",
        **t.json(version),
    }


def schemas() -> dict[str, dict[str, Any]]:
    """Every schema by its file name in simulator/schemas/."""
    out = {f"log-line-{v}.json": log_line_schema(v) for v in READABLE_VERSIONS}
    for name, (version, _what, _t) in DOCUMENTS.items():
        out[f"{name}-{version}.json"] = document_schema(name)
    return out


def render(schema: dict[str, Any]) -> bytes:
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2) + b"\n"


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, s in schemas().items():
        p = directory / name
        p.write_bytes(render(s))
        written.append(p)
    return written


def load(name: str) -> dict[str, Any]:
    """A shipped schema by file name ("run-1.json")."""
    data: dict[str, Any] = orjson.loads((SCHEMA_DIR / name).read_bytes())
    return data


def table(version: int = LOG_SCHEMA_VERSION) -> str:
    """The events as a Markdown table (for the README)."""
    rows = ["| event | level | fields | meaning |", "|---|---|---|---|"]
    for name in events(version):
        e = EVENTS[name]
        fields = " ".join(k if not x.optional else f"[{k}]" for k, x in e.live(version).items())
        rows.append(f"| `{name}` | {e.level} | {f'`{fields}`' if fields else ''} | {e.meaning} |")
    return "\n".join(rows)


# -- validation ---------------------------------------------------------------------------------------


def _draft() -> Any:
    try:
        from jsonschema import Draft202012Validator
    except ImportError:  # (a dependency of p2msim: only a broken install lacks it)
        raise LogError("checking against the schemas needs the jsonschema package (pip install jsonschema)") from None
    return Draft202012Validator


@cache
def _validator(name: str, version: int) -> Any:
    return _draft()(event_schema(name, version))


@cache
def _fast_check(name: str, version: int) -> Callable[[Any], bool] | None:
    return _fast(event_schema(name, version))


@cache
def document_validator(name: str) -> Any:
    return _draft()(document_schema(name))


_IGNORED = {"description", "title", "$comment", "$schema", "$id", "default", "examples"}


def _fast(s: Any) -> Callable[[Any], bool] | None:
    """A checker compiled from a JSON Schema that says True only when the value is valid (False: not sure).

    It knows a few keywords, each checked at least as strictly as the standard says (an integer is a
    Python int, never a float or a bool; enums compare types too).  A schema with any other keyword
    gives None: always ask jsonschema.  ``tests/test_schema.py`` holds it to jsonschema's verdicts.
    """
    if s is True:
        return lambda v: True
    if s is False:
        return lambda v: False
    if not isinstance(s, dict) or set(s) - _IGNORED - {
        "allOf",
        "type",
        "minimum",
        "maximum",
        "pattern",
        "enum",
        "const",
        "items",
        "properties",
        "required",
        "additionalProperties",
        "propertyNames",
    }:
        return None
    checks: list[Callable[[Any], bool]] = []
    for case in s.get("allOf", ()):
        check = _fast_case(case)
        if check is None:
            return None
        checks.append(check)
    if "type" in s:
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        preds = {
            "integer": lambda v: type(v) is int,
            "number": lambda v: type(v) in (int, float),
            "string": lambda v: type(v) is str,
            "boolean": lambda v: type(v) is bool,
            "null": lambda v: v is None,
            "array": lambda v: type(v) is list,
            "object": lambda v: type(v) is dict,
        }
        if any(t not in preds for t in types):
            return None
        if len(types) == 1:
            checks.append(preds[types[0]])
        else:
            ps = [preds[t] for t in types]
            checks.append(lambda v: any(p(v) for p in ps))
    if "minimum" in s:
        lo = s["minimum"]
        checks.append(lambda v: type(v) not in (int, float) or v >= lo)
    if "maximum" in s:
        hi = s["maximum"]
        checks.append(lambda v: type(v) not in (int, float) or v <= hi)
    if "pattern" in s:
        rx = re.compile(s["pattern"])
        checks.append(lambda v: type(v) is not str or rx.search(v) is not None)
    if "enum" in s or "const" in s:
        allowed = s["enum"] if "enum" in s else [s["const"]]
        if any(type(a) not in (str, int, bool, type(None)) for a in allowed):
            return None
        typed = {(type(a), a) for a in allowed}
        checks.append(lambda v: type(v) in (str, int, bool, type(None)) and (type(v), v) in typed)
    if "items" in s:
        item = _fast(s["items"])
        if item is None:
            return None
        checks.append(lambda v: type(v) is not list or all(item(x) for x in v))
    if {"properties", "required", "additionalProperties", "propertyNames"} & set(s):
        props: dict[str, Callable[[Any], bool]] = {}
        for k, sub in s.get("properties", {}).items():
            p = _fast(sub)
            if p is None:
                return None
            props[k] = p
        required = tuple(s.get("required", ()))
        extra = s.get("additionalProperties", True)
        extra_check = None if extra is False else _fast(extra)
        if extra is not False and extra_check is None:
            return None
        names = s.get("propertyNames")
        if names is not None and set(names) != {"enum"}:
            return None
        name_set = set(names["enum"]) if names is not None else None

        def obj(v: Any) -> bool:
            if type(v) is not dict:
                return True  # the keywords apply to objects only ("type" says whether it must be one)
            for k in required:
                if k not in v:
                    return False
            for k, x in v.items():
                if name_set is not None and k not in name_set:
                    return False
                p = props.get(k)
                if p is None:
                    if extra_check is None or not extra_check(x):
                        return False
                elif not p(x):
                    return False
            return True

        checks.append(obj)
    if len(checks) == 1:
        return checks[0]
    return lambda v: all(c(v) for c in checks)


def _fast_case(s: Any) -> Callable[[Any], bool] | None:
    """``{"if": {"properties": {K: {"const": "C"}}, "required": [K]}, "then": ...}`` (event_schema's cases):
    whether the ``if`` holds is decided exactly, so the ``then`` is checked where jsonschema checks it."""
    if not isinstance(s, dict) or set(s) != {"if", "then"}:
        return None
    cond = s["if"]
    if not isinstance(cond, dict) or set(cond) != {"properties", "required"} or len(cond["properties"]) != 1:
        return None
    ((key, const),) = cond["properties"].items()
    if cond["required"] != [key] or set(const) != {"const"} or type(const["const"]) is not str:
        return None
    value = const["const"]
    then = _fast(s["then"])
    if then is None:
        return None
    # as the standard has it: on a non-object the "if" holds vacuously
    return lambda v: (type(v) is dict and not (type(v.get(key)) is str and v[key] == value)) or then(v)


def _path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _show(v: Any) -> str:
    text = orjson.dumps(v).decode()
    return text if len(text) <= 60 else text[:57] + "..."


def _type_at(t: Type | None, parts: list[Any]) -> Type | None:
    for p in parts:
        if t is None:
            return None
        t = t.at(p)
    return t


def _messages(ev: dict[str, Any], errors: list[Any], root: Type, version: int, what: str) -> list[str]:
    """One message per problem: a field missing, one unknown, one of the wrong type or value."""
    out: list[str] = []
    seen: set[tuple[str, str]] = set()

    def add(key: str, msg: str) -> None:
        if (key, msg) not in seen:
            seen.add((key, msg))
            out.append(f"{what}: {msg}")

    for err in sorted(errors, key=lambda e: (list(map(str, e.absolute_path)), e.validator or "")):
        parts = list(err.absolute_path)
        where = _path(parts)
        prefix = f"{where}." if where else ""
        if err.validator == "required" and isinstance(err.instance, dict):
            for k in err.validator_value:
                if k not in err.instance:
                    add(prefix + k, f"'{prefix}{k}' is missing")
        elif err.validator == "additionalProperties" and isinstance(err.instance, dict):
            known = set(err.schema.get("properties", {}))
            for k in err.instance:
                if k not in known:
                    add(prefix + k, f"unknown field '{prefix}{k}'")
        elif err.schema is False and not parts and _case_extras(ev):
            key, value, extras = _case_extras(ev)
            for k in extras:
                add(k, f"'{k}' is not a field of {ev['event']} with {key} {_show(value)}")
        elif err.schema is False:
            add(where, f"'{where}' is {_show(err.instance)}: not allowed here")
        elif err.validator in ("anyOf", "oneOf"):
            t = _type_at(root, parts)
            want = t.describe(version) if t is not None else "another value"
            add(where, f"'{where}' is {_show(err.instance)}, expected {want}")
        else:
            t = _type_at(root, parts)
            want = t.describe(version) if t is not None else err.message
            if err.validator in ("const", "enum", "type", "pattern", "minimum", "maximum") and t is not None:
                add(where, f"'{where}' is {_show(err.instance)}, expected {want}")
            else:
                add(where, f"'{where}' is {_show(err.instance)}: {err.message}")
    return out


def _case_extras(ev: dict[str, Any]) -> tuple[str, Any, list[str]] | None:
    """For an event with cases (hypercall's op): the optional fields present that its case does not have
    (jsonschema's error for them does not say which field it is)."""
    e = EVENTS.get(ev.get("event", ""))
    if e is None or e.cases is None:
        return None
    key, cases = e.cases
    want = cases.get(ev.get(key))
    if want is None:
        return None
    extras = [k for k, x in e.fields.items() if x.optional and k in ev and k not in want]
    return (key, ev.get(key), extras) if extras else None


@cache
def _event_type(name: str, version: int) -> Object:
    """An event's line as a Type, so that a message names what was expected of a field."""
    return Object(_line_fields(name, version), f"a {name} line")


@dataclass
class LogCheck:
    """What check() found in a log or a schedule."""

    path: str
    kind: str  # "log" or "schedule"
    version: int | None  # the log schema version (a log) or the schedule format
    lines: int = 0
    problems: list[str] = field(default_factory=list)  # at most MAX_MESSAGES, then "... and N more problems"
    count: int = 0  # the problems found, those past the limit included

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def schema_id(self) -> str | None:
        if self.version is None:
            return None
        return f"{BASE}/{'log-line' if self.kind == 'log' else self.kind}/{self.version}.json"

    def render(self) -> str:
        """What `p2msim inspect --check` prints: "valid", or each problem and then how many there are."""
        against = f" against {self.schema_id}" if self.schema_id else ""
        if self.ok:
            what = f"{self.lines:,} lines" if self.kind == "log" else f"the {self.kind}"
            return f"{self.path}: valid ({what}{against})"
        n = self.count or len(self.problems)
        return "\n".join([*self.problems, f"{self.path}: NOT VALID: {n:,} problem{'s' if n > 1 else ''}{against}"])


class _Problems:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept: list[str] = []
        self.more = 0

    def add(self, msg: str) -> None:
        if len(self.kept) < self.limit:
            self.kept.append(msg)
        else:
            self.more += 1

    def result(self) -> list[str]:
        if self.more:
            return [*self.kept, f"... and {self.more:,} more problem{'s' if self.more > 1 else ''}"]
        return list(self.kept)

    def check(self, path: str, kind: str, version: int | None, lines: int) -> LogCheck:
        return LogCheck(path, kind, version, lines, self.result(), len(self.kept) + self.more)


def _lines(path: str | Path) -> Iterator[bytes]:
    try:
        with Path(path).open("rb") as fh:
            yield from fh
    except OSError as exc:
        raise LogError(f"cannot read log {path}: {exc.strerror}") from None


def check_log(path: str | Path, limit: int = MAX_MESSAGES) -> list[str]:
    """Every problem of a log, one message each naming the line ("run.jsonl:17: pte.write: 'old' is 16,
    expected a hex string"), the first ``limit`` of them and then a count of the rest; [] for a valid
    log.  Raises LogError if the file cannot be read."""
    return _check_log(path, limit).problems


def _check_log(path: str | Path, limit: int) -> LogCheck:
    problems = _Problems(limit)
    name = str(path)
    version = LOG_SCHEMA_VERSION
    last_seq, last_seq_line = -1, 0
    last_event: str | None = None
    ended_at, ended_event = 0, ""  # the first end event (run.end, run.error, run.interrupted) and its line
    truncated = False
    lineno = 0
    for raw in _lines(path):
        lineno += 1
        where = f"{name}:{lineno}"
        if not raw.endswith(b"\n"):
            truncated = True
            problems.add(f"{where}: truncated line (no newline at the end of the log)")
            break
        last_event = None  # (a line that is not an event says so itself, not as the log's end)
        try:
            ev = orjson.loads(raw)
        except orjson.JSONDecodeError:
            problems.add(f"{where}: not valid JSON")
            continue
        if type(ev) is not dict:
            problems.add(f"{where}: a JSON {type(ev).__name__}, not an object (an event)")
            continue
        event = ev.get("event")
        if lineno == 1:
            if event != "run.start":
                problems.add(f"{where}: the first line is {_show(event)}, not run.start")
            elif ev.get("v") not in READABLE_VERSIONS:
                readable = ", ".join(map(str, READABLE_VERSIONS))
                problems.add(f"{where}: log schema version {_show(ev.get('v'))}, this p2msim reads {readable}")
                return problems.check(name, "log", None, lineno)
            else:
                version = ev["v"]
        elif event == "run.start":
            problems.add(f"{where}: run.start again (only the first line is run.start)")
        if ended_at and ended_at == lineno - 1:
            problems.add(f"{where}: a line after {ended_event} (line {ended_at}), which ends the log")
        seq = ev.get("seq")
        if type(seq) is int:
            if seq < last_seq:
                problems.add(f"{where}: seq {seq} after seq {last_seq} (line {last_seq_line}): seq never decreases")
            last_seq, last_seq_line = seq, lineno
        if type(event) is not str:
            wrong = f"is {_show(event)}, expected an event name" if "event" in ev else "is missing"
            problems.add(f"{where}: 'event' {wrong}")
            continue
        last_event = event
        if event in _END and not ended_at:
            ended_at, ended_event = lineno, event
        e = EVENTS.get(event)
        if e is None or e.since > version:
            problems.add(f"{where}: unknown event {event!r}" + (f" (log version {version})" if e else ""))
            continue
        fast = _fast_check(event, version)
        if fast is not None and fast(ev):
            continue
        errors = list(_validator(event, version).iter_errors(ev))
        for msg in _messages(ev, errors, _event_type(event, version), version, event):
            problems.add(f"{where}: {msg}")
    if lineno == 0:
        problems.add(f"{name}: empty log")
    elif not truncated and last_event is not None and last_event not in _END:
        problems.add(
            f"{name}:{lineno}: the log ends with {_show(last_event)}, not run.end, run.error or run.interrupted "
            "(cut short?)"
        )
    return problems.check(name, "log", version, lineno)


def check_schedule(path: str | Path, limit: int = MAX_MESSAGES) -> list[str]:
    """The problems of a schedule file against the schedule schema; [] for a valid one."""
    return _check_document(path, "schedule", limit).problems


def _check_document(path: str | Path, name: str, limit: int) -> LogCheck:
    try:
        data = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise LogError(f"cannot read {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        return LogCheck(str(path), name, None, 1, [f"{path}: not valid JSON ({exc})"], 1)
    version, _what, t = DOCUMENTS[name]
    problems = _Problems(limit)
    if type(data) is not dict:
        problems.add(f"{path}: a JSON {type(data).__name__}, not an object")
    else:
        for msg in _messages(data, list(document_validator(name).iter_errors(data)), t, version, name):
            problems.add(f"{path}: {msg}")
    return problems.check(str(path), name, version, 1)


def check(path: str | Path, limit: int = MAX_MESSAGES) -> LogCheck:
    """A log, or a schedule (a .json file that starts with '{'), checked against its schema."""
    p = Path(path)
    if p.suffix == ".json" and p.is_file():
        with p.open("rb") as fh:
            if fh.read(1) == b"{":
                return _check_document(p, "schedule", limit)
    return _check_log(path, limit)


def check_document(name: str, data: Any) -> list[str]:
    """The problems of one --json output (or a schedule) already read: ``name`` is a key of DOCUMENTS."""
    version, _what, t = DOCUMENTS[name]
    return _messages(data if isinstance(data, dict) else {}, list(document_validator(name).iter_errors(data)), t,
                     version, name)  # fmt: skip


# -- the command line -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python3 -m simulator.report.schema",
        description="The JSON Schemas of p2msim's log, schedule and --json outputs, generated from one definition.",
    )
    ap.add_argument("--write", action="store_true", help=f"write every schema into {SCHEMA_DIR}")
    ap.add_argument("--print", dest="show", metavar="NAME", help="print one schema (a file name, e.g. run-1.json)")
    ap.add_argument("--list", action="store_true", help="list the schemas with their $id")
    ap.add_argument("--table", action="store_true", help="print the events as a Markdown table")
    ap.add_argument("--check", nargs="+", metavar="FILE", help="check logs or schedules against their schema")
    args = ap.parse_args(argv)
    code = 0
    if args.write:
        for p in write():
            print(f"wrote {p}")
    if args.list:
        for name, s in schemas().items():
            print(f"{name:<20} {s['$id']}")
    if args.show:
        all_ = schemas()
        if args.show not in all_:
            print(f"no schema {args.show!r} (one of {', '.join(all_)})", file=sys.stderr)
            return 2
        sys.stdout.write(render(all_[args.show]).decode())
    if args.table:
        print(table())
    for path in args.check or ():
        try:
            c = check(path)
        except LogError as exc:
            print(exc, file=sys.stderr)
            code = 2
            continue
        print(c.render())
        if not c.ok:
            code = max(code, 1)
    if not (args.write or args.list or args.show or args.table or args.check):
        ap.print_help()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
