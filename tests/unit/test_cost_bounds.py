"""Per-request cost bounds and the tpm worst case: each rule, read as vLLM reads fields."""

import pytest

from qwenvl_serve.access.config import LimitsConfig
from qwenvl_serve.access.cost_bounds import (
    Bounded,
    OutOfBounds,
    bounded,
    prompt_tokens_bound,
    worst_case_tokens,
)
from qwenvl_serve.core.cost import cost_of
from qwenvl_serve.genai.request import GOOGLE_FIELD_NAMES

LIMITS = LimitsConfig()
PARTS_65 = {"role": "user", "content": [{"type": "text", "text": "a"}] * 65}


def chat(**fields):
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}


@pytest.mark.parametrize(
    ("document", "field", "code"),
    [
        (chat(n=9), "n", "too_many_choices"),
        (chat(n="1024"), "n", "too_many_choices"),
        (chat(max_tokens=8193), "max_tokens", "too_many_tokens"),
        (
            chat(max_completion_tokens=9000, max_tokens=5),
            "max_completion_tokens",
            "too_many_tokens",
        ),
        (chat(use_beam_search=True), "use_beam_search", "beam_search_disabled"),
        (chat(use_beam_search="true"), "use_beam_search", "beam_search_disabled"),
        (chat(logprobs=True, top_logprobs=21), "top_logprobs", "too_many_logprobs"),
        (chat(logprobs=True, top_logprobs=-1), "top_logprobs", "too_many_logprobs"),
        (
            chat(logprobs=True, logprob_token_ids=list(range(21))),
            "logprob_token_ids",
            "too_many_logprobs",
        ),
        (chat(prompt_logprobs=0), "prompt_logprobs", "prompt_logprobs_disabled"),
        (chat(echo=True, top_logprobs=1), "echo", "prompt_logprobs_disabled"),
        ({"prompt": "p", "logprobs": 21}, "logprobs", "too_many_logprobs"),
        ({"prompt": "p", "logprobs": -1}, "logprobs", "too_many_logprobs"),
        ({"prompt": "p", "echo": True, "logprobs": 1}, "echo", "prompt_logprobs_disabled"),
        (
            {"messages": [{"role": "user", "content": "hi"}] * 257},
            "messages",
            "too_many_messages",
        ),
        (
            {"messages": [{"role": "user", "content": "hi"}, PARTS_65]},
            "messages[1].content",
            "too_many_content_parts",
        ),
    ],
)
def test_each_bound_names_the_field_that_passes_it(document, field, code):
    outcome = bounded(cost_of(document, chat="messages" in document), LIMITS)
    assert isinstance(outcome, OutOfBounds)
    assert (outcome.field, outcome.code) == (field, code)
    assert "this server" in outcome.reason


@pytest.mark.parametrize(
    "document",
    [
        chat(n=8, max_tokens=8192),
        chat(logprobs=True, top_logprobs=20),
        chat(logprobs=False, top_logprobs=99),  # not asked for: vLLM ignores the count
        chat(use_beam_search=False),
        {"prompt": "p", "logprobs": 20},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}] * 64}] * 256},
    ],
)
def test_requests_within_the_bounds_pass(document):
    assert isinstance(bounded(cost_of(document, chat="messages" in document), LIMITS), Bounded)


def test_prompt_logprobs_when_enabled_are_bounded_like_the_others():
    limits = LimitsConfig(prompt_logprobs=True, max_logprobs=5)
    assert isinstance(bounded(cost_of(chat(prompt_logprobs=5), chat=True), limits), Bounded)
    too_many = bounded(cost_of(chat(prompt_logprobs=-1), chat=True), limits)
    assert isinstance(too_many, OutOfBounds)
    assert too_many.code == "too_many_logprobs"


def test_beam_search_can_be_enabled():
    assert isinstance(
        bounded(cost_of(chat(use_beam_search=True), chat=True), LimitsConfig(beam_search=True)),
        Bounded,
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, Bounded(1024, default_applied=True)),
        ({"max_tokens": None}, Bounded(1024, default_applied=True)),
        ({"max_tokens": 7}, Bounded(7, default_applied=False)),
        ({"max_completion_tokens": "12"}, Bounded(12, default_applied=False)),
    ],
)
def test_a_request_that_names_no_output_limit_gets_the_default(fields, expected):
    assert bounded(cost_of(chat(**fields), chat=True), LIMITS) == expected


def test_an_unreadable_limit_is_left_for_vllm_to_refuse():
    outcome = bounded(cost_of(chat(max_tokens="lots"), chat=True), LIMITS)
    assert outcome == Bounded(0, default_applied=False)


def test_the_default_may_not_exceed_the_maximum():
    with pytest.raises(ValueError, match="default_max_tokens"):
        LimitsConfig(default_max_tokens=100, max_tokens=50)


def test_generate_content_fields_are_named_as_google_clients_send_them():
    assert GOOGLE_FIELD_NAMES["n"] == "generationConfig.candidateCount"
    assert GOOGLE_FIELD_NAMES["max_completion_tokens"] == "generationConfig.maxOutputTokens"


def test_the_worst_case_counts_every_sequence_s_prompt_and_output():
    cost = cost_of({"prompt": ["a", "b"], "n": 3}, chat=False)
    # 3 sequences for each of 2 prompts; the prompts' bound is shared out over them.
    assert worst_case_tokens(cost, 10, 40, None) == 3 * (40 + 2 * 10)
    assert worst_case_tokens(cost, 10, 10_000, 100) == 3 * (200 + 2 * 10)


def test_the_prompt_bound_replaces_media_bytes_by_their_token_ceiling():
    assert prompt_tokens_bound(body_bytes=10_000, media_chars=9_000, media=2, per_media=50) == 1_100


def test_completions_has_no_max_completion_tokens_and_defaults_to_16():
    # vLLM's completions route ignores max_completion_tokens and reads max_tokens only.
    sneaky = {"prompt": "p", "max_tokens": 1_000_000, "max_completion_tokens": 1}
    outcome = bounded(cost_of(sneaky, chat=False), LIMITS)
    assert isinstance(outcome, OutOfBounds)
    assert outcome.field == "max_tokens"
    assert bounded(cost_of({"prompt": "p"}, chat=False), LIMITS) == Bounded(16, False)
    explicit_null = {"prompt": "p", "max_tokens": None}  # vLLM: the rest of the context
    assert bounded(cost_of(explicit_null, chat=False), LIMITS) == Bounded(1024, True)


def test_the_route_not_the_body_says_how_logprobs_are_read():
    disguised = {"prompt": "p", "messages": [], "echo": True, "logprobs": 20}
    outcome = bounded(cost_of(disguised, chat=False), LIMITS)
    assert isinstance(outcome, OutOfBounds)
    assert outcome.code == "prompt_logprobs_disabled"


@pytest.mark.parametrize("fields", [{"echo": True}, {"echo": True, "top_logprobs": None}])
def test_chat_echo_alone_asks_for_prompt_logprobs(fields):
    # vLLM reads a missing or null top_logprobs as 0: prompt logprobs of size 0, which
    # still score every prompt token.
    outcome = bounded(cost_of(chat(**fields), chat=True), LIMITS)
    assert isinstance(outcome, OutOfBounds)
    assert outcome.field == "echo"


def test_max_n_bounds_every_sequence_of_a_request():
    many_prompts = {"prompt": ["a"] * 3, "n": 3}
    outcome = bounded(cost_of(many_prompts, chat=False), LIMITS)
    assert isinstance(outcome, OutOfBounds)
    assert (outcome.field, outcome.code) == ("prompt", "too_many_choices")
    fits = {"prompt": ["a"] * 4, "n": 2}
    assert isinstance(bounded(cost_of(fits, chat=False), LIMITS), Bounded)
