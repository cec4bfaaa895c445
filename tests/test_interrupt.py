"""Nothing is lost: Ctrl-C and failing scripts still leave a complete, parseable log."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from simulator.engine.log import LOG_SCHEMA_VERSION

FOREVER = """
async def main(sim):
    d = await sim.create_domain(1, vcpus=2, pool_pages=4)
    await sim.populate(d, 0x10, 32)
    await sim.run_vcpu(d.vcpus[0], 0, sim.pattern([(0x10, 32)]))
    await sim.run_vcpu(d.vcpus[1], 1, sim.pattern([(0x10, 32)]))
    while True:
        await sim.elapse(1000)
        await sim.on(0, "remove", sim.xen.decrease_reservation, d, 0x10, 1)
        await sim.populate(d, 0x10, 1)
"""


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_sigint_leaves_a_complete_log_that_says_where_it_stopped(tmp_path: Path, backend: str) -> None:
    script = tmp_path / "forever.py"
    script.write_text(FOREVER)
    log = tmp_path / "run.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator",
            "run",
            str(script),
            "--pcpus",
            "2",
            "--steps",
            "1000000000",
            "--log",
            str(log),
            "--backend",
            backend,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not log.exists() or log.stat().st_size < 2_000_000):
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert err.startswith("p2msim: interrupted at step ") and err.count("\n") == 1 and "Traceback" not in err
    assert str(log) in err
    lines = [orjson.loads(x) for x in log.read_bytes().splitlines()]  # every line parses
    assert lines[0]["event"] == "run.start"
    assert lines[-1]["event"] == "run.interrupted" and lines[-1]["decisions"]
    stopped_at = int(err.split("at step ")[1].split(";")[0].replace(",", ""))
    assert lines[-1]["seq"] == stopped_at
    assert max(x["seq"] for x in lines) == stopped_at


def test_inspect_reads_an_interrupted_log(tmp_path: Path) -> None:
    from simulator.cli import main as cli_main

    log = tmp_path / "cut.jsonl"
    log.write_bytes(
        orjson.dumps(
            {
                "seq": 0,
                "hart": None,
                "event": "run.start",
                "v": LOG_SCHEMA_VERSION,
                "version": "0.1.0",
                "config": {"workload": "w", "seed": 1, "pcpus": 2},
            }
        )
        + b"\n"
        + orjson.dumps({"seq": 77, "hart": None, "event": "run.interrupted", "decisions": [[0, 1]]})
        + b"\n"
    )
    assert cli_main(["inspect", str(log)]) == 0
