"""vLLM's error answers, rewritten as ours. Pure: no I/O.

vLLM answers a bad request in several shapes: its own ``{"error": {...}}`` with a
pydantic validation dump or an exception's text as the message, FastAPI's
``{"detail": ...}``, Starlette's plain-text CORS refusals and ``Internal Server
Error``. :func:`engine_error` reads any of them and returns the same refusal as an
:class:`~qwenvl_serve.api_errors.ApiError`: the status vLLM chose, the field it named
(as ``messages[0].content``), and a message that is either vLLM's own sentence, when
it is one a person wrote for a client, or a fixed one. Library internals (pydantic's
error dumps, type names, tracebacks, assertion texts) never reach a client.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qwenvl_serve.api_errors import ApiError

ClientName = Callable[[str], str]  # an engine field -> the client's name for it

# pydantic error type -> what the field must be. Matched on the type's prefix too
# (``int_parsing`` and ``int_type`` read alike), so new variants still read well.
_MUST_BE = {
    "missing": "is required",
    "int_from_float": "must be a whole number",
    "int": "must be an integer",
    "float": "must be a number",
    "decimal": "must be a number",
    "finite_number": "must be a finite number",
    "string_type": "must be a string",
    "string_too_long": "is too long",
    "string_too_short": "is too short",
    "too_long": "has too many items",
    "too_short": "has too few items",
    "bool": "must be true or false",
    "list": "must be a list",
    "iterable": "must be a list",
    "tuple": "must be a list",
    "set": "must be a list",
    "dict": "must be an object",
    "model": "must be an object",
    "literal_error": "is not one of the allowed values",
    "enum": "is not one of the allowed values",
    "union_tag": "has an unknown type",
    "greater_than": "is too small",
    "less_than": "is too large",
    "extra_forbidden": "is not a field this route accepts",
    "url": "must be a URL",
    "json": "must be valid JSON",
}
_INVALID_VALUE = "has an invalid value"
_PYDANTIC_ERROR = re.compile(r"\{'type': '([a-z_]+)', 'loc': '([^']*)'")
_PYDANTIC_DUMP = re.compile(r"^\d+ validation errors?:")
_PARAMETER_SUFFIX = re.compile(r"\s*\(parameter=([A-Za-z0-9_.\[\]]+)(?:, value=.*)?\)\s*$", re.S)
# What a message a person wrote for a client does not contain: text of Python
# exceptions, type annotations, object reprs, tracebacks, tensors.
_INTERNALS = re.compile(
    r"Traceback|File \"|Union\[|Optional\[|List\[|Dict\[|Tuple\[|<class |<function |"
    r" object at 0x|NoneType|object has no attribute|object is not |positional argument|"
    r"keyword argument|takes \d+|must be str, not|[Aa]ssert|pydantic|tensor|[Tt]orch|"
    r"numpy|dtype|Input should be|TextEncodeInput|\bError:|Exception"
)
_MAX_MESSAGE_CHARS = 300
_CORS_REFUSAL = re.compile(
    r"^Disallowed CORS ((?:origin|method|headers)(?:, (?:origin|method|headers))*)$"
)

FALLBACK_MESSAGES = {
    400: "The request is invalid.",
    404: "Not found.",
    405: "This method is not allowed here.",
    413: "The request is too large.",
    415: "The request body must be JSON (Content-Type: application/json).",
    422: "The request could not be processed.",
    429: "Too many requests; try again later.",
    501: "This server does not support that.",
    503: "The model server is not ready; try again later.",
}
_SERVER_FAILURE = "The model server failed to handle this request; request id {request_id}."


@dataclass(frozen=True)
class EngineSaid:
    """What one of vLLM's error answers says: its message, field and validation errors."""

    message: str | None = None
    param: str | None = None
    # (pydantic error type, location) for each validation error, first first.
    errors: tuple[tuple[str, str], ...] = ()


def _as_sent(name: str) -> str:
    return name


def engine_error(
    status: int, body: bytes, request_id: str, client_name: ClientName = _as_sent
) -> ApiError:
    """vLLM's error answer ``body`` (status ``status``, any shape) as our own error.

    ``client_name`` turns an engine field into the client's name for it (a translated
    request's client spoke another API).
    """
    if status >= 500 and status not in (501, 503):
        return ApiError(status, _SERVER_FAILURE.format(request_id=request_id), code="engine_error")
    return client_error(status, read_engine_error(body), client_name)


def client_error(status: int, said: EngineSaid, client_name: ClientName = _as_sent) -> ApiError:
    """A client error (or 501/503) from what vLLM said."""
    status = status if 400 <= status <= 599 else 400
    if said.errors:
        return _validation_error(status, said.errors, client_name)
    message, param = said.message, said.param
    if message is not None and (cors := _CORS_REFUSAL.match(message)):
        text = f"This cross-origin request is not allowed (disallowed: {cors.group(1)})."
        return ApiError(status, text, code="cors_not_allowed")
    if message is not None and (suffix := _PARAMETER_SUFFIX.search(message)):
        param = param or suffix.group(1)
        message = message[: suffix.start()]
    field = field_path(param) if param else None
    code = "model_not_found" if status == 404 and field == "model" else _code(status, field)
    shown = client_name(field) if field else None
    if status == 503 or message is None or not _written_for_clients(message):
        message = _fallback(status, shown)
    elif field and shown != field and message.startswith(field):
        message = f"{shown}{message[len(field) :]}"
    return ApiError(status, message, param=shown, code=code)


def stream_error(error: object, request_id: str, client_name: ClientName = _as_sent) -> ApiError:
    """An ``{"error": ...}`` event in one of vLLM's streams, as our own error."""
    fields = error if isinstance(error, dict) else {}
    code = fields.get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else 500
    if status >= 500:
        return engine_error(status, b"", request_id)
    return client_error(status, _said_in(fields), client_name)


def read_engine_error(body: bytes) -> EngineSaid:
    """What vLLM's error body says, in any of the shapes vLLM and its libraries use."""
    try:
        document: Any = json.loads(body)
    except (ValueError, RecursionError):
        text = body.decode("utf-8", "replace").strip()
        return EngineSaid(message=text or None)
    if isinstance(document, dict) and isinstance(document.get("error"), dict):
        return _said_in(document["error"])
    if isinstance(document, dict) and "detail" in document:
        return _fastapi_detail(document["detail"])
    return EngineSaid()


def field_path(location: str) -> str:
    """A pydantic or vLLM location as the client wrote the field.

    ``body.messages.0.ChatCompletionUserMessageParam.content`` ->
    ``messages[0].content``: the ``body`` prefix, union member names and validator
    wrappers are pydantic's, not the client's.
    """
    path = ""
    for segment in location.split("."):
        if not segment or (segment == "body" and not path):
            continue
        if segment.isdigit():
            path += f"[{segment}]"
        elif segment[0].isupper() or "[" in segment or "-" in segment:
            continue  # a union member (ChatCompletionUserMessageParam) or a validator
        else:
            path = f"{path}.{segment}" if path else segment
    return path or location


def _said_in(error: dict[str, Any]) -> EngineSaid:
    """vLLM's ``error`` object; its message may be a pydantic dump."""
    message, param = error.get("message"), error.get("param")
    message = message if isinstance(message, str) else None
    errors: tuple[tuple[str, str], ...] = ()
    if message is not None and _PYDANTIC_DUMP.match(message):
        errors = tuple(_PYDANTIC_ERROR.findall(message))
        message = None  # the dump itself is never shown
    return EngineSaid(message, param if isinstance(param, str) else None, errors)


def _fastapi_detail(detail: object) -> EngineSaid:
    """FastAPI's ``{"detail": ...}``: a sentence, or a list of pydantic errors."""
    if isinstance(detail, str):
        return EngineSaid(message=detail)
    if isinstance(detail, list):
        errors = tuple(
            (str(error.get("type", "")), ".".join(str(part) for part in error.get("loc", [])))
            for error in detail
            if isinstance(error, dict)
        )
        return EngineSaid(errors=errors)
    return EngineSaid()


def _validation_error(
    status: int, errors: tuple[tuple[str, str], ...], client_name: ClientName
) -> ApiError:
    """Validation errors -> one sentence about the first field they name."""
    located = [(kind, field_path(location)) for kind, location in errors]
    field = located[0][1]
    phrases = {_must_be(kind) for kind, where in located if where == field}
    phrase = phrases.pop() if len(phrases) == 1 else _INVALID_VALUE
    shown = client_name(field)
    return ApiError(status, f"{shown} {phrase}.", param=shown, code="invalid_value")


def _must_be(kind: str) -> str:
    if kind in _MUST_BE:
        return _MUST_BE[kind]
    prefix = next((key for key in _MUST_BE if kind.startswith(key)), None)
    return _MUST_BE[prefix] if prefix is not None else _INVALID_VALUE


def _written_for_clients(message: str) -> bool:
    """A one-line sentence with no trace of library internals."""
    return (
        0 < len(message) <= _MAX_MESSAGE_CHARS
        and message.isprintable()
        and _INTERNALS.search(message) is None
    )


def _fallback(status: int, field: str | None) -> str:
    if field and status in (400, 422):
        return f"{field} {_INVALID_VALUE}."
    return FALLBACK_MESSAGES.get(status, "The request failed.")


def _code(status: int, field: str | None) -> str:
    if field and status in (400, 422):
        return "invalid_value"
    return {404: "not_found", 405: "method_not_allowed", 415: "unsupported_media_type"}.get(
        status, "invalid_request"
    )
