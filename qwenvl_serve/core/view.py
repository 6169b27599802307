"""The one view of an inference request that every inner layer works on.

The intake layer builds an :class:`InferenceRequest` once per request, from the body
read once and parsed once, already translated from the client's API family into the
OpenAI shape vLLM serves. Inner layers read it (cost fields, media parts, key) and
change it: a top-level field with :meth:`InferenceRequest.override`, anything deeper in
``document`` in place followed by :meth:`InferenceRequest.mark_changed`. The engine
edge turns it into the body vLLM receives, once, copying nothing it need not: the
client's bytes as they came, those bytes with the overridden fields appended, or the
whole document serialized.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Scope

from qwenvl_serve.core.cost import Cost, cost_of
from qwenvl_serve.images.chat_request import MediaPart, media_parts
from qwenvl_serve.json_encoders import COMPACT
from qwenvl_serve.lazy import lazy
from qwenvl_serve.routes import CHAT_COMPLETIONS_PATH, RouteMatch

_STATE_ENTRY = "qwenvl_serve.inference_request"


@dataclass
class InferenceRequest:
    """One inference request, parsed once.

    ``document`` is the body in the OpenAI shape of ``engine_path``; ``original`` is the
    client's bytes, sent to vLLM as they came while nothing changed them, and released
    (empty) once the document is rewritten; ``body_size`` stays their length.
    """

    route: RouteMatch
    original: bytes
    document: dict[str, Any]
    engine_path: str
    key_name: str
    translated: bool = False  # the client spoke another API family than vLLM's
    client_fields: Mapping[str, str] = field(default_factory=dict)  # engine -> client name
    rewritten: bool = field(default=False, init=False)  # serialize the whole document
    overrides: dict[str, Any] = field(default_factory=dict, init=False)
    cost: Cost = field(init=False)
    body_size: int = field(init=False)
    _body: bytes | None = field(default=None, init=False, repr=False)  # engine_body, kept

    def __post_init__(self) -> None:
        self.rewritten = self.translated
        self.body_size = len(self.original)
        self.cost = cost_of(self.document, chat=self.engine_path == CHAT_COMPLETIONS_PATH)

    @property
    def changed(self) -> bool:
        """vLLM must get other bytes than the client sent."""
        return self.rewritten or bool(self.overrides)

    @lazy
    def media(self) -> list[MediaPart]:
        """Every media part of the conversation, in request order, with its location."""
        return media_parts(self.document)

    def client_field(self, name: str) -> str:
        """What the client calls the engine field ``name`` (for errors naming it)."""
        return self.client_fields.get(name, name)

    @property
    def image_count(self) -> int:
        return sum(1 for part in self.media if part.kind == "image")

    def mark_changed(self) -> None:
        """``document`` was (or is about to be) changed inside: vLLM must get it
        serialized whole. The client's bytes are released then: a request carrying a
        large video does not hold its body twice while the video waits and decodes."""
        self.rewritten = True
        self.original = b""
        self._body = None

    def override(self, name: str, value: Any) -> None:
        """Set the top-level field ``name``, without serializing the rest again."""
        self.document[name] = value
        self.overrides[name] = value
        self._body = None

    def engine_body(self) -> bytes:
        """The bytes vLLM receives: the client's own when nothing changed. Built once
        until the next change (the result cache keys on them, the engine edge sends them)."""
        if self._body is None:
            if self.rewritten:
                self._body = _serialized(self.document)
            elif self.overrides:
                self._body = with_fields_appended(self.original, self.overrides)
            else:
                self._body = self.original
        return self._body


def _serialized(value: object) -> bytes:
    return COMPACT.encode(value).encode()


def with_fields_appended(original: bytes, fields: dict[str, Any]) -> bytes:
    """A JSON object's bytes with ``fields`` appended as its last members.

    vLLM parses bodies with Python's json module, which keeps the last of duplicate
    keys, so an appended member replaces one the client sent: the result reads exactly
    as the document with ``fields`` set, and the client's bytes before it are kept.
    ``original`` must be a JSON object (the intake parsed it as one).
    """
    end = original.rstrip().rfind(b"}")
    members = b",".join(_serialized(name) + b":" + _serialized(v) for name, v in fields.items())
    empty = original[:end].rstrip().endswith(b"{")
    return original[:end] + (b"" if empty else b",") + members + b"}"


def attach(scope: Scope, request: InferenceRequest) -> None:
    """Share ``request`` with the inner layers through the ASGI scope."""
    scope.setdefault("state", {})[_STATE_ENTRY] = request


def inference_request(scope: Scope) -> InferenceRequest | None:
    """The request's view, or None for requests that do not run the model."""
    found = scope.get("state", {}).get(_STATE_ENTRY)
    return found if isinstance(found, InferenceRequest) else None
