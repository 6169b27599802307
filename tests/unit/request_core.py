"""Test helper: a layer placed in the request core, as the real stack places it."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Receive

from qwenvl_serve.config import InstanceConfig
from qwenvl_serve.core.engine_edge import EngineEdgeMiddleware
from qwenvl_serve.core.families import families_from_config
from qwenvl_serve.core.intake import IntakeMiddleware


def in_request_core(
    inner: ASGIApp, config: InstanceConfig, layer: Callable[[ASGIApp], ASGIApp] = lambda app: app
) -> ASGIApp:
    """intake -> ``layer`` -> engine edge -> ``inner`` (the stand-in for vLLM)."""
    app = layer(EngineEdgeMiddleware(inner))
    return IntakeMiddleware(app, families_from_config(config), config.images.max_request_bytes)


async def whole_body(receive: Receive) -> bytes:
    """What a stand-in for vLLM reads: the request body, to its last message."""
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body
