"""Refuse new requests cleanly once the server has been told to stop.

vLLM (``--shutdown-timeout``, set from ``shutdown.drain_seconds``) lets in-flight
requests finish on SIGTERM, but a request that arrives meanwhile fails deep inside the
engine with a 500 carrying exception text, and ``/health`` still answers 200. This
layer notices the stop signal and answers every new request with a 503 that says so,
with ``Retry-After`` and ``Connection: close``, so the client can go to another replica,
while the requests already running finish.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType

from starlette.types import ASGIApp, Receive, Scope, Send

from qwenvl_serve.api_errors import ApiError, send_error
from qwenvl_serve.routes import METRICS, route_of

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
SHUTTING_DOWN = ApiError(
    status=503,
    message="The server is shutting down; send the request to another instance.",
    code="shutting_down",
    headers=(("Retry-After", "1"), ("Connection", "close")),
)


def chain_stop_handler(signum: int, on_stop: Callable[[], None]) -> None:
    """Call ``on_stop`` when ``signum`` arrives, then whatever handled it before.

    The server's own handlers are asyncio loop handlers: they run through the wakeup
    file descriptor, which is unaffected by replacing the Python-level handler, so the
    server still begins its own graceful shutdown.
    """
    previous = signal.getsignal(signum)

    def handle(received: int, frame: FrameType | None) -> None:
        on_stop()
        if callable(previous):
            previous(received, frame)
        elif previous == signal.SIG_DFL:
            # Nobody handled it before us: keep the default meaning of a stop signal.
            signal.signal(received, signal.SIG_DFL)
            signal.raise_signal(received)

    signal.signal(signum, handle)


class DrainMiddleware:
    """Answers 503 to every request that arrives after a stop signal; /metrics stays open.

    The hook is installed when the ASGI lifespan starts, which is after the server has
    installed its own stop handlers, so both run.
    """

    def __init__(self, app: ASGIApp, stop_signals: Iterable[int] = STOP_SIGNALS) -> None:
        self.app = app
        self.stop_signals = tuple(stop_signals)
        self.stopping = threading.Event()
        self.hooked = threading.Event()

    def install_stop_hook(self) -> None:
        """Chain our flag in front of the current handlers, once (main thread only)."""
        if self.hooked.is_set() or threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set there; stopping then stays vLLM's alone
        self.hooked.set()
        for signum in self.stop_signals:
            chain_stop_handler(signum, self.stopping.set)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            self.install_stop_hook()
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.stopping.is_set() and route_of(scope).name != METRICS:
            await send_error(scope, send, SHUTTING_DOWN)
            return
        await self.app(scope, receive, send)
