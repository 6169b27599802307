"""How slowly a client may send a request body, and one clock that holds every read to it.

A timer per ``receive`` (``asyncio.timeout_at``) costs ~8 µs of the event loop per
request, more than reading a small body itself. A :class:`PaceKeeper` instead keeps the
reads under way in a table, and one task looks at them every tick: a read behind its
pace is cancelled there, and ends as too slow. A read costs a table entry; a deadline
holds to within one tick.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

TICK_S = 0.1


@dataclass(frozen=True)
class BodyPace:
    """How slowly a client may send a body: all of it within ``timeout_s``, and, after
    the first ``grace_s``, at least ``min_bytes_per_s`` on average (0: no minimum)."""

    timeout_s: float
    min_bytes_per_s: int
    grace_s: float = 5.0

    def deadline(self, started: float, received: int) -> float:
        """When the body is too slow unless more of it arrives first."""
        overall = started + self.timeout_s
        if self.min_bytes_per_s <= 0:
            return overall
        # received >= rate * (t - started - grace)  <=>  t <= started + grace + received / rate
        return min(overall, started + self.grace_s + received / self.min_bytes_per_s)


class BodyRead:
    """One body read under way: when it began, what has arrived, whether it fell behind."""

    __slots__ = ("cancelling", "late", "received", "started", "task")

    def __init__(self, task: asyncio.Task[object], started: float) -> None:
        self.task = task
        self.started = started
        self.received = 0
        self.late = False  # set by the keeper just before it cancels the task
        self.cancelling = task.cancelling()  # cancellations asked before the read began

    def cancelled_by_keeper_alone(self) -> bool:
        """On a CancelledError: take back the keeper's cancellation, and say whether it
        was the only one (else someone else, the server, wants the task cancelled too)."""
        return self.late and self.task.uncancel() <= self.cancelling


class PaceKeeper:
    """Holds every body read of one server to ``pace`` with a single ticking task."""

    def __init__(self, pace: BodyPace, tick_s: float = TICK_S) -> None:
        self.pace = pace
        self.tick_s = tick_s
        self._reads: dict[asyncio.Task[object], BodyRead] = {}
        self._ticker: asyncio.Task[None] | None = None

    def begin(self) -> BodyRead:
        """Register the current task's read; :meth:`end` it in a ``finally``."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a body is read inside a task")
        loop = task.get_loop()
        read = BodyRead(task, loop.time())
        self._reads[task] = read
        ticker = self._ticker
        if ticker is None or ticker.done() or ticker.get_loop() is not loop:
            self._ticker = loop.create_task(self._tick())
        return read

    @property
    def ticking(self) -> bool:
        """Whether the ticking task runs (it ends once no read is left to watch)."""
        return self._ticker is not None and not self._ticker.done()

    def end(self, read: BodyRead) -> None:
        """The read is over, however it ended."""
        self._reads.pop(read.task, None)

    async def _tick(self) -> None:
        """Cancel the reads behind their pace; stop once none is left at a tick."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick_s)
            now = loop.time()
            reads = [read for read in self._reads.values() if read.task.get_loop() is loop]
            if not reads:
                return
            for read in reads:
                if not read.late and now > self.pace.deadline(read.started, read.received):
                    read.late = True
                    read.task.cancel()
