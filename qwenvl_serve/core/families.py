"""API families: how each client API is translated to the one request vLLM serves.

A family turns the parsed body of one of its routes into the OpenAI-shaped document
of an engine route, and, if its clients speak another format, relays vLLM's answers
back in theirs. Chat completions and completions are vLLM's own shape; generateContent
is Google's. A new client API is one more :class:`ApiFamily` here (and its route in
:mod:`qwenvl_serve.routes`); the inner layers need no change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Scope, Send

from qwenvl_serve.api_errors import RequestRefusedError
from qwenvl_serve.config import InstanceConfig
from qwenvl_serve.genai.family import GenerateContentApi
from qwenvl_serve.genai.request import GOOGLE_FIELD_NAMES
from qwenvl_serve.images.rejections import Reason, RefusalError
from qwenvl_serve.routes import (
    CHAT_COMPLETIONS,
    CHAT_COMPLETIONS_PATH,
    COMPLETIONS,
    COMPLETIONS_PATH,
    GENERATE_CONTENT,
    RouteMatch,
)

ToEngine = Callable[[object, RouteMatch], dict[str, Any]]
Relay = Callable[[Scope, Send, RouteMatch], Send]


@dataclass(frozen=True)
class ApiFamily:
    """One client API: its route, the engine route it becomes, and its translations."""

    route: str  # the route's name in the table
    engine_path: str  # the vLLM route its requests are served by
    to_engine: ToEngine  # parsed body -> engine document; RequestRefusedError when refused
    relay: Relay | None = None  # vLLM's answers -> the client's format (None: as they are)
    # Engine field -> the client's name for it, for errors that name a field.
    client_fields: Mapping[str, str] = field(default_factory=dict)


def openai_document(parsed: object, _match: RouteMatch) -> dict[str, Any]:
    """vLLM's own shape: the body must be a JSON object, and is taken as it is."""
    if not isinstance(parsed, dict):
        raise RequestRefusedError(RefusalError(Reason.INVALID_JSON).api_error())
    return parsed


def families_from_config(config: InstanceConfig) -> dict[str, ApiFamily]:
    """Every API family this server speaks, by route name."""
    google = GenerateContentApi(config.generate_content, config.public_model_name)
    families = [
        ApiFamily(CHAT_COMPLETIONS, CHAT_COMPLETIONS_PATH, openai_document),
        ApiFamily(COMPLETIONS, COMPLETIONS_PATH, openai_document),
        ApiFamily(
            GENERATE_CONTENT,
            CHAT_COMPLETIONS_PATH,
            google.to_engine,
            google.relay,
            GOOGLE_FIELD_NAMES,
        ),
    ]
    return {family.route: family for family in families}
