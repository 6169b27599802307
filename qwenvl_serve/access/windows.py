"""A sliding one-minute window of amounts (requests or tokens). Pure; time is passed in."""

from __future__ import annotations

import math
from collections import deque

WINDOW_SECONDS = 60.0


class SlidingWindow:
    """The sum of amounts added during the last ``span`` seconds."""

    def __init__(self, span: float = WINDOW_SECONDS) -> None:
        self.span = span
        self._events: deque[tuple[float, int]] = deque()
        self._total = 0

    def total(self, now: float) -> int:
        """The amount added during ``(now - span, now]``."""
        self._expire(now)
        return self._total

    def add(self, now: float, amount: int) -> None:
        """Record ``amount`` spent at ``now``."""
        self._expire(now)
        if amount > 0:
            self._events.append((now, amount))
            self._total += amount

    def seconds_until_below(self, now: float, ceiling: int) -> int:
        """Whole seconds (at least 1) until the total is at most ``ceiling``.

        When expiring every recorded event is not enough, the answer is the time until
        the last one expires: by then the window is empty.
        """
        self._expire(now)
        remaining = self._total
        when = now
        for stamp, amount in self._events:
            if remaining <= ceiling:
                break
            remaining -= amount
            when = stamp + self.span
        return max(1, math.ceil(when - now))

    def _expire(self, now: float) -> None:
        while self._events and self._events[0][0] <= now - self.span:
            _, amount = self._events.popleft()
            self._total -= amount
