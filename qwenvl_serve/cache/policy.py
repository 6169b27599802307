"""Which requests the cache answers, under which key, and which answers it keeps. Pure.

A key hashes, besides the served model and (unless entries are shared) the caller's key
name, bytes that fix vLLM's answer, in one of two ways:

- **As the client sent it**, for a request whose media are all inline (``data:`` URLs):
  the client's path, query and body with the fields our outer layers set, and a
  fingerprint of the media policy. The media layers turn the same bytes under the same
  policy into the same engine body, so a hit skips them (no base64 decode, no image
  check, no video worker).
- **As vLLM will receive it**, for a request with a remote image or video: the body our
  media layers produced, images as their fetched and normalized bytes, never their URL
  (a changed image behind one URL is another key).

Hashing bytes rather than a canonical form costs one pass of sha256 and no
serialization; two spellings of one request are two entries, never a wrong answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from qwenvl_serve.cache.config import CacheMode
from qwenvl_serve.core.responses import EngineEvent
from qwenvl_serve.core.view import InferenceRequest
from qwenvl_serve.images.chat_request import MediaPart, media_url

KEY_VERSION = "2"  # bump when the key's recipe changes: old entries are then never read
SHARED_SCOPE = "_shared"  # no key name starts with "_", so this scope is nobody's
_NUMBER = TypeAdapter(float)
_INTEGER = TypeAdapter(int)
_UNFINISHED = frozenset({"abort", "error"})
AS_SENT, AS_ENGINE_GETS = "as-sent", "as-engine-gets"  # the two ways of keying a request


@dataclass(frozen=True)
class Controls:
    """What the client's ``Cache-Control`` header asks."""

    no_cache: bool = False  # do not answer from the cache
    no_store: bool = False  # do not keep this answer
    max_age: float | None = None  # answer only from an entry at most this old (seconds)


def controls_of(header: bytes | None) -> Controls:
    """The directives of a ``Cache-Control`` request header; unknown ones are ignored."""
    if not header:
        return Controls()
    no_cache = no_store = False
    max_age: float | None = None
    for directive in header.decode("latin-1").lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name == "no-cache":
            no_cache = True
        elif name == "no-store":
            no_store = True
        elif name == "max-age" and value.strip().isdigit():
            max_age = float(value.strip())
    return Controls(no_cache=no_cache, no_store=no_store, max_age=max_age)


def is_deterministic(document: dict[str, Any], mode: CacheMode) -> bool:
    """Whether ``document``'s answer may be reused under ``mode``, reading ``temperature``
    and ``seed`` as vLLM does (a missing temperature is the model's default, which
    samples)."""
    if mode == "always":
        return True
    greedy = bool(_lax(_NUMBER, document.get("temperature")) == 0)
    if mode == "greedy":
        return greedy
    return greedy or _lax(_INTEGER, document.get("seed")) is not None


def cache_key(namespace: str, model: str, key_name: str | None, material: Sequence[bytes]) -> str:
    """The entry name of a request: ``<scope>:<sha256>``, the scope being the caller's
    key name, or :data:`SHARED_SCOPE` when ``key_name`` is None (shared entries).

    ``namespace`` says how ``material`` was taken (:data:`AS_SENT` with the media
    policy's fingerprint, or :data:`AS_ENGINE_GETS` with the engine route); each piece
    of ``material`` is framed by the lengths hashed before it, so no two sequences hash
    alike.
    """
    lengths = b",".join(b"%d" % len(piece) for piece in material)
    prefix = "\0".join((KEY_VERSION, namespace, model, key_name or "")).encode()
    digest = hashlib.sha256(prefix + b"\0" + lengths + b"\0")
    for piece in material:
        digest.update(piece)
    return f"{SHARED_SCOPE if key_name is None else key_name}:{digest.hexdigest()}"


def media_are_inline(media: Iterable[MediaPart]) -> bool:
    """Whether every media part is an image or video given inline (a ``data:`` URL), so
    the request's bytes fix what the media layers make of it. Anything else (a remote
    URL, another kind, a malformed part) is keyed after the media layers."""
    for part in media:
        url = media_url(part.kind, part.part)
        if url is None or not url.startswith("data:"):
            return False
    return True


def as_sent(request: InferenceRequest, path: bytes, query: bytes) -> list[bytes]:
    """The key material of a request as the client sent it: its path and query (they
    choose the API family, the model and streaming), its body, and the top-level fields
    our outer layers set on it."""
    # repr, not JSON: a quarter of the cost, and as exact for JSON values (1, 1.0 and
    # True stay three spellings).
    return [path, query, request.original, repr(request.overrides).encode()]


def policy_fingerprint(sections: Mapping[str, object]) -> str:
    """A digest of what shapes a request between this layer and vLLM (the media policy,
    the API translation, the code's version), JSON values by name: entries made under
    another policy are never read, so no answer outlives the checks it passed."""
    canonical = json.dumps(sections, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def complete_answer(events: list[EngineEvent]) -> bool:
    """Whether vLLM's answer is whole and may be kept: every choice finished on its own
    (not aborted, not failed), and a stream reached its ``[DONE]``."""
    streamed = any(event.streamed for event in events)
    if streamed and not (events and events[-1].done):
        return False
    finished = False
    for event in events:
        document = event.document
        if not isinstance(document, dict):
            if event.done:
                continue
            return False
        if "error" in document:
            return False
        for choice in document.get("choices") or ():
            reason = choice.get("finish_reason") if isinstance(choice, dict) else None
            if reason in _UNFINISHED or (not streamed and reason is None):
                return False
            finished = finished or reason is not None
    return finished


def _lax(adapter: TypeAdapter[Any], value: object) -> Any:
    if value is None:
        return None
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None
