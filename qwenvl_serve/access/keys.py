"""API keys: where a request carries one, and constant-time matching against the config.

Pure functions. Every presented value, present or not, well-formed or not, is hashed
and compared with every configured digest, so a wrong key costs the same work as any
other wrong key and the response never depends on how it was wrong.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote_plus

from qwenvl_serve.access.config import DIGEST_PREFIX, ApiKeyConfig

Compare = Callable[[bytes, bytes], bool]


@dataclass(frozen=True)
class StoredKey:
    """A configured key as the server holds it: a name and a sha256 digest."""

    name: str
    digest: bytes


def stored_key(name: str, digest_text: str) -> StoredKey:
    """From the config's ``sha256:<hex>`` form."""
    return StoredKey(name=name, digest=bytes.fromhex(digest_text.removeprefix(DIGEST_PREFIX)))


def stored_keys(keys: Iterable[ApiKeyConfig]) -> tuple[StoredKey, ...]:
    """Every configured API key."""
    return tuple(stored_key(key.name, key.key) for key in keys)


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    return next((value for key, value in headers if key.lower() == name), None)


def bearer_token(authorization: bytes | None) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(b" ")
    token = token.strip()
    if scheme.lower() != b"bearer" or not token:
        return None
    return token


def presented_key(
    headers: Iterable[tuple[bytes, bytes]], query_string: bytes, allow_query_key: bool
) -> bytes | None:
    """The key a request carries: ``Authorization: Bearer``, then ``x-goog-api-key``,
    then (on generateContent routes only) ``?key=``; None when it carries none."""
    headers = list(headers)
    found = bearer_token(_header(headers, b"authorization"))
    if found is None:
        found = _header(headers, b"x-goog-api-key")
    if found is None and allow_query_key:
        found = dict(parse_qsl(query_string.decode("latin-1"))).get("key", "").encode()
    return found or None


def without_query_key(query_string: bytes) -> bytes:
    """The query string minus ``key=...``, so the key reaches no inner layer or log."""
    parts = query_string.split(b"&")
    return b"&".join(part for part in parts if _query_name(part) != "key")


def _query_name(part: bytes) -> str:
    return unquote_plus(part.partition(b"=")[0].decode("latin-1"))


def match_key(
    presented: bytes | None,
    keys: Sequence[StoredKey],
    compare: Compare = secrets.compare_digest,
) -> StoredKey | None:
    """The configured key equal to ``presented``, or None.

    The digest of the presented value (of nothing, when absent) is compared with every
    configured digest, all of them, always: no early exit, no branch on the bytes.
    """
    digest = hashlib.sha256(presented or b"").digest()
    matches = [compare(digest, key.digest) for key in keys]
    return next((key for key, matched in zip(keys, matches, strict=True) if matched), None)
