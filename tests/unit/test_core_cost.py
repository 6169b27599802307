"""The request view's cost fields, read the way vLLM reads them, and its engine body."""

import json

import pytest

from qwenvl_serve.access.metering import with_usage_requested
from qwenvl_serve.core.cost import Cost, cost_of
from qwenvl_serve.core.view import InferenceRequest
from qwenvl_serve.routes import match_path


def chat(**fields):
    return {"model": "m", "messages": [], **fields}


def test_cost_fields_of_a_chat_request():
    assert cost_of(chat(max_tokens=64, stream=True, n=3), chat=True) == Cost(
        model="m", max_tokens=64, max_tokens_field="max_tokens", n=3, stream=True
    )


@pytest.mark.parametrize(
    ("fields", "max_tokens"),
    [
        ({"max_completion_tokens": 9, "max_tokens": 99}, 9),
        ({"max_tokens": 99}, 99),
        ({}, 0),
        ({"max_completion_tokens": None, "max_tokens": 900}, 900),
        # Read as vLLM's pydantic models read them (lax), so none slips past the tpm check.
        ({"max_tokens": "99"}, 99),
        ({"max_tokens": 99.0}, 99),
        ({"max_tokens": "lots"}, 0),  # vLLM refuses it itself
        ({"max_tokens": -1}, 0),
    ],
)
def test_max_tokens(fields, max_tokens):
    assert cost_of(chat(**fields), chat=True).max_tokens == max_tokens


@pytest.mark.parametrize(("n", "read"), [(None, 1), (4, 4), ("4", 4), (0, 1), ("x", 1)])
def test_n_is_at_least_one(n, read):
    assert cost_of(chat(n=n), chat=True).n == read


@pytest.mark.parametrize(
    ("fields", "stream", "usage_requested"),
    [
        ({"stream": True}, True, False),
        ({"stream": 1}, True, False),
        ({"stream": "true"}, True, False),
        ({"stream": "no"}, False, False),
        ({"stream": [1]}, False, False),
        ({"stream": 1, "stream_options": {"include_usage": "true"}}, True, True),
        ({"stream": 1, "stream_options": {"include_usage": 0}}, True, False),
        ({"stream": True, "stream_options": "yes"}, True, False),
    ],
)
def test_stream_flags_are_read_as_vllm_reads_them(fields, stream, usage_requested):
    cost = cost_of(chat(**fields), chat=True)
    assert (cost.stream, cost.usage_requested) == (stream, usage_requested)


def test_every_image_part_vllm_reads_is_counted_in_the_view():
    content = [
        {"type": "image_url", "image_url": {"url": "data:a"}},
        {"type": "input_image", "image_url": "data:b"},
        {"image_url": {"url": "data:c"}},  # no type: vLLM reads it by its key
        {"type": "text", "text": "what is this"},
    ]
    document = {"messages": [{"role": "user", "content": content}]}
    view = InferenceRequest(
        match_path("/v1/chat/completions"), b"{}", document, "/v1/chat/completions", "-"
    )
    assert view.image_count == 3
    assert [part.param for part in view.media] == [
        "messages[0].content[0]",
        "messages[0].content[1]",
        "messages[0].content[2]",
    ]


def test_an_unchanged_view_gives_the_client_bytes_and_a_changed_one_its_document():
    original = b'{"model": "m",  "messages": []}'
    view = InferenceRequest(
        match_path("/v1/chat/completions"), original, chat(), "/v1/chat/completions", "-"
    )
    assert view.engine_body() is original
    view.document["stream"] = True
    view.mark_changed()
    assert view.engine_body() == b'{"model":"m","messages":[],"stream":true}'
    # The client's bytes are released once the document stands for them; the size stays.
    assert view.original == b""
    assert view.body_size == len(original)


@pytest.mark.parametrize(
    "original",
    [
        b'{"model": "m", "stream_options": {"include_usage": false}, "stream": true}',
        b'{"model":"m"}  \n',
        b"{ }",
        b'{"messages": [{"content": "}"}]}',
    ],
)
def test_an_overridden_field_is_appended_and_reads_as_the_document(original):
    view = InferenceRequest(
        match_path("/v1/chat/completions"),
        original,
        json.loads(original),
        "/v1/chat/completions",
        "-",
    )
    view.override("stream_options", {"include_usage": True})
    body = view.engine_body()
    assert body.startswith(original.rstrip()[:-1])  # the client's bytes are kept
    assert json.loads(body) == view.document  # json keeps the last of duplicate keys
    assert json.loads(body)["stream_options"] == {"include_usage": True}


def test_a_rewritten_document_is_serialized_whole_with_its_overrides():
    view = InferenceRequest(
        match_path("/v1/chat/completions"), b'{"a": 1}', {"a": 1}, "/v1/chat/completions", "-"
    )
    view.override("b", 2)
    view.document["a"] = 3
    view.mark_changed()
    assert json.loads(view.engine_body()) == {"a": 3, "b": 2}


def test_asking_for_usage_keeps_other_stream_options_and_asks_for_every_chunk():
    body = chat(stream=True, stream_options={"include_usage": False, "x": 1})
    assert with_usage_requested(body) == {
        "include_usage": True,
        "continuous_usage_stats": True,
        "x": 1,
    }
    assert body["stream_options"]["include_usage"] is False  # the original is not changed
    assert with_usage_requested(chat(stream=True)) == {
        "include_usage": True,
        "continuous_usage_stats": True,
    }


@pytest.mark.parametrize(
    ("document", "logprobs", "prompt_logprobs", "field"),
    [
        (chat(logprobs=True, top_logprobs=5), 5, None, "prompt_logprobs"),
        (chat(logprobs="true", top_logprobs="-1"), -1, None, "prompt_logprobs"),
        (chat(logprobs=False, top_logprobs=5), None, None, "prompt_logprobs"),
        (chat(top_logprobs=5), None, None, "prompt_logprobs"),
        # echo asks prompt logprobs of the top_logprobs size, even without logprobs
        (chat(echo=True, top_logprobs=7), None, 7, "echo"),
        (chat(echo=1, prompt_logprobs=2, top_logprobs=7), None, 2, "prompt_logprobs"),
        ({"prompt": "p", "logprobs": 3}, 3, None, "prompt_logprobs"),
        ({"prompt": "p", "logprobs": "4", "echo": True}, 4, 4, "echo"),
        ({"prompt": "p", "prompt_logprobs": -1}, None, -1, "prompt_logprobs"),
        ({"prompt": "p", "prompt_logprobs": "many"}, None, None, "prompt_logprobs"),
    ],
)
def test_logprobs_are_read_as_vllm_turns_them_into_sampling_params(
    document, logprobs, prompt_logprobs, field
):
    cost = cost_of(document, chat="messages" in document)
    assert (cost.logprobs, cost.prompt_logprobs) == (logprobs, prompt_logprobs)
    assert cost.prompt_logprobs_field == field


@pytest.mark.parametrize(
    ("prompt", "prompts"),
    [("one", 1), (["a", "b", "c"], 3), ([1, 2, 3], 1), ([[1, 2], [3]], 2), (None, 1)],
)
def test_a_completions_request_runs_one_sequence_set_per_prompt(prompt, prompts):
    cost = cost_of({"prompt": prompt, "n": 2}, chat=False)
    assert (cost.prompts, cost.sequences) == (prompts, 2 * prompts)


def test_beam_search_and_token_ids_and_continuous_usage_are_read():
    cost = cost_of(
        chat(
            use_beam_search="yes",
            logprob_token_ids=[1, 2, 3],
            stream_options={"continuous_usage_stats": 1},
        ),
        chat=True,
    )
    assert cost.beam_search
    assert cost.logprob_token_ids == 3
    assert cost.continuous_usage_requested
    assert not cost.usage_requested
