"""Error responses in the format of the API a request was made to.

OpenAI routes answer ``{"error": {"message", "type", "param", "code"}}``; the
Google-style generateContent routes answer ``{"error": {"code", "message", "status"}}``.
Every layer builds its errors here, so a cause maps to one status on every API.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.types import Scope, Send

from qwenvl_serve.routes import ErrorFormat, match_path, route_of

# HTTP status -> Google's canonical status name (google.rpc.Code).
GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# HTTP status -> the OpenAI error ``type`` clients switch on.
OPENAI_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}


@dataclass(frozen=True)
class ApiError:
    """One client-facing error: a status and a fixed, human message (no internals)."""

    status: int
    message: str
    type: str | None = None  # OpenAI ``type``; derived from the status when empty
    param: str | None = None
    code: str | None = None
    headers: Sequence[tuple[str, str]] = ()

    def openai_body(self) -> dict[str, object]:
        """The OpenAI-style error object."""
        return {
            "error": {
                "message": self.message,
                "type": self.type or OPENAI_TYPE.get(self.status, "api_error"),
                "param": self.param,
                "code": self.code,
            }
        }

    def google_body(self) -> dict[str, object]:
        """The Google-style error object."""
        return {
            "error": {
                "code": self.status,
                "message": self.message,
                "status": GOOGLE_STATUS.get(self.status, "UNKNOWN"),
            }
        }

    def body_in(self, error_format: ErrorFormat) -> bytes:
        """The error in ``error_format``, as JSON bytes."""
        is_google = error_format is ErrorFormat.GOOGLE
        body = self.google_body() if is_google else self.openai_body()
        return json.dumps(body, ensure_ascii=False).encode()

    def body_for_path(self, path: str) -> bytes:
        """The error in the format of the API that ``path`` belongs to, as JSON bytes."""
        return self.body_in(match_path(path).route.error_format)


def json_headers(
    body: bytes, kept: Sequence[tuple[bytes, bytes]] = ()
) -> list[tuple[bytes, bytes]]:
    """``kept`` headers (less any content type or length) with those of a JSON ``body``."""
    return [
        *[(name, value) for name, value in kept if name.lower() not in _BODY_HEADERS],
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]


_BODY_HEADERS = (b"content-type", b"content-length")


async def send_error(scope: Scope, send: Send, error: ApiError) -> None:
    """Answer the request with ``error`` in the format of the route the client called."""
    body = error.body_in(route_of(scope).route.error_format)
    extra = [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in error.headers
    ]
    headers = json_headers(body, extra)
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestRefusedError(Exception):
    """Raised where a request is refused; the layer that catches it answers ``error``."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.error = error
