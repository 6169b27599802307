"""Where entries live: in this process (bounded, LRU) or on Redis (shared by replicas).

Both hold opaque bytes under an entry name ``<scope>:<digest>`` (see
:func:`qwenvl_serve.cache.policy.cache_key`) for ``ttl_seconds``, and purge one scope or
all. A Redis that is slow or unreachable raises :class:`StoreUnavailableError` within
its timeout; the cache layer then treats the request as a miss.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import redis.asyncio as redis_asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

KEY_PREFIX = "qwenvl:cache:"
_T = TypeVar("_T")


class StoreUnavailableError(Exception):
    """The backend did not answer in time, or failed."""


class CacheStore(Protocol):
    """A place for entries."""

    async def get(self, name: str) -> bytes | None:
        """The bytes stored under ``name``, or None."""
        ...

    async def put(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name``, replacing what was there."""
        ...

    async def purge(self, scope: str | None) -> int:
        """Drop the entries of ``scope`` (a key name), or all when None; how many."""
        ...


class MemoryStore:
    """Entries in this process, at most ``max_bytes`` of them; least recently used go."""

    def __init__(
        self,
        max_bytes: int,
        ttl_seconds: float,
        on_evict: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.ttl_seconds = ttl_seconds
        self.on_evict = on_evict
        self.clock = clock
        self.bytes = 0
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    async def get(self, name: str) -> bytes | None:
        found = self._entries.get(name)
        if found is None:
            return None
        data, expires = found
        if self.clock() >= expires:
            self._drop(name)
            return None
        self._entries.move_to_end(name)
        return data

    async def put(self, name: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        if name in self._entries:
            self._drop(name)
        self._entries[name] = (data, self.clock() + self.ttl_seconds)
        self.bytes += len(data)
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
            self.on_evict()

    async def purge(self, scope: str | None) -> int:
        names = [name for name in self._entries if scope is None or _in_scope(name, scope)]
        for name in names:
            self._drop(name)
        return len(names)

    def _drop(self, name: str) -> None:
        data, _ = self._entries.pop(name)
        self.bytes -= len(data)


class RedisStore:
    """Entries on Redis under ``qwenvl:cache:<model>:``, each with Redis's own expiry."""

    def __init__(self, url: str, model: str, ttl_seconds: int, timeout_s: float) -> None:
        self.ttl_seconds = ttl_seconds
        self.timeout_s = timeout_s
        self.prefix = f"{KEY_PREFIX}{model}:"
        self.client = redis_asyncio.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=0,
            # One immediate reconnect (a pooled connection gone stale when Redis
            # restarted), not redis-py's ten with backoff, which the timeout would cut.
            retry=Retry(NoBackoff(), 1),
        )

    async def get(self, name: str) -> bytes | None:
        data = await self._run(self.client.get(self.prefix + name))
        return data if isinstance(data, bytes) else None

    async def put(self, name: str, data: bytes) -> None:
        await self._run(self.client.set(self.prefix + name, data, ex=self.ttl_seconds))

    async def purge(self, scope: str | None) -> int:
        pattern = self.prefix + ("*" if scope is None else f"{scope}:*")
        dropped = 0
        cursor = 0
        while True:
            cursor, names = await self._run(self.client.scan(cursor, match=pattern, count=500))
            if names:
                dropped += await self._run(self.client.delete(*names))
            if cursor == 0:
                return dropped

    async def _run(self, operation: Awaitable[_T]) -> _T:
        # A dead Redis must cost a request at most the timeout, connection attempts included.
        try:
            return await asyncio.wait_for(operation, self.timeout_s)
        except (RedisError, OSError, TimeoutError) as failure:
            raise StoreUnavailableError(type(failure).__name__) from None


def _in_scope(name: str, scope: str) -> bool:
    return name.startswith(scope + ":")
