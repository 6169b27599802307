"""The engine edge: the innermost layer, where the request view becomes vLLM's request.

The body is serialized here, once, and only when a layer changed the document (or
the client spoke another API family); otherwise vLLM gets the client's bytes as they
came, under the client's own scope. vLLM's answers are read here, once, by
:func:`~qwenvl_serve.core.responses.reading_engine_responses`.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from qwenvl_serve.asgi_body import replaying, with_body_length
from qwenvl_serve.core.responses import reading_engine_responses
from qwenvl_serve.core.view import InferenceRequest, inference_request

# Request headers a translated request keeps; credentials stay with the outer layers.
_FORWARDED_HEADERS = frozenset({b"host", b"user-agent", b"x-request-id", b"traceparent"})


def engine_scope(scope: Scope, request: InferenceRequest, body_length: int) -> Scope:
    """The scope vLLM sees: the client's own while the body is unchanged; with the new
    length when it changed; an in-process call of the engine route when translated.

    ``state`` stays shared, so what the route table said of the client's path holds.
    """
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


class EngineEdgeMiddleware:
    """Hands vLLM the request view's body and reads vLLM's answers once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = inference_request(scope) if scope["type"] == "http" else None
        if request is None:
            await self.app(scope, receive, send)
            return
        body = request.engine_body()
        await self.app(
            engine_scope(scope, request, len(body)),
            replaying(body, receive),
            reading_engine_responses(send),
        )
