"""Violations grouped by root cause, and the one way every command counts them.

A bug shows as many violations (each stale use of each entry on each hart),
but it has one cause: the step the decision procedure (``engine.cause``)
found missing, and the function it belongs in.  Reports lead with causes and
give one full causal chain per cause, so eight violations of one missing
flush read as one problem, not eight.

Three numbers, used the same way by ``run``, ``replay``, ``inspect`` and the
log: *violations* (the findings, each with its chain in the log), *causes*,
and *harmful uses* (every use that did harm, a stale entry used again and
again included).  A report
that lists fewer violations than there are says how many it shows; no count
that was capped is ever called distinct.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulator.engine.oracle import Violation

MEMBERS_KEPT = 64  # violation numbers listed per cause (the count goes on)


def key(v: Violation) -> tuple[str, ...]:
    """What makes two violations one cause: the defence the decision procedure found missing and the
    function it belongs in (how the schedule met it - no flush at all, one too late - is a case of it);
    for findings it does not explain (invariants, panics, deadlocks), the class and the headline with
    its numbers taken out."""
    if v.cause is not None:
        return (v.cause.defence, v.cause.function)
    return (v.cls, re.sub(r"0x[0-9a-f]+|\d[\d,]*", "#", v.missing or v.headline))


@dataclass
class Group:
    key: tuple[str, ...]
    title: str  # the first violation's missing step (from the events), or its class and headline
    classes: list[str] = field(default_factory=list)  # in the order they were seen
    cases: list[str] = field(default_factory=list)  # the decision procedure's cases, in the order seen
    violations: int = 0
    members: list[int] = field(default_factory=list)  # violation numbers (1-based, as in the log)

    def add(self, n: int, v: Violation) -> None:
        self.violations += 1
        if v.cls not in self.classes:
            self.classes.append(v.cls)
        if v.cause is not None and v.cause.case not in self.cases:
            self.cases.append(v.cause.case)
        if len(self.members) < MEMBERS_KEPT:
            self.members.append(n)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"title": self.title, "classes": self.classes, "violations": self.violations}
        if self.cases:
            out |= {"defence": self.key[0], "function": self.key[1], "cases": self.cases}
        out["first"] = self.members[0]
        out["members"] = self.members
        return out


def title(v: Violation) -> str:
    if v.cause is not None:
        return f"{v.cause.defence} missing in {v.cause.function}: {_first_clause(v.missing or v.cause.text)}"
    if v.missing:
        return f"{v.cls}: {_first_clause(v.missing)}"
    return f"{v.cls}: {v.headline}"


def _first_clause(text: str) -> str:
    """The missing step without the evidence after it (up to the first ': ' or '; ')."""
    cut = min((i for i in (text.find(": "), text.find("; ")) if i > 0), default=len(text))
    return text[:cut]


class Groups:
    """The causes of one run, in the order their first violation was found."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[str, ...], Group] = {}

    def add(self, n: int, v: Violation) -> bool:
        """Count violation number ``n``; True if it is the first of a new cause."""
        k = key(v)
        g = self.by_key.get(k)
        new = g is None
        if g is None:
            g = self.by_key[k] = Group(k, title(v))
        g.add(n, v)
        return new

    def to_json(self) -> list[dict[str, Any]]:
        return [g.to_json() for g in self.by_key.values()]


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def counts(uses: int, violations: int, causes: int) -> str:
    """The one phrase every command uses: '2 violations, 1 cause (3 harmful uses, repeats included)'."""
    more = f" ({uses:,} harmful uses, repeats included)" if uses > violations else ""
    return f"{plural(violations, 'violation')}, {plural(causes, 'cause')}{more}"


def render(causes: list[dict[str, Any]], explained: dict[int, str], shown: int, total: int) -> list[str]:
    """Lines for a report: each cause with its violations, then the full chain of its first one.

    ``explained``: violation number -> its full explanation, for those the run kept.
    """
    out: list[str] = []
    for i, c in enumerate(causes, 1):
        members = c["members"]
        listed = ", ".join(str(m) for m in members[:12]) + (", ..." if c["violations"] > 12 else "")
        out.append("")
        out.append(
            f"CAUSE {i} of {len(causes)}: {c['title']}  [{plural(c['violations'], 'violation')}: {listed}; "
            f"{', '.join(c['classes'])}" + (f"; {', '.join(c['cases'])}" if c.get("cases") else "") + "]"
        )
        first = c["first"]
        if first in explained:
            out.append(f"VIOLATION {first} of {total}: {explained[first]}")
        others = [m for m in members[1:] if m in explained]
        if others:
            out.append("")
        for m in others:
            if m in explained:
                head = explained[m].split("\n", 1)[0]
                out.append(f"VIOLATION {m} of {total} (cause {i}, as violation {first}): {head}")
    if shown < total:
        out.append("")
        out.append(
            f"({shown:,} of {total:,} violations kept in full here, the first of every cause among them; "
            "the log has every one: --log FILE, then p2msim inspect FILE)"
        )
    return out
