"""Which requests the cache answers, under which key, and which answers it keeps. Pure.

The key is built from the request exactly as vLLM will receive it: the engine route, the
served model, the body vLLM gets (text, every field, and images as the bytes our image
layer produced, never their URL) and, unless entries are shared, the caller's key name.
Hashing those bytes rather than a canonical form costs one pass of sha256 and no
serialization; two spellings of one request are two entries, never a wrong answer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from qwenvl_serve.cache.config import CacheMode
from qwenvl_serve.core.responses import EngineEvent

KEY_VERSION = "1"  # bump when the key's recipe changes: old entries are then never read
SHARED_SCOPE = "_shared"  # no key name starts with "_", so this scope is nobody's
_NUMBER = TypeAdapter(float)
_INTEGER = TypeAdapter(int)
_UNFINISHED = frozenset({"abort", "error"})


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


def cache_key(engine_path: str, model: str, key_name: str | None, engine_body: bytes) -> str:
    """The entry name of a request: ``<scope>:<sha256>``, the scope being the caller's
    key name, or :data:`SHARED_SCOPE` when ``key_name`` is None (shared entries)."""
    digest = hashlib.sha256()
    for part in (KEY_VERSION, engine_path, model, key_name or ""):
        digest.update(part.encode() + b"\0")
    digest.update(engine_body)
    return f"{SHARED_SCOPE if key_name is None else key_name}:{digest.hexdigest()}"


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
