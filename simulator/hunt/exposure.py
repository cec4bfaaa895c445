"""Which workloads expose each catalogued bug, as `p2msim matrix --record` measured it (not as claimed).

``Bug.workloads`` are the workloads the matrix tries a bug on; what `p2msim
list` shows under "exposed by" is only where a run found it: the recorded
seeds to the first detection per strategy (None: not found within ``SEEDS``).
The record lives in ``exposed.json`` beside this module; the tests re-run the
first detecting seed of every recorded random-strategy cell.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

RECORD = Path(__file__).with_name("exposed.json")
REPRODUCIBLE = ("random", "pct")  # an uncontrolled detection cannot be replayed: it is not shown


def load() -> dict[str, Any]:
    if not RECORD.exists():
        return {"seeds": 0, "bugs": {}}
    return orjson.loads(RECORD.read_bytes())


def record(cells: list[dict[str, Any]], seeds: int) -> Path:
    """Merge a matrix run's cells into the record (bugs it did not run keep theirs)."""
    data = load()
    fresh: dict[str, dict[str, dict[str, int | None]]] = {}
    for c in cells:
        fresh.setdefault(c["bug"], {}).setdefault(c["workload"], {})[c["strategy"]] = c["seeds_to_first"]
    data["bugs"].update(fresh)
    data["seeds"] = seeds
    RECORD.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    return RECORD


def exposed_by(bug: str) -> dict[str, dict[str, int]] | None:
    """workload -> {strategy: seeds to first} where the matrix found ``bug``; None if never measured."""
    cells = load()["bugs"].get(bug)
    if cells is None:
        return None
    found = {w: {s: n for s, n in by.items() if n is not None and s in REPRODUCIBLE} for w, by in cells.items()}
    return {w: by for w, by in sorted(found.items()) if by}


def describe(bug: str) -> str:
    found = exposed_by(bug)
    if found is None:
        return f"exposure not measured (p2msim matrix --bug {bug} --record)"
    if not found:
        return "exposed by: no workload (the matrix did not find it)"
    parts = [f"{w} ({', '.join(f'{s} {n}' for s, n in sorted(by.items()))})" for w, by in found.items()]
    return "exposed by: " + "; ".join(parts) + " (seeds to the first detection)"
