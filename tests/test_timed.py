"""The timed strategy: virtual time that is deterministic, replays, and adds up."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from simulator.engine.scenario import Scenario
from simulator.engine.simulation import Config, ConfigError, run
from simulator.riscv.costs import KINDS, CostsError, load

LATENCY = 10_000  # a fixed IPI flight, far above everything else the test's table charges


def _log(tmp_path: Path, name: str, **kw: object) -> tuple[list[dict], str]:
    log = tmp_path / f"{name}.jsonl"
    r = run(Config("teardown-under-load", strategy="timed", log=str(log), **kw))  # type: ignore[arg-type]
    return [orjson.loads(x) for x in log.read_bytes().splitlines()], r.digest


def test_timed_gives_the_same_log_bytes_on_trio_and_asyncio_and_t_follows_seq(tmp_path: Path) -> None:
    a, da = _log(tmp_path, "trio", seed=3, backend="trio")
    _b, db = _log(tmp_path, "asyncio", seed=3, backend="asyncio")
    assert (tmp_path / "trio.jsonl").read_bytes() == (tmp_path / "asyncio.jsonl").read_bytes() and da == db
    assert all(list(x)[:4] == ["seq", "t", "hart", "event"] for x in a)
    last: dict[object, int] = {}
    for x in a:  # each actor's clock never goes back
        assert x["t"] >= last.get(x["hart"], 0), x
        last[x["hart"]] = x["t"]
    timing = a[-1]["stats"]["timing"]
    assert timing["cycles"] >= max(last.values()) > 0
    assert timing["ipis"] == a[-1]["stats"]["fences_sent"] > 0


def test_a_timed_run_replays_to_the_same_clocks(tmp_path: Path) -> None:
    cfg = Config("teardown-under-load", seed=6, strategy="timed", log=str(tmp_path / "a.jsonl"))
    first = run(cfg)
    again = run(Config(**{**cfg.__dict__, "log": str(tmp_path / "b.jsonl")}), decisions=first.decisions)
    assert again.digest == first.digest and again.stats["timing"] == first.stats["timing"]
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_untimed_runs_have_no_clock() -> None:
    r = run(Config("teardown-under-load", seed=1, steps=30_000))
    assert "timing" not in r.stats


async def _shrink_under_load(sim: Scenario) -> None:
    """vCPUs of dom1 on harts 1-3 touch 4 MiB; hart 0 gives back the first 2 MiB (one level-0 table freed)."""
    d = await sim.create_domain(1, vcpus=4, pool_pages=16)
    await sim.populate(d, 0x80000, 1024)
    prog = sim.pattern([(0x80000, 1024)])
    for h in (1, 2, 3):
        await sim.run_vcpu(d.vcpus[h], h, prog)
    await sim.elapse(3000)
    await sim.on(0, "decrease_reservation", sim.xen.decrease_reservation, d, 0x80000, 512)
    await sim.elapse(500)
    for h in (1, 2, 3):
        await sim.deschedule(h)
    await sim.destroy(d)


def test_a_hypercalls_duration_holds_its_fence_round_trips(tmp_path: Path) -> None:
    costs = tmp_path / "costs.toml"
    lines = [f"[{k}]\ncycles = {1 if k == 'step' else 0}\n" for k in KINDS]
    costs.write_text("".join(lines) + f"[ipi_latency]\nlow = {LATENCY}\nmedian = {LATENCY}\np99 = {LATENCY}\n"
                     f"high = {LATENCY}\n")  # fmt: skip
    log = tmp_path / "run.jsonl"
    r = run(
        Config("inline", seed=2, strategy="timed", costs=str(costs), speculate=0.0, log=str(log)),
        main=_shrink_under_load,
    )
    assert r.clean, r.explain()
    events = [orjson.loads(x) for x in log.read_bytes().splitlines()]
    start = next(i for i, e in enumerate(events) if e.get("op") == "decrease_reservation")
    end = next(i for i, e in enumerate(events[start + 1 :], start + 1) if e["event"] == "hypercall")
    remote = [e for e in events[start:end] if e["event"] == "p2m_tlb_flush" and e["hart"] == 0 and set(e["mask"]) - {0}]
    assert remote  # the table's flush in p2m_free_subtree (the unlock's finds need_flush clear)
    span = r.stats["timing"]["hypercalls"]["decrease_reservation"]
    assert span["count"] == 1
    assert span["total"] >= span["flushing"] >= len(remote) * LATENCY
    # every remote fence was acknowledged no sooner than its IPI could arrive
    sent = {e["id"]: e["t"] for e in events if e["event"] == "fence.sent"}
    acked = [(e["id"], e["t"]) for e in events if e["event"] == "fence.acked"]
    assert acked and all(t >= sent[i] + LATENCY for i, t in acked)
    # and the durations add up: no flush inside a hypercall is longer than the hypercall
    for op, s in r.stats["timing"]["hypercalls"].items():
        assert s["flushing"] <= s["total"], op


def test_the_default_table_has_a_source_for_every_kind() -> None:
    c = load()
    for k in (*KINDS, "ipi_latency"):
        assert c.sources.get(k), k
        assert "estimate" in c.sources[k] or "measured" in c.sources[k] or "derived" in c.sources[k], k


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[pte_reed]\ncycles = 3\n", "unknown kind 'pte_reed'"),
        ("[pte_read]\ncycles = -1\n", "pte_read.cycles must be a whole number"),
        ("[pte_read]\ncycle = 1\n", "[pte_read] has 'cycle'"),
        ("[step]\ncycles = 0\n", "step.cycles must be at least 1"),
        ("[ipi_latency]\nlow = 900\nmedian = 100\n", "low <= median <= p99 <= high"),
        ("pte_read = 3\n", "[pte_read] must be a table"),
        ("[pte_read\n", "is not TOML"),
    ],
)
def test_a_bad_cost_table_is_a_one_line_error(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(CostsError, match=None) as exc:
        load(f)
    assert message in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(ConfigError):
        run(Config("teardown-under-load", strategy="timed", costs=str(f)))


def test_costs_without_timed_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[pte_read]\ncycles = 3\n")
    with pytest.raises(ConfigError, match="needs --strategy timed"):
        run(Config("teardown-under-load", costs=str(f)))


def test_the_scaled_table_scales_only_fence_costs() -> None:
    c = load()
    half = c.scaled(0.5)
    assert half.sbi_ecall == round(c.sbi_ecall * 0.5) and half.ipi_latency[1] == round(c.ipi_latency[1] * 0.5)
    assert half.pte_read == c.pte_read and half.scrub_4k == c.scrub_4k


def test_a_replay_says_when_the_cost_table_changed(tmp_path: Path) -> None:
    from simulator.hunt.replay import replay

    costs = tmp_path / "c.toml"
    costs.write_text("[pte_read]\ncycles = 30\n")
    log = tmp_path / "run.jsonl"
    run(Config("teardown-under-load", seed=1, strategy="timed", costs=str(costs), log=str(log), steps=40_000))
    same = replay(log)
    assert same.same_digest and not same.changed
    costs.write_text("[pte_read]\ncycles = 31\n")
    moved = replay(log)
    assert any("the cost table changed since this was recorded" in c for c in moved.changed)
