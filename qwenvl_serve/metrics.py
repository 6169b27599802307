"""Our Prometheus metrics, registered next to vLLM's so they appear in its /metrics.

Labels are bounded and never hold raw keys, paths or user text: ``key`` is a key's
configured name (or ``-``), ``route`` a route name from :mod:`qwenvl_serve.routes`,
``model`` the served model name. Gauges declare how vLLM's multiprocess mode
(``--api-server-count`` > 1, ``PROMETHEUS_MULTIPROC_DIR``) combines the processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from qwenvl_serve import __version__

_Metric = TypeVar("_Metric", Counter, Histogram)

# From a fast rejection to a long generation.
DURATION_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)


@dataclass(frozen=True)
class ServeMetrics:
    """The metric objects of one server process. Created once, passed to the layers."""

    requests: Counter
    duration: Histogram
    tokens: Counter
    rejections: Counter
    in_flight: Gauge

    @classmethod
    def create(cls, served_model_name: str, registry: CollectorRegistry = REGISTRY) -> ServeMetrics:
        """Register our metrics in ``registry`` (vLLM's default registry in production)."""
        # An Info metric is lost in multiprocess mode; a gauge fixed at 1 is not.
        build = Gauge(
            "qwenvl_build_info",
            "qwenvl-serve version and the model this instance serves.",
            ["version", "served_model_name"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        build.labels(version=__version__, served_model_name=served_model_name).set(1)
        return cls(
            requests=Counter(
                "qwenvl_requests",
                "HTTP requests answered, by key name, route and status code.",
                ["key", "route", "status"],
                registry=registry,
            ),
            duration=Histogram(
                "qwenvl_request_duration_seconds",
                "Time from request to the end of the response, by route.",
                ["route"],
                buckets=DURATION_BUCKETS,
                registry=registry,
            ),
            tokens=Counter(
                "qwenvl_tokens",
                "Tokens used, by key name, model, type (prompt or completion) and source "
                "(engine: computed by vLLM, as its own counters count; cache: answered by "
                "the result cache).",
                ["key", "model", "type", "source"],
                registry=registry,
            ),
            rejections=Counter(
                "qwenvl_rejections",
                "Requests refused before reaching the model, by reason.",
                ["reason"],
                registry=registry,
            ),
            in_flight=Gauge(
                "qwenvl_in_flight",
                "Inference requests being served now (summed over server processes).",
                registry=registry,
                multiprocess_mode="livesum",
            ),
        )


@dataclass
class Children(Generic[_Metric]):
    """The children of a labelled metric, each looked up once.

    ``metric.labels(...)`` validates the names and takes a lock on every call, a few
    microseconds that each request would pay several times on the event loop; the
    label sets are bounded (see the module docstring), and so is this map.
    """

    metric: _Metric
    _found: dict[tuple[tuple[str, str], ...], _Metric] = field(default_factory=dict)

    def __call__(self, **labels: str) -> _Metric:
        """The child for ``labels``."""
        key = tuple(labels.items())
        child = self._found.get(key)
        if child is None:
            child = self._found[key] = self.metric.labels(**labels)
        return child
