"""The video layer: every video part becomes frames we sampled, before the engine.

For a chat request with a video part (whatever API family the client spoke) it
takes the video's bytes (a ``data:`` URL, or an http(s) URL through the same vetted,
pinned fetcher as images), checks the container by its magic bytes, has a worker
process probe, sample and encode it, and puts a ``video/jpeg`` data URL of our frames
in the view, with their timing in ``media_io_kwargs``. The client learns what the
video became in ``x-qwenvl-video``. Requests without video pass untouched.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Receive, Scope, Send

from qwenvl_serve.access.notes import NO_KEY
from qwenvl_serve.api_errors import send_error
from qwenvl_serve.config import InstanceConfig
from qwenvl_serve.core.client_gone import unless_client_leaves
from qwenvl_serve.core.responses import with_header
from qwenvl_serve.core.view import InferenceRequest, inference_request
from qwenvl_serve.images.chat_request import MediaPart, media_url
from qwenvl_serve.images.fetch import FetchPolicy, RemoteImageFetcher, Resolver, system_resolver
from qwenvl_serve.images.rejections import Reason, RefusalError
from qwenvl_serve.routes import CHAT_COMPLETIONS_PATH
from qwenvl_serve.video.config import VideoConfig
from qwenvl_serve.video.engine_input import (
    VIDEO_HEADER,
    describe,
    media_io_kwargs,
    video_data_url,
    video_prompt_tokens,
)
from qwenvl_serve.video.metrics import VideoMetrics
from qwenvl_serve.video.pool import VideoDecoder
from qwenvl_serve.video.protocol import DecodedVideo
from qwenvl_serve.video.source import BufferedVideo, InlineVideo, VideoSource

# Image-worded refusals of the shared data-URL and fetch code, in video words.
_AS_VIDEO = {
    Reason.IMAGE_TOO_LARGE: Reason.VIDEO_TOO_LARGE,
    Reason.BAD_IMAGE_URL: Reason.BAD_VIDEO_URL,
}


def fetch_policy(video: VideoConfig, config: InstanceConfig) -> FetchPolicy:
    """The image fetcher's vetting, with the video's size and time limits."""
    images = FetchPolicy.from_config(config.images)
    return FetchPolicy(
        max_bytes=video.max_bytes,
        timeout_seconds=video.fetch_timeout_seconds,
        max_redirects=images.max_redirects,
        allowed_domains=images.allowed_domains,
        allow_loopback=images.allow_loopback,
        accept="video/*",
    )


class VideoMiddleware:
    """Samples the video of a chat request in a worker before vLLM sees it."""

    def __init__(
        self,
        app: ASGIApp,
        config: InstanceConfig,
        registry: CollectorRegistry,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.app = app
        self.config = config.video
        self.remote_urls = config.images.remote_urls
        self.max_videos = config.max_videos_per_request
        self.metrics = VideoMetrics.create(registry)
        self.fetcher = RemoteImageFetcher(fetch_policy(config.video, config), resolver)
        self.decoder = VideoDecoder(config.video, os.environ)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = inference_request(scope) if scope["type"] == "http" else None
        videos = _video_parts(request)
        if request is None or not videos:
            await self.app(scope, receive, send)
            return
        try:
            outcome = await unless_client_leaves(self._sample(request, videos), receive)
        except RefusalError as rejected:
            self.metrics.videos.labels(outcome=rejected.reason.code).inc()
            await send_error(scope, send, rejected.api_error())
            return
        if outcome is None:  # the client left: its worker was stopped with it
            self.metrics.videos.labels(outcome="client_gone").inc()
            return
        decoded, receive = outcome
        await self.app(scope, receive, with_header(send, VIDEO_HEADER, describe(decoded).encode()))

    async def _sample(self, request: InferenceRequest, videos: list[MediaPart]) -> DecodedVideo:
        if len(videos) > self.max_videos:
            raise RefusalError(Reason.TOO_MANY_VIDEOS, videos[self.max_videos].param)
        part = videos[0]
        # Its URL is replaced below, or the request refused: the client's bytes (the
        # video's base64 a second time) need not wait in memory with it.
        request.mark_changed()
        try:
            key = None if request.key_name == NO_KEY else request.key_name
            decoded = await self._decode(_video_url(part.part), key)
        except RefusalError as rejected:
            reason = _AS_VIDEO.get(rejected.reason, rejected.reason)
            raise RefusalError(reason, part.param) from None
        part.part["video_url"] = {"url": video_data_url(decoded)}
        request.mark_changed()
        request.override("media_io_kwargs", media_io_kwargs(decoded))
        self._count(decoded)
        return decoded

    async def _decode(self, url: str, key_name: str | None) -> DecodedVideo:
        source = await self._source_of(url)
        started = time.perf_counter()
        try:
            return await self.decoder.decode(source, key_name)
        finally:
            self.metrics.decode_seconds.observe(time.perf_counter() - started)

    async def _source_of(self, url: str) -> VideoSource:
        if url.startswith("data:"):
            return await InlineVideo.open(url, self.config.max_bytes)
        if not url.lower().startswith(("http://", "https://")):
            raise RefusalError(Reason.BAD_VIDEO_URL)
        if not self.remote_urls:
            raise RefusalError(Reason.REMOTE_URLS_DISABLED)
        self.fetcher.check_syntax(url)
        return BufferedVideo(await self.fetcher.fetch(url))

    def _count(self, video: DecodedVideo) -> None:
        self.metrics.videos.labels(outcome="sampled").inc()
        self.metrics.seconds_in.inc(video.duration)
        self.metrics.frames_in.inc(video.total_frames)
        self.metrics.frames_out.inc(video.frames)
        self.metrics.tokens.inc(video_prompt_tokens(video))


def _video_parts(request: InferenceRequest | None) -> list[MediaPart]:
    if request is None or request.engine_path != CHAT_COMPLETIONS_PATH:
        return []
    return [part for part in request.media if part.kind == "video"]


def _video_url(part: dict[str, Any]) -> str:
    url = media_url("video", part)
    if url is None:
        raise RefusalError(Reason.BAD_VIDEO_PART)
    return url
