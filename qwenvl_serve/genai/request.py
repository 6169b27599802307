"""A Google ``GenerateContentRequest`` -> the equivalent OpenAI chat completions request.

Pure: the body is already parsed JSON; the result is the JSON the chat completions
route receives. Anything we cannot carry over faithfully raises :class:`InvalidRequestError`
naming the field, because silently ignoring a setting gives the caller wrong output.
"""

from __future__ import annotations

import binascii
import re
from urllib.parse import urlsplit

import pybase64

from qwenvl_serve.genai.fields import Fields, InvalidRequestError, read_object
from qwenvl_serve.genai.schema import json_schema_from_google

ChatMessage = dict[str, object]
ContentPart = dict[str, object]

_REQUEST_FIELDS = frozenset({"contents", "system_instruction", "generation_config"})
_CONTENT_FIELDS = frozenset({"role", "parts"})
_PART_FIELDS = frozenset({"text", "inline_data", "file_data"})
_BLOB_FIELDS = frozenset({"mime_type", "data"})
_FILE_FIELDS = frozenset({"mime_type", "file_uri"})
_GENERATION_FIELDS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "max_output_tokens",
        "stop_sequences",
        "candidate_count",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "response_mime_type",
        "response_schema",
        "response_json_schema",
        "response_modalities",
    }
)
_ROLES = {"user": "user", "model": "assistant"}
# generationConfig member -> chat completions parameter, by JSON type.
_NUMBERS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}
_INTEGERS = {
    "top_k": "top_k",
    "max_output_tokens": "max_completion_tokens",
    "candidate_count": "n",
    "seed": "seed",
}


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(word.title() for word in rest)


# Chat completions parameter -> the generateContent field that sets it, for errors.
GOOGLE_FIELD_NAMES = {
    openai: f"generationConfig.{_camel(google)}"
    for google, openai in {**_NUMBERS, **_INTEGERS}.items()
}
_IMAGE_MIME = re.compile(r"^image/[A-Za-z0-9.+-]+$")
_VIDEO_MIME = re.compile(r"^video/[A-Za-z0-9.+-]+$")
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")
_JSON_MIME = "application/json"


def chat_request_from_google(body: object, model: str, stream: bool) -> dict[str, object]:
    """The chat completions request for ``body`` sent to ``model``."""
    request = read_object(body, "", _REQUEST_FIELDS)
    chat: dict[str, object] = {
        "model": model,
        "messages": [*_system_messages(request), *_conversation(request)],
        **_sampling(request),
    }
    if stream:
        # The usage chunk becomes the final event's usageMetadata.
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _system_messages(request: Fields) -> list[ChatMessage]:
    value = request.get("system_instruction")
    if value is None:
        return []
    instruction = read_object(value, request.name("system_instruction"), _CONTENT_FIELDS)
    texts = _texts(instruction, "a system instruction")
    return [{"role": "system", "content": "\n".join(texts)}]


def _conversation(request: Fields) -> list[ChatMessage]:
    contents = request.object_list("contents")
    if not contents:
        raise InvalidRequestError("contents must hold at least one message.")
    base = request.name("contents")
    return [_message(item, f"{base}[{index}]") for index, item in enumerate(contents)]


def _message(value: object, path: str) -> ChatMessage:
    content = read_object(value, path, _CONTENT_FIELDS)
    role = content.string("role") or "user"  # Google treats a missing role as the user
    if role not in _ROLES:
        raise InvalidRequestError(f"{content.name('role')} must be user or model.")
    if role == "model":
        return {"role": "assistant", "content": "".join(_texts(content, "a model turn"))}
    return {"role": "user", "content": _parts(content)}


def _texts(content: Fields, where: str) -> list[str]:
    """The text of ``content``'s parts, refusing images where chat has no place for them."""
    texts = []
    for index, part in enumerate(_parts(content)):
        if part["type"] != "text":
            raise InvalidRequestError(
                f"{content.name('parts')}[{index}]: {where} can hold text parts only."
            )
        texts.append(str(part["text"]))
    return texts


def _parts(content: Fields) -> list[ContentPart]:
    parts = content.object_list("parts")
    if not parts:
        raise InvalidRequestError(f"{content.name('parts')} must hold at least one part.")
    base = content.name("parts")
    return [_part(item, f"{base}[{index}]") for index, item in enumerate(parts)]


def _part(value: object, path: str) -> ContentPart:
    part = read_object(value, path, _PART_FIELDS)
    if len(part.values) != 1:
        raise InvalidRequestError(
            f"{path} must hold exactly one of text, inline_data or file_data."
        )
    if "text" in part.values:
        text = part.string("text")
        if text is None:
            raise InvalidRequestError(f"{part.name('text')} must be a string.")
        return {"type": "text", "text": text}
    if "inline_data" in part.values:
        kind, url = _data_url(part.get("inline_data"), part.name("inline_data"))
    else:
        kind, url = _file_url(part.get("file_data"), part.name("file_data"))
    return {"type": f"{kind}_url", f"{kind}_url": {"url": url}}


def _data_url(value: object, path: str) -> tuple[str, str]:
    blob = read_object(value, path, _BLOB_FIELDS)
    mime_type = _media_mime_type(blob, required=True)
    assert mime_type is not None
    data = blob.string("data")
    if not data:
        raise InvalidRequestError(f"{blob.name('data')} is required.")
    url = f"data:{mime_type};base64,{_standard_base64(data, blob.name('data'))}"
    return _kind_of(mime_type), url


def _standard_base64(data: str, name: str) -> str:
    """Standard base64 for a data: URL; Google also accepts URL-safe (what the SDK sends)."""
    standard = data.translate(_URLSAFE_TO_STANDARD)
    standard += "=" * (-len(standard) % 4)
    try:
        pybase64.b64decode(standard, validate=True)
    except (binascii.Error, ValueError):  # bad alphabet or padding, non-ASCII text
        raise InvalidRequestError(f"{name} is not valid base64.") from None
    return standard


def _file_url(value: object, path: str) -> tuple[str, str]:
    file = read_object(value, path, _FILE_FIELDS)
    mime_type = _media_mime_type(file, required=False)
    uri = file.string("file_uri")
    if not uri:
        raise InvalidRequestError(f"{file.name('file_uri')} is required.")
    if urlsplit(uri).scheme.lower() not in ("http", "https"):
        raise InvalidRequestError(
            f"{file.name('file_uri')} must be an http or https URL; "
            "files stored elsewhere cannot be read by this server."
        )
    return ("image" if mime_type is None else _kind_of(mime_type)), uri


def _kind_of(mime_type: str) -> str:
    """``image`` or ``video``: the chat part a Google MIME type becomes."""
    return "video" if _VIDEO_MIME.match(mime_type) else "image"


def _media_mime_type(blob: Fields, *, required: bool) -> str | None:
    mime_type = blob.string("mime_type")
    if mime_type is None:
        if required:
            raise InvalidRequestError(f"{blob.name('mime_type')} is required.")
        return None
    if not (_IMAGE_MIME.match(mime_type) or _VIDEO_MIME.match(mime_type)):
        raise InvalidRequestError(
            f"{blob.name('mime_type')} must be an image or video type such as image/jpeg "
            "or video/mp4; this server reads images and video only."
        )
    return mime_type


def _sampling(request: Fields) -> dict[str, object]:
    value = request.get("generation_config")
    if value is None:
        return {}
    config = read_object(value, request.name("generation_config"), _GENERATION_FIELDS)
    sampling: dict[str, object] = {}
    for google_name, openai_name in _NUMBERS.items():
        number = config.number(google_name)
        if number is not None:
            sampling[openai_name] = number
    for google_name, openai_name in _INTEGERS.items():
        integer = config.integer(google_name)
        if integer is not None:
            sampling[openai_name] = integer
    stop = config.string_list("stop_sequences")
    if stop:
        sampling["stop"] = stop
    _check_modalities(config)
    response_format = _response_format(config)
    if response_format is not None:
        sampling["response_format"] = response_format
    return sampling


def _check_modalities(config: Fields) -> None:
    modalities = config.string_list("response_modalities")
    if modalities and any(modality.upper() != "TEXT" for modality in modalities):
        raise InvalidRequestError(f"{config.name('response_modalities')} supports TEXT only.")


def _response_format(config: Fields) -> dict[str, object] | None:
    mime_type = config.string("response_mime_type")
    schema_key = next(
        (key for key in ("response_schema", "response_json_schema") if config.get(key)), None
    )
    if config.get("response_schema") and config.get("response_json_schema"):
        raise InvalidRequestError(
            f"Give either {config.name('response_schema')} or "
            f"{config.name('response_json_schema')}, not both."
        )
    if mime_type in (None, "text/plain"):
        if schema_key is not None:
            raise InvalidRequestError(
                f"{config.name(schema_key)} needs responseMimeType {_JSON_MIME}."
            )
        return None
    if mime_type != _JSON_MIME:
        raise InvalidRequestError(
            f"{config.name('response_mime_type')} must be text/plain or {_JSON_MIME}."
        )
    if schema_key is None:
        return {"type": "json_object"}
    return {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": _schema(config, schema_key)},
    }


def _schema(config: Fields, key: str) -> dict[str, object]:
    if key == "response_schema":
        return json_schema_from_google(config.get(key), config.name(key))
    schema = config.get(key)
    if not isinstance(schema, dict):
        raise InvalidRequestError(f"{config.name(key)} must be a JSON object.")
    return schema  # already JSON Schema; vLLM refuses what it cannot enforce
