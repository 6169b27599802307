"""The cache layers: answer repeated requests from the result cache, keep new answers.

One :class:`ResultCache` (store, single flight, metrics) serves two layers, because a
request is keyed where the bytes that fix its answer first exist:

- :class:`CacheMiddleware` stands before the media layers. A request whose media are
  all inline is keyed on its bytes as sent (with the media policy's fingerprint), so a
  hit skips the image checks, the base64 decode and the video worker. It also answers
  the purge route and counts the requests it does not cache.
- :class:`FetchedMediaCacheMiddleware` stands after them, before the engine edge. A
  request with a remote image or video is keyed on the body vLLM will receive: images
  as fetched and normalized, never their URL.

A layer stores vLLM's answer as it came, with the usage metering asked for, and replays
it with the same annotations, so the layers outside (metering, limits, the
generateContent relay) read a hit like a live answer: metering trims the usage to what
the client asked for, and a generateContent client gets Google's format, JSON or
streamed.

Concurrent identical misses make one engine call: the first runs, the others wait for
its answer and replay it; if the first one's client leaves before its answer, the first
of the others to wake runs it for the rest. A backend that fails costs a miss, never an error.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import time
from collections.abc import Callable, Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from qwenvl_serve.access.notes import NO_KEY, notes_for
from qwenvl_serve.api_errors import ApiError, send_error
from qwenvl_serve.asgi_body import header, read_body
from qwenvl_serve.cache.config import CacheConfig
from qwenvl_serve.cache.entry import Entry, decode, encode
from qwenvl_serve.cache.metrics import CacheMetrics
from qwenvl_serve.cache.policy import (
    AS_ENGINE_GETS,
    AS_SENT,
    Controls,
    as_sent,
    cache_key,
    controls_of,
    is_deterministic,
    media_are_inline,
)
from qwenvl_serve.cache.replay import BYPASS, HIT, MISS, Recorder, replay, with_outcome
from qwenvl_serve.cache.stores import CacheStore, MemoryStore, RedisStore, StoreUnavailableError
from qwenvl_serve.core.view import InferenceRequest, inference_request
from qwenvl_serve.routes import CACHE_PURGE, route_of

FAILURE_LOG_INTERVAL_S = 10.0
# Hashing releases the GIL: a body this large is hashed in a thread, off the event loop.
HASH_OFF_LOOP_BYTES = 1 << 20
_KEYED_LATER = "qwenvl_serve.cache.keyed_after_media"
_NOT_ADMIN = ApiError(403, "Only an admin key may purge the cache.", code="purge_forbidden")
_BAD_PURGE = ApiError(400, 'The body must be {} or {"key": "<key name>"}.', code="invalid_purge")

logger = logging.getLogger("qwenvl_serve.cache")


class FlightEnd(enum.Enum):
    """How a flight ended without an answer to share (None: one that may not be kept)."""

    LEADER_LEFT = "the leading request's client left before its answer"


LEADER_LEFT = FlightEnd.LEADER_LEFT


def store_for(config: CacheConfig, model: str, on_evict: Callable[[], None]) -> CacheStore:
    """The backend ``config`` names."""
    if config.backend == "redis" and config.redis_url:
        return RedisStore(
            config.redis_url, model, config.ttl_seconds, config.redis_timeout_ms / 1000
        )
    return MemoryStore(config.max_bytes, config.ttl_seconds, on_evict)


class ResultCache:
    """The exact-match result cache of one server process, shared by both layers."""

    def __init__(
        self,
        config: CacheConfig,
        model: str,
        policy: str,
        admin_keys: frozenset[str],
        metrics: CacheMetrics,
        store: CacheStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.model = model
        self.policy = policy  # fingerprint of the config that shapes requests (see policy.py)
        self.admin_keys = admin_keys
        self.metrics = metrics
        self.store = store or store_for(config, model, metrics.evictions.inc)
        self.clock = clock
        self.flights: dict[str, asyncio.Future[Entry | FlightEnd | None]] = {}
        self._last_failure_log = 0.0
        self._outcomes = {
            outcome: metrics.requests.labels(outcome=outcome) for outcome in (HIT, MISS, BYPASS)
        }

    def count(self, outcome: str) -> None:
        """Count one request's outcome."""
        self._outcomes[outcome].inc()

    async def key(
        self, namespace: str, request: InferenceRequest, material: Sequence[bytes]
    ) -> str:
        """The request's entry name (see :func:`cache_key`); large bodies hashed off the loop."""
        shared = self.config.shared or request.key_name == NO_KEY
        scope_name = None if shared else request.key_name
        arguments = (namespace, self.model, scope_name, material)
        if sum(len(piece) for piece in material) >= HASH_OFF_LOOP_BYTES:
            return await asyncio.to_thread(cache_key, *arguments)
        return cache_key(*arguments)

    async def serve(
        self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, name: str
    ) -> None:
        """Answer from the entry ``name``, or run ``app`` and keep its answer.

        A request joins the flight of an identical one already under way (looking the
        entry up, or running it) before it reads the store itself: a lookup that returns
        only after the first request's answer was made, but before it was stored, would
        otherwise run the engine again. When the first one's client left before its
        answer, the first of those waiting leads a new flight and the rest join it.
        """
        controls = controls_of(header(scope, b"cache-control"))
        if controls.no_cache:  # never waits: leads when alone, else runs beside the flight
            if name in self.flights:
                await self._run_alone(app, scope, receive, send)
            else:
                await self._lead(app, scope, receive, send, name, controls)
            return
        while (running := self.flights.get(name)) is not None:
            ended = await asyncio.shield(running)
            if ended is LEADER_LEFT:
                continue  # no answer to share: the flight is gone, so one of us leads
            if isinstance(ended, Entry) and self._fresh(ended, controls):
                await self._answer_hit(ended, send)
            else:  # an answer that may not be kept, or too old for this request
                await self._run_alone(app, scope, receive, send)
            return
        await self._lead(app, scope, receive, send, name, controls)

    async def _run_alone(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """A miss run beside the flight of an identical request, its answer not kept."""
        self.count(MISS)
        await self._run(app, scope, receive, send)

    async def _lead(
        self,
        app: ASGIApp,
        scope: Scope,
        receive: Receive,
        send: Send,
        name: str,
        controls: Controls,
    ) -> None:
        """Look the entry up, or run ``app`` and keep its answer, as the flight of ``name``."""
        flight: asyncio.Future[Entry | FlightEnd | None] = (
            asyncio.get_running_loop().create_future()
        )
        self.flights[name] = flight
        try:
            entry = None if controls.no_cache else await self._lookup(name, controls)
            if entry is not None:
                flight.set_result(entry)
                await self._answer_hit(entry, send)
                return
            self.count(MISS)
            ended = await self._run(app, scope, receive, send)
            flight.set_result(ended)
            if isinstance(ended, Entry) and not controls.no_store:
                await self._keep(name, entry=ended)
        finally:
            if not flight.done():
                flight.set_result(None)
            # Only now: until the entry is stored, the flight is where it is found.
            del self.flights[name]

    def _fresh(self, entry: Entry, controls: Controls) -> bool:
        return controls.max_age is None or self.clock() - entry.created <= controls.max_age

    async def _answer_hit(self, entry: Entry, send: Send) -> None:
        self.count(HIT)
        await replay(entry, send, self.clock() - entry.created)

    async def _lookup(self, name: str, controls: Controls) -> Entry | None:
        try:
            data = await self.store.get(name)
        except StoreUnavailableError as failure:
            self._store_failed("get", failure)
            return None
        entry = None if data is None else decode(data)
        if entry is None:
            return None  # none, or not one of ours: the answer will replace it
        return entry if self._fresh(entry, controls) else None

    async def _run(
        self, app: ASGIApp, scope: Scope, receive: Receive, send: Send
    ) -> Entry | FlightEnd | None:
        """Run ``app``; its answer if it may be kept, LEADER_LEFT if the client left first."""
        recorder = Recorder(self.config.max_entry_bytes, self.clock)
        await app(scope, recorder.watch(receive), recorder.wrap(with_outcome(send, MISS)))
        return LEADER_LEFT if recorder.client_left else recorder.entry()

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

    async def purge(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The admin route: drop one key's entries (``{"key": name}``) or all (``{}``)."""
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


class CacheMiddleware:
    """Before the media layers: keys requests with inline media on their bytes as sent;
    hands the others to :class:`FetchedMediaCacheMiddleware`."""

    def __init__(self, app: ASGIApp, cache: ResultCache) -> None:
        self.app = app
        self.cache = cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = inference_request(scope)
        if request is None:
            if route_of(scope).name == CACHE_PURGE:
                await self.cache.purge(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        config = self.cache.config
        if not config.enabled:
            await self.app(scope, receive, send)
            return
        if not is_deterministic(request.document, config.mode):
            self.cache.count(BYPASS)
            await self.app(scope, receive, with_outcome(send, BYPASS))
            return
        if not media_are_inline(request.media):
            scope[_KEYED_LATER] = True
            await self.app(scope, receive, send)
            return
        path = scope.get("raw_path") or scope["path"].encode()
        material = as_sent(request, path, scope.get("query_string", b""))
        name = await self.cache.key(f"{AS_SENT} {self.cache.policy}", request, material)
        await self.cache.serve(self.app, scope, receive, send, name)


class FetchedMediaCacheMiddleware:
    """After the media layers: keys the requests with remote media on the body vLLM
    will receive (their images as fetched and normalized)."""

    def __init__(self, app: ASGIApp, cache: ResultCache) -> None:
        self.app = app
        self.cache = cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = inference_request(scope)
        if request is None or not scope.get(_KEYED_LATER):
            await self.app(scope, receive, send)
            return
        material = [request.engine_body()]
        name = await self.cache.key(f"{AS_ENGINE_GETS} {request.engine_path}", request, material)
        await self.cache.serve(self.app, scope, receive, send, name)
