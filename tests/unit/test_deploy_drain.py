"""Graceful stop: after a stop signal new requests get a clean 503, the server's own
handler still runs, and requests already inside are left alone."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from qwenvl_serve.config_loading import resolve_config
from qwenvl_serve.launch_plan import build_vllm_args, drain_timeout_seconds
from qwenvl_serve.middleware.drain import DrainMiddleware, chain_stop_handler

TEST_SIGNAL = signal.SIGUSR1


@pytest.fixture
def restore_test_signal() -> Iterator[None]:
    """A harmless handler for the test signal (its default would end the test run)."""
    before = signal.getsignal(TEST_SIGNAL)
    signal.signal(TEST_SIGNAL, signal.SIG_IGN)
    yield
    signal.signal(TEST_SIGNAL, before)


async def inner_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"inner"})


def client(app: DrainMiddleware) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def start_lifespan(app: DrainMiddleware) -> None:
    async def receive() -> dict[str, str]:
        return {"type": "lifespan.startup"}

    async def send(_message: object) -> None:
        pass

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)


@pytest.mark.anyio
async def test_requests_pass_until_the_stop_signal_then_get_503(restore_test_signal):
    app = DrainMiddleware(inner_app, stop_signals=[TEST_SIGNAL])
    await start_lifespan(app)
    async with client(app) as http:
        assert (await http.post("/v1/chat/completions")).text == "inner"
        os.kill(os.getpid(), TEST_SIGNAL)
        await asyncio.sleep(0)  # the Python-level handler runs between bytecodes
        refused = await http.post("/v1/chat/completions")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["connection"] == "close"
        assert refused.json()["error"]["code"] == "shutting_down"
        assert refused.json()["error"]["type"] == "service_unavailable_error"
        google = await http.post("/v1beta/models/m:generateContent")
        assert google.json()["error"]["status"] == "UNAVAILABLE"
        assert (await http.get("/health")).status_code == 503
        assert (await http.get("/metrics")).text == "inner"  # scrapes still work while draining


@pytest.mark.anyio
async def test_the_previous_handler_still_runs(restore_test_signal):
    seen: list[int] = []
    signal.signal(TEST_SIGNAL, lambda signum, _frame: seen.append(signum))
    app = DrainMiddleware(inner_app, stop_signals=[TEST_SIGNAL])
    await start_lifespan(app)
    await start_lifespan(app)  # installing twice must not chain twice
    os.kill(os.getpid(), TEST_SIGNAL)
    await asyncio.sleep(0)
    assert app.stopping.is_set()
    assert seen == [TEST_SIGNAL]


def test_an_asyncio_loop_handler_still_runs(restore_test_signal):
    """vLLM stops through loop.add_signal_handler; chaining ours must not disable it."""
    flag: list[str] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        stopped = asyncio.Event()
        loop.add_signal_handler(TEST_SIGNAL, stopped.set)
        try:
            chain_stop_handler(TEST_SIGNAL, lambda: flag.append("ours"))
            os.kill(os.getpid(), TEST_SIGNAL)
            await asyncio.wait_for(stopped.wait(), timeout=5)
        finally:
            loop.remove_signal_handler(TEST_SIGNAL)

    asyncio.run(scenario())
    assert flag == ["ours"]


def test_with_no_handler_before_the_signal_keeps_its_default_meaning():
    code = (
        "import os, signal\n"
        "from qwenvl_serve.middleware.drain import chain_stop_handler\n"
        "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
        "chain_stop_handler(signal.SIGTERM, lambda: print('flagged', flush=True))\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "import time; time.sleep(5)\n"
        "print('survived')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert result.stdout == "flagged\n"
    assert result.returncode == -signal.SIGTERM


@pytest.mark.anyio
async def test_other_scope_types_pass_through():
    seen: list[str] = []

    async def recorder(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    app = DrainMiddleware(recorder, stop_signals=[])
    app.stopping.set()
    await app({"type": "websocket", "path": "/x"}, None, None)  # type: ignore[arg-type]
    assert seen == ["websocket"]


@pytest.mark.parametrize(("drain", "timeout"), [(0, 0), (0.2, 1), (30, 30), (12.5, 13)])
def test_drain_time_becomes_vllms_shutdown_timeout(drain, timeout):
    args = build_vllm_args(resolve_config({"model": "m", "shutdown": {"drain_seconds": drain}}))
    assert args[args.index("--shutdown-timeout") + 1] == str(timeout)
    assert drain_timeout_seconds(drain) == timeout
