"""The cache layer: answers repeated requests from the result cache, keeps new answers.

It stands after the image layer (the key holds the image bytes as normalized) and
before the engine edge (a hit never reaches vLLM). It stores vLLM's answer as it came,
with the usage metering asked for, and replays it with the same annotations, so the
layers outside (metering, limits, the generateContent relay) read a hit like a live
answer: metering trims the usage to what the client asked for, and a generateContent
client gets Google's format, JSON or streamed.

Concurrent identical misses make one engine call: the first runs, the others wait for
its answer and replay it. A backend that fails costs a miss, never an error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwenvl_serve.access.notes import NO_KEY, notes_for
from qwenvl_serve.api_errors import ApiError, send_error
from qwenvl_serve.asgi_body import header, read_body
from qwenvl_serve.cache.config import CacheConfig
from qwenvl_serve.cache.entry import Entry, decode, encode
from qwenvl_serve.cache.metrics import CacheMetrics
from qwenvl_serve.cache.policy import (
    Controls,
    cache_key,
    complete_answer,
    controls_of,
    is_deterministic,
)
from qwenvl_serve.cache.stores import CacheStore, MemoryStore, RedisStore, StoreUnavailableError
from qwenvl_serve.core.responses import (
    CACHE_OUTCOME,
    ENGINE_EVENTS,
    FROM_ENGINE,
    EngineEvent,
    engine_events,
    is_event_stream,
)
from qwenvl_serve.core.sse import event_data
from qwenvl_serve.core.view import InferenceRequest, inference_request
from qwenvl_serve.routes import CACHE_PURGE, route_of

HIT, MISS, BYPASS = "hit", "miss", "bypass"
OUTCOME_HEADER = b"x-qwenvl-cache"
FAILURE_LOG_INTERVAL_S = 10.0
_NOT_ADMIN = ApiError(403, "Only an admin key may purge the cache.", code="purge_forbidden")
_BAD_PURGE = ApiError(400, 'The body must be {} or {"key": "<key name>"}.', code="invalid_purge")

logger = logging.getLogger("qwenvl_serve.cache")


def store_for(config: CacheConfig, model: str, on_evict: Callable[[], None]) -> CacheStore:
    """The backend ``config`` names."""
    if config.backend == "redis" and config.redis_url:
        return RedisStore(
            config.redis_url, model, config.ttl_seconds, config.redis_timeout_ms / 1000
        )
    return MemoryStore(config.max_bytes, config.ttl_seconds, on_evict)


class CacheMiddleware:
    """The exact-match result cache of one server process."""

    def __init__(
        self,
        app: ASGIApp,
        config: CacheConfig,
        model: str,
        admin_keys: frozenset[str],
        metrics: CacheMetrics,
        store: CacheStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.config = config
        self.model = model
        self.admin_keys = admin_keys
        self.metrics = metrics
        self.store = store or store_for(config, model, metrics.evictions.inc)
        self.clock = clock
        self.flights: dict[str, asyncio.Future[Entry | None]] = {}
        self._last_failure_log = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = inference_request(scope)
        if request is None:
            if route_of(scope).name == CACHE_PURGE:
                await self._purge(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if not self.config.enabled or not is_deterministic(request.document, self.config.mode):
            await self._bypass(scope, receive, send)
            return
        await self._serve(scope, receive, send, request)

    async def _bypass(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.config.enabled:
            self.metrics.requests.labels(outcome=BYPASS).inc()
            send = with_outcome(send, BYPASS)
        await self.app(scope, receive, send)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, request: InferenceRequest
    ) -> None:
        controls = controls_of(header(scope, b"cache-control"))
        shared = self.config.shared or request.key_name == NO_KEY
        scope_name = None if shared else request.key_name
        name = cache_key(request.engine_path, self.model, scope_name, request.engine_body())
        if not controls.no_cache:
            entry = await self._lookup(name, controls)
            if entry is None and name in self.flights:
                # The same request is running: its answer is this one's.
                entry = await asyncio.shield(self.flights[name])
            if entry is not None:
                self.metrics.requests.labels(outcome=HIT).inc()
                await replay(entry, send, self.clock() - entry.created)
                return
        self.metrics.requests.labels(outcome=MISS).inc()
        await self._run_and_keep(scope, receive, send, name, controls)

    async def _lookup(self, name: str, controls: Controls) -> Entry | None:
        try:
            data = await self.store.get(name)
        except StoreUnavailableError as failure:
            self._store_failed("get", failure)
            return None
        entry = None if data is None else decode(data)
        if entry is None:
            return None  # none, or not one of ours: the answer will replace it
        if controls.max_age is not None and self.clock() - entry.created > controls.max_age:
            return None
        return entry

    async def _run_and_keep(
        self, scope: Scope, receive: Receive, send: Send, name: str, controls: Controls
    ) -> None:
        flight: asyncio.Future[Entry | None] | None = None
        if name not in self.flights:
            flight = asyncio.get_running_loop().create_future()
            self.flights[name] = flight
        recorder = Recorder(self.config.max_entry_bytes, self.clock)
        entry: Entry | None = None
        try:
            await self.app(scope, receive, recorder.wrap(with_outcome(send, MISS)))
            entry = recorder.entry()
        finally:
            if flight is not None:
                del self.flights[name]
                flight.set_result(entry)
        if entry is not None and not controls.no_store:
            await self._keep(name, entry)

    async def _keep(self, name: str, entry: Entry) -> None:
        data = encode(entry)
        try:
            await self.store.put(name, data)
        except StoreUnavailableError as failure:
            self._store_failed("put", failure)
            return
        self.metrics.written_bytes.inc(len(data))
        if isinstance(self.store, MemoryStore):
            self.metrics.bytes.set(self.store.bytes)

    async def _purge(self, scope: Scope, receive: Receive, send: Send) -> None:
        key_name = notes_for(scope).key_name
        if key_name != NO_KEY and key_name not in self.admin_keys:
            await send_error(scope, send, _NOT_ADMIN)
            return
        body, _ = await read_body(scope, receive, 4096)
        try:
            asked = json.loads(body or b"{}")
            scope_name = asked.get("key") if isinstance(asked, dict) else None
            if not isinstance(asked, dict) or not isinstance(scope_name, str | None):
                raise ValueError
        except ValueError:
            await send_error(scope, send, _BAD_PURGE)
            return
        try:
            purged = await self.store.purge(scope_name)
        except StoreUnavailableError as failure:
            self._store_failed("purge", failure)
            await send_error(scope, send, ApiError(503, "The cache backend is unavailable."))
            return
        if isinstance(self.store, MemoryStore):
            self.metrics.bytes.set(self.store.bytes)
        answer = json.dumps({"purged": purged}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    def _store_failed(self, operation: str, failure: Exception) -> None:
        self.metrics.errors.labels(operation=operation).inc()
        now = time.monotonic()
        if now - self._last_failure_log >= FAILURE_LOG_INTERVAL_S:
            self._last_failure_log = now
            logger.warning(
                "cache backend %s failed (%s); serving as a miss (logged at most every %ds)",
                operation,
                failure,
                FAILURE_LOG_INTERVAL_S,
            )


def with_outcome(send: Send, outcome: str) -> Send:
    """``send`` that marks the response start with the cache's outcome (header and
    annotation)."""

    async def send_marked(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", []), (OUTCOME_HEADER, outcome.encode())]
            message = {**message, "headers": headers, CACHE_OUTCOME: outcome}
        await send(message)

    return send_marked


class Recorder:
    """Keeps vLLM's answer as it passes, for the cache: whole and successful, or nothing."""

    def __init__(self, max_bytes: int, clock: Callable[[], float]) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self.status: int | None = None
        self.streamed = False
        self.content_type = b"application/json"
        self.events: list[EngineEvent] = []
        self.size = 0
        self.ended = False

    def wrap(self, send: Send) -> Send:
        """``send`` that records what passes."""

        async def send_recorded(message: Message) -> None:
            self._see(message)
            await send(message)

        return send_recorded

    def _see(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.streamed = is_event_stream(message)
            self.content_type = (
                header({"headers": message.get("headers", [])}, b"content-type") or b""
            )
            return
        if message["type"] != "http.response.body":
            return
        for event in engine_events(message):
            self.events.append(event)
            self.size += len(event.raw)
        self.ended = not message.get("more_body", False)

    def entry(self) -> Entry | None:
        """The answer to keep, if it may be kept."""
        if self.status != 200 or not self.ended or self.size > self.max_bytes:
            return None
        if not self.events or not complete_answer(self.events):
            return None
        chunks = tuple(event.raw for event in self.events)
        return Entry(self.streamed, self.content_type, self.clock(), chunks)


async def replay(entry: Entry, send: Send, age: float) -> None:
    """Answer with ``entry``, annotated as vLLM's answers are, one message per event."""
    headers = [
        (b"content-type", entry.content_type),
        (OUTCOME_HEADER, HIT.encode()),
        (b"age", str(max(0, int(age))).encode()),
    ]
    if not entry.streamed:
        headers.append((b"content-length", str(entry.size).encode()))
    start = {"type": "http.response.start", "status": 200, "headers": headers}
    await send({**start, FROM_ENGINE: True, CACHE_OUTCOME: HIT})
    if not entry.streamed:
        body = entry.chunks[0]
        await send(
            {"type": "http.response.body", "body": body, ENGINE_EVENTS: [EngineEvent(body, body)]}
        )
        return
    for raw in entry.chunks:
        event = EngineEvent(raw, event_data(raw), streamed=True)
        await send(
            {"type": "http.response.body", "body": raw, "more_body": True, ENGINE_EVENTS: [event]}
        )
    await send({"type": "http.response.body", "body": b"", "more_body": False})
