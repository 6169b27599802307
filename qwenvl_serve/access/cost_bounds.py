"""The most one request may cost: its shape, choices, output tokens, beam search,
logprobs. Pure.

:func:`bounded` reads the request's cost fields (as vLLM reads them) against the
``limits:`` section and says either which field is out of bounds or how many output
tokens per choice the request gets, the configured default when it names none.
:func:`worst_case_tokens` is what a request can spend at most, reserved from its
key's tpm until its real usage is known.
"""

from __future__ import annotations

from dataclasses import dataclass

from qwenvl_serve.access.config import LimitsConfig
from qwenvl_serve.core.cost import ALL_VOCABULARY, MAX_TOKENS, Cost

_OFF = "off on this server"


@dataclass(frozen=True)
class OutOfBounds:
    """A request field beyond its bound: the field (OpenAI name), a code and why."""

    field: str
    code: str
    reason: str


@dataclass(frozen=True)
class Bounded:
    """A request within its bounds, and the output tokens per choice it gets."""

    max_tokens: int
    default_applied: bool  # the request named no limit, so it gets the default


def bounded(cost: Cost, limits: LimitsConfig) -> Bounded | OutOfBounds:
    """``cost`` judged against ``limits``."""
    problem = _out_of_bounds(cost, limits)
    if problem is not None:
        return problem
    if cost.max_tokens_field is None:
        return Bounded(limits.default_max_tokens, default_applied=True)
    return Bounded(cost.max_tokens, default_applied=False)


def _out_of_bounds(cost: Cost, limits: LimitsConfig) -> OutOfBounds | None:
    allows = "this server allows at most"
    if cost.messages > limits.max_messages:
        reason = f"{allows} {limits.max_messages} messages per request"
        return OutOfBounds("messages", "too_many_messages", reason)
    if cost.most_parts > limits.max_content_parts:
        field = f"messages[{cost.most_parts_at}].content"
        reason = f"{allows} {limits.max_content_parts} content parts per message"
        return OutOfBounds(field, "too_many_content_parts", reason)
    if cost.sequences > limits.max_n:
        # Each prompt of a completions request runs n sequences of its own.
        field = "n" if cost.n > limits.max_n or cost.prompts == 1 else "prompt"
        reason = f"{allows} {limits.max_n} choices per request (n for each prompt)"
        return OutOfBounds(field, "too_many_choices", reason)
    if cost.max_tokens > limits.max_tokens:
        return OutOfBounds(
            cost.max_tokens_field or MAX_TOKENS,
            "too_many_tokens",
            f"{allows} {limits.max_tokens} output tokens per choice",
        )
    if cost.beam_search and not limits.beam_search:
        return OutOfBounds("use_beam_search", "beam_search_disabled", f"beam search is {_OFF}")
    per_token = f"{allows} {limits.max_logprobs} logprobs per token"
    if cost.logprobs is not None and not _within(cost.logprobs, limits.max_logprobs):
        return OutOfBounds(cost.logprobs_field, "too_many_logprobs", per_token)
    if cost.logprob_token_ids > limits.max_logprobs:
        return OutOfBounds("logprob_token_ids", "too_many_logprobs", per_token)
    if cost.prompt_logprobs is not None:
        field = cost.prompt_logprobs_field
        if not limits.prompt_logprobs:
            return OutOfBounds(field, "prompt_logprobs_disabled", f"prompt logprobs are {_OFF}")
        if not _within(cost.prompt_logprobs, limits.max_logprobs):
            return OutOfBounds(field, "too_many_logprobs", per_token)
    return None


def _within(count: int, maximum: int) -> bool:
    return count != ALL_VOCABULARY and count <= maximum


def prompt_tokens_bound(body_bytes: int, media_chars: int, media: int, per_media: int) -> int:
    """An upper bound on a request's prompt tokens: one per byte of its body outside the
    media parts (a byte-level BPE token is at least one byte, and JSON never spells text
    shorter than UTF-8 does), plus the most tokens each media item can become."""
    return max(0, body_bytes - media_chars) + media * per_media


def worst_case_tokens(
    cost: Cost, max_tokens: int, prompt_tokens_bound: int, max_model_len: int | None
) -> int:
    """The most tokens the engine can process for a request, as metering counts them.

    Every sequence (``n`` per prompt) is prefilled with its prompt and may generate up
    to ``max_tokens``; a prompt never exceeds the context length.
    """
    prompt = prompt_tokens_bound
    if max_model_len is not None:
        prompt = min(prompt, cost.prompts * max_model_len)
    return cost.n * (prompt + cost.prompts * max_tokens)
