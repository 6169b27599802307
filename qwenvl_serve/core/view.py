"""The one view of an inference request that every inner layer works on.

The intake layer builds an :class:`InferenceRequest` once per request, from the body
read once and parsed once, already translated from the client's API family into the
OpenAI shape vLLM serves. Inner layers read it (cost fields, media parts, key) and
change ``document`` in place, saying so with :meth:`InferenceRequest.mark_changed`;
the engine edge turns it into the body vLLM receives, once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from starlette.types import Scope

from qwenvl_serve.core.cost import Cost, cost_of
from qwenvl_serve.images.chat_request import MediaPart, media_parts
from qwenvl_serve.routes import RouteMatch

_STATE_ENTRY = "qwenvl_serve.inference_request"


@dataclass
class InferenceRequest:
    """One inference request, parsed once.

    ``document`` is the body in the OpenAI shape of ``engine_path``; ``original`` is the
    client's bytes, sent to vLLM as they came while nothing changed them.
    """

    route: RouteMatch
    original: bytes
    document: dict[str, Any]
    engine_path: str
    key_name: str
    translated: bool = False  # the client spoke another API family than vLLM's
    changed: bool = field(default=False, init=False)
    cost: Cost = field(init=False)

    def __post_init__(self) -> None:
        self.changed = self.translated
        self.cost = cost_of(self.document)

    @cached_property
    def media(self) -> list[MediaPart]:
        """Every media part of the conversation, in request order, with its location."""
        return media_parts(self.document)

    @property
    def image_count(self) -> int:
        return sum(1 for part in self.media if part.kind == "image")

    def mark_changed(self) -> None:
        """``document`` was changed: vLLM must get it serialized, not the original bytes."""
        self.changed = True

    def engine_body(self) -> bytes:
        """The bytes vLLM receives: the client's own when nothing changed."""
        if not self.changed:
            return self.original
        # ASCII escapes: client text may hold a lone surrogate, which UTF-8 cannot encode.
        return json.dumps(self.document, separators=(",", ":")).encode()


def attach(scope: Scope, request: InferenceRequest) -> None:
    """Share ``request`` with the inner layers through the ASGI scope."""
    scope.setdefault("state", {})[_STATE_ENTRY] = request


def inference_request(scope: Scope) -> InferenceRequest | None:
    """The request's view, or None for requests that do not run the model."""
    found = scope.get("state", {}).get(_STATE_ENTRY)
    return found if isinstance(found, InferenceRequest) else None
