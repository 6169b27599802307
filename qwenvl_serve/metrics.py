"""Our Prometheus metrics, registered next to vLLM's so they appear in its /metrics."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Info

from qwenvl_serve import __version__


@dataclass(frozen=True)
class ServeMetrics:
    """The metric objects of one server process. Created once, passed to the layers."""

    requests: Counter

    @classmethod
    def create(cls, served_model_name: str, registry: CollectorRegistry = REGISTRY) -> ServeMetrics:
        """Register our metrics in ``registry`` (vLLM's default registry in production)."""
        build = Info(
            "qwenvl_build",
            "qwenvl-serve version and the model this instance serves.",
            registry=registry,
        )
        build.info({"version": __version__, "served_model_name": served_model_name})
        requests = Counter(
            "qwenvl_requests",
            "HTTP requests answered, by route and status code.",
            ["route", "status"],
            registry=registry,
        )
        return cls(requests=requests)
