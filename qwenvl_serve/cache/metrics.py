"""The cache's Prometheus metrics (outcomes, backend failures, bytes, evictions)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge


@dataclass(frozen=True)
class CacheMetrics:
    """The cache's metric objects of one server process."""

    requests: Counter
    errors: Counter
    bytes: Gauge
    written_bytes: Counter
    evictions: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry = REGISTRY) -> CacheMetrics:
        """Register the cache's metrics in ``registry``."""
        return cls(
            requests=Counter(
                "qwenvl_cache_requests",
                "Inference requests by cache outcome: hit, miss or bypass (not cacheable).",
                ["outcome"],
                registry=registry,
            ),
            errors=Counter(
                "qwenvl_cache_errors",
                "Cache backend operations that failed or timed out (served as misses).",
                ["operation"],
                registry=registry,
            ),
            bytes=Gauge(
                "qwenvl_cache_bytes",
                "Bytes held by the in-memory cache (summed over server processes).",
                registry=registry,
                multiprocess_mode="livesum",
            ),
            written_bytes=Counter(
                "qwenvl_cache_written_bytes",
                "Bytes of answers written to the cache backend.",
                registry=registry,
            ),
            evictions=Counter(
                "qwenvl_cache_evictions",
                "Entries the in-memory cache dropped to stay within cache.max_bytes.",
                registry=registry,
            ),
        )
