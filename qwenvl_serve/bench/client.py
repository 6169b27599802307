"""Send one streaming chat request and time every chunk of its answer (the I/O shell)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from qwenvl_serve.bench.metrics import RequestRecord
from qwenvl_serve.bench.sse import parse_sse_event
from qwenvl_serve.core.sse import SseSplitter

JSON_HEADERS = {"content-type": "application/json", "accept": "text/event-stream"}


@dataclass(frozen=True)
class RequestMeta:
    """What a record is filed under: its target, position in the workload and label."""

    target: str
    index: int
    label: str
    probe: bool = False


async def send_streaming(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    meta: RequestMeta,
    clock: Callable[[], float] = time.perf_counter,
) -> RequestRecord:
    """POST ``body`` to ``url`` and record when each event of the stream arrived.

    Never raises for HTTP or transport problems: they become the record's status/error.
    """
    token_times: list[float] = []
    events = 0
    prompt_tokens = output_tokens = status = None
    error: str | None = None
    start = clock()
    try:
        async with client.stream("POST", url, content=body, headers=JSON_HEADERS) as response:
            status = response.status_code
            if status != 200:
                await response.aread()
            else:
                splitter = SseSplitter()
                # Raw bytes, split here: cheaper per event than httpx's text line
                # iterator, which matters when client and server share a small machine.
                async for chunk in response.aiter_raw():
                    now = clock()  # every event of one network chunk arrived together
                    for raw in splitter.feed(chunk):
                        event = parse_sse_event(raw)
                        if event is None:
                            continue
                        events += 1
                        if event.kind == "token":
                            token_times.append(now)
                        elif event.kind == "error":
                            error = "stream_error"
                        if event.prompt_tokens is not None:
                            prompt_tokens = event.prompt_tokens
                        if event.completion_tokens is not None:
                            output_tokens = event.completion_tokens
    except httpx.TimeoutException:
        error = "timeout"
    except httpx.HTTPError:  # refused, reset, or cut off mid-stream
        error = "connection"
    return RequestRecord(
        target=meta.target,
        index=meta.index,
        label=meta.label,
        start=start,
        end=clock(),
        status=status,
        token_times=tuple(token_times),
        error=error,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        events=events,
        probe=meta.probe,
    )
