"""What the access layers learn about one request, shared through the ASGI scope.

The outermost layer (observe) creates one :class:`RequestNotes` per request in
``scope["state"]``; inner layers fill it in (which key, which tokens, why refused), and
observe reads it once the response is done to count and log the request. These are
facts learned on the way in; what the response says (status, usage) is read once for
every layer, by the request's :func:`~qwenvl_serve.core.responses.watched` watch.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import Scope

from qwenvl_serve.asgi_body import header

NO_KEY = "-"  # the key label of requests that presented no valid key (or need none)
_STATE_ENTRY = "qwenvl_serve.request_notes"


@dataclass
class RequestNotes:
    """Per-request facts gathered by the access layers; never holds secrets or user text."""

    key_name: str = NO_KEY
    rejection: str | None = None  # a reason label when an access layer refused the request


def notes_for(scope: Scope) -> RequestNotes:
    """This request's notes, created on first use."""
    state = scope.setdefault("state", {})
    notes = state.get(_STATE_ENTRY)
    if not isinstance(notes, RequestNotes):
        notes = RequestNotes()
        state[_STATE_ENTRY] = notes
    return notes


def request_id_of(scope: Scope) -> str:
    """The id the request-id layer gave this request."""
    state_id = scope.get("state", {}).get("request_id")
    if isinstance(state_id, str):
        return state_id
    return (header(scope, b"x-request-id") or b"").decode("latin-1")


def final_status(status: int | None, failed: bool) -> int:
    """The status a request ended with: 500 when the app failed before answering, 499
    (as nginx says) when the client left before any answer."""
    if status is not None:
        return status
    return 500 if failed else 499
