"""Virtual cycles: what each kind of action costs under the ``timed`` strategy, from a TOML table.

The machine is where time is spent (a PTE read, a fence, an IPI in flight, an
M-mode trap), so the table lives here; Xen's own costs (a hypercall's entry, a
lock's cache line) are in it too, charged where Xen's code does those things.

Invariants:

* A run that is not timed has ``ZERO``: nothing is charged, so its schedule,
  log and digest are those of a machine without a clock.
* Every action costs at least ``step`` (at least 1), so an actor's clock grows
  with every step and two actors at the same time take turns.
* The defaults are ``costs.toml`` beside this module: each with its source, or
  the word *estimate* and why; a user's file (``--costs FILE``) overrides any of
  them and must name only kinds the table has.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

DEFAULTS_FILE = Path(__file__).with_name("costs.toml")

# kind -> what one charge of it is (in the order of costs.toml and docs/costs.md)
KINDS: dict[str, str] = {
    "step": "any modelled action (a few instructions), charged at every conductor step",
    "tlb_hit": "a guest access the TLB serves, on top of its step",
    "pte_read": "one PTE read by the G-stage walker, per level",
    "pte_store": "one PTE store by the hypervisor (write_pte)",
    "hfence_gvma": "a local HFENCE.GVMA of everything (or of a VMID)",
    "hfence_gvma_page": "a local HFENCE.GVMA of one address, per page of a ranged fence",
    "sbi_ecall": "an SBI ecall's entry into M-mode and its return (the caller's)",
    "ipi_send": "OpenSBI raising one target's IPI (its MSIP/IMSIC write), per target",
    "ipi_trap": "the target's M-mode interrupt entry and return, around its local fence",
    "ack": "the target's acknowledgement reaching the caller (a cache line moving)",
    "scrub_4k": "zeroing one 4 KiB page (clear_page, the scrubber)",
    "lock": "an uncontended lock acquisition (one atomic)",
    "lock_contended": "taking a lock another hart held: the cache line comes back",
    "hypercall": "a hypercall's trap into the hypervisor and its return",
}
# the IPI's flight, drawn per IPI from the seeded fence stream: its quantiles 0, 50%, 99% and 100%,
# log-linear between them
LATENCY = ("low", "median", "p99", "high")
FENCE_KINDS = ("sbi_ecall", "ipi_send", "ipi_trap", "ack", "hfence_gvma", "hfence_gvma_page")  # and ipi_latency


class CostsError(Exception):
    """A cost table that cannot be used (exit code 2)."""


class Costs:
    """One table: an int per kind, and the IPI latency's quantiles (low, median, p99, high)."""

    __slots__ = (*KINDS, "ipi_latency", "sources")

    def __init__(self, values: dict[str, int], latency: tuple[int, ...], sources: dict[str, str]) -> None:
        for k in KINDS:
            setattr(self, k, values[k])
        self.ipi_latency = latency
        self.sources = sources

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {k: getattr(self, k) for k in KINDS}
        body["ipi_latency"] = dict(zip(LATENCY, self.ipi_latency, strict=True))
        return body

    def scaled(self, factor: float) -> Costs:
        """The same table with every fence cost (and the IPI's flight) times ``factor``: the sensitivity."""
        values = {k: getattr(self, k) for k in KINDS}
        for k in FENCE_KINDS:
            values[k] = max(0, round(values[k] * factor))
        lat = tuple(max(0, round(x * factor)) for x in self.ipi_latency)
        return Costs(values, lat, {**self.sources, "scaled": f"fence costs x{factor:g}"})

    def to_toml(self) -> str:
        """The table as a cost file (``--costs``) that loads back to the same values."""
        out = []
        for k in KINDS:
            out.append(f"[{k}]\ncycles = {getattr(self, k)}\nsource = {_quote(self.sources.get(k, ''))}\n")
        lat = "\n".join(f"{n} = {v}" for n, v in zip(LATENCY, self.ipi_latency, strict=True))
        out.append(f"[ipi_latency]\n{lat}\nsource = {_quote(self.sources.get('ipi_latency', ''))}\n")
        return "\n".join(out)

    def draw_latency(self, rng: Any) -> int:
        """One IPI's flight in cycles: one random() from the stream, through the quantiles (log-linear
        between two, so that the tail is long and rare, as the measured interrupt latencies are)."""
        low, median, p99, high = self.ipi_latency
        u = rng.random()
        if u < 0.5:
            a, b, x = low, median, u / 0.5
        elif u < 0.99:
            a, b, x = median, p99, (u - 0.5) / 0.49
        else:
            a, b, x = p99, high, (u - 0.99) / 0.01
        if a <= 0 or b <= a:
            return a + round((b - a) * x)
        return round(a * (b / a) ** x)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


ZERO = Costs(dict.fromkeys(KINDS, 0), (0, 0, 0, 0), {})


def _table(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise CostsError(f"cannot read cost table {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CostsError(f"cost table {path} is not TOML: {exc}") from None


def _nat(path: Path, where: str, v: Any) -> int:
    if type(v) is not int or v < 0:
        raise CostsError(f"cost table {path}: {where} must be a whole number of cycles (0 or more), not {v!r}")
    return v


def load(path: str | Path | None = None) -> Costs:
    """The defaults, with a user's file (if any) over them.  Raises CostsError naming the problem."""
    values: dict[str, int] = {}
    sources: dict[str, str] = {}
    latency = [0, 0, 0, 0]
    for p in (DEFAULTS_FILE, *([Path(path)] if path else [])):
        doc = _table(p)
        for kind, entry in doc.items():
            if kind != "ipi_latency" and kind not in KINDS:
                raise CostsError(f"cost table {p}: unknown kind {kind!r} (kinds: {', '.join([*KINDS, 'ipi_latency'])})")
            if not isinstance(entry, dict):
                raise CostsError(f"cost table {p}: [{kind}] must be a table with 'cycles' and 'source'")
            allowed = {"source", *(LATENCY if kind == "ipi_latency" else ("cycles",))}
            extra = sorted(set(entry) - allowed)
            if extra:
                raise CostsError(f"cost table {p}: [{kind}] has {extra[0]!r} (it takes {', '.join(sorted(allowed))})")
            if kind == "ipi_latency":
                for i, k in enumerate(LATENCY):
                    if k in entry:
                        latency[i] = _nat(p, f"ipi_latency.{k}", entry[k])
            elif "cycles" in entry:
                values[kind] = _nat(p, f"{kind}.cycles", entry["cycles"])
            if "source" in entry:
                sources[kind] = str(entry["source"])
            elif p != DEFAULTS_FILE:
                sources[kind] = f"{p} (no source given)"
    missing = [k for k in KINDS if k not in values]
    if missing:
        raise CostsError(f"cost table {DEFAULTS_FILE} has no {missing[0]!r}: p2msim is installed incompletely")
    if values["step"] < 1:
        raise CostsError("cost table: step.cycles must be at least 1 (every action takes time)")
    if latency != sorted(latency):
        raise CostsError(
            f"cost table: ipi_latency needs low <= median <= p99 <= high, not {', '.join(map(str, latency))}"
        )
    return Costs(values, tuple(latency), sources)
