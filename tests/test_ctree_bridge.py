"""C that awaits the conductor: a compiled loop whose callbacks are conductor steps, interleaved with a
Python actor, the same on trio and asyncio (the first piece of running a Xen tree's own C)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from simulator.ctree.bridge import BridgeError, await_only, fail, greenlet_spawn
from simulator.engine.conductor import Conductor
from simulator.engine.strategies import RandomStrategy

C_SOURCE = """
static int step_cb(int);
int walk(int n)
{
    int s = 0;
    for ( int i = 0; i < n; i++ )
    {
        int r = step_cb(i);
        if ( r < 0 )
            return -1;
        s += r;
    }
    return s;
}
"""


@pytest.fixture(scope="module")
def spike(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc) on this machine: the C side of p2msim needs one")
    import cffi

    d = tmp_path_factory.mktemp("cbridge")
    ffi = cffi.FFI()
    ffi.cdef('extern "Python" int step_cb(int);\nint walk(int n);')
    ffi.set_source("_p2msim_bridge_test", C_SOURCE)
    so = ffi.compile(tmpdir=str(d))
    spec = importlib.util.spec_from_file_location("_p2msim_bridge_test", so)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules["_p2msim_bridge_test"] = mod
    return mod


def _run(mod: Any, seed: int, backend: str, n: int = 20, fail_at: int = -1) -> list[tuple[str, int, int]]:
    trace: list[tuple[str, int, int]] = []
    ctx: dict[str, Any] = {}

    @mod.ffi.def_extern()
    def step_cb(i: int) -> int:
        c, actor = ctx["c"], ctx["actor"]
        try:
            await_only(c.step(actor))
            if i == fail_at:
                raise ValueError(f"the model refused step {i}")
        except Exception as exc:
            fail(exc)
            return -1
        trace.append(("C", i, c.seq))
        return i

    async def main() -> None:
        c = Conductor(RandomStrategy(seed), 10_000)
        a, b = c.add_actor("c-side"), c.add_actor("py-side")
        ctx.update(c=c, actor=a)

        async def c_side() -> None:
            try:
                r = await greenlet_spawn(mod.lib.walk, n)
                trace.append(("C-done", r, c.seq))
            except ValueError as exc:
                trace.append(("C-failed", len(str(exc)), c.seq))

        async def py_side() -> None:
            for i in range(n):
                await c.step(b)
                trace.append(("P", i, c.seq))

        async with anyio.create_task_group() as tg:
            tg.start_soon(c.run_actor, a, c_side)
            tg.start_soon(c.run_actor, b, py_side)
            await anyio.sleep(0)
            c.begin()

    anyio.run(main, backend=backend)
    return trace


def test_c_callbacks_are_conductor_steps_interleaved_with_python(spike: Any) -> None:
    shapes = {"".join(t[0][0] for t in _run(spike, seed, "trio") if t[0] in "CP") for seed in range(6)}
    assert any("CP" in s and "PC" in s for s in shapes), shapes  # the C was preempted mid-loop
    t = _run(spike, 1, "trio")
    assert ("C-done", sum(range(20))) in [x[:2] for x in t]  # every callback returned its value into the C
    steps = [x[2] for x in t if x[0] in ("C", "P")]
    assert len(steps) == 40 and steps == sorted(set(steps))  # 40 atomic actions, one at a time, in order


def test_the_same_seed_gives_the_same_interleaving_on_both_backends(spike: Any) -> None:
    for seed in range(4):
        assert _run(spike, seed, "trio") == _run(spike, seed, "asyncio")


def test_an_error_in_a_callback_reaches_the_caller_of_the_c(spike: Any) -> None:
    t = _run(spike, 2, "trio", fail_at=5)
    assert [x[1] for x in t if x[0] == "C"] == [0, 1, 2, 3, 4]  # the C stopped at the refused step
    assert any(x[0] == "C-failed" for x in t) and not any(x[0] == "C-done" for x in t)


def test_await_only_outside_a_spawned_greenlet_is_refused() -> None:
    async def nothing() -> None:
        return None

    coro = nothing()
    with pytest.raises(BridgeError, match="outside greenlet_spawn"):
        await_only(coro)
    coro.close()


def test_the_bridge_module_has_no_engine_import() -> None:
    src = (Path(__file__).resolve().parents[1] / "simulator" / "ctree" / "bridge.py").read_text()
    assert "simulator.engine" not in src  # the C side is driven by the engine, never the other way
