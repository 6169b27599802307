"""The intake layer: every inference request is read once, parsed once, translated once.

For a POST to a route of an API family (see :mod:`qwenvl_serve.core.families`) it
reads the body under the one cap, parses it, lets the family translate it into the
OpenAI-shaped document vLLM serves, and shares the result with the inner layers as an
:class:`~qwenvl_serve.core.view.InferenceRequest`. A family whose clients speak
another format relays vLLM's answers back in theirs from here, so every layer inside
sees OpenAI requests and responses only. Everything else passes through untouched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from qwenvl_serve.access.notes import notes_for
from qwenvl_serve.api_errors import RequestRefusedError, send_error
from qwenvl_serve.asgi_body import (
    BODY_TOO_LARGE,
    BODY_TOO_SLOW,
    BodyTooLargeError,
    BodyTooSlowError,
    read_body,
)
from qwenvl_serve.body_pace import PaceKeeper
from qwenvl_serve.core.families import ApiFamily
from qwenvl_serve.core.view import InferenceRequest, attach
from qwenvl_serve.images.rejections import Reason, RefusalError
from qwenvl_serve.routes import route_of

_INVALID_JSON = RequestRefusedError(RefusalError(Reason.INVALID_JSON).api_error())
_NOT_JSON = RefusalError(Reason.NOT_JSON_CONTENT_TYPE).api_error()
# A JSON escape of a UTF-16 surrogate: half of a pair, or a lone one (not text).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_body(body: bytes) -> Any:
    """The body as JSON: the one parse of a request in our code.

    On the event loop, whatever the size: the C parser holds the GIL throughout, so a
    thread would not let the loop run meanwhile.
    """
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or absurdly nested
        raise _INVALID_JSON from None


def is_json_content_type(scope: Scope) -> bool:
    """vLLM's own test of a request's content type (``validate_json_request``): the
    first ``Content-Type`` header, lowercased, up to any ``;``, is ``application/json``."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bytes(value).lower().split(b";", 1)[0] == b"application/json"
    return False


def unpaired_surrogate_at(document: object, path: str = "") -> str | None:
    """The location of the first string in ``document`` holding a lone surrogate.

    Python's parser keeps ``"\\ud800"`` as a one-character string that no tokenizer
    can encode; vLLM would fail on it deep in the tokenizer.
    """
    if isinstance(document, str):
        try:
            document.encode()
        except UnicodeEncodeError:
            return path or "body"
        return None
    if isinstance(document, dict):
        items: Iterable[tuple[str, object]] = (
            (f"{path}.{key}" if path else str(key), value) for key, value in document.items()
        )
    elif isinstance(document, list):
        items = ((f"{path}[{index}]", value) for index, value in enumerate(document))
    else:
        return None
    for where, value in items:
        found = unpaired_surrogate_at(value, where)
        if found is not None:
            return found
    return None


def checked_document(body: bytes) -> Any:
    """The parsed body, refused when it holds text no tokenizer can encode."""
    document = parse_body(body)
    # memchr for a backslash first (2 us for a 74 KB image body, which has none), then
    # the pattern (30 us), and only if it matches (rare) a walk of the document.
    if b"\\" in body and _SURROGATE_ESCAPE.search(body) is not None:
        where = unpaired_surrogate_at(document)
        if where is not None:
            refusal = RefusalError(Reason.UNPAIRED_SURROGATE, where)
            raise RequestRefusedError(refusal.api_error())
    return document


class IntakeMiddleware:
    """Builds the one request view of each inference request."""

    def __init__(
        self,
        app: ASGIApp,
        families: Mapping[str, ApiFamily],
        max_body_bytes: int,
        pace: PaceKeeper | None = None,
    ) -> None:
        self.app = app
        self.families = families
        self.max_body_bytes = max_body_bytes
        self.pace = pace

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        family = self._family_of(scope)
        if family is None:
            await self.app(scope, receive, send)
            return
        try:
            body, disconnect = await read_body(scope, receive, self.max_body_bytes, self.pace)
        except BodyTooLargeError:
            await send_error(scope, send, BODY_TOO_LARGE)
            return
        except BodyTooSlowError:
            await send_error(scope, send, BODY_TOO_SLOW)
            return
        if disconnect is not None:
            return  # the client left before sending its request: nobody to answer
        if family.relay is None and not is_json_content_type(scope):
            await send_error(scope, send, _NOT_JSON)  # vLLM refuses it, after our work
            return
        match = route_of(scope)
        try:
            document = family.to_engine(checked_document(body), match)
        except RequestRefusedError as refused:
            await send_error(scope, send, refused.error)
            return
        request = InferenceRequest(
            route=match,
            original=body,
            document=document,
            engine_path=family.engine_path,
            key_name=notes_for(scope).key_name,
            translated=family.relay is not None,
            client_fields=family.client_fields,
        )
        attach(scope, request)
        del body  # the view owns the bytes now, and may release them (mark_changed)
        relay = send if family.relay is None else family.relay(scope, send, match)
        # The body is consumed; inner layers read the view, and the engine edge replays
        # the engine's body in front of the client's later messages (disconnects).
        await self.app(scope, receive, relay)

    def _family_of(self, scope: Scope) -> ApiFamily | None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        return self.families.get(route_of(scope).name)
