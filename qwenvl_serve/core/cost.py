"""What a request may cost, read from its OpenAI-shaped body the way vLLM reads it. Pure.

vLLM validates request fields with pydantic in lax mode (``"stream": 1`` and ``"true"``
both stream, ``"max_tokens": "64"`` is 64), so limits and metering read them the same
way; a value vLLM would refuse counts as absent (vLLM then answers 400 itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

_T = TypeVar("_T")
_FLAG = TypeAdapter(bool)
_COUNT = TypeAdapter(int)


@dataclass(frozen=True)
class Cost:
    """The cost fields of one request, as vLLM will read them."""

    model: str | None = None
    max_tokens: int = 0  # 0 when the request does not say
    n: int = 1
    stream: bool = False
    usage_requested: bool = False  # the client asked for a usage chunk in its stream


def cost_of(document: dict[str, Any]) -> Cost:
    """The cost fields of a chat or completions body.

    ``max_completion_tokens`` wins over ``max_tokens`` when both are set, as in vLLM's
    ``build_tok_params``.
    """
    options = document.get("stream_options")
    limit = document.get("max_completion_tokens")
    model = document.get("model")
    return Cost(
        model=model if isinstance(model, str) else None,
        max_tokens=_count(document.get("max_tokens") if limit is None else limit),
        n=max(1, _lax(_COUNT, document.get("n"), 1)),
        stream=_lax(_FLAG, document.get("stream"), False),
        usage_requested=isinstance(options, dict)
        and _lax(_FLAG, options.get("include_usage"), False),
    )


def _lax(adapter: TypeAdapter[_T], value: object, default: _T) -> _T:
    if value is None:
        return default
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return default


def _count(value: object) -> int:
    return max(0, _lax(_COUNT, value, 0))
