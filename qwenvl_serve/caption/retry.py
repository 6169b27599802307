"""When to try a request again, and how long to wait first."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# 429: slow down; 502/503/504: the server or the proxy in front of it is busy or restarting.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date).

    None when the header is missing or unreadable; a date in the past gives 0.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - now).total_seconds())
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, overridden by the server's ``Retry-After``."""

    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 300.0

    def should_retry(self, attempts_made: int) -> bool:
        """Whether another attempt is allowed after ``attempts_made`` failed ones."""
        return attempts_made < self.max_attempts

    def delay(self, attempts_made: int, retry_after: float | None, jitter: float) -> float:
        """Seconds to wait before the next attempt.

        ``retry_after`` (from the server) wins, capped at ``max_retry_after``; otherwise
        the backoff doubles per attempt up to ``max_delay``, and ``jitter`` in [0, 1)
        spreads it over its upper half so that parallel workers do not retry in step.
        """
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        backoff = min(self.max_delay, self.base_delay * 2.0 ** max(0, attempts_made - 1))
        return backoff * (0.5 + 0.5 * jitter)
