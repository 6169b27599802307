"""When a client leaves, vLLM's work for it is aborted by id and its answer still read."""

import asyncio

import pytest

from qwenvl_serve.core.cost import cost_of
from qwenvl_serve.core.engine_stop import (
    abort_until_answered,
    engine_of,
    engine_request_ids,
    holding_disconnect,
    stops_when_client_leaves,
)
from qwenvl_serve.routes import CHAT_COMPLETIONS, COMPLETIONS, GENERATE_CONTENT


def test_engine_ids_follow_vllm_s_naming():
    assert engine_request_ids(CHAT_COMPLETIONS, "r1", cost_of({"messages": []}, chat=True)) == [
        "chatcmpl-r1"
    ]
    assert engine_request_ids(GENERATE_CONTENT, "r2", cost_of({"messages": []}, chat=True)) == [
        "chatcmpl-r2"
    ]
    assert engine_request_ids(COMPLETIONS, "r3", cost_of({"prompt": ["a", "b"]}, chat=False)) == [
        "cmpl-r3-0",
        "cmpl-r3-1",
    ]


@pytest.mark.parametrize(
    ("document", "stops"),
    [
        ({"messages": [], "stream": True, "n": 4}, True),
        ({"messages": []}, True),
        ({"messages": [], "n": 2}, False),  # its JSON answer cannot say which sequences began
        ({"prompt": ["a", "b"]}, False),
        ({"prompt": ["a", "b"], "stream": True}, True),
    ],
)
def test_which_requests_are_aborted_when_their_client_leaves(document, stops):
    assert stops_when_client_leaves(cost_of(document, chat="messages" in document)) is stops


class Engine:
    def __init__(self) -> None:
        self.aborted: list[list[str]] = []

    async def abort(self, request_id):
        self.aborted.append(list(request_id))


class App:
    class state:  # noqa: N801 - the shape of Starlette's app.state
        engine_client = Engine()


def test_the_engine_is_found_on_the_app_that_serves_the_request():
    assert isinstance(engine_of({"app": App()}), Engine)
    assert engine_of({}) is None


@pytest.mark.anyio
async def test_the_abort_is_repeated_until_vllm_has_answered():
    engine, answered = Engine(), asyncio.Event()
    task = asyncio.create_task(abort_until_answered(engine, ["chatcmpl-x"], answered))
    await asyncio.sleep(0.25)  # the request may reach the engine only after the client left
    answered.set()
    await task
    assert len(engine.aborted) >= 2
    assert all(ids == ["chatcmpl-x"] for ids in engine.aborted)


@pytest.mark.anyio
async def test_vllm_hears_of_the_disconnect_only_after_the_hook_returns():
    order = []
    messages = [{"type": "http.request", "body": b""}, {"type": "http.disconnect"}]

    async def receive():
        return messages.pop(0)

    async def hook():
        order.append("hook")

    receive_held = holding_disconnect(receive, hook)
    assert (await receive_held())["type"] == "http.request"
    assert order == []
    assert (await receive_held())["type"] == "http.disconnect"
    assert order == ["hook"]
