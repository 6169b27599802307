"""The async shell: read images, call the API with retries, write rows, report progress."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx

from qwenvl_serve.caption.batches import Batch
from qwenvl_serve.caption.discovery import is_video
from qwenvl_serve.caption.image_files import NotAnImageError, image_data_url
from qwenvl_serve.caption.protocol import (
    UnexpectedAnswerError,
    chat_request,
    error_summary,
    model_ids,
    parse_completion,
)
from qwenvl_serve.caption.results import ResultRow
from qwenvl_serve.caption.retry import RETRYABLE_STATUSES, RetryPolicy, parse_retry_after
from qwenvl_serve.caption.summary import Tally
from qwenvl_serve.errors import UserError

Sleep = Callable[[float], Awaitable[None]]


class Progress(Protocol):
    """Where the runner reports what it does."""

    def advance(self, images: int, tally: Tally) -> None:
        """``images`` more images are finished (captioned or failed)."""

    def note(self, message: str) -> None:
        """A line for the user, e.g. a retry."""


class ServerUnusableError(UserError):
    """The server cannot be used at all (unreachable, refuses the key, no model)."""


@dataclass(frozen=True)
class CaptionRequest:
    """What every request of a run asks for."""

    model: str
    max_tokens: int
    temperature: float | None
    prompt_for: Callable[[int, bool], str]  # the prompt for this many images, or a video


@dataclass(frozen=True)
class Calling:
    """How requests are sent: the client, the retry policy and how to wait."""

    client: httpx.AsyncClient
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Sleep = asyncio.sleep
    jitter: Callable[[], float] = random.random


def _describe_transport_error(exc: httpx.TransportError) -> str:
    return "timed out" if isinstance(exc, httpx.TimeoutException) else "connection failed"


async def send_with_retries(
    calling: Calling,
    method: str,
    url: str,
    label: str,
    note: Callable[[str], None],
    json: dict[str, Any] | None = None,
) -> httpx.Response:
    """Send a request, retrying on 429/502/503/504 and connection errors.

    The last response is returned whatever its status; the last connection error is
    raised once the attempts are used up.
    """
    attempts = 0
    while True:
        attempts += 1
        try:
            response = await calling.client.request(method, url, json=json)
        except httpx.TransportError as exc:
            if not calling.retry.should_retry(attempts):
                raise
            wait = calling.retry.delay(attempts, None, calling.jitter())
            reason = _describe_transport_error(exc)
        else:
            if response.status_code not in RETRYABLE_STATUSES:
                return response
            if not calling.retry.should_retry(attempts):
                return response
            retry_after = parse_retry_after(response.headers.get("retry-after"), datetime.now(UTC))
            wait = calling.retry.delay(attempts, retry_after, calling.jitter())
            reason = f"HTTP {response.status_code}"
        note(f"{label}: {reason}; retrying in {wait:.1f} s (attempt {attempts + 1})")
        await calling.sleep(wait)


async def resolve_model(calling: Calling, note: Callable[[str], None], wanted: str | None) -> str:
    """``wanted`` if the server lists it under ``/models``, else its first model.

    Asking first also stops a run early on a wrong address or a refused key, rather
    than recording the same failure for every image.
    """
    try:
        response = await send_with_retries(calling, "GET", "models", "listing models", note)
    except httpx.TransportError as exc:
        raise ServerUnusableError(
            f"cannot reach {calling.client.base_url}: {_describe_transport_error(exc)}"
        ) from None
    if response.status_code != 200:
        raise ServerUnusableError(
            f"listing models failed: {error_summary(response.status_code, response.text)}"
        )
    served = model_ids(_json_or_none(response))
    if wanted is None:
        if not served:
            raise ServerUnusableError("the server lists no models; pass --model")
        return served[0]
    if served and wanted not in served:
        raise ServerUnusableError(
            f"the server does not serve {wanted!r}: it serves {', '.join(served)}"
        )
    return wanted


def _json_or_none(response: httpx.Response) -> object:
    try:
        return response.json()
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deep to parse
        return None


class UnusableImageError(Exception):
    """An image file that cannot be sent; its message names the file and why."""


async def _data_url(path: Path) -> str:
    try:
        data = await asyncio.to_thread(path.read_bytes)
    except OSError as exc:
        raise UnusableImageError(f"cannot read {path}: {exc.strerror or 'read error'}") from None
    try:
        return image_data_url(data)
    except NotAnImageError as exc:
        raise UnusableImageError(f"{path}: {exc}") from None


async def caption_batch(
    calling: Calling, request: CaptionRequest, batch: Batch, note: Callable[[str], None]
) -> ResultRow:
    """Caption one batch; any failure becomes an error row rather than an exception."""
    images = tuple(str(path) for path in batch.images)
    failed = ResultRow(images=images, model=request.model)
    label = images[0] if len(images) == 1 else f"{images[0]} (+{len(images) - 1})"
    try:
        urls = [await _data_url(path) for path in batch.images]
    except UnusableImageError as exc:
        return _with_error(failed, str(exc))
    body = chat_request(
        request.model,
        request.prompt_for(len(urls), any(is_video(path) for path in batch.images)),
        urls,
        request.max_tokens,
        request.temperature,
    )
    try:
        response = await send_with_retries(
            calling, "POST", "chat/completions", label, note, json=body
        )
    except httpx.TransportError as exc:
        reason = _describe_transport_error(exc)
        return _with_error(failed, f"{reason} after {calling.retry.max_attempts} attempts")
    if response.status_code != 200:
        return _with_error(failed, error_summary(response.status_code, response.text))
    try:
        completion = parse_completion(_json_or_none(response))
    except UnexpectedAnswerError as exc:
        return _with_error(failed, str(exc))
    return ResultRow(
        images=images,
        caption=completion.text,
        model=request.model,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        finish_reason=completion.finish_reason,
    )


def _with_error(row: ResultRow, error: str) -> ResultRow:
    return ResultRow(images=row.images, error=error, model=row.model)


class RowSink(Protocol):
    """Takes each finished row."""

    def write(self, row: ResultRow) -> None:
        """Record one row."""


async def caption_all(
    calling: Calling,
    request: CaptionRequest,
    batches: Sequence[Batch],
    concurrency: int,
    sink: RowSink,
    progress: Progress,
    start: Tally,
) -> Tally:
    """Caption ``batches`` with ``concurrency`` requests in flight; returns the final tally."""
    queue: Iterable[Batch] = iter(batches)
    tally = start

    async def worker() -> None:
        nonlocal tally
        for batch in queue:  # shared iterator: each batch is taken by one worker
            row = await caption_batch(calling, request, batch, progress.note)
            sink.write(row)
            tally = tally.add(row)
            progress.advance(len(batch.images), tally)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, len(batches))):
            group.create_task(worker())
    return tally
