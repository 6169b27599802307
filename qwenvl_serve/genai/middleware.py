"""The ASGI layer that serves generateContent by calling the chat completions app in-process.

A generateContent request is translated to a chat completions request and handed to the
inner app (image normalization, then vLLM) under a synthesized scope, exactly as if the
client had called ``/v1/chat/completions``; its answer is translated back on the way out.
Layers outside this one see the generateContent path; layers inside see an OpenAI request.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwenvl_serve.api_errors import ApiError, send_error
from qwenvl_serve.asgi_body import BODY_TOO_LARGE, BodyTooLargeError, read_body, replaying
from qwenvl_serve.genai.config import GenerateContentConfig
from qwenvl_serve.genai.fields import InvalidRequestError
from qwenvl_serve.genai.paths import GenerateContentCall, parse_call, wants_sse
from qwenvl_serve.genai.request import chat_request_from_google
from qwenvl_serve.genai.response import error_from_openai, google_response
from qwenvl_serve.genai.stream import StreamConverter

CHAT_PATH = "/v1/chat/completions"
# Request headers the inner route may use; credentials stay with the outer layers.
_FORWARDED_HEADERS = frozenset({b"host", b"user-agent", b"x-request-id", b"traceparent"})
# Response headers that describe the inner body, which we replace.
_BODY_HEADERS = frozenset({b"content-length", b"content-type", b"content-encoding"})
_METHOD_NOT_ALLOWED = ApiError(405, "Use POST.", headers=[("allow", "POST")])
_NOT_JSON = "The request body is not valid JSON."
_TOO_DEEP = "The request body is nested too deeply."
_BAD_INNER_ANSWER = ApiError(500, "The model server sent an unreadable answer.")


class GenerateContentMiddleware:
    """Serves ``/v1[beta]/models/{model}:(stream)GenerateContent`` through the chat route."""

    def __init__(
        self,
        app: ASGIApp,
        config: GenerateContentConfig,
        served_model_name: str,
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.served_model_name = served_model_name
        self.model_names = frozenset({served_model_name, *config.model_aliases})
        self.unknown_model = ApiError(
            404, f"Model not found; this server serves {served_model_name}."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        call = parse_call(scope["path"])
        if call is None:
            await self.app(scope, receive, send)
            return
        await self._serve(call, scope, receive, send)

    async def _serve(
        self, call: GenerateContentCall, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if scope["method"] != "POST":
            await send_error(scope, send, _METHOD_NOT_ALLOWED)
            return
        if call.model not in self.model_names:
            await send_error(scope, send, self.unknown_model)
            return
        try:
            body, disconnect = await read_body(scope, receive, self.max_body_bytes)
        except BodyTooLargeError:
            await send_error(scope, send, BODY_TOO_LARGE)
            return
        if disconnect is not None:
            return  # the client left before sending its request
        try:
            chat = self._chat_request(body, call.stream)
        except InvalidRequestError as refusal:
            await send_error(scope, send, ApiError(400, str(refusal)))
            return
        # ASCII escapes: a lone surrogate in the prompt must not fail the encode.
        chat_body = json.dumps(chat).encode()
        relay = (
            streamed_relay(scope, send, wants_sse(scope.get("query_string", b"")))
            if call.stream
            else buffered_relay(scope, send)
        )
        await self.app(chat_scope(scope, len(chat_body)), replaying(chat_body, receive), relay)

    def _chat_request(self, body: bytes, stream: bool) -> dict[str, object]:
        """The chat request for a raw generateContent body; InvalidRequestError when refused."""
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            raise InvalidRequestError(_NOT_JSON) from None
        try:
            return chat_request_from_google(parsed, self.served_model_name, stream)
        except RecursionError:
            raise InvalidRequestError(_TOO_DEEP) from None


def chat_scope(scope: Scope, content_length: int) -> Scope:
    """The scope of an in-process ``POST /v1/chat/completions`` for the same client.

    ``state`` stays shared, so what inner layers record is seen by outer ones.
    """
    scope.setdefault("state", {})
    headers = [(name, value) for name, value in scope["headers"] if name in _FORWARDED_HEADERS]
    headers += [
        (b"content-type", b"application/json"),
        (b"content-length", str(content_length).encode()),
    ]
    return {
        **scope,
        "method": "POST",
        "path": CHAT_PATH,
        "raw_path": CHAT_PATH.encode(),
        "query_string": b"",
        "headers": headers,
    }


def passed_headers(message: Message) -> list[tuple[bytes, bytes]]:
    """The inner response's headers that still hold for the translated body."""
    return [
        (name, value)
        for name, value in message.get("headers", [])
        if name.lower() not in _BODY_HEADERS
    ]


def buffered_relay(scope: Scope, send: Send) -> Send:
    """A send that collects the inner JSON answer and sends its Google translation."""
    start: Message = {}
    chunks: list[bytes] = []

    async def relay(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            return
        if message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            await send_translated(scope, send, start, b"".join(chunks))

    return relay


async def send_translated(scope: Scope, send: Send, start: Message, body: bytes) -> None:
    """Send the Google form of one complete inner answer (a completion or an error)."""
    status = int(start.get("status", 500))
    headers = passed_headers(start)
    if status >= 400:
        error = error_from_openai(status, body)
        named = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]
        await send_error(scope, send, ApiError(error.status, error.message, headers=named))
        return
    try:
        completion = json.loads(body) if status == 200 else None
    except ValueError:
        completion = None
    if not isinstance(completion, dict):
        await send_error(scope, send, _BAD_INNER_ANSWER)
        return
    encoded = json.dumps(google_response(completion), ensure_ascii=False).encode()
    headers += [
        (b"content-type", b"application/json; charset=utf-8"),
        (b"content-length", str(len(encoded)).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": encoded})


def streamed_relay(scope: Scope, send: Send, sse: bool) -> Send:
    """A send that translates the inner SSE stream event by event as it arrives.

    Answers that are not a stream (errors before the first token) go the buffered way.
    """
    converter = StreamConverter(sse)
    buffered = buffered_relay(scope, send)
    streaming = False

    async def relay(message: Message) -> None:
        nonlocal streaming
        if message["type"] == "http.response.start":
            streaming = message["status"] == 200 and _is_event_stream(message)
            if not streaming:
                await buffered(message)
                return
            headers = [*passed_headers(message), (b"content-type", converter.framing.content_type)]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            return
        if not streaming or message["type"] != "http.response.body":
            await buffered(message)
            return
        more = bool(message.get("more_body", False))
        data = converter.feed(message.get("body", b""))
        if not more:
            data += converter.close()
        if data or not more:
            await send({"type": "http.response.body", "body": data, "more_body": more})

    return relay


def _is_event_stream(message: Message) -> bool:
    content_type = dict(message.get("headers", [])).get(b"content-type", b"")
    return bytes(content_type).lower().startswith(b"text/event-stream")
