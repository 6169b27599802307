"""The image normalization layer: the last of our layers before the engine edge.

For every chat request (whatever API family the client spoke) it works on the request
view: refuses what must not reach the engine, fetches remote images itself, normalizes
every image in a bounded thread pool (the images of one request in parallel), puts the
normalized ``data:`` URLs in the view's document and tells the client the sizes in
``x-qwenvl-normalized-images``. Completions requests have no images, but their prompt
is checked for vision tokens. Everything else passes through untouched.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import pyvips
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Receive, Scope, Send

from qwenvl_serve.api_errors import send_error
from qwenvl_serve.config import InstanceConfig
from qwenvl_serve.core.client_gone import unless_client_leaves
from qwenvl_serve.core.responses import with_header
from qwenvl_serve.core.view import InferenceRequest, inference_request
from qwenvl_serve.images.chat_request import (
    ImageSlot,
    RequestRules,
    find_images,
    replace_image_urls,
)
from qwenvl_serve.images.config import ImagesConfig
from qwenvl_serve.images.data_url import (
    JPEG_DATA_URL_PREFIX,
    check_payload_length,
    decode_payload,
    jpeg_data_url,
    parse_data_url,
)
from qwenvl_serve.images.fetch import FetchPolicy, RemoteImageFetcher, Resolver, system_resolver
from qwenvl_serve.images.metrics import ImageMetrics
from qwenvl_serve.images.normalize import (
    NormalizedImage,
    Outcome,
    normalize_image,
    passthrough_image,
)
from qwenvl_serve.images.rejections import Reason, RefusalError
from qwenvl_serve.images.reserved_tokens import check_completion_request
from qwenvl_serve.metrics import Children
from qwenvl_serve.routes import COMPLETIONS_PATH

NORMALIZED_SIZES_HEADER = b"x-qwenvl-normalized-images"
_T = TypeVar("_T")
# Base64 payloads up to this length (192 KB of image) are checked on the event loop.
INLINE_PAYLOAD_CHARS = 256 * 1024


@dataclass(frozen=True)
class PreparedImage:
    """One image ready for the engine: the URL to send (None: keep the client's)."""

    url: str | None
    image: NormalizedImage


def rules_from_config(config: InstanceConfig) -> RequestRules:
    """What a chat request may contain under ``config``."""
    return RequestRules(
        max_images=config.max_images_per_request,
        allowed_fields=frozenset(config.images.allowed_request_fields),
        video_enabled=config.engine_media_limit("video") > 0,
        # Qwen3-VL has no audio input, so audio needs an explicit limit.
        audio_enabled=config.engine.limit_mm_per_prompt.get("audio", 0) > 0,
        remote_urls=config.images.remote_urls,
    )


def prepare_small_data_url(url: str, config: ImagesConfig) -> PreparedImage | None:
    """A small ``data:`` URL image that passes as it is, checked on the event loop
    (decoding a few hundred KB of base64 and reading a header cost less than a thread
    hop); None when it is larger or must be re-encoded, which the pool does."""
    payload = parse_data_url(url).payload
    if len(payload) > INLINE_PAYLOAD_CHARS:
        return None
    image = passthrough_image(decode_payload(payload, config.max_bytes), config)
    if image is None:
        return None
    keep = url.startswith(JPEG_DATA_URL_PREFIX)
    return PreparedImage(None if keep else jpeg_data_url(image.data), image)


def prepare_data_url(url: str, config: ImagesConfig) -> PreparedImage:
    """Decode and normalize a ``data:`` URL image (CPU work: runs in the pool)."""
    data = decode_payload(parse_data_url(url).payload, config.max_bytes)
    image = normalize_image(data, config)
    keep = image.outcome is Outcome.PASSTHROUGH and url.startswith(JPEG_DATA_URL_PREFIX)
    return PreparedImage(None if keep else jpeg_data_url(image.data), image)


def prepare_bytes(data: bytes, config: ImagesConfig) -> PreparedImage:
    """Normalize downloaded bytes (CPU work: runs in the pool)."""
    image = normalize_image(data, config)
    return PreparedImage(jpeg_data_url(image.data), image)


class ImageNormalizationMiddleware:
    """Checks and normalizes the images of chat-completions requests before vLLM."""

    def __init__(
        self,
        app: ASGIApp,
        config: InstanceConfig,
        registry: CollectorRegistry,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.app = app
        self.config = config.images
        self.rules = rules_from_config(config)
        self.metrics = ImageMetrics.create(registry)
        self.images_by_outcome = Children(self.metrics.images)
        self.fetcher = RemoteImageFetcher(FetchPolicy.from_config(config.images), resolver)
        self.pool = ThreadPoolExecutor(
            max_workers=config.images.worker_threads, thread_name_prefix="qwenvl-images"
        )
        # libvips would otherwise keep recent (untrusted) images in its operation cache.
        pyvips.cache_set_max(0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = inference_request(scope) if scope["type"] == "http" else None
        if request is None:
            await self.app(scope, receive, send)
            return
        try:
            if request.engine_path == COMPLETIONS_PATH:
                check_completion_request(request.document)
                sizes: list[tuple[int, int]] = []
            else:
                work = self._normalize_request(request)
                if not request.image_count:
                    sizes = await work  # only checks: nothing worth listening for
                else:
                    outcome = await unless_client_leaves(work, receive)
                    if outcome is None:
                        return  # the client left: its pending decodes were dropped with it
                    sizes, receive = outcome
        except RefusalError as rejected:
            self.metrics.refusals.labels(reason=rejected.reason.code).inc()
            await send_error(scope, send, rejected.api_error())
            return
        await self.app(scope, receive, _with_sizes(send, sizes))

    async def _normalize_request(self, request: InferenceRequest) -> list[tuple[int, int]]:
        """Normalize the request's images in its document; the size of each image."""
        slots = find_images(request.document, self.rules, request.media)
        if not slots:
            return []
        for slot in slots:  # every cheap check before any fetch or decode
            self._check_syntax(slot)
        outcomes = await asyncio.gather(
            *(self._prepare(slot) for slot in slots), return_exceptions=True
        )
        prepared: list[PreparedImage] = []
        for slot, outcome in zip(slots, outcomes, strict=True):
            if isinstance(outcome, RefusalError):
                raise outcome.at(slot.param)
            if isinstance(outcome, BaseException):
                raise outcome
            prepared.append(outcome)
        sizes = [(p.image.width, p.image.height) for p in prepared]
        if all(p.url is None for p in prepared):
            return sizes  # every image passes unchanged: the client's bytes stay
        urls = [p.url or slot.url for p, slot in zip(prepared, slots, strict=True)]
        replace_image_urls(request.document, slots, urls)
        request.mark_changed()
        return sizes

    def _check_syntax(self, slot: ImageSlot) -> None:
        try:
            if slot.url.startswith("data:"):
                check_payload_length(parse_data_url(slot.url).payload, self.config.max_bytes)
            elif slot.url.lower().startswith(("http://", "https://")):
                self.fetcher.check_syntax(slot.url)
            else:
                raise RefusalError(Reason.BAD_IMAGE_URL)
        except RefusalError as rejected:
            self.metrics.images.labels(outcome="rejected").inc()
            raise rejected.at(slot.param) from None

    async def _prepare(self, slot: ImageSlot) -> PreparedImage:
        try:
            if slot.url.startswith("data:"):
                started = time.perf_counter()
                small = prepare_small_data_url(slot.url, self.config)
                if small is not None:
                    self.metrics.normalize_seconds.observe(time.perf_counter() - started)
                    prepared = small
                else:
                    prepared = await self._run(True, self._timed, prepare_data_url, slot.url)
            else:
                data = await self._fetch(slot.url)
                prepared = await self._run(True, self._timed, prepare_bytes, data)
        except RefusalError:
            self.metrics.images.labels(outcome="rejected").inc()
            raise
        self._count(prepared.image)
        return prepared

    async def _fetch(self, url: str) -> bytes:
        try:
            data = await self.fetcher.fetch(url)
        except RefusalError as rejected:
            self.metrics.fetches.labels(outcome=rejected.reason.code).inc()
            raise
        self.metrics.fetches.labels(outcome="ok").inc()
        return data

    def _timed(
        self, prepare: Callable[[_T, ImagesConfig], PreparedImage], source: _T
    ) -> PreparedImage:
        started = time.perf_counter()
        try:
            return prepare(source, self.config)
        finally:
            self.metrics.normalize_seconds.observe(time.perf_counter() - started)

    def _count(self, image: NormalizedImage) -> None:
        self.images_by_outcome(outcome=image.outcome.value).inc()
        self.metrics.bytes_in.inc(image.input_bytes)
        self.metrics.bytes_out.inc(len(image.data))
        self.metrics.pixels_in.inc(image.input_pixels)
        self.metrics.pixels_out.inc(image.width * image.height)

    async def _run(self, in_pool: bool, function: Callable[..., _T], *args: Any) -> _T:
        """``function(*args)``, in the layer's thread pool when ``in_pool``."""
        if not in_pool:
            return function(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(function, *args))


def _with_sizes(send: Send, sizes: list[tuple[int, int]]) -> Send:
    """``send`` that adds the normalized image sizes to the response headers."""
    if not sizes:
        return send
    value = ",".join(f"{width}x{height}" for width, height in sizes).encode()
    return with_header(send, NORMALIZED_SIZES_HEADER, value)
