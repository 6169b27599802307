"""OpenAI chat completion chunks (engine stream events) -> Google streamGenerateContent events."""

from __future__ import annotations

import json
from typing import Any

from qwenvl_serve.core.responses import EngineEvent
from qwenvl_serve.core.sse import SseSplitter, event_data
from qwenvl_serve.genai.stream import ChunkTranslator, StreamConverter

IDENTITY = {"id": "chatcmpl-9", "model": "qwen3-vl-tiny", "object": "chat.completion.chunk"}


def chunk(text: str | None = None, reason: str | None = None, index: int = 0) -> dict[str, Any]:
    delta = {} if text is None else {"content": text}
    return {**IDENTITY, "choices": [{"index": index, "delta": delta, "finish_reason": reason}]}


USAGE_CHUNK = {
    **IDENTITY,
    "choices": [],
    "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
}


def sse(*documents: object) -> bytes:
    events = [f"data: {json.dumps(d, ensure_ascii=False)}\n\n" for d in documents]
    return ("".join(events) + "data: [DONE]\n\n").encode()


def sse_events(body: bytes) -> list[dict[str, Any]]:
    text = body.decode()
    assert text.endswith("\n\n")
    events = text.split("\n\n")[:-1]
    assert all(event.startswith("data: ") for event in events)
    return [json.loads(event.removeprefix("data: ")) for event in events]


def texts(events: list[dict[str, Any]]) -> list[str]:
    return [
        part["text"]
        for event in events
        for cand in event.get("candidates", [])
        for part in cand["content"]["parts"]
    ]


def events_of(body: bytes, splitter: SseSplitter | None = None) -> list[EngineEvent]:
    """The engine events the engine edge would attach for these bytes."""
    raw = (splitter or SseSplitter()).feed(body)
    return [EngineEvent(event, event_data(event)) for event in raw]


def test_texts_flow_and_the_last_event_carries_finish_reason_and_usage():
    translator = ChunkTranslator()
    events = []
    for item in [
        {**IDENTITY, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        chunk("Hel"),
        chunk("lo"),
        chunk("!", reason="length"),
        USAGE_CHUNK,
    ]:
        events += translator.feed(item)
    assert texts(events) == ["Hel", "lo"]  # "!" is held for the final event
    final = translator.finish()
    assert final == [
        {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": "!"}]},
                    "index": 0,
                    "finishReason": "MAX_TOKENS",
                }
            ],
            "modelVersion": "qwen3-vl-tiny",
            "responseId": "chatcmpl-9",
            "usageMetadata": {
                "promptTokenCount": 10,
                "candidatesTokenCount": 3,
                "totalTokenCount": 13,
            },
        }
    ]
    assert translator.finish() == []


def test_a_finish_without_pending_text_gets_an_empty_text_part():
    translator = ChunkTranslator()
    assert translator.feed(chunk("a")) == []
    assert len(translator.feed(chunk("b"))) == 1
    assert translator.feed(chunk(None, reason="stop", index=1)) == []
    [final] = translator.finish()
    assert final["candidates"] == [
        {"content": {"role": "model", "parts": [{"text": "b"}]}, "index": 0},
        {"content": {"role": "model", "parts": [{"text": ""}]}, "index": 1, "finishReason": "STOP"},
    ]
    assert "usageMetadata" not in final


def test_converter_makes_google_sse_from_openai_sse_fed_in_odd_pieces():
    body = sse(chunk("你"), chunk("好"), chunk("。", reason="stop"), USAGE_CHUNK)
    converter = StreamConverter(sse=True)
    assert converter.framing.content_type == b"text/event-stream"
    splitter = SseSplitter()
    pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
    out = b"".join(converter.feed(events_of(piece, splitter)) for piece in pieces)
    out += converter.close()
    events = sse_events(out)
    assert texts(events) == ["你", "好", "。"]
    assert "finishReason" not in events[0]["candidates"][0]
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert events[-1]["usageMetadata"]["totalTokenCount"] == 13


def test_converter_without_alt_sse_streams_one_json_array():
    converter = StreamConverter(sse=False)
    assert converter.framing.content_type == b"application/json"
    out = converter.feed(events_of(sse(chunk("a"), chunk("b", reason="stop"), USAGE_CHUNK)))
    out += converter.close()
    events = json.loads(out)
    assert texts(events) == ["a", "b"]
    assert events[-1]["usageMetadata"]["promptTokenCount"] == 10


def test_an_error_event_midway_becomes_a_google_error_event_and_ends_the_stream():
    error = {"error": {"message": "engine died: KeyError", "type": "InternalServerError"}}
    converter = StreamConverter(sse=True)
    out = converter.feed(events_of(sse(chunk("a"), chunk("b"), {**error, "code": 500})))
    out += converter.feed(events_of(sse(chunk("late"))))  # nothing after the error
    out += converter.close()
    events = sse_events(out)
    assert texts(events) == ["a", "b"]
    assert events[-1] == {
        "error": {
            "code": 500,
            "message": "The model server could not complete the request.",
            "status": "INTERNAL",
        }
    }


def test_a_client_error_event_keeps_its_status_and_message():
    error = {"error": {"message": "Bad stop sequence.", "type": "BadRequestError", "code": 400}}
    converter = StreamConverter(sse=True)
    events = sse_events(converter.feed(events_of(sse(error))) + converter.close())
    assert events == [
        {"error": {"code": 400, "message": "Bad stop sequence.", "status": "INVALID_ARGUMENT"}}
    ]


def test_a_stream_that_breaks_off_without_done_ends_with_an_error():
    converter = StreamConverter(sse=True)
    out = converter.feed(events_of(f"data: {json.dumps(chunk('a'))}\n\n".encode()))
    out += converter.close()
    events = sse_events(out)
    assert texts(events) == ["a"]
    assert events[-1]["error"]["status"] == "INTERNAL"


def test_an_unreadable_event_is_an_error_not_a_crash():
    converter = StreamConverter(sse=True)
    out = converter.feed(events_of(b"data: {not json\n\ndata: [DONE]\n\n")) + converter.close()
    events = sse_events(out)
    assert events == [
        {
            "error": {
                "code": 500,
                "message": "The model server sent an unreadable stream event.",
                "status": "INTERNAL",
            }
        }
    ]
