"""The paths we serve: bounded route names for metric labels, and the allowlist.

Every decision here reads the ASGI scope's ``path`` exactly as the router will match
it: nothing is normalised, so ``//tokenize``, ``/v1/models/../tokenize`` or a
percent-encoded variant (already decoded by the server) is simply not on the list.
"""

from __future__ import annotations

import re

CHAT_COMPLETIONS = "chat_completions"
COMPLETIONS = "completions"
MODELS = "models"
GENERATE_CONTENT = "generate_content"
HEALTH = "health"
METRICS = "metrics"
PLAYGROUND = "playground"
OTHER = "other"

PLAYGROUND_PREFIX = "/playground"

_EXACT_ROUTES = {
    "/v1/chat/completions": CHAT_COMPLETIONS,
    "/v1/completions": COMPLETIONS,
    "/v1/models": MODELS,
    "/health": HEALTH,
    "/metrics": METRICS,
    PLAYGROUND_PREFIX: PLAYGROUND,
}
_GENERATE_CONTENT = re.compile(
    r"^/(v1|v1beta)/models/[^/]+:(generateContent|streamGenerateContent)$"
)
# A file under /playground/: plain segments only, no dot segments, empty segments,
# backslashes or control characters, whatever the static handler would make of them.
_PLAYGROUND_FILE = re.compile(r"^/playground/(?:[A-Za-z0-9_-][A-Za-z0-9._-]*(?:/|$))*$")

# The methods each route answers; OPTIONS (CORS preflight) is answered on every route.
_METHODS = {
    CHAT_COMPLETIONS: ("POST",),
    COMPLETIONS: ("POST",),
    GENERATE_CONTENT: ("POST",),
    MODELS: ("GET",),
    HEALTH: ("GET",),
    METRICS: ("GET",),
    PLAYGROUND: ("GET", "HEAD"),
}
# Routes that run the model: limits and metering apply to these.
INFERENCE_ROUTES = frozenset({CHAT_COMPLETIONS, COMPLETIONS, GENERATE_CONTENT})
# Routes anyone may call without a key (/metrics has its own rule).
PUBLIC_ROUTES = frozenset({HEALTH, PLAYGROUND})


def route_name(path: str) -> str:
    """The route a request path belongs to, or ``other``; never the raw path."""
    if path in _EXACT_ROUTES:
        return _EXACT_ROUTES[path]
    if _GENERATE_CONTENT.match(path):
        return GENERATE_CONTENT
    if _PLAYGROUND_FILE.match(path):
        return PLAYGROUND
    return OTHER


def is_allowed(path: str) -> bool:
    """True for the paths this server answers; every other path gets 404."""
    return route_name(path) != OTHER


def allowed_methods(route: str) -> tuple[str, ...]:
    """The HTTP methods ``route`` answers (none for ``other``)."""
    return _METHODS.get(route, ())


def is_inference(method: str, path: str) -> bool:
    """A request that runs the model: what limits and metering apply to."""
    return method == "POST" and route_name(path) in INFERENCE_ROUTES
