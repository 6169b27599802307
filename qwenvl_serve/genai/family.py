"""The generateContent API family: Google requests in, vLLM's chat completions served.

:meth:`GenerateContentApi.to_engine` turns a parsed ``GenerateContentRequest`` into the
chat completions request vLLM serves; :meth:`GenerateContentApi.relay` turns vLLM's
answers (read once by the engine edge, see :mod:`qwenvl_serve.core.responses`) back
into Google's format, JSON or streamed. Our own errors are already in Google's format
(the route table says so) and pass the relay untouched.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Message, Scope, Send

from qwenvl_serve.api_errors import ApiError, RequestRefusedError, send_error
from qwenvl_serve.core.responses import FROM_ENGINE, engine_events, is_event_stream
from qwenvl_serve.genai.config import GenerateContentConfig
from qwenvl_serve.genai.fields import InvalidRequestError
from qwenvl_serve.genai.paths import wants_sse
from qwenvl_serve.genai.request import chat_request_from_google
from qwenvl_serve.genai.response import error_from_openai, google_response
from qwenvl_serve.genai.stream import StreamConverter
from qwenvl_serve.json_encoders import UNESCAPED
from qwenvl_serve.routes import RouteMatch

_TOO_DEEP = "The request body is nested too deeply."
# Response headers that describe the inner body, which we replace.
_BODY_HEADERS = frozenset({b"content-length", b"content-type", b"content-encoding"})
_BAD_INNER_ANSWER = ApiError(500, "The model server sent an unreadable answer.")


class GenerateContentApi:
    """``/v1[beta]/models/{model}:(stream)GenerateContent`` for the served model."""

    def __init__(self, config: GenerateContentConfig, served_model_name: str) -> None:
        self.served_model_name = served_model_name
        self.model_names = frozenset({served_model_name, *config.model_aliases})
        self.unknown_model = ApiError(
            404, f"Model not found; this server serves {served_model_name}."
        )

    def to_engine(self, parsed: object, match: RouteMatch) -> dict[str, Any]:
        """The chat completions request for a parsed generateContent body."""
        if match.model not in self.model_names:
            raise RequestRefusedError(self.unknown_model)
        try:
            return chat_request_from_google(parsed, self.served_model_name, match.stream)
        except InvalidRequestError as refusal:
            raise RequestRefusedError(ApiError(400, str(refusal))) from None
        except RecursionError:
            raise RequestRefusedError(ApiError(400, _TOO_DEEP)) from None

    def relay(self, scope: Scope, send: Send, match: RouteMatch) -> Send:
        """``send`` that answers in Google's format what vLLM answers in OpenAI's."""
        if match.stream:
            return streamed_relay(scope, send, wants_sse(scope.get("query_string", b"")))
        return buffered_relay(scope, send)


def passed_headers(message: Message) -> list[tuple[bytes, bytes]]:
    """The inner response's headers that still hold for the translated body."""
    return [
        (name, value)
        for name, value in message.get("headers", [])
        if name.lower() not in _BODY_HEADERS
    ]


def buffered_relay(scope: Scope, send: Send) -> Send:
    """A send that waits for vLLM's complete JSON answer and sends its Google form."""
    start: Message | None = None

    async def relay(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start" and message.get(FROM_ENGINE):
            start = message
            return
        if start is None or message["type"] != "http.response.body":
            await send(message)  # not vLLM's answer: already in our format
            return
        if not message.get("more_body", False):
            events = engine_events(message)
            document = events[-1].document if events else None
            await send_translated(scope, send, start, document, message)

    return relay


async def send_translated(
    scope: Scope, send: Send, start: Message, document: object, last: Message
) -> None:
    """Send the Google form of one complete answer of vLLM (a completion or an error).

    The engine's annotations stay on the messages, so outer layers still read usage.
    """
    status = int(start.get("status", 500))
    headers = passed_headers(start)
    if status >= 400:
        error = error_from_openai(status, document)
        named = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]
        await send_error(scope, _keeping(send, start, last), _error_with(error, named))
        return
    if status != 200 or not isinstance(document, dict):
        await send_error(scope, _keeping(send, start, last), _BAD_INNER_ANSWER)
        return
    encoded = UNESCAPED.encode(google_response(document)).encode()
    headers += [
        (b"content-type", b"application/json; charset=utf-8"),
        (b"content-length", str(len(encoded)).encode()),
    ]
    await send({**start, "status": 200, "headers": headers})
    await send({**last, "body": encoded, "more_body": False})


def _error_with(error: ApiError, headers: list[tuple[str, str]]) -> ApiError:
    return ApiError(error.status, error.message, headers=headers)


def _keeping(send: Send, start: Message, last: Message) -> Send:
    """``send`` that puts the annotations of vLLM's messages on the ones sent instead."""

    async def send_keeping(message: Message) -> None:
        source = start if message["type"] == "http.response.start" else last
        await send({**source, **message})

    return send_keeping


def streamed_relay(scope: Scope, send: Send, sse: bool) -> Send:
    """A send that translates vLLM's SSE stream event by event as it arrives.

    Answers that are not a stream (errors before the first token) go the buffered way.
    """
    converter = StreamConverter(sse)
    buffered = buffered_relay(scope, send)
    streaming = False

    async def relay(message: Message) -> None:
        nonlocal streaming
        if message["type"] == "http.response.start":
            streaming = (
                bool(message.get(FROM_ENGINE))
                and message["status"] == 200
                and is_event_stream(message)
            )
            if not streaming:
                await buffered(message)
                return
            headers = [*passed_headers(message), (b"content-type", converter.framing.content_type)]
            await send({**message, "headers": headers})
            return
        if not streaming or message["type"] != "http.response.body":
            await buffered(message)
            return
        more = bool(message.get("more_body", False))
        data = converter.feed(engine_events(message))
        if not more:
            data += converter.close()
        if data or not more or engine_events(message):
            await send({**message, "body": data, "more_body": more})

    return relay
