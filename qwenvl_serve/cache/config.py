"""The ``cache:`` config section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from qwenvl_serve.config_base import StrictModel

CacheMode = Literal["greedy", "deterministic", "always"]


class CacheConfig(StrictModel):
    """Exact-match result cache for inference requests (off by default)."""

    enabled: bool = Field(
        default=False,
        description=(
            "Answer a request that repeats an earlier one exactly (same model, text, image "
            "bytes after normalization, and every field that changes the output) from the "
            "cache."
        ),
    )
    mode: CacheMode = Field(
        default="deterministic",
        description=(
            "Which requests are cached: `greedy` (temperature 0), `deterministic` "
            "(temperature 0 or a fixed `seed`), or `always` (any, so a repeat gets the "
            "first answer instead of a fresh sample)."
        ),
    )
    shared: bool = Field(
        default=False,
        description=(
            "Share entries between keys. Off: each key has its own entries, so no tenant "
            "is served, or learns of, another's requests."
        ),
    )
    backend: Literal["memory", "redis"] = Field(
        default="memory",
        description="`memory`: in this process, LRU. `redis`: shared by replicas.",
    )
    redis_url: str | None = Field(
        default=None, description="Redis to use with `backend: redis`, e.g. `redis://host:6379/0`."
    )
    redis_timeout_ms: int = Field(
        default=50,
        ge=1,
        description=(
            "Longest wait for Redis per operation; slower or unreachable is a miss (and a "
            "metric and a log line), never an error."
        ),
    )
    max_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="Memory backend: most bytes of cached answers; least recently used go first.",
    )
    max_entry_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest answer stored; larger ones are served but not cached.",
    )
    ttl_seconds: int = Field(
        default=3600, ge=1, description="How long an entry lives, on either backend."
    )
    hit_price_factor: float = Field(
        default=0.0,
        ge=0,
        description=(
            "What a hit costs, as a fraction of its tokens: in the usage log's cost and "
            "against the key's tpm (rpm counts every hit)."
        ),
    )

    @model_validator(mode="after")
    def _redis_needs_a_url(self) -> CacheConfig:
        if self.backend == "redis" and not self.redis_url:
            raise PydanticCustomError("redis_url_required", "backend redis needs cache.redis_url")
        return self
