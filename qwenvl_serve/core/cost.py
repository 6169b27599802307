"""What a request may cost, read from its OpenAI-shaped body the way vLLM reads it. Pure.

vLLM validates request fields with pydantic in lax mode (``"stream": 1`` and ``"true"``
both stream, ``"max_tokens": "64"`` is 64), so limits, bounds and metering read them
the same way; a value vLLM would refuse counts as absent (vLLM then answers 400 itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

_T = TypeVar("_T")
_FLAG = TypeAdapter(bool)
_COUNT = TypeAdapter(int)

MAX_COMPLETION_TOKENS = "max_completion_tokens"
MAX_TOKENS = "max_tokens"
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # vLLM's CompletionRequest.max_tokens default
ALL_VOCABULARY = -1  # vLLM's spelling of "a logprob for every token of the vocabulary"


@dataclass(frozen=True)
class Cost:
    """The cost fields of one request, as vLLM will read them."""

    model: str | None = None
    max_tokens: int = 0  # 0 when the request does not say
    max_tokens_field: str | None = None  # the field that sets it (None: neither is set)
    n: int = 1
    stream: bool = False
    usage_requested: bool = False  # the client asked for a usage chunk in its stream
    continuous_usage_requested: bool = False  # ... and for usage on every chunk
    beam_search: bool = False
    logprobs: int | None = None  # per sampled token; ALL_VOCABULARY for the whole vocabulary
    prompt_logprobs: int | None = None  # per prompt token, likewise
    prompt_logprobs_field: str = "prompt_logprobs"  # or "echo", which asks for them too
    logprob_token_ids: int = 0  # how many token ids the client asked logprobs for
    prompts: int = 1  # prompts in one request: a completions request may hold a list
    chat: bool = True  # a chat request (messages), not a completions one (prompt)
    messages: int = 0  # messages in a chat request
    most_parts: int = 0  # content parts of its fullest message
    most_parts_at: int = 0  # that message's index

    @property
    def logprobs_field(self) -> str:
        """Where the request asks for sampled logprobs: chat names the count apart."""
        return "top_logprobs" if self.chat else "logprobs"

    @property
    def sequences(self) -> int:
        """Sequences the engine runs: ``n`` for each prompt."""
        return self.n * self.prompts


def cost_of(document: dict[str, Any], chat: bool) -> Cost:
    """The cost fields of a chat (``chat``) or completions body, read as that route of
    vLLM's reads them; the route comes from the path, never from the body.

    Output tokens: chat takes ``max_completion_tokens`` over ``max_tokens`` (vLLM's
    ``build_tok_params``); completions has ``max_tokens`` only, 16 when absent (its
    pydantic default) and the rest of the context when null. Logprobs as vLLM's
    ``to_sampling_params``: chat asks with ``logprobs: true`` plus ``top_logprobs``,
    completions with an integer ``logprobs``; ``echo`` without ``prompt_logprobs`` asks
    prompt logprobs of that size (chat: ``top_logprobs``, 0 when unset).
    """
    options = document.get("stream_options")
    options = options if isinstance(options, dict) else {}
    if chat:
        field = MAX_TOKENS if document.get(MAX_COMPLETION_TOKENS) is None else MAX_COMPLETION_TOKENS
        given = document.get(field) is not None
    else:
        field = MAX_TOKENS
        given = field not in document or document[field] is not None
    value = document.get(field, COMPLETIONS_DEFAULT_MAX_TOKENS if not chat else None)
    model = document.get("model")
    prompt_logprobs = _optional_count(document.get("prompt_logprobs"))
    prompt_logprobs_field = "prompt_logprobs"
    if prompt_logprobs is None and lax_flag(document.get("echo")):
        prompt_logprobs, prompt_logprobs_field = _echoed_logprobs(document, chat), "echo"
    token_ids = document.get("logprob_token_ids")
    return Cost(
        model=model if isinstance(model, str) else None,
        max_tokens=_count(value),
        max_tokens_field=field if given else None,
        n=max(1, _count(document.get("n")) or 1),
        stream=lax_flag(document.get("stream")),
        usage_requested=lax_flag(options.get("include_usage")),
        continuous_usage_requested=lax_flag(options.get("continuous_usage_stats")),
        beam_search=lax_flag(document.get("use_beam_search")),
        logprobs=_sample_logprobs(document, chat),
        prompt_logprobs=prompt_logprobs,
        prompt_logprobs_field=prompt_logprobs_field,
        logprob_token_ids=len(token_ids) if isinstance(token_ids, list) else 0,
        prompts=1 if chat else _prompt_count(document.get("prompt")),
        chat=chat,
        **(_shape(document.get("messages")) if chat else {}),
    )


def _shape(messages: object) -> dict[str, int]:
    """How many messages, and the most content parts one of them holds (and where):
    what vLLM walks part by part before anything is bounded by tokens."""
    if not isinstance(messages, list):
        return {}
    most, at = 0, 0
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and len(content) > most:
            most, at = len(content), index
    return {"messages": len(messages), "most_parts": most, "most_parts_at": at}


def _sample_logprobs(document: dict[str, Any], chat: bool) -> int | None:
    if chat:  # a flag, and the number in top_logprobs
        if not lax_flag(document.get("logprobs")):
            return None
        return _lax(_COUNT, document.get("top_logprobs"), 0)
    return _optional_count(document.get("logprobs"))


def _echoed_logprobs(document: dict[str, Any], chat: bool) -> int | None:
    if chat:  # TopLogprobsParam reads a missing or null top_logprobs as 0
        return _lax(_COUNT, document.get("top_logprobs"), 0)
    return _optional_count(document.get("logprobs"))


def _prompt_count(prompt: object) -> int:
    """Prompts in a completions ``prompt``: a string or token list is one, a list of them many."""
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
        return len(prompt)
    return 1


def _lax(adapter: TypeAdapter[_T], value: object, default: _T) -> _T:
    if value is None:
        return default
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return default


def lax_flag(value: object) -> bool:
    """A boolean field read as vLLM's pydantic reads it ("true", 1 and "yes" are true)."""
    if value is None or value is False or value is True:  # the usual spellings, no pydantic
        return bool(value)
    return _lax(_FLAG, value, False)


def _count(value: object) -> int:
    if type(value) is int:
        return max(0, value)
    return max(0, _lax(_COUNT, value, 0))


def _optional_count(value: object) -> int | None:
    """An integer field that may be absent: None when it is, or vLLM would refuse it."""
    if value is None or type(value) is int:
        return value
    try:
        return _COUNT.validate_python(value)
    except ValidationError:
        return None
