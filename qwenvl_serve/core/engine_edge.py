"""The engine edge: the innermost layer, where the request view becomes vLLM's request.

The body is serialized here, once, and only when a layer changed the document (or
the client spoke another API family); otherwise vLLM gets the client's bytes as they
came, under the client's own scope. vLLM's answers are read here, once, by
:func:`~qwenvl_serve.core.responses.reading_engine_responses`. A client that leaves
is not announced to vLLM's handler; its request is aborted in the engine instead
(:mod:`qwenvl_serve.core.engine_stop`), so what was computed is still answered and
metered. vLLM's error answers are rewritten here as ours
(:mod:`qwenvl_serve.core.engine_errors`), for every request that reaches vLLM.
"""

from __future__ import annotations

import asyncio
import json
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwenvl_serve.access.notes import request_id_of
from qwenvl_serve.api_errors import json_headers
from qwenvl_serve.asgi_body import REQUEST_ID_HEADER, replaying, with_body_length
from qwenvl_serve.core.engine_errors import ClientName, engine_error, stream_error
from qwenvl_serve.core.engine_stop import (
    abort_until_answered,
    engine_of,
    engine_request_ids,
    holding_disconnect,
    stops_when_client_leaves,
)
from qwenvl_serve.core.responses import is_event_stream, reading_engine_responses
from qwenvl_serve.core.view import InferenceRequest, inference_request
from qwenvl_serve.routes import ErrorFormat, match_path

# Request headers a translated request keeps; credentials stay with the outer layers.
_FORWARDED_HEADERS = frozenset({b"host", b"user-agent", b"x-request-id", b"traceparent"})


def engine_scope(
    scope: Scope, request: InferenceRequest, body_length: int, engine_id: str | None = None
) -> Scope:
    """The scope vLLM sees: the client's own while the body is unchanged; with the new
    length when it changed; an in-process call of the engine route when translated.
    ``engine_id`` replaces the request id vLLM names the request by, when given.

    ``state`` stays shared, so what the route table said of the client's path holds.
    """
    if engine_id is not None:
        scope = with_request_id(scope, engine_id)
    if not request.changed:
        return scope
    if not request.translated:
        return with_body_length(scope, body_length)
    headers = [(name, value) for name, value in scope["headers"] if name in _FORWARDED_HEADERS]
    headers += [
        (b"content-type", b"application/json"),
        (b"content-length", str(body_length).encode()),
    ]
    path = request.engine_path
    return {
        **scope,
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
    }


def with_request_id(scope: Scope, request_id: str) -> Scope:
    """``scope`` with its ``x-request-id`` header set to ``request_id``."""
    headers = [(name, value) for name, value in scope["headers"] if name != REQUEST_ID_HEADER]
    return {**scope, "headers": [*headers, (REQUEST_ID_HEADER, request_id.encode())]}


def rewriting_engine_errors(
    scope: Scope, send: Send, client_name: ClientName | None = None
) -> Send:
    """``send`` for vLLM's app that rewrites its error answers as ours.

    A response of status 400 or more is held until its body is complete, then sent as
    :func:`~qwenvl_serve.core.engine_errors.engine_error` makes it, in the format of
    the route vLLM served (OpenAI's for a translated request: its family relays it).
    In a stream, an ``{"error": ...}`` event is rewritten the same way. Successful
    answers pass untouched. ``client_name`` names fields as the client did.
    """
    request_id = request_id_of(scope)
    names: ClientName = client_name or str
    held: Message | None = None
    parts: list[bytes] = []
    streaming = False

    async def send_rewritten(message: Message) -> None:
        nonlocal held, streaming
        kind = message["type"]
        if kind == "http.response.start":
            if message["status"] < 400:
                streaming = is_event_stream(message)
                await send(message)
            else:
                held = message
            return
        if kind != "http.response.body":
            await send(message)
        elif held is None:
            body = message.get("body", b"")
            if streaming and _STREAM_ERROR in body:
                message = {**message, "body": _rewritten_events(body, request_id, names)}
            await send(message)
        else:
            parts.append(message.get("body", b""))
            if not message.get("more_body"):
                error = engine_error(held["status"], b"".join(parts), request_id, names)
                body = error.body_in(match_path(scope["path"]).route.error_format)
                await send(
                    {
                        **held,
                        "status": error.status,
                        "headers": json_headers(body, held.get("headers", [])),
                    }
                )
                await send({"type": "http.response.body", "body": body})

    return send_rewritten


_STREAM_ERROR = b'data: {"error"'


def _rewritten_events(chunk: bytes, request_id: str, client_name: ClientName) -> bytes:
    """``chunk`` of an SSE stream with each ``{"error": ...}`` event rewritten."""
    events = chunk.split(b"\n\n")
    for index, event in enumerate(events):
        if event.startswith(_STREAM_ERROR):
            try:
                document = json.loads(event[len(b"data: ") :])
            except (ValueError, RecursionError):
                document = None
            said = document.get("error") if isinstance(document, dict) else None
            error = stream_error(said, request_id, client_name)
            events[index] = b"data: " + error.body_in(ErrorFormat.OPENAI)
    return b"\n\n".join(events)


class EngineEdgeMiddleware:
    """Hands vLLM the request view's body and reads vLLM's answers once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # vLLM names a request by its x-request-id, which a client may choose: two
        # requests in flight must never share one, or aborting one would abort both.
        self.engine_ids: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = inference_request(scope)
        if request is None:  # CORS preflights, GET routes: vLLM's errors are still rewritten
            await self.app(scope, receive, rewriting_engine_errors(scope, send))
            return
        base = str(scope.get("state", {}).get("request_id") or secrets.token_hex(16))
        engine_id = base if base not in self.engine_ids else f"{base}-{secrets.token_hex(4)}"
        self.engine_ids.add(engine_id)
        answered = asyncio.Event()

        async def when_client_leaves() -> None:
            engine = engine_of(scope)
            if engine is None or request.cost.beam_search:
                # No engine to stop, or beam search, whose many engine requests only
                # vLLM's own handler can cancel: it hears of the disconnect at once.
                return
            if stops_when_client_leaves(request.cost):
                ids = engine_request_ids(request.route.route.name, engine_id, request.cost)
                await abort_until_answered(engine, ids, answered)
            else:
                await answered.wait()

        async def send_noting_answer(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                answered.set()

        body = request.engine_body()
        try:
            await self.app(
                engine_scope(scope, request, len(body), None if engine_id == base else engine_id),
                holding_disconnect(replaying(body, receive), when_client_leaves),
                rewriting_engine_errors(
                    scope, reading_engine_responses(send_noting_answer), request.client_field
                ),
            )
        finally:
            answered.set()
            self.engine_ids.discard(engine_id)
