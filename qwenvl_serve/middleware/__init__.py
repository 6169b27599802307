"""The ASGI middleware stack that vLLM loads in-process through ``--middleware``.

vLLM instantiates :class:`QwenVLServeMiddleware` with the app as its only argument,
so the resolved configuration arrives through the environment the launcher sets.

Where things go:

- A new client API (Responses, Messages, ...) is a route in :mod:`qwenvl_serve.routes`
  and an :class:`~qwenvl_serve.core.families.ApiFamily` in
  :mod:`qwenvl_serve.core.families`: the intake translates it into the one request
  view, and every layer below works unchanged.
- A new layer that works on inference requests goes between the intake and the
  engine edge, reads :func:`~qwenvl_serve.core.view.inference_request`, and changes
  the view (``override`` for a top-level field, ``mark_changed`` after changing the
  document inside) instead of the body. On the way out it
  reads vLLM's answers from the engine edge's annotations
  (:mod:`qwenvl_serve.core.responses`), never by parsing bytes, and status and usage
  from the request's one watch (:func:`~qwenvl_serve.core.responses.watched`). Add it
  to :data:`LAYER_ORDER` with the reason for its place.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from prometheus_client import REGISTRY, CollectorRegistry
from starlette.types import ASGIApp, Receive, Scope, Send

from qwenvl_serve import __version__
from qwenvl_serve.access.allowlist import RouteAllowlistMiddleware
from qwenvl_serve.access.auth import AuthMiddleware
from qwenvl_serve.access.limits import LimitsMiddleware
from qwenvl_serve.access.metering import MeteringMiddleware
from qwenvl_serve.body_pace import BodyPace, PaceKeeper
from qwenvl_serve.cache.metrics import CacheMetrics
from qwenvl_serve.cache.middleware import (
    CacheMiddleware,
    FetchedMediaCacheMiddleware,
    ResultCache,
)
from qwenvl_serve.cache.policy import policy_fingerprint
from qwenvl_serve.config import InstanceConfig
from qwenvl_serve.core.engine_edge import EngineEdgeMiddleware
from qwenvl_serve.core.families import families_from_config
from qwenvl_serve.core.intake import IntakeMiddleware
from qwenvl_serve.images.middleware import ImageNormalizationMiddleware
from qwenvl_serve.launch_plan import CONFIG_ENV_VAR
from qwenvl_serve.metrics import ServeMetrics
from qwenvl_serve.middleware.drain import DrainMiddleware
from qwenvl_serve.middleware.errors import ErrorBoundaryMiddleware
from qwenvl_serve.middleware.observe import ObserveMiddleware
from qwenvl_serve.middleware.request_id import RequestIdMiddleware
from qwenvl_serve.playground.middleware import PlaygroundMiddleware
from qwenvl_serve.video.middleware import VideoMiddleware

# Outermost first: the order a request meets the layers in, and why each stands there.
LAYER_ORDER: tuple[tuple[str, str], ...] = (
    ("request id", "first, so every answer and log line, errors included, carries the id"),
    ("error boundary", "outside everything that can fail: an exception becomes a 500"),
    ("drain", "after a stop signal, refuses new requests before any work is done"),
    (
        "observe",
        "counts and logs every request, refusals by the layers below included; "
        "the outermost reader of the response watch, so it feeds the watch",
    ),
    ("route allowlist", "404/405 from the route table before a key is even looked at"),
    ("playground", "static pages; public, so no key is needed"),
    ("auth", "names the caller's key before anything reads the body"),
    ("intake", "reads and parses the body once; translates API families to one view"),
    ("limits", "bounds cost, admits by key and instance from the view; body arrived"),
    (
        "metering",
        "inside the translation: asks for stream usage and cuts what the client did "
        "not ask for from OpenAI answers",
    ),
    (
        "cache",
        "before the media layers: a request with inline media is keyed on its bytes, "
        "so a hit skips the media work and vLLM",
    ),
    ("images", "checks and normalizes media in the view; the most expensive of the checks"),
    ("video", "after the image layer's request checks; samples video in a worker process"),
    (
        "cache, fetched media",
        "a request with remote media is keyed on the body vLLM gets (images as fetched)",
    ),
    (
        "engine edge",
        "serializes the view once (or passes the client's bytes); reads answers; "
        "rewrites vLLM's errors as ours",
    ),
)


def config_from_environment(environ: Mapping[str, str]) -> InstanceConfig:
    """The config the launcher resolved; a clear error when started some other way."""
    payload = environ.get(CONFIG_ENV_VAR)
    if payload is None:
        raise RuntimeError(
            f"{CONFIG_ENV_VAR} is not set: start the server with `qwenvl-serve serve`"
        )
    return InstanceConfig.model_validate_json(payload)


def media_policy(config: InstanceConfig) -> str:
    """The fingerprint of what the layers between the cache and vLLM do to a request."""
    return policy_fingerprint(
        {
            "version": __version__,
            "images": config.images.model_dump(mode="json"),
            "video": config.video.model_dump(mode="json"),
            "generate_content": config.generate_content.model_dump(mode="json"),
            "media_limits": config.engine_media_limits,
        }
    )


def build_stack(app: ASGIApp, config: InstanceConfig, registry: CollectorRegistry) -> ASGIApp:
    """Wrap vLLM's ``app`` in our layers: :data:`LAYER_ORDER` says why in this order.

    Built innermost first, so the code below reads the order bottom-up.
    """
    metrics = ServeMetrics.create(config.public_model_name, registry)
    app = EngineEdgeMiddleware(app)
    admins = frozenset(key.name for key in config.auth.keys if key.admin)
    cache = ResultCache(
        config.cache,
        config.public_model_name,
        media_policy(config),
        admins,
        CacheMetrics.create(registry),
    )
    app = FetchedMediaCacheMiddleware(app, cache)
    if config.video.enabled:
        app = VideoMiddleware(app, config, registry)
    app = ImageNormalizationMiddleware(app, config, registry)
    app = CacheMiddleware(app, cache)
    hit_factor = config.cache.hit_price_factor
    app = MeteringMiddleware(
        app,
        config.public_model_name,
        config.metering,
        metrics,
        hit_factor,
        chat_usage_per_chunk=config.engine.reasoning_parser is None,
    )
    app = LimitsMiddleware(
        app,
        config.auth,
        config.limits,
        metrics,
        config.max_tokens_per_media,
        config.engine.max_model_len,
        hit_factor,
    )
    pace = PaceKeeper(
        BodyPace(config.limits.body_timeout_seconds, config.limits.min_body_bytes_per_second)
    )
    app = IntakeMiddleware(app, families_from_config(config), config.images.max_request_bytes, pace)
    app = AuthMiddleware(app, config.auth, config.metrics, metrics)
    app = PlaygroundMiddleware(app, config.playground)
    app = RouteAllowlistMiddleware(app, metrics)
    app = ObserveMiddleware(app, metrics)
    app = DrainMiddleware(app)
    app = ErrorBoundaryMiddleware(app)
    return RequestIdMiddleware(app)


class QwenVLServeMiddleware:
    """The one class vLLM loads: builds our whole stack around vLLM's app."""

    def __init__(
        self,
        app: ASGIApp,
        config: InstanceConfig | None = None,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        config = config if config is not None else config_from_environment(os.environ)
        self.app = build_stack(app, config, registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
