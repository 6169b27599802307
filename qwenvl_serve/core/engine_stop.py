"""When a client leaves: stop vLLM's work for it, and still read what was computed.

Left to itself, vLLM cancels a request's handler when the client disconnects, and the
tokens computed until then are counted by the engine but reported to no one. So the
engine edge keeps the disconnect from vLLM's handler and aborts the request in the
engine by its id instead: vLLM then ends the request with ``finish_reason: abort``
and answers in full (a stream's last chunks and usage, or the whole JSON body), which
metering reads as for any other request. The client is gone, so nobody receives it.

A non-streamed request with several sequences is not aborted but runs to its end
(its cost is bounded by ``limits.max_n`` and ``limits.max_tokens``): its JSON answer
cannot say which sequences had started, which metering needs to count their prompts
the way vLLM's counters do.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from starlette.types import Message, Receive, Scope

from qwenvl_serve.core.cost import Cost
from qwenvl_serve.routes import COMPLETIONS

ABORT_INTERVAL_S = 0.1  # the request may reach the engine only after the client left


class Engine(Protocol):
    """What of vLLM's engine client this module uses."""

    async def abort(self, request_id: Iterable[str]) -> None: ...


def engine_of(scope: Scope) -> Engine | None:
    """vLLM's engine client, from the app that serves ``scope``; None without one."""
    app = scope.get("app")
    engine = getattr(getattr(app, "state", None), "engine_client", None)
    return engine if callable(getattr(engine, "abort", None)) else None


def engine_request_ids(route_name: str, base: str, cost: Cost) -> list[str]:
    """The ids vLLM gives a request's engine requests, from the request's base id.

    vLLM's chat route uses ``chatcmpl-<id>``; its completions route ``cmpl-<id>-<i>``
    for the i-th prompt. A test against the real engine checks these.
    """
    if route_name == COMPLETIONS:
        return [f"cmpl-{base}-{index}" for index in range(cost.prompts)]
    return [f"chatcmpl-{base}"]


def stops_when_client_leaves(cost: Cost) -> bool:
    """Whether a request is aborted when its client leaves (see the module docstring)."""
    return cost.stream or cost.sequences == 1


async def abort_until_answered(
    engine: Engine, request_ids: list[str], answered: asyncio.Event
) -> None:
    """Abort ``request_ids`` until vLLM has answered: the request may reach the engine
    only after the client left (while vLLM still renders its prompt), and aborting an
    id the engine does not hold yet does nothing."""
    while not answered.is_set():
        await engine.abort(request_ids)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(answered.wait(), ABORT_INTERVAL_S)


def holding_disconnect(receive: Receive, on_disconnect: Callable[[], Awaitable[None]]) -> Receive:
    """A ``receive`` for vLLM that, when the client leaves, runs ``on_disconnect``
    (which returns once vLLM has answered) before vLLM's handler hears of it."""

    async def receive_holding() -> Message:
        message = await receive()
        if message["type"] == "http.disconnect":
            await on_disconnect()
        return message

    return receive_holding
