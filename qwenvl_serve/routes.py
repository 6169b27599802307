"""The route table: every path this server answers, and what each route is.

One :class:`Route` per route says which methods it answers, which API family it
belongs to (what the request core translates it from), which error format its clients
read, and whether it runs the model or needs a key. The allowlist, every layer, the
playground and the nginx renderer read this table; nothing else lists paths.

Every decision here reads the ASGI scope's ``path`` exactly as the router will match
it: nothing is normalised, so ``//tokenize``, ``/v1/models/../tokenize`` or a
percent-encoded variant (already decoded by the server) is simply not on the list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from starlette.types import Scope

CHAT_COMPLETIONS = "chat_completions"
COMPLETIONS = "completions"
MODELS = "models"
GENERATE_CONTENT = "generate_content"
HEALTH = "health"
METRICS = "metrics"
PLAYGROUND = "playground"
CACHE_PURGE = "cache_purge"
OTHER = "other"

PLAYGROUND_PREFIX = "/playground"
CHAT_COMPLETIONS_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
MODELS_PATH = "/v1/models"
HEALTH_PATH = "/health"
METRICS_PATH = "/metrics"
CACHE_PURGE_PATH = "/admin/cache/purge"
# The routes that run the model and are called by their exact path.
INFERENCE_PATHS = (CHAT_COMPLETIONS_PATH, COMPLETIONS_PATH)

# generateContent paths carry the model and the method: /v1beta/models/{model}:generateContent.
GENERATE_CONTENT_VERSIONS = ("v1", "v1beta")
GENERATE_CONTENT_METHODS = ("generateContent", "streamGenerateContent")
STREAM_GENERATE_CONTENT = "streamGenerateContent"


class ErrorFormat(Enum):
    """How a route's clients expect errors to look."""

    OPENAI = "openai"  # {"error": {"message", "type", "param", "code"}}
    GOOGLE = "google"  # {"error": {"code", "message", "status"}}


@dataclass(frozen=True)
class Route:
    """One row of the route table."""

    name: str  # bounded: also the ``route`` label of our metrics
    methods: tuple[str, ...]  # OPTIONS (CORS preflight) is answered on every route as well
    error_format: ErrorFormat = ErrorFormat.OPENAI
    inference: bool = False  # runs the model: the request core, limits and metering apply
    public: bool = False  # needs no key (/metrics has its own rule)


ROUTES: dict[str, Route] = {
    route.name: route
    for route in (
        Route(CHAT_COMPLETIONS, ("POST",), inference=True),
        Route(COMPLETIONS, ("POST",), inference=True),
        Route(GENERATE_CONTENT, ("POST",), ErrorFormat.GOOGLE, inference=True),
        Route(MODELS, ("GET",)),
        Route(HEALTH, ("GET",), public=True),
        Route(METRICS, ("GET",)),
        Route(PLAYGROUND, ("GET", "HEAD"), public=True),
        Route(CACHE_PURGE, ("POST",)),  # admin keys only (the cache layer checks)
        Route(OTHER, ()),
    )
}
_EXACT_PATHS = {
    CHAT_COMPLETIONS_PATH: CHAT_COMPLETIONS,
    COMPLETIONS_PATH: COMPLETIONS,
    MODELS_PATH: MODELS,
    HEALTH_PATH: HEALTH,
    METRICS_PATH: METRICS,
    CACHE_PURGE_PATH: CACHE_PURGE,
    PLAYGROUND_PREFIX: PLAYGROUND,
}
# A file under /playground/: plain segments only, no dot segments, empty segments,
# backslashes or control characters, whatever the static handler would make of them.
_PLAYGROUND_FILE = re.compile(r"^/playground/(?:[A-Za-z0-9_-][A-Za-z0-9._-]*(?:/|$))*$")
INFERENCE_ROUTES = frozenset(name for name, route in ROUTES.items() if route.inference)
PUBLIC_ROUTES = frozenset(name for name, route in ROUTES.items() if route.public)
_STATE_ENTRY = "qwenvl_serve.route"


def generate_content_pattern(model_group: str | None = None) -> str:
    """The generateContent path as a regular expression (after the leading ``/``).

    ``model_group`` opens a group that captures the model segment: ``(?P<model>`` in
    Python, ``(?<name>`` in nginx's PCRE; None leaves the segment uncaptured.
    """
    versions = "|".join(GENERATE_CONTENT_VERSIONS)
    methods = "|".join(GENERATE_CONTENT_METHODS)
    model = "[^/]+" if model_group is None else f"{model_group}[^/]+)"
    return rf"({versions})/models/{model}:({methods})$"


_GENERATE_CONTENT = re.compile("^/" + generate_content_pattern("(?P<model>"))


@dataclass(frozen=True)
class RouteMatch:
    """A request path read against the table: its route, and for generateContent the
    model segment and whether the method streams."""

    route: Route
    model: str | None = None
    stream: bool = False

    @property
    def name(self) -> str:
        return self.route.name


_OTHER = RouteMatch(ROUTES[OTHER])
_MATCHES = {path: RouteMatch(ROUTES[name]) for path, name in _EXACT_PATHS.items()}


def match_path(path: str) -> RouteMatch:
    """The route a request path belongs to (``other`` when none); never the raw path."""
    exact = _MATCHES.get(path)
    if exact is not None:
        return exact
    call = _GENERATE_CONTENT.match(path)
    if call is not None:
        stream = call.group(3) == STREAM_GENERATE_CONTENT
        return RouteMatch(ROUTES[GENERATE_CONTENT], call.group("model"), stream)
    if _PLAYGROUND_FILE.match(path):
        return _MATCHES[PLAYGROUND_PREFIX]
    return _OTHER


def route_of(scope: Scope) -> RouteMatch:
    """The route of an HTTP request, matched once and kept in the request's state.

    Inner layers may hand vLLM a scope with another path (generateContent becomes
    chat completions); the route stays the one the client called.
    """
    state = scope.setdefault("state", {})
    found = state.get(_STATE_ENTRY)
    if not isinstance(found, RouteMatch):
        found = match_path(scope.get("path", ""))
        state[_STATE_ENTRY] = found
    return found


def route_name(path: str) -> str:
    """The name of the route ``path`` belongs to, or ``other``."""
    return match_path(path).name


def is_allowed(path: str) -> bool:
    """True for the paths this server answers; every other path gets 404."""
    return match_path(path).name != OTHER


def is_inference(method: str, path: str) -> bool:
    """A request that runs the model."""
    return method == "POST" and match_path(path).route.inference
