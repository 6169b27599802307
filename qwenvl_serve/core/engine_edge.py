"""The engine edge: the innermost layer, where the request view becomes vLLM's request.

The body is serialized here, once, and only when a layer changed the document (or
the client spoke another API family); otherwise vLLM gets the client's bytes as they
came, under the client's own scope. vLLM's answers are read here, once, by
:func:`~qwenvl_serve.core.responses.reading_engine_responses`. A client that leaves
is not announced to vLLM's handler; its request is aborted in the engine instead
(:mod:`qwenvl_serve.core.engine_stop`), so what was computed is still answered and
metered.
"""

from __future__ import annotations

import asyncio
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwenvl_serve.asgi_body import REQUEST_ID_HEADER, replaying, with_body_length
from qwenvl_serve.core.engine_stop import (
    abort_until_answered,
    engine_of,
    engine_request_ids,
    holding_disconnect,
    stops_when_client_leaves,
)
from qwenvl_serve.core.responses import reading_engine_responses
from qwenvl_serve.core.view import InferenceRequest, inference_request

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


class EngineEdgeMiddleware:
    """Hands vLLM the request view's body and reads vLLM's answers once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # vLLM names a request by its x-request-id, which a client may choose: two
        # requests in flight must never share one, or aborting one would abort both.
        self.engine_ids: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = inference_request(scope) if scope["type"] == "http" else None
        if request is None:
            await self.app(scope, receive, send)
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
                reading_engine_responses(send_noting_answer),
            )
        finally:
            answered.set()
            self.engine_ids.discard(engine_id)
