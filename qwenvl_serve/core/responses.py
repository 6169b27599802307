"""The one reader of vLLM's responses: JSON bodies and SSE streams, read once.

The engine edge wraps vLLM's ``send`` with :func:`reading_engine_responses`. It marks
the start of every response that came from vLLM and attaches to each body message the
:class:`EngineEvent` objects it completes (the whole JSON body at its end; each SSE
event as it is complete). An event parses its JSON at most once, when first asked.
Layers on the way out read these annotations instead of the bytes: the generateContent
translation takes its chunks from them, and one :class:`ResponseWatch` per request
(:func:`watched`) the status and usage that metering, limits and the access log read.
Our own error responses carry no annotation, so nothing mistakes them for vLLM's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from starlette.types import Message, Scope, Send

from qwenvl_serve.core.cost import Cost
from qwenvl_serve.core.sse import SseSplitter, event_data, is_plain_data_event
from qwenvl_serve.core.view import inference_request
from qwenvl_serve.lazy import lazy

# Keys our layers add to ASGI messages (servers ignore keys they do not know).
FROM_ENGINE = "qwenvl_serve.from_engine"  # on http.response.start: an EngineStart
ENGINE_EVENTS = "qwenvl_serve.engine_events"  # on http.response.body: list[EngineEvent]
CACHE_OUTCOME = "qwenvl_serve.cache"  # on http.response.start: hit, miss or bypass
_WATCH_ENTRY = "qwenvl_serve.response_watch"  # in scope["state"]: the request's watch
_DONE = b"[DONE]"
_USAGE_KEY = b',"usage":'
_USAGE_MEMBER = _USAGE_KEY + b"{"
_NO_CHOICES = b'"choices":[]'
# What may follow a chunk's usage object: vLLM's final usage chunk ends with its
# ``system_fingerprint`` (a string json would read as written: ASCII, no escapes, no
# control characters), then the chunk's closing brace. Any other member after it (a second
# ``usage`` or ``choices``, which json would keep) sends the chunk to the full parse.
_AFTER_USAGE = re.compile(rb'(?:,"system_fingerprint":"[^"\\\x00-\x1f\x80-\xff]*")?}\n\n')
# The usage vLLM puts on each chunk (``UsageInfo`` in its field order, unset fields
# left out), read as json reads it: integers without leading zeros; one of more than
# 18 digits, which no count reaches, goes to the json decoder.
_COUNT = rb"(?:0|[1-9][0-9]{0,17})"
_RUNNING_USAGE = re.compile(
    rb'\{"prompt_tokens":(%s),"total_tokens":%s,"completion_tokens":(%s)\}' % ((_COUNT,) * 3)
)
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class Usage:
    """Tokens one request used."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_in(document: object) -> Usage | None:
    """The ``usage`` an OpenAI response object or chunk reports."""
    return _usage_of(document.get("usage") if isinstance(document, dict) else None)


def _usage_of(usage: object) -> Usage | None:
    """A ``usage`` member's value read as :class:`Usage` (None unless an object)."""
    if not isinstance(usage, dict):
        return None
    return Usage(_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")))


@dataclass(frozen=True)
class EngineStart:
    """vLLM answered: what its response start said, as the engine edge passed it on.

    It rides on the start message under :data:`FROM_ENGINE`, and a translation of the
    answer keeps it there, so readers outside the translation (the response watch)
    still know vLLM's status and framing when the client gets another.
    """

    status: int
    streamed: bool  # an SSE stream of events


class EngineEvent:
    """One complete unit of a vLLM response: a JSON body, or one SSE event."""

    def __init__(self, raw: bytes, payload: bytes, streamed: bool = False) -> None:
        self.raw = raw  # the bytes as vLLM sent them
        self.payload = payload  # the JSON text (an SSE event's data)
        self.streamed = streamed  # one event of an SSE stream, not a whole JSON body

    @classmethod
    def answered(cls, body: bytes, usage: Usage | None) -> EngineEvent:
        """A whole JSON body whose ``usage`` was read from these bytes before (a cached
        answer): it is not parsed again unless a layer asks for the document."""
        event = cls(body, body)
        event.__dict__["usage"] = usage  # the value the lazy property would compute
        return event

    @property
    def done(self) -> bool:
        """The ``data: [DONE]`` that ends an OpenAI stream."""
        return self.payload == _DONE

    @lazy
    def document(self) -> Any:
        """The parsed JSON payload; None for ``[DONE]`` and unreadable payloads."""
        if self.done or not self.payload:
            return None
        try:
            return json.loads(self.payload)
        except (ValueError, RecursionError):
            return None

    @lazy
    def usage(self) -> Usage | None:
        """The usage this event reports, if any."""
        if b'"usage"' not in self.payload:  # most stream events: no parse needed
            return None
        trailing = self.trailing_usage
        if trailing is not None:
            return trailing[2]
        return usage_in(self.document)

    @lazy
    def trailing_usage(self) -> tuple[int, int, Usage | None] | None:
        """Where a stream event's top-level ``usage`` member lies, read without parsing
        the chunk: ``(start, stop, usage)``, ``raw[start:stop]`` being the member with
        its comma. vLLM writes each chunk as one ``data:`` line of compact JSON with
        ``usage`` last (on the final usage chunk, before ``system_fingerprint``), and
        with usage asked for on every chunk, every chunk has one. None for any other
        shape (then the whole chunk is parsed).

        ``,"usage":{`` cannot occur inside a JSON string (its quotes would be escaped),
        and only a plain ``system_fingerprint`` and the chunk's closing brace may
        follow the usage object, so the member found is the top-level one, and the
        last of its name (the one json keeps).
        """
        raw = self.raw
        start = raw.rfind(_USAGE_MEMBER) if self.streamed else -1
        if start < 0 or not raw.startswith(b"data: {"):
            return None
        value_at = start + len(_USAGE_KEY)
        flat = _RUNNING_USAGE.match(raw, value_at)
        if flat is not None:  # the running usage of every chunk: no dict is built
            stop = flat.end()
            usage: Usage | None = Usage(int(flat[1]), int(flat[2]))
        else:
            try:
                value, length = _DECODER.raw_decode(raw[value_at:].decode("ascii"))
            except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
                return None
            stop = value_at + length
            usage = _usage_of(value)
        if not _AFTER_USAGE.fullmatch(raw, stop):
            return None
        return start, stop, usage

    @lazy
    def is_usage_only(self) -> bool:
        """The final OpenAI stream chunk that carries usage and no choices."""
        if self.usage is None:
            return False
        trailing = self.trailing_usage
        if trailing is not None:
            if self.raw.endswith(_NO_CHOICES, 0, trailing[0]):
                return True
            if _NO_CHOICES not in self.raw:  # compact JSON: empty choices would read so
                return False
        document = self.document
        return isinstance(document, dict) and document.get("choices") == []


def engine_events(message: Message) -> list[EngineEvent]:
    """The events a body message from vLLM completes (none for other messages)."""
    events = message.get(ENGINE_EVENTS)
    return events if isinstance(events, list) else []


def is_event_stream(message: Message) -> bool:
    """True for a response start whose content type is ``text/event-stream``."""
    for name, value in message.get("headers", []):
        if name.lower() == b"content-type":
            return bytes(value).lower().startswith(b"text/event-stream")
    return False


def with_header(send: Send, name: bytes, value: bytes) -> Send:
    """``send`` that adds the header ``name: value`` to the response start."""

    async def send_with_header(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (name, value)]}
        await send(message)

    return send_with_header


def reading_engine_responses(send: Send) -> Send:
    """``send`` for vLLM's app: annotates its response messages with what they carry.

    An SSE body is passed on at event boundaries (an event cut across chunks waits for
    its end); a JSON body is passed on as it comes, and its last message carries the
    whole body as one event.
    """
    splitter: SseSplitter | None = None
    json_parts: list[bytes] = []

    async def send_annotated(message: Message) -> None:
        nonlocal splitter
        kind = message["type"]
        if kind == "http.response.start":
            splitter = SseSplitter() if is_event_stream(message) else None
            await send({**message, FROM_ENGINE: EngineStart(message["status"], bool(splitter))})
            return
        if kind != "http.response.body":
            await send(message)
            return
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        if splitter is not None:
            await send(_stream_message(splitter, chunk, more, message))
            return
        if more:
            json_parts.append(chunk)
            await send(message)
            return
        whole = b"".join([*json_parts, chunk]) if json_parts else chunk
        await send({**message, ENGINE_EVENTS: [EngineEvent(whole, whole)]})

    return send_annotated


def _stream_message(splitter: SseSplitter, chunk: bytes, more: bool, message: Message) -> Message:
    if not splitter.pending and is_plain_data_event(chunk):  # how vLLM sends every event
        return {**message, ENGINE_EVENTS: [EngineEvent(chunk, chunk[6:-2], streamed=True)]}
    had_pending = bool(splitter.pending)
    raw_events = splitter.feed(chunk)
    if not more and splitter.pending:
        raw_events.append(splitter.finish())
    events = [EngineEvent(raw, event_data(raw), streamed=True) for raw in raw_events]
    if had_pending or splitter.pending:  # the body no longer equals the chunk
        message = {**message, "body": b"".join(raw_events)}
    return {**message, ENGINE_EVENTS: events}


class ResponseWatch:
    """What the response messages of one request say: status and usage.

    For usage it keeps the last ``usage`` of a JSON body or of a stream's usage-only
    chunk; for a stream that reports usage on every chunk, the last usage of each
    choice; and, for a stream of several sequences without it, which choices started.
    :meth:`engine_usage` reads them as vLLM's token counters count.
    """

    def __init__(self, sequences: int = 1) -> None:
        self.sequences = sequences  # the request's; above 1, streamed choices are tracked
        self.status: int | None = None
        self.streamed = False
        self.usage: Usage | None = None  # the request's total, as vLLM reports it
        self.choice_usage: dict[int, Usage] = {}  # a stream's running usage per choice
        self.started: set[int] = set()  # choices seen producing output
        self.engine: EngineStart | None = None  # what vLLM's start said, if it answered
        self.cache_outcome: str | None = None  # set when the result cache is on

    def see(self, message: Message) -> None:
        """Read one outgoing message."""
        if message["type"] == "http.response.start":
            engine = message.get(FROM_ENGINE)
            self.engine = engine if isinstance(engine, EngineStart) else None
            self.status = message["status"]
            # vLLM's framing, not the client's: a Google JSON-array stream is SSE inside
            self.streamed = (
                self.engine.streamed if self.engine is not None else is_event_stream(message)
            )
            self.cache_outcome = message.get(CACHE_OUTCOME)
            return
        for event in engine_events(message):
            usage = event.usage
            if usage is None:
                if self.sequences > 1 and event.streamed:
                    self._see_choices(event.document)
            elif not event.streamed:  # a JSON body: its usage is the request's
                self.usage = usage
            elif self.sequences == 1 and not event.is_usage_only:
                self.choice_usage[0] = usage  # one sequence: its chunks need not be parsed
            else:
                self._see_stream_usage(event, usage)

    def _see_stream_usage(self, event: EngineEvent, usage: Usage) -> None:
        document = event.document
        choices = document.get("choices") if isinstance(document, dict) else None
        if not isinstance(choices, list) or not choices:
            self.usage = usage  # the stream's usage-only chunk
            return
        for choice in choices:
            index = choice.get("index") if isinstance(choice, dict) else None
            if isinstance(index, int):
                self.choice_usage[index] = usage

    def _see_choices(self, document: Any) -> None:
        choices = document.get("choices") if isinstance(document, dict) else None
        for choice in choices if isinstance(choices, list) else ():
            started = isinstance(choice, dict) and isinstance(choice.get("index"), int)
            if started and _produced_output(choice):
                self.started.add(choice["index"])

    @property
    def cache_hit(self) -> bool:
        """The answer came from the result cache: the engine computed nothing for it."""
        return self.cache_outcome == "hit"

    @property
    def from_engine(self) -> bool:
        """vLLM answered (or the result cache, for it)."""
        return self.engine is not None

    @property
    def succeeded(self) -> bool:
        """vLLM's answer (ours, when vLLM did not answer) is a success; vLLM may still
        have ended it early. vLLM's status counts even where the client got another:
        what it computed was computed."""
        status = self.status if self.engine is None else self.engine.status
        return status is not None and status < 400

    def engine_usage(self, cost: Cost) -> Usage | None:
        """The tokens vLLM's engine processed for this request, as its counters count:
        the prompt once per sequence that produced a token, and every output token.
        None for failures and answers without usage."""
        if not self.succeeded:
            return None
        if self.choice_usage:
            started = [usage for usage in self.choice_usage.values() if usage.completion_tokens]
            completion = sum(usage.completion_tokens for usage in self.choice_usage.values())
            if self.usage is not None:
                completion = self.usage.completion_tokens
            return Usage(sum(usage.prompt_tokens for usage in started), completion)
        if self.usage is None:
            return None
        if self.usage.completion_tokens == 0:  # stopped before any sequence started
            return Usage(0, 0)
        sequences = cost.n
        if self.streamed and cost.n > 1:  # without per-chunk usage: the choices seen
            sequences = max(1, min(cost.n, len(self.started)))
        return Usage(self.usage.prompt_tokens * sequences, self.usage.completion_tokens)


def watched(scope: Scope, send: Send) -> tuple[ResponseWatch, Send]:
    """The request's one :class:`ResponseWatch`, and the ``send`` a layer relays through.

    The first layer to ask (the outermost that reads the watch) creates it and gets a
    ``send`` that shows it every message; a layer inside gets the same watch and its
    own ``send`` back. Once a layer's app has returned, what it sent has reached the
    watch (or been held back by a translation in between: then the client never got
    it either), so one reading serves every layer. A translation may change status
    and framing, never vLLM's annotations, so what vLLM said is read from those
    (:class:`EngineStart`, :class:`EngineEvent`).
    """
    state = scope.setdefault("state", {})
    watch = state.get(_WATCH_ENTRY)
    if isinstance(watch, ResponseWatch):
        return watch, send
    watch = state[_WATCH_ENTRY] = ResponseWatch()

    async def send_watched(message: Message) -> None:
        if message["type"] == "http.response.start":
            request = inference_request(scope)  # attached by the intake by now
            watch.sequences = 1 if request is None else request.cost.sequences
        watch.see(message)
        await send(message)

    return watch, send_watched


_OUTPUT_FIELDS = ("content", "reasoning_content", "reasoning", "tool_calls")


def _produced_output(choice: dict[str, Any]) -> bool:
    """A stream choice shows its sequence produced tokens: text, or a finish of its own."""
    if choice.get("finish_reason") not in (None, "abort"):
        return True
    if choice.get("text"):
        return True
    delta = choice.get("delta")
    return isinstance(delta, dict) and any(delta.get(name) for name in _OUTPUT_FIELDS)
