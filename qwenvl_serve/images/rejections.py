"""Why an image or a request is refused: one status, one fixed message per reason.

Messages are written for people and never carry client bytes, decoder exception
text or object reprs; the reason's value is the OpenAI ``code`` and the metric label.
"""

from __future__ import annotations

import enum

from qwenvl_serve.api_errors import ApiError
from qwenvl_serve.asgi_body import BODY_TOO_LARGE_MESSAGE


class Reason(enum.Enum):
    """A refusal: ``(code, HTTP status, message)``."""

    BODY_TOO_LARGE = ("request_too_large", 413, BODY_TOO_LARGE_MESSAGE)
    INVALID_JSON = ("invalid_json", 400, "The request body is not a valid JSON object.")
    NOT_JSON_CONTENT_TYPE = (
        "unsupported_media_type",
        415,
        "Send the request body as JSON with `Content-Type: application/json`.",
    )
    UNPAIRED_SURROGATE = (
        "invalid_text",
        400,
        "The text holds an unpaired UTF-16 surrogate escape (such as \\ud800), which is "
        "not a character; encode text as UTF-8 or escape whole surrogate pairs.",
    )
    FIELD_NOT_ALLOWED = (
        "field_not_allowed",
        400,
        "This field is not accepted by this server: it changes how media is processed.",
    )
    VISION_TOKEN = (
        "reserved_token",
        400,
        "The text contains a reserved vision token such as <|image_pad|>; remove it.",
    )
    MISMATCHED_PART = (
        "invalid_content_part",
        400,
        "A content part may carry media keys of its own type only (no image_url on a text "
        "part, no image on a video part).",
    )
    MEDIA_WITH_TRUNCATION = (
        "media_with_truncation",
        400,
        "`truncate_prompt_tokens` cannot be used with images or video: it would cut "
        "through their vision tokens.",
    )
    MEDIA_IN_CONTINUED_MESSAGE = (
        "media_in_continued_message",
        400,
        "`continue_final_message` cannot continue a message that holds an image or video.",
    )
    VIDEO_DISABLED = ("video_disabled", 400, "Video input is turned off on this server.")
    AUDIO_DISABLED = ("audio_disabled", 400, "Audio input is not accepted by this server.")
    EMBEDDINGS_REFUSED = (
        "embeddings_not_allowed",
        400,
        "Precomputed embeddings are not accepted; send the image itself.",
    )
    MEDIA_UUID_REFUSED = (
        "uuid_not_allowed",
        400,
        "Media parts may not carry a `uuid`; send the image itself.",
    )
    TOO_MANY_IMAGES = (
        "too_many_images",
        400,
        "The request has more images than this server accepts in one request.",
    )
    BAD_IMAGE_PART = (
        "invalid_image_part",
        400,
        "An image part needs `image_url` with a `url` string.",
    )
    BAD_IMAGE_URL = (
        "invalid_image_url",
        400,
        "Image URLs must be base64 `data:` URLs or http(s) URLs.",
    )
    REMOTE_URLS_DISABLED = (
        "remote_urls_disabled",
        400,
        "This server accepts media only as base64 `data:` URLs.",
    )
    MALFORMED_BASE64 = ("invalid_base64", 400, "The media data is not valid base64.")
    IMAGE_TOO_LARGE = ("image_too_large", 413, "The image is larger than this server accepts.")
    UNSUPPORTED_FORMAT = (
        "unsupported_image_format",
        415,
        "The image format is not accepted by this server.",
    )
    UNDECODABLE = ("invalid_image", 422, "The image could not be decoded.")
    TOO_MANY_SCANS = (
        "image_too_many_scans",
        422,
        "The JPEG repeats its scans more often than this server decodes.",
    )
    TOO_MANY_PIXELS = (
        "image_too_many_pixels",
        422,
        "The image has more pixels than this server accepts.",
    )
    EXTREME_ASPECT_RATIO = (
        "image_aspect_ratio",
        422,
        "The image is too long and thin: its sides differ by more than 200 times.",
    )
    URL_ADDRESS_REFUSED = (
        "image_url_refused",
        400,
        "The URL points to an address this server does not fetch from.",
    )
    URL_DOMAIN_REFUSED = (
        "image_url_domain_not_allowed",
        400,
        "The URL's host is not on this server's list of allowed hosts.",
    )
    FETCH_TOO_MANY_REDIRECTS = (
        "image_url_too_many_redirects",
        422,
        "The URL redirected too many times.",
    )
    FETCH_TIMEOUT = ("image_url_timeout", 422, "The URL did not answer in time.")
    FETCH_FAILED = ("image_url_unreachable", 422, "The URL could not be fetched.")
    TOO_MANY_VIDEOS = (
        "too_many_videos",
        400,
        "The request has more videos than this server accepts in one request.",
    )
    BAD_VIDEO_PART = (
        "invalid_video_part",
        400,
        "A video part needs `video_url` with a `url` string.",
    )
    BAD_VIDEO_URL = (
        "invalid_video_url",
        400,
        "Video URLs must be base64 `data:` URLs or http(s) URLs.",
    )
    VIDEO_TOO_LARGE = ("video_too_large", 413, "The video is larger than this server accepts.")
    VIDEO_FORMAT = (
        "unsupported_video_format",
        415,
        "The video container is not accepted by this server (see its video formats).",
    )
    VIDEO_CODEC = (
        "unsupported_video_codec",
        415,
        "The video codec is not accepted by this server (see its video codecs).",
    )
    VIDEO_NO_VIDEO_STREAM = ("video_no_video_stream", 422, "The file has no video stream.")
    VIDEO_DURATION_UNKNOWN = (
        "video_duration_unknown",
        422,
        "The video's header declares no duration.",
    )
    VIDEO_EMPTY = ("video_empty", 422, "The video has no frames.")
    VIDEO_TOO_LONG = ("video_too_long", 422, "The video is longer than this server accepts.")
    VIDEO_FRAME_RATE = (
        "video_frame_rate",
        422,
        "The video's frame rate is missing or higher than this server accepts.",
    )
    VIDEO_TOO_MANY_PIXELS = (
        "video_too_many_pixels",
        422,
        "The video's frames are larger than this server accepts.",
    )
    VIDEO_ASPECT_RATIO = (
        "video_aspect_ratio",
        422,
        "The video's frames are too long and thin: their sides differ by more than 200 times.",
    )
    VIDEO_TRUNCATED = (
        "video_truncated",
        422,
        "The video ends before the duration its header declares.",
    )
    VIDEO_FRAMES_EXCEED_HEADER = (
        "video_frames_exceed_header",
        422,
        "The video holds far more frames than its header declares.",
    )
    VIDEO_UNDECODABLE = ("invalid_video", 422, "The video could not be decoded.")
    VIDEO_TOO_MUCH_MEMORY = (
        "video_too_much_memory",
        422,
        "Decoding the video needed more memory than this server allows.",
    )
    VIDEO_DECODE_FAILED = (
        "video_decode_failed",
        422,
        "Decoding the video failed: the decoder stopped on this file.",
    )
    VIDEO_DECODE_TIMEOUT = (
        "video_decode_timeout",
        422,
        "Decoding the video took longer than this server allows.",
    )

    def __init__(self, code: str, status: int, message: str) -> None:
        self.code = code
        self.status = status
        self.message = message


class RefusalError(Exception):
    """Raised by the image core and the fetcher; the layer turns it into an error response."""

    def __init__(self, reason: Reason, param: str | None = None) -> None:
        super().__init__(reason.code)
        self.reason = reason
        self.param = param

    def at(self, param: str) -> RefusalError:
        """The same refusal, located at ``param`` (e.g. ``messages[0].content[1]``)."""
        return RefusalError(self.reason, param)

    def api_error(self) -> ApiError:
        """The client-facing error: fixed message, OpenAI ``code``, ``param``."""
        reason = self.reason
        return ApiError(reason.status, reason.message, param=self.param, code=reason.code)
