"""Find and check the media in a chat-completions request body. Pure: no I/O.

The walk mirrors how vLLM reads content parts (by ``type``, or by key when ``type``
is missing), so every part vLLM would treat as an image is seen here first.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from qwenvl_serve.core.cost import lax_flag
from qwenvl_serve.images.rejections import Reason, RefusalError
from qwenvl_serve.images.reserved_tokens import vision_token_location

# Request fields that change media processing or the prompt template (and so could
# raise the server's limits or desynchronise vision tokens).
OVERRIDE_FIELDS = (
    "mm_processor_kwargs",
    "media_io_kwargs",
    "chat_template",
    "chat_template_kwargs",
)
_IMAGE_TYPES = frozenset({"image_url", "input_image"})
_VIDEO_TYPES = frozenset({"video_url"})
_AUDIO_TYPES = frozenset({"audio_url", "input_audio"})
_EMBEDDING_TYPES = frozenset(
    {"image_embeds", "audio_embeds", "video_embeds", "prompt_embeds", "image_pil"}
)
_MEDIA_KEYS = ("image_url", "video_url", "audio_url", "input_audio", *sorted(_EMBEDDING_TYPES))
# Keys by which Qwen's chat templates render a vision block for a part, whatever vLLM
# reads the part as; a part may carry only those of its own kind.
_TEMPLATE_KEYS = {
    "image": frozenset({"image", "image_url"}),
    "video": frozenset({"video", "video_url"}),
}
_ALL_TEMPLATE_KEYS = frozenset().union(*_TEMPLATE_KEYS.values())


@dataclass(frozen=True)
class RequestRules:
    """What a request may contain, worked out once from the config."""

    max_images: int
    allowed_fields: frozenset[str]
    video_enabled: bool
    audio_enabled: bool
    remote_urls: bool


@dataclass(frozen=True)
class MediaPart:
    """One media content part of a chat conversation, where it is, and what kind."""

    kind: str  # image, video, audio or embeddings (see media_kind)
    message_index: int
    part_index: int
    part: dict[str, Any]

    @property
    def param(self) -> str:
        return f"messages[{self.message_index}].content[{self.part_index}]"

    @property
    def chars(self) -> int:
        """Characters of the part's strings (its URL or data), two levels deep."""
        return _string_chars(self.part, depth=2)


def _string_chars(value: object, depth: int) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict) and depth > 0:
        return sum(_string_chars(item, depth - 1) for item in value.values())
    return 0


def media_parts(body: dict[str, Any]) -> list[MediaPart]:
    """Every media part of a chat body, in request order."""
    found = []
    for message_index, part_index, part in _parts(body.get("messages")):
        kind = media_kind(part)
        if kind is not None:
            found.append(MediaPart(kind, message_index, part_index, part))
    return found


@dataclass(frozen=True)
class ImageSlot:
    """One image part: where it is (for errors and rewriting) and its URL."""

    message_index: int
    part_index: int
    url: str

    @property
    def param(self) -> str:
        return f"messages[{self.message_index}].content[{self.part_index}]"


def find_images(
    body: dict[str, Any], rules: RequestRules, media: list[MediaPart] | None = None
) -> list[ImageSlot]:
    """Every image part of ``body`` in request order, after the request-level checks
    (refused fields, reserved tokens, disabled media kinds, image count). ``media`` is
    ``media_parts(body)`` when the caller has it already."""
    for name in OVERRIDE_FIELDS:
        if body.get(name) is not None and name not in rules.allowed_fields:
            raise RefusalError(Reason.FIELD_NOT_ALLOWED, name)
    token_at = vision_token_location(body)
    if token_at is not None:
        raise RefusalError(Reason.VISION_TOKEN, token_at)
    forged_at = mismatched_part_location(body)
    if forged_at is not None:
        raise RefusalError(Reason.MISMATCHED_PART, forged_at)
    media = media_parts(body) if media is None else media
    unservable = unservable_with_media(body, media)
    if unservable is not None:
        raise RefusalError(*unservable)
    slots: list[ImageSlot] = []
    for media_part in media:
        kind, part, param = media_part.kind, media_part.part, media_part.param
        message_index, part_index = media_part.message_index, media_part.part_index
        if "uuid" in part:
            raise RefusalError(Reason.MEDIA_UUID_REFUSED, param)
        if kind == "embeddings":
            raise RefusalError(Reason.EMBEDDINGS_REFUSED, param)
        if kind == "video" and not rules.video_enabled:
            raise RefusalError(Reason.VIDEO_DISABLED, param)
        if kind == "audio" and not rules.audio_enabled:
            raise RefusalError(Reason.AUDIO_DISABLED, param)
        if kind == "image":
            slots.append(ImageSlot(message_index, part_index, _image_url(part, param)))
    if len(slots) > rules.max_images:
        raise RefusalError(Reason.TOO_MANY_IMAGES, slots[rules.max_images].param)
    for slot in slots:
        if not slot.url.startswith("data:") and not rules.remote_urls:
            raise RefusalError(Reason.REMOTE_URLS_DISABLED, slot.param)
    return slots


def unservable_with_media(
    body: dict[str, Any], media: list[MediaPart]
) -> tuple[Reason, str] | None:
    """A field vLLM cannot combine with the request's media, and where.

    Truncating the prompt cuts through vision tokens, and continuing a final message
    that holds media renders it without its vision block: vLLM then fails the request
    with an internal error and leaves its multimodal cache inconsistent for the next
    request with the same media, from any client.
    """
    if not media:
        return None
    if body.get("truncate_prompt_tokens") is not None:
        return Reason.MEDIA_WITH_TRUNCATION, "truncate_prompt_tokens"
    messages = body.get("messages")
    last = len(messages) - 1 if isinstance(messages, list) else -1
    if lax_flag(body.get("continue_final_message")) and any(
        part.message_index == last for part in media
    ):
        return Reason.MEDIA_IN_CONTINUED_MESSAGE, "continue_final_message"
    return None


def mismatched_part_location(body: dict[str, Any]) -> str | None:
    """Where a part carries media keys of another kind than vLLM reads it as (a text
    part with an ``image_url``, a video part with an ``image``): the template would
    render a vision block vLLM has no media for."""
    for message_index, part_index, part in _parts(body.get("messages")):
        keys = _ALL_TEMPLATE_KEYS.intersection(part)
        if not keys:
            continue
        own = _TEMPLATE_KEYS.get(media_kind(part) or "", frozenset())
        if not keys <= own:
            return f"messages[{message_index}].content[{part_index}]"
    return None


def replace_image_urls(body: dict[str, Any], slots: list[ImageSlot], urls: list[str]) -> None:
    """Put ``urls`` in place of the slots' image URLs, in the shape vLLM reads."""
    messages = body["messages"]
    for slot, url in zip(slots, urls, strict=True):
        part = messages[slot.message_index]["content"][slot.part_index]
        if part.get("type") == "input_image":
            part["image_url"] = url
        else:
            part["image_url"] = {"url": url}


def _parts(messages: object) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(message index, part index, part) of every dict content part; shapes vLLM
    would refuse anyway are left for it to refuse."""
    if not isinstance(messages, list):
        return
    for message_index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part_index, part in enumerate(content):
            if isinstance(part, dict):
                yield message_index, part_index, part


def media_kind(part: dict[str, Any]) -> str | None:
    """``image``, ``video``, ``audio`` or ``embeddings`` for a media part, read the
    way vLLM reads it; None for text and anything else."""
    part_type = part.get("type")
    kind = _kind_of(part_type) if isinstance(part_type, str) else None
    if kind is None and (part_type is None or "uuid" in part):
        # vLLM reads untyped parts (and parts with a uuid) by their keys.
        kind = next((_kind_of(key) for key in _MEDIA_KEYS if key in part), None)
    return kind


def _kind_of(name: str) -> str | None:
    if name in _IMAGE_TYPES:
        return "image"
    if name in _VIDEO_TYPES:
        return "video"
    if name in _AUDIO_TYPES:
        return "audio"
    if name in _EMBEDDING_TYPES:
        return "embeddings"
    return None


_URL_FIELDS = {"image": "image_url", "video": "video_url"}


def media_url(kind: str, part: dict[str, Any]) -> str | None:
    """The URL of an image or video part, in both shapes vLLM reads (``{"image_url":
    {"url": ...}}`` and ``{"image_url": "..."}``); None when the part has no usable one.
    Each layer words its own refusal of a None."""
    field = _URL_FIELDS.get(kind)
    value = part.get(field) if field else None
    if isinstance(value, dict):
        value = value.get("url")
    return value if isinstance(value, str) and value else None


def _image_url(part: dict[str, Any], param: str) -> str:
    url = media_url("image", part)
    if url is None:
        raise RefusalError(Reason.BAD_IMAGE_PART, param)
    return url
