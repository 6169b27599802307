"""Usage read from JSON and SSE responses, and the request facts metering needs."""

import json

import pytest

from qwenvl_serve.access.request_facts import (
    RequestFacts,
    parse_json_object,
    request_facts,
    with_usage_requested,
)
from qwenvl_serve.access.usage import (
    JsonUsageCollector,
    SseUsageScanner,
    Usage,
    is_usage_only_chunk,
    usage_in,
)


def sse(document) -> bytes:
    return b"data: " + json.dumps(document).encode() + b"\n\n"


CONTENT = {"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
USAGE_CHUNK = {"id": "c", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}}
DONE = b"data: [DONE]\n\n"


def test_openai_usage():
    assert usage_in({"usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}}) == (
        Usage(7, 2)
    )


def test_google_usage_metadata_counts_thoughts_as_completion():
    document = {
        "candidates": [],
        "usageMetadata": {
            "promptTokenCount": 20,
            "candidatesTokenCount": 5,
            "thoughtsTokenCount": 4,
            "totalTokenCount": 29,
        },
    }
    assert usage_in(document) == Usage(20, 9)
    assert usage_in({"usageMetadata": {"promptTokenCount": 3}}) == Usage(3, 0)


def test_a_streamed_json_array_reports_its_last_usage():
    array = [
        {"usageMetadata": {"promptTokenCount": 20, "candidatesTokenCount": 1}},
        {"candidates": []},
        {"usageMetadata": {"promptTokenCount": 20, "candidatesTokenCount": 6}},
    ]
    assert usage_in(array) == Usage(20, 6)


@pytest.mark.parametrize(
    "document",
    [None, [], "text", {"usage": None}, {"usage": "x"}, {"choices": []}, {"error": {"code": 1}}],
)
def test_no_usage(document):
    assert usage_in(document) is None


def test_nonsense_counts_read_as_zero():
    assert usage_in({"usage": {"prompt_tokens": -4, "completion_tokens": True}}) == Usage(0, 0)
    assert usage_in({"usage": {"prompt_tokens": "12", "completion_tokens": 1.5}}) == Usage(0, 0)


def test_usage_only_chunk():
    assert is_usage_only_chunk(USAGE_CHUNK)
    assert not is_usage_only_chunk(CONTENT)
    assert not is_usage_only_chunk({**CONTENT, "usage": {"prompt_tokens": 1}})


def test_sse_usage_passes_through_unchanged_when_the_client_asked():
    scanner = SseUsageScanner(drop_usage_chunk=False)
    stream = [sse(CONTENT), sse(CONTENT), sse(USAGE_CHUNK), DONE]
    assert [scanner.feed(chunk) for chunk in stream] == stream
    assert scanner.finish() == b""
    assert scanner.usage == Usage(12, 3)


def test_sse_usage_chunk_is_cut_when_we_asked_for_it():
    scanner = SseUsageScanner(drop_usage_chunk=True)
    out = [scanner.feed(chunk) for chunk in [sse(CONTENT), sse(USAGE_CHUNK), DONE]]
    assert out == [sse(CONTENT), b"", DONE]
    assert scanner.usage == Usage(12, 3)


def test_sse_events_split_across_chunks_and_crlf():
    whole = sse(CONTENT) + sse(USAGE_CHUNK).replace(b"\n", b"\r\n") + DONE
    pieces = [whole[i : i + 7] for i in range(0, len(whole), 7)]
    dropping = SseUsageScanner(drop_usage_chunk=True)
    forwarded = b"".join(dropping.feed(piece) for piece in pieces) + dropping.finish()
    assert forwarded == sse(CONTENT) + DONE
    assert dropping.usage == Usage(12, 3)
    passing = SseUsageScanner(drop_usage_chunk=False)
    assert b"".join(passing.feed(piece) for piece in pieces) == whole
    assert passing.usage == Usage(12, 3)


def test_complete_events_are_never_held_back():
    scanner = SseUsageScanner(drop_usage_chunk=True)
    event = sse(CONTENT)
    assert scanner.feed(event + event[:10]) == event  # only the unfinished tail waits
    assert scanner.feed(event[10:]) == event


def test_continuous_usage_keeps_the_last_one():
    scanner = SseUsageScanner(drop_usage_chunk=False)
    for completion in (1, 2, 3):
        chunk = {**CONTENT, "usage": {"prompt_tokens": 12, "completion_tokens": completion}}
        scanner.feed(sse(chunk))
    assert scanner.usage == Usage(12, 3)


def test_google_sse_usage():
    scanner = SseUsageScanner(drop_usage_chunk=False)
    chunk = {"candidates": [], "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 2}}
    scanner.feed(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n")
    assert scanner.usage == Usage(9, 2)


def test_json_collector():
    body = json.dumps({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}})
    collector = JsonUsageCollector()
    for i in range(0, len(body), 10):
        collector.feed(body[i : i + 10].encode())
    assert collector.usage() == Usage(5, 1)
    broken = JsonUsageCollector()
    broken.feed(b"{not json")
    assert broken.usage() is None
    assert JsonUsageCollector().usage() is None


def chat(**fields):
    return {"model": "m", "messages": [], **fields}


def test_openai_request_facts():
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    text = {"type": "text", "text": "describe"}
    body = chat(
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [text, image, image]},
            {"role": "user", "content": [image]},
        ],
        max_tokens=64,
        stream=True,
    )
    facts = request_facts("chat_completions", body, "/v1/chat/completions")
    assert facts == RequestFacts(max_tokens=64, images=3, stream=True, usage_requested=False)


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
    assert request_facts("chat_completions", chat(**fields), "/").max_tokens == max_tokens


def test_usage_requested_only_when_include_usage_is_true():
    asked = chat(stream=True, stream_options={"include_usage": True})
    assert request_facts("chat_completions", asked, "/").usage_requested
    for options in ({"include_usage": False}, {}, None, "yes"):
        body = chat(stream=True, stream_options=options)
        assert not request_facts("chat_completions", body, "/").usage_requested


def test_google_request_facts():
    body = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "what is this"},
                    {"inlineData": {"mimeType": "image/jpeg", "data": "AAAA"}},
                    {"inline_data": {"mime_type": "image/png", "data": "AAAA"}},
                    {"fileData": {"mimeType": "application/pdf", "fileUri": "x"}},
                ],
            }
        ],
        "generationConfig": {"maxOutputTokens": 128},
    }
    path = "/v1beta/models/m:streamGenerateContent"
    assert request_facts("generate_content", body, path) == RequestFacts(
        max_tokens=128, images=2, stream=True
    )
    assert not request_facts("generate_content", body, "/v1/models/m:generateContent").stream


def test_google_request_facts_in_snake_case_and_proto3_strings():
    body = {
        "contents": [{"parts": [{"file_data": {"file_uri": "https://x/cat.jpg"}}]}],
        "generation_config": {"max_output_tokens": "64"},
    }
    facts = request_facts("generate_content", body, "/v1/models/m:generateContent")
    assert (facts.max_tokens, facts.images) == (64, 1)


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
    ],
)
def test_stream_flags_are_read_as_vllm_reads_them(fields, stream, usage_requested):
    facts = request_facts("chat_completions", chat(**fields), "/v1/chat/completions")
    assert (facts.stream, facts.usage_requested) == (stream, usage_requested)


def test_every_image_part_vllm_reads_is_counted():
    content = [
        {"type": "image_url", "image_url": {"url": "data:a"}},
        {"type": "input_image", "image_url": "data:b"},
        {"image_url": {"url": "data:c"}},  # no type: vLLM reads it by its key
        {"type": "text", "text": "what is this"},
    ]
    body = {"messages": [{"role": "user", "content": content}]}
    assert request_facts("chat_completions", body, "/v1/chat/completions").images == 3


@pytest.mark.parametrize("raw", [b"", b"[]", b"{bad", b"\xff", b'"text"'])
def test_bodies_that_are_not_objects_have_no_facts(raw):
    assert parse_json_object(raw) is None
    assert request_facts("chat_completions", None, "/") == RequestFacts()


def test_asking_for_usage_keeps_other_stream_options_but_not_continuous_stats():
    body = chat(
        stream=True, stream_options={"include_usage": False, "continuous_usage_stats": True}
    )
    changed = with_usage_requested(body)
    assert changed["stream_options"] == {"include_usage": True}
    assert body["stream_options"]["include_usage"] is False  # the original is not changed
    assert with_usage_requested(chat(stream=True))["stream_options"] == {"include_usage": True}
