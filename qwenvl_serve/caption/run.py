"""One caption run: find the images, skip the finished ones, caption the rest."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from qwenvl_serve.caption.batches import Batch, plan_batches
from qwenvl_serve.caption.command import API_KEY_VARIABLES, DEFAULT_BASE_URL
from qwenvl_serve.caption.discovery import CaptionInputError, discover_images
from qwenvl_serve.caption.output import open_output
from qwenvl_serve.caption.progress import ProgressBar
from qwenvl_serve.caption.prompts import Language, Style, style_prompt
from qwenvl_serve.caption.retry import RetryPolicy
from qwenvl_serve.caption.runner import (
    Calling,
    CaptionRequest,
    RowSink,
    caption_all,
    resolve_model,
)
from qwenvl_serve.caption.summary import Tally


def api_key_from(given: str | None, environ: Mapping[str, str]) -> str | None:
    """``--api-key``, else the first of the key variables that is set."""
    if given:
        return given
    return next((environ[name] for name in API_KEY_VARIABLES if environ.get(name)), None)


def checked_base_url(text: str) -> str:
    """``--base-url`` if it is an http(s) URL with a host and a usable port.

    Checked before anything is read or sent, since a bad one would otherwise only
    fail deep inside the connection (a port over 65535 is an ``OverflowError`` there).
    """
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise CaptionInputError(f"--base-url is not a valid URL ({exc}): {text}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise CaptionInputError(
            f"--base-url must be an http:// or https:// URL with a host, "
            f"like {DEFAULT_BASE_URL}: {text}"
        )
    if url.port is not None and not 1 <= url.port <= 65535:
        raise CaptionInputError(f"--base-url has a port outside 1-65535: {text}")
    return text


def prompt_chooser(
    prompt: str | None, style: Style, language: Language
) -> Callable[[int, bool], str]:
    """The prompt for a request of N images (or a video): the user's own, else the
    style's wording."""

    def chosen(count: int, video: bool) -> str:
        if prompt is not None:
            return prompt
        return style_prompt(style, language, count, video)

    return chosen


@dataclass(frozen=True)
class CaptionOptions:
    """Everything the caption command was asked to do, typed."""

    paths: Sequence[Path]
    recursive: bool
    prompt_for: Callable[[int, bool], str]
    base_url: str
    api_key: str | None
    model: str | None
    max_tokens: int
    temperature: float | None
    concurrency: int
    out: Path | None
    group_size: int | None  # None: one image per request
    timeout: float
    retries: int
    progress: bool

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, environ: Mapping[str, str] = os.environ
    ) -> CaptionOptions:
        """The options parsed by :func:`~qwenvl_serve.caption.command.add_caption_arguments`."""
        return cls(
            paths=args.paths,
            recursive=args.recursive,
            prompt_for=prompt_chooser(args.prompt, args.style, args.lang),
            base_url=checked_base_url(args.base_url),
            api_key=api_key_from(args.api_key, environ),
            model=args.model,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            concurrency=args.concurrency,
            out=args.out,
            group_size=args.group_size if args.group else None,
            timeout=args.timeout,
            retries=args.retries,
            progress=not args.quiet,
        )


def http_client(options: CaptionOptions) -> httpx.AsyncClient:
    """The HTTP client for one run, pointed at the API base URL."""
    headers = {"authorization": f"Bearer {options.api_key}"} if options.api_key else {}
    return httpx.AsyncClient(
        base_url=options.base_url.rstrip("/") + "/",
        headers=headers,
        timeout=httpx.Timeout(options.timeout, connect=min(options.timeout, 10.0)),
        limits=httpx.Limits(max_connections=options.concurrency),
    )


async def run_caption(options: CaptionOptions, started: float) -> tuple[Tally, float]:
    """Caption what ``options`` name; returns the tally and the seconds since ``started``."""
    batches = plan_batches(discover_images(options.paths, options.recursive), options.group_size)
    with open_output(options.out) as output:
        todo = [batch for batch in batches if batch.key not in output.done]
        total = sum(len(batch.images) for batch in batches)
        todo_images = sum(len(batch.images) for batch in todo)
        tally = Tally(skipped=total - todo_images)
        if todo:
            tally = await _caption(options, todo, todo_images, output.writer, tally)
    return tally, time.monotonic() - started


async def _caption(
    options: CaptionOptions,
    todo: Sequence[Batch],
    todo_images: int,
    sink: RowSink,
    start: Tally,
) -> Tally:
    retry = RetryPolicy(max_attempts=options.retries + 1)
    async with http_client(options) as client:
        calling = Calling(client=client, retry=retry)
        with ProgressBar(todo_images, enabled=options.progress) as progress:
            model = await resolve_model(calling, progress.note, options.model)
            request = CaptionRequest(
                model=model,
                max_tokens=options.max_tokens,
                temperature=options.temperature,
                prompt_for=options.prompt_for,
            )
            return await caption_all(
                calling, request, todo, options.concurrency, sink, progress, start
            )
