"""Regenerate the README's checked examples from real runs: ``python3 tests/readme_sync.py [--check]``.

Each checked block (see ``tests/test_readme.py``) is run again; where a shown line no longer matches
what the command prints, it is replaced by the printed one, and lines are added or dropped as the
output grew or shrank.  The ``...`` elisions the author chose stay where they are (an alignment of
least edits decides what each one stands for).  ``--check`` changes nothing and exits 1 if any block
would change; the test suite's ``test_readme.py`` is the same check, one block per test.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_readme import README, _norm, _split


def _fits(expected: str, actual: str) -> bool:
    a, h = _norm(actual), _norm(expected)
    return a.startswith(h[:-3].rstrip()) if h.endswith("...") else a == h


def align(expected: list[str], actual: list[str]) -> list[str]:
    """``expected`` edited as little as possible so that it matches ``actual`` (``...`` lines kept)."""

    @cache
    def cost(i: int, j: int) -> int:
        if i == len(expected):
            return len(actual) - j
        if expected[i].strip() == "...":
            return min(cost(i + 1, k) for k in range(j, len(actual) + 1))
        best = 1 + cost(i + 1, j)  # drop the shown line
        if j < len(actual):
            best = min(best, 1 + cost(i, j + 1))  # show a new line
            best = min(best, (0 if _fits(expected[i], actual[j]) else 1) + cost(i + 1, j + 1))
        return best

    out: list[str] = []
    i = j = 0
    while i < len(expected) or j < len(actual):
        here = cost(i, j)
        if i == len(expected):
            out.extend(actual[j:])
            break
        if expected[i].strip() == "...":
            k = next(k for k in range(j, len(actual) + 1) if cost(i + 1, k) == here)
            out.append(expected[i])
            i, j = i + 1, k
            continue
        if j < len(actual) and _fits(expected[i], actual[j]) and cost(i + 1, j + 1) == here:
            out.append(expected[i])
            i, j = i + 1, j + 1
        elif j < len(actual) and 1 + cost(i + 1, j + 1) == here:
            out.append(actual[j])
            i, j = i + 1, j + 1
        elif j < len(actual) and 1 + cost(i, j + 1) == here:
            out.append(actual[j])
            j += 1
        else:
            i += 1
    return out


def run_block(block: list[str]) -> list[str]:
    env = {**os.environ, "COLUMNS": "120", "TERM": "dumb", "NO_COLOR": "1"}
    new: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for cmd, expected in _split(block):
            argv = shlex.split(cmd)
            p = subprocess.run(
                [sys.executable, "-m", "simulator", *argv[1:]], cwd=tmp, capture_output=True, text=True, env=env
            )
            original = next(line for line in block if line.startswith("$ ") and line[2:].split("  #")[0].strip() == cmd)
            new.append(original)
            new.extend(align(expected, p.stdout.splitlines()))
    return new


def main(argv: list[str]) -> int:
    check = "--check" in argv
    lines = README.read_text().splitlines()
    out: list[str] = []
    changed = []
    i = 0
    while i < len(lines):
        out.append(lines[i])
        if lines[i].strip() == "<!-- checked -->":
            out.append(lines[i + 1])
            end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
            block = lines[i + 2 : end]
            fresh = run_block(block)
            if fresh != block:
                changed.append(i + 3)
            out.extend(fresh)
            i = end
            continue
        i += 1
    if changed:
        where = ", ".join(f"README.md:{n}" for n in changed)
        if check:
            print(f"readme_sync: {len(changed)} example(s) no longer match what the commands print: {where}")
            return 1
        README.write_text("\n".join(out) + "\n")
        print(f"readme_sync: regenerated {len(changed)} example(s): {where}")
    else:
        print("readme_sync: every checked example matches")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
