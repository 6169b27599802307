"""The ``auth:``, ``limits:``, ``metering:`` and ``metrics:`` config sections.

Secrets never outlive validation in plain form: a key given plain is replaced by its
``sha256:<hex>`` digest, so the resolved config (handed to vLLM's process through the
environment, shown by ``qwenvl-serve args``) holds digests only.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from qwenvl_serve.config_base import StrictModel

DIGEST_PREFIX = "sha256:"
MIN_PLAIN_KEY_LENGTH = 16
_DIGEST_FORM = re.compile(r"^sha256:[0-9a-fA-F]{64}$")
_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# sha256 of nothing: a configured key with this digest would match a request without a key.
_EMPTY_DIGEST = DIGEST_PREFIX + hashlib.sha256(b"").hexdigest()


def as_digest_text(value: str) -> str:
    """A key given plain or as ``sha256:<hex>``, returned as ``sha256:<lowercase hex>``."""
    if _DIGEST_FORM.match(value):
        digest = value.lower()
    else:
        if len(value) < MIN_PLAIN_KEY_LENGTH:
            raise PydanticCustomError(
                "invalid_key",
                f"a plain key must be at least {MIN_PLAIN_KEY_LENGTH} characters "
                "(use a long random string, e.g. `openssl rand -hex 32`)",
            )
        if not value.isascii() or not value.isprintable() or " " in value:
            raise PydanticCustomError("invalid_key", "a key must be printable ASCII without spaces")
        digest = DIGEST_PREFIX + hashlib.sha256(value.encode("ascii")).hexdigest()
    if digest == _EMPTY_DIGEST:
        raise PydanticCustomError("invalid_key", "this digest is the digest of an empty key")
    return digest


class ApiKeyConfig(StrictModel):
    """One API key: who holds it and what it may use."""

    name: str = Field(
        description=(
            "Name of the key's holder, shown in metrics, logs and the usage log instead of "
            "the key (letters, digits, `.`, `_`, `-`; at most 64)."
        ),
    )
    key: str = Field(
        description=(
            "The key, given plain (usually `${ENV_VAR}`, at least 16 characters) or as "
            "`sha256:<64 hex digits>`. Only its sha256 digest is kept and compared."
        ),
    )
    rpm: int | None = Field(None, ge=1, description="Requests per minute. Empty: no limit.")
    tpm: int | None = Field(
        None,
        ge=1,
        description=(
            "Prompt plus completion tokens per minute: pre-checked from the request's "
            "`max_tokens`, charged from actual usage. Empty: no limit."
        ),
    )
    max_concurrent: int | None = Field(
        None, ge=1, description="Requests of this key in flight at once. Empty: no limit."
    )
    admin: bool = Field(
        False,
        description=(
            "May read /metrics, every key's series included. Other keys get 403 there: "
            "a tenant never sees another tenant's name or counts."
        ),
    )

    @field_validator("name")
    @classmethod
    def _name_is_a_label(cls, value: str) -> str:
        if not _KEY_NAME.match(value):
            raise PydanticCustomError(
                "invalid_key_name",
                "letters, digits, `.`, `_` and `-` only, starting with a letter or digit",
            )
        return value

    @field_validator("key")
    @classmethod
    def _keep_digest_only(cls, value: str) -> str:
        return as_digest_text(value)


class AuthConfig(StrictModel):
    """API keys. An empty list means no auth, allowed only on a loopback host."""

    keys: list[ApiKeyConfig] = Field(
        default_factory=list,
        description=(
            "Accepted API keys, sent as `Authorization: Bearer`, `x-goog-api-key`, or "
            "`?key=` on the generateContent routes. Empty: no auth (loopback hosts only)."
        ),
    )

    @field_validator("keys")
    @classmethod
    def _names_and_keys_unique(cls, keys: list[ApiKeyConfig]) -> list[ApiKeyConfig]:
        names = [key.name for key in keys]
        if len(set(names)) != len(names):
            raise PydanticCustomError("duplicate_key", "key names must be unique")
        if len({key.key for key in keys}) != len(keys):
            raise PydanticCustomError("duplicate_key", "the same key is listed twice")
        return keys

    @property
    def enabled(self) -> bool:
        """True when requests must carry a key."""
        return bool(self.keys)


class LimitsConfig(StrictModel):
    """Whole-instance limits: what is in flight, what one request may cost, how slow a
    client may send. A request beyond a cost bound gets 400 naming the field."""

    max_in_flight: int | None = Field(
        default=256,
        ge=1,
        description=(
            "Most inference requests in flight in one server process; more are refused at "
            "once with 503 and `Retry-After` instead of queueing. Empty: no limit."
        ),
    )
    max_n: int = Field(
        default=8,
        ge=1,
        description=(
            "Most choices one request may ask for: `n` (Google's `candidateCount`), times "
            "the prompts of a completions request."
        ),
    )
    default_max_tokens: int = Field(
        default=1024,
        ge=1,
        description=(
            "Output tokens per choice for a request that sets no `max_tokens` / "
            "`max_completion_tokens` (`maxOutputTokens`); without it, a request runs to "
            "the context limit."
        ),
    )
    max_tokens: int = Field(
        default=8192,
        ge=1,
        description="Most output tokens per choice a request may ask for.",
    )
    beam_search: bool = Field(
        default=False,
        description=(
            "Allow `use_beam_search`. Beam search runs many engine requests per request and "
            "is metered as vLLM reports it."
        ),
    )
    max_messages: int = Field(
        default=256,
        ge=1,
        description=(
            "Most messages in one chat request (vLLM renders every one before any "
            "token limit applies)."
        ),
    )
    max_content_parts: int = Field(
        default=64,
        ge=1,
        description="Most content parts in one message of a chat request.",
    )
    max_logprobs: int = Field(
        default=20,
        ge=0,
        description=(
            "Most logprobs per token (`top_logprobs`, completions' `logprobs`, "
            "`logprob_token_ids`); -1, the whole vocabulary, is refused. Also vLLM's "
            "`--max-logprobs`."
        ),
    )
    prompt_logprobs: bool = Field(
        default=False,
        description=(
            "Allow `prompt_logprobs` (and `echo` with logprobs), within `max_logprobs`: "
            "they score every prompt token against the whole vocabulary."
        ),
    )
    body_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A request body must arrive within this long; later, 408.",
    )
    min_body_bytes_per_second: int = Field(
        default=4096,
        ge=0,
        description=(
            "After the first 5 seconds, a request body must arrive at least this fast on "
            "average; slower, 408. 0: no minimum rate."
        ),
    )

    @model_validator(mode="after")
    def _default_within_maximum(self) -> LimitsConfig:
        if self.default_max_tokens > self.max_tokens:
            raise PydanticCustomError(
                "default_above_maximum", "default_max_tokens must not exceed max_tokens"
            )
        return self


class PricesConfig(StrictModel):
    """Prices used for the cost in the usage log, in any one currency."""

    prompt_per_1k: float = Field(default=0.0, ge=0, description="Price of 1,000 prompt tokens.")
    completion_per_1k: float = Field(
        default=0.0, ge=0, description="Price of 1,000 completion tokens."
    )

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """The price of one request's tokens."""
        return (
            prompt_tokens * self.prompt_per_1k + completion_tokens * self.completion_per_1k
        ) / 1000


class MeteringConfig(StrictModel):
    """Token metering and the usage log."""

    usage_log: Path | None = Field(
        default=None,
        description=(
            "JSON Lines file that gets one line per inference request (time, request id, key "
            "name, model, route, status, tokens, image count, latency, cost); never prompts "
            "or images. Empty: no usage log."
        ),
    )

    @field_validator("usage_log", mode="before")
    @classmethod
    def _empty_means_none(cls, value: object) -> object:
        # `${VAR:-}` with VAR unset gives "", which Path would read as ".".
        return None if isinstance(value, str) and not value.strip() else value

    prices: PricesConfig = Field(
        default_factory=PricesConfig,
        description="Token prices for the cost column.",
    )


class MetricsConfig(StrictModel):
    """Who may read /metrics."""

    public: bool = Field(
        default=False,
        description=(
            "Serve /metrics without a key, less the per-key series. Otherwise it needs an "
            "admin key or `metrics.token` (when `auth.keys` is empty and no token is set, "
            "/metrics is open like the rest)."
        ),
    )
    token: str | None = Field(
        default=None,
        description=(
            "A separate bearer token for scrapers, plain or `sha256:<hex>`; only its digest "
            "is kept. It opens /metrics and nothing else."
        ),
    )

    @field_validator("token")
    @classmethod
    def _keep_digest_only(cls, value: str | None) -> str | None:
        return None if value is None else as_digest_text(value)
