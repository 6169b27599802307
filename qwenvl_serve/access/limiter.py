"""Per-key rpm, tpm and max_concurrent, and the whole-instance max_in_flight. Pure.

:meth:`Limiter.admit` decides and books in one synchronous step, so on one event loop
no two requests can both take the last slot. Every admitted request gets a
:class:`Ticket` that must be given back once with :meth:`Limiter.release`, which
replaces the tokens reserved from ``max_tokens`` with the tokens actually used.
Limits hold per server process.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from qwenvl_serve.access.config import ApiKeyConfig
from qwenvl_serve.access.windows import WINDOW_SECONDS, SlidingWindow

RPM = "rpm"
TPM = "tpm"
MAX_CONCURRENT = "max_concurrent"
MAX_IN_FLIGHT = "max_in_flight"


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused and when to retry (whole seconds)."""

    reason: str
    retry_after: int


@dataclass
class KeyState:
    """What one key has in flight and has spent in the current window."""

    rpm: int | None
    tpm: int | None
    max_concurrent: int | None
    requests: SlidingWindow = field(default_factory=SlidingWindow)
    tokens: SlidingWindow = field(default_factory=SlidingWindow)
    in_flight: int = 0
    reserved_tokens: int = 0

    def refusal(self, requested_tokens: int, now: float) -> Refusal | None:
        """Why this key may not start another request now, or None."""
        if self.max_concurrent is not None and self.in_flight >= self.max_concurrent:
            return Refusal(MAX_CONCURRENT, 1)
        if self.rpm is not None and self.requests.total(now) >= self.rpm:
            return Refusal(RPM, self.requests.seconds_until_below(now, self.rpm - 1))
        if self.tpm is not None:
            spent = self.tokens.total(now) + self.reserved_tokens
            # A request bigger than the whole budget still runs when nothing else counts,
            # otherwise it could never run at all.
            if spent > 0 and spent + requested_tokens > self.tpm:
                ceiling = max(0, self.tpm - self.reserved_tokens - requested_tokens)
                return Refusal(TPM, self.tokens.seconds_until_below(now, ceiling))
        return None


@dataclass
class Ticket:
    """One admitted request's booking."""

    key: KeyState | None
    reserved_tokens: int
    released: bool = False


class Limiter:
    """The limits of one server process."""

    def __init__(
        self, keys: Iterable[ApiKeyConfig], max_in_flight: int | None, span: float = WINDOW_SECONDS
    ) -> None:
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._keys = {
            key.name: KeyState(
                rpm=key.rpm,
                tpm=key.tpm,
                max_concurrent=key.max_concurrent,
                requests=SlidingWindow(span),
                tokens=SlidingWindow(span),
            )
            for key in keys
        }

    def admit(self, key_name: str, requested_tokens: int, now: float) -> Ticket | Refusal:
        """Book a request of ``key_name`` that may produce ``requested_tokens``, or refuse."""
        if self.max_in_flight is not None and self.in_flight >= self.max_in_flight:
            return Refusal(MAX_IN_FLIGHT, 1)
        key = self._keys.get(key_name)
        if key is not None:
            refusal = key.refusal(requested_tokens, now)
            if refusal is not None:
                return refusal
            key.requests.add(now, 1)
            key.in_flight += 1
            key.reserved_tokens += requested_tokens
        self.in_flight += 1
        return Ticket(key=key, reserved_tokens=requested_tokens)

    def release(self, ticket: Ticket, used_tokens: int, now: float) -> None:
        """End a request: free its slots and charge ``used_tokens`` to its key's tpm."""
        if ticket.released:
            return
        ticket.released = True
        self.in_flight -= 1
        if ticket.key is not None:
            ticket.key.in_flight -= 1
            ticket.key.reserved_tokens -= ticket.reserved_tokens
            ticket.key.tokens.add(now, used_tokens)
