"""The ASGI middleware stack that vLLM loads in-process through ``--middleware``.

vLLM instantiates :class:`QwenVLServeMiddleware` with the app as its only argument,
so the resolved configuration arrives through the environment the launcher sets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from prometheus_client import REGISTRY, CollectorRegistry
from starlette.types import ASGIApp, Receive, Scope, Send

from qwenvl_serve.access.allowlist import RouteAllowlistMiddleware
from qwenvl_serve.access.auth import AuthMiddleware
from qwenvl_serve.access.limits import LimitsMiddleware
from qwenvl_serve.access.metering import MeteringMiddleware
from qwenvl_serve.config import InstanceConfig
from qwenvl_serve.genai.middleware import GenerateContentMiddleware
from qwenvl_serve.images.middleware import ImageNormalizationMiddleware
from qwenvl_serve.launch_plan import CONFIG_ENV_VAR
from qwenvl_serve.metrics import ServeMetrics
from qwenvl_serve.middleware.drain import DrainMiddleware
from qwenvl_serve.middleware.observe import ObserveMiddleware
from qwenvl_serve.middleware.request_id import RequestIdMiddleware
from qwenvl_serve.playground.middleware import PlaygroundMiddleware


def config_from_environment(environ: Mapping[str, str]) -> InstanceConfig:
    """The config the launcher resolved; a clear error when started some other way."""
    payload = environ.get(CONFIG_ENV_VAR)
    if payload is None:
        raise RuntimeError(
            f"{CONFIG_ENV_VAR} is not set: start the server with `qwenvl-serve serve`"
        )
    return InstanceConfig.model_validate_json(payload)


def build_stack(app: ASGIApp, config: InstanceConfig, registry: CollectorRegistry) -> ASGIApp:
    """Wrap vLLM's ``app`` in our layers, innermost first.

    A request meets them in the reverse order: request id -> drain (stop signal) ->
    observe (request metrics, access log) -> playground (answers /playground only) ->
    route allowlist -> auth -> limits -> metering -> generateContent adapter -> image
    normalization -> vLLM. Each layer creates its own metrics in ``registry``.
    """
    app = ImageNormalizationMiddleware(app, config, registry)  # innermost: OpenAI-shaped only
    # Every layer that buffers a body stops at the same cap, before buffering it whole.
    max_body = config.images.max_request_bytes
    app = GenerateContentMiddleware(
        app, config.generate_content, config.public_model_name, max_body
    )
    metrics = ServeMetrics.create(config.public_model_name, registry)
    app = MeteringMiddleware(app, config.public_model_name, config.metering, metrics, max_body)
    app = LimitsMiddleware(app, config.auth, config.limits, metrics, max_body)
    app = AuthMiddleware(app, config.auth, config.metrics, metrics)
    app = RouteAllowlistMiddleware(app, metrics)
    app = PlaygroundMiddleware(app, config.playground)
    app = ObserveMiddleware(app, metrics)
    app = DrainMiddleware(app)  # after a stop signal: 503 for new requests, in-flight finish
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
