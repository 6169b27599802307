"""Route names for the paths we serve: bounded metric labels, later the allowlist."""

from __future__ import annotations

import re

CHAT_COMPLETIONS = "chat_completions"
COMPLETIONS = "completions"
MODELS = "models"
GENERATE_CONTENT = "generate_content"
HEALTH = "health"
METRICS = "metrics"
OTHER = "other"

_EXACT_ROUTES = {
    "/v1/chat/completions": CHAT_COMPLETIONS,
    "/v1/completions": COMPLETIONS,
    "/v1/models": MODELS,
    "/health": HEALTH,
    "/metrics": METRICS,
}
_GENERATE_CONTENT = re.compile(
    r"^/(v1|v1beta)/models/[^/]+:(generateContent|streamGenerateContent)$"
)


def route_name(path: str) -> str:
    """The route a request path belongs to, or ``other``; never the raw path."""
    if path in _EXACT_ROUTES:
        return _EXACT_ROUTES[path]
    if _GENERATE_CONTENT.match(path):
        return GENERATE_CONTENT
    return OTHER
