"""Where a run's code came from: the workload and variant files by resolved path and source hash, and
a hash of the model's source.

A schedule or a log is replayed later, often elsewhere: from another
directory (a relative workload path no longer resolves), after the user
edited their workload, or on another p2msim.  Recording what ran lets replay
find the files again and, when one changed, say so ("the workload changed
since this was recorded (hash A -> B)") instead of reporting a divergence
at some step that only a changed input explains.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # the simulator package
MODEL = ("riscv", "xen", "engine")  # what decides a run (not hunt/, report/ or the command line)
# engine modules that decide no run: reading logs back, documenting parameters, this one
TOOLS = frozenset({"logread", "params", "provenance"})


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


@cache
def model_hash() -> str:
    """One hash of the machine, the Xen model and the engine, file by file in path order."""
    h = hashlib.blake2b(digest_size=8)
    for part in MODEL:
        for f in sorted((ROOT / part).rglob("*.py")):
            if part == "engine" and f.stem in TOOLS:
                continue
            h.update(f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def file_hash(path: str | Path) -> str | None:
    try:
        return _digest(Path(path).read_bytes())
    except OSError:
        return None


def _file(name: str, path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {"name": name, "path": None, "hash": None}
    p = Path(path).resolve()
    return {"name": name, "path": str(p), "hash": file_hash(p)}


def record(
    workload: str,
    workload_file: str | None,
    variant_files: list[tuple[str, str | None]],
    costs: tuple[str, list[Path]] | None = None,
) -> dict[str, Any]:
    """What a log's run.start and a schedule carry as ``sources``; ``costs``, for a timed run: the name
    of its cost table and the files it is made of (the defaults, then ``--costs``), hashed together."""
    out: dict[str, Any] = {
        "model": model_hash(),
        "workload": _file(workload, workload_file),
        "variants": [_file(name, path) for name, path in variant_files],
    }
    if costs is not None:
        name, files = costs
        try:
            digest: str | None = _digest(b"\0".join(f.read_bytes() for f in files))
        except OSError:
            digest = None
        out["costs"] = {"name": name, "path": str(files[-1].resolve()), "hash": digest}
    return out


def locate(name: str, recorded: dict[str, Any] | None, beside: Path) -> str | None:
    """Where a recorded file is now, if ``name`` does not resolve from here: its recorded absolute path,
    or the same relative path beside the log or schedule being replayed."""
    if not name.endswith(".py") or Path(name).is_file():
        return None
    for candidate in ((recorded or {}).get("path"), beside / name):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


def changes(recorded: dict[str, Any] | None, now: dict[str, Any]) -> list[str]:
    """What differs between the recorded sources and the ones this replay runs: one line each."""
    if not recorded:
        return []
    out = []
    if recorded.get("model") and recorded["model"] != now["model"]:
        out.append(f"the model changed since this was recorded (source hash {recorded['model']} -> {now['model']})")
    was, is_ = recorded.get("workload") or {}, now["workload"]
    if was.get("hash") and is_.get("hash") and was["hash"] != is_["hash"]:
        out.append(
            f"the workload changed since this was recorded ({is_['path'] or is_['name']}: hash {was['hash']} -> "
            f"{is_['hash']})"
        )
    was, is_ = recorded.get("costs") or {}, now.get("costs") or {}
    if was.get("hash") and is_.get("hash") and was["hash"] != is_["hash"]:
        out.append(
            f"the cost table changed since this was recorded ({is_['name']}: hash {was['hash']} -> {is_['hash']})"
        )
    for old, new in zip(recorded.get("variants") or [], now["variants"], strict=False):
        if old.get("hash") and new.get("hash") and old["hash"] != new["hash"]:
            out.append(
                f"the variant changed since this was recorded ({new['path'] or new['name']}: hash {old['hash']} -> "
                f"{new['hash']})"
            )
    return out
