"""The ``images:`` config section."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from qwenvl_serve.config_base import StrictModel

MIB = 1024 * 1024

ImageFormat = Literal["jpeg", "png", "webp", "gif"]
# Request fields that change how vLLM renders or processes media; refused unless listed.
OverrideField = Literal[
    "mm_processor_kwargs", "media_io_kwargs", "chat_template", "chat_template_kwargs"
]

_DOMAIN_PATTERN = re.compile(
    r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$"
)


def _default_formats() -> list[ImageFormat]:
    return ["jpeg", "png", "webp"]


class ImagesConfig(StrictModel):
    """How images in requests are checked and normalized before the engine sees them."""

    max_bytes: int = Field(
        default=10 * MIB,
        ge=1,
        description=(
            "Largest encoded image in bytes (after base64 decoding, or as downloaded); "
            "larger ones are refused with 413 before decoding."
        ),
    )
    max_input_pixels: int = Field(
        default=50_000_000,
        ge=1,
        description=(
            "Most pixels an image may declare in its header; checked before decoding, "
            "so decompression bombs never allocate."
        ),
    )
    max_per_request: int = Field(
        default=4,
        ge=0,
        description=(
            "Most images in one request, checked before any fetch or decode. "
            "`engine.limit_mm_per_prompt.image` caps it as well."
        ),
    )
    max_side: int = Field(
        default=2048,
        ge=32,
        multiple_of=32,
        description="Longest side of an image as the engine receives it (a multiple of 32).",
    )
    max_pixels: int = Field(
        default=3_145_728,
        ge=65_536,
        description=(
            "Most pixels of an image as the engine receives it (default 2048x1536: at most "
            "3,072 image tokens). vLLM's processor gets the same bound."
        ),
    )
    jpeg_quality: int = Field(
        default=95,
        ge=1,
        le=100,
        description="JPEG quality of re-encoded images (metadata stripped).",
    )
    formats: list[ImageFormat] = Field(
        default_factory=_default_formats,
        min_length=1,
        description="Accepted formats, told by their magic bytes; the declared type is ignored.",
    )
    max_request_bytes: int = Field(
        default=64 * MIB,
        ge=1024,
        description=(
            "Largest request body on the inference routes (chat, completions, "
            "generateContent); larger ones are refused with 413 before being buffered."
        ),
    )
    worker_threads: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Threads that decode and resize images, off the event loop.",
    )
    remote_urls: bool = Field(
        default=True,
        description="Accept http(s) image URLs; the server fetches them itself, never vLLM.",
    )
    fetch_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Deadline for one remote image: DNS, every redirect and the whole body.",
    )
    max_redirects: int = Field(
        default=3,
        ge=0,
        le=3,
        description="Redirects followed per remote image, each one vetted again.",
    )
    allowed_domains: list[str] = Field(
        default_factory=list,
        description=(
            "If set, remote images only from these hosts: `example.com` (that host) or "
            "`*.example.com` (its subdomains). Empty: any public host."
        ),
    )
    allow_loopback_urls_for_testing: bool = Field(
        default=False,
        description="Tests only: allow image URLs on 127.0.0.0/8 and ::1. Never in production.",
    )
    allowed_request_fields: list[OverrideField] = Field(
        default_factory=list,
        description=(
            "Per-request fields that may change media processing or the chat template; "
            "requests carrying any other of them are refused."
        ),
    )

    @property
    def max_tokens_per_image(self) -> int:
        """The most prompt tokens one image can become: one per 32x32 pixels within
        ``max_pixels``, plus the vision start and end tokens."""
        return self.max_pixels // (32 * 32) + 2

    @field_validator("allowed_domains")
    @classmethod
    def _domains_are_host_patterns(cls, domains: list[str]) -> list[str]:
        lowered = [domain.lower().rstrip(".") for domain in domains]
        for domain in lowered:
            if not _DOMAIN_PATTERN.match(domain):
                raise ValueError(f"{domain!r} is not a host name or *.suffix pattern")
        return lowered
