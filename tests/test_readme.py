"""Every output the README shows comes from a real run: the checked examples are run again here.

A fenced block right after a ``<!-- checked -->`` line is a session: each line that
starts with ``$ p2msim`` is a command (a trailing ``# comment`` is not part of it),
run in order in one scratch directory; the lines under it are what it prints.
A line ``...`` stands for any number of lines, a line ending in ``...`` for any line
that starts with what comes before, and durations (``0.7 s``) and digests may differ.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DURATION = re.compile(r"\d+(\.\d+)? s\b")
DIGEST = re.compile(r"\bdigest [0-9a-f]{16}\b")


def sessions() -> list[tuple[int, list[str]]]:
    lines = README.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        if line.strip() == "<!-- checked -->":
            assert lines[i + 1].startswith("```"), f"README.md:{i + 2}: a checked example must be a fenced block"
            end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
            out.append((i + 3, lines[i + 2 : end]))
    return out


def _norm(line: str) -> str:
    """Durations and digests may differ (a digest changes with any change to what a run reports)."""
    return DIGEST.sub("digest D", DURATION.sub("N s", line.rstrip()))


def _match(expected: list[str], actual: list[str]) -> bool:
    """Glob-style: '...' lines skip any number of lines, 'text ...' matches a prefix."""
    if not expected:
        return not actual
    head, rest = expected[0], expected[1:]
    if head.strip() == "...":
        return any(_match(rest, actual[k:]) for k in range(len(actual) + 1))
    if not actual:
        return False
    a, h = _norm(actual[0]), _norm(head)
    ok = a.startswith(h[:-3].rstrip()) if h.endswith("...") else a == h
    return ok and _match(rest, actual[1:])


def _split(block: list[str]) -> list[tuple[str, list[str]]]:
    steps: list[tuple[str, list[str]]] = []
    for line in block:
        if line.startswith("$ "):
            steps.append((line[2:].split("  #")[0].strip(), []))
        else:
            assert steps, "a checked block starts with a command"
            steps[-1][1].append(line)
    return steps


@pytest.mark.parametrize(("line", "block"), sessions(), ids=[f"README.md:{n}" for n, _ in sessions()])
def test_the_readme_example_is_what_the_command_prints(line: int, block: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "120", "TERM": "dumb", "NO_COLOR": "1"}
    for cmd, expected in _split(block):
        argv = shlex.split(cmd)
        assert argv[0] == "p2msim", cmd
        p = subprocess.run(
            [sys.executable, "-m", "simulator", *argv[1:]], cwd=tmp_path, capture_output=True, text=True, env=env
        )
        actual = p.stdout.splitlines()
        assert p.returncode in (0, 1, 5), (cmd, p.returncode, p.stderr)
        assert _match(expected, actual), f"README.md:{line}: `{cmd}` now prints:\n" + "\n".join(actual[:60])


def test_there_are_checked_examples() -> None:
    assert len(sessions()) >= 3


def test_the_readme_event_table_is_generated_from_the_one_definition() -> None:
    from simulator.report import schema

    p = subprocess.run([sys.executable, "-m", "simulator.report.schema", "--table"], capture_output=True, text=True)
    regenerate = "run: python3 -m simulator.report.schema --table"
    assert p.returncode == 0 and p.stdout.strip() in README.read_text(), regenerate
    assert len(schema.EVENTS) >= 40
