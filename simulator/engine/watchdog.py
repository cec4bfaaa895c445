"""A run that stops stepping, or takes longer than it may, is interrupted from outside the simulation.

The step budget bounds what the conductor sees; a workload that loops without
awaiting the simulation (``while True: pass``, ``while True: await
anyio.sleep(0)``) never takes a step, so the budget cannot end it.  A daemon
thread watches the conductor's step counter: no step for ``stall`` seconds,
or the run past its ``limit`` (sweep's and matrix's ``--seed-timeout``), and it
interrupts the main thread the way Ctrl-C does, so the run ends through the
same path (the log's last line written, workers left clean).  The wall clock
decides only whether to stop: nothing it reads reaches the simulation, so a
run that finishes is the same run with or without the watchdog.
"""

from __future__ import annotations

import _thread
import threading
import time
from collections.abc import Callable
from types import TracebackType

STALL_SECONDS = 20.0  # no step for this long: the workload is not awaiting the simulation
POLL_SECONDS = 0.25
RETRIES, RETRY_SECONDS = 5, 2.0


class Watchdog:
    """``with Watchdog(lambda: conductor.seq, limit=...) as w:`` then ``w.reason`` after an interrupt."""

    def __init__(self, steps: Callable[[], int], limit: float | None = None, stall: float = STALL_SECONDS) -> None:
        self.steps = steps
        self.limit = limit
        self.stall = stall
        self.reason = ""  # "stall" or "timeout" once it fired
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="p2msim-watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        if threading.current_thread() is threading.main_thread():  # only the main thread can be interrupted
            self._thread.start()
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        started = last_change = time.monotonic()
        last = self.steps()
        while not self._done.wait(POLL_SECONDS):
            now = time.monotonic()
            seq = self.steps()
            if seq != last:
                last, last_change = seq, now
            if self.limit is not None and now - started > self.limit:
                self._fire("timeout")
                return
            if now - last_change > self.stall:
                self._fire("stall")
                return

    def _fire(self, reason: str) -> None:
        self.reason = reason
        # as SIGINT: KeyboardInterrupt in the main thread, by the event loop's own handler; asyncio's first
        # only cancels its task (which a busy loop never notices), its second raises: so again until done
        for _ in range(RETRIES):
            _thread.interrupt_main()
            if self._done.wait(RETRY_SECONDS):
                return
