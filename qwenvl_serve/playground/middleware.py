"""Serve the playground page and its files at /playground; pass every other request on."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from qwenvl_serve.api_errors import ApiError, send_error
from qwenvl_serve.playground.assets import Asset, load_assets
from qwenvl_serve.playground.config import PlaygroundConfig

PREFIX = "/playground"
PAGE = "index.html"

# The page loads nothing from elsewhere and talks only to this server; images and
# videos are previewed from data: URLs.
SECURITY_HEADERS = (
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src data:; connect-src 'self'; form-action 'none'; base-uri 'none'; "
        "frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-cache"),
)


@dataclass(frozen=True)
class Serve:
    """Answer with this asset."""

    name: str


@dataclass(frozen=True)
class Redirect:
    """Send the browser to ``location`` (relative, so it works under a path prefix)."""

    location: str


@dataclass(frozen=True)
class NotOurs:
    """Not a playground path: the next layer answers."""


def resolve(path: str) -> Serve | Redirect | NotOurs:
    """What a request path means to the playground."""
    if path == PREFIX:
        return Serve(PAGE)
    if path == PREFIX + "/":
        return Redirect("../playground")
    if path.startswith(PREFIX + "/"):
        return Serve(path.removeprefix(PREFIX + "/"))
    return NotOurs()


class PlaygroundMiddleware:
    """GET or HEAD ``/playground`` gives the page, ``/playground/<file>`` its files."""

    def __init__(self, app: ASGIApp, config: PlaygroundConfig) -> None:
        self.app = app
        self.assets = load_assets() if config.enabled else {}
        self.enabled = config.enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.enabled:
            await self.app(scope, receive, send)
            return
        target = resolve(scope["path"])
        # Other methods are refused by the route allowlist, except a CORS preflight,
        # which vLLM's CORS layer answers as on every route.
        if isinstance(target, NotOurs) or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        if isinstance(target, Redirect):
            await _respond(send, 308, [("location", target.location)], b"", scope["method"])
            return
        asset = self.assets.get(target.name)
        if asset is None:
            await send_error(scope, send, ApiError(404, "No such playground file."))
            return
        await _serve(send, asset, scope["method"])


async def _serve(send: Send, asset: Asset, method: str) -> None:
    headers = [("content-type", asset.content_type), *SECURITY_HEADERS]
    await _respond(send, 200, headers, asset.body, method)


async def _respond(
    send: Send, status: int, headers: list[tuple[str, str]], body: bytes, method: str
) -> None:
    raw_headers = [(name.encode(), value.encode()) for name, value in headers]
    raw_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
