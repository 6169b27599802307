"""vLLM's answers read once: usage, stream events, and the usage chunk we cut."""

import json
from typing import Any

import pytest
from starlette.types import Message

from qwenvl_serve.access.metering import as_client_asked, without_usage
from qwenvl_serve.core.cost import Cost
from qwenvl_serve.core.responses import (
    ENGINE_EVENTS,
    FROM_ENGINE,
    EngineEvent,
    EngineStart,
    ResponseWatch,
    Usage,
    engine_events,
    reading_engine_responses,
    usage_in,
    watched,
)
from qwenvl_serve.core.sse import SseSplitter, event_data


def sse(document) -> bytes:
    return b"data: " + json.dumps(document).encode() + b"\n\n"


CONTENT = {"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
USAGE_CHUNK = {"id": "c", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}}
DONE = b"data: [DONE]\n\n"
SSE_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/event-stream; charset=utf-8")],
}
JSON_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json")],
}


def test_openai_usage():
    usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    assert usage_in({"usage": usage}) == Usage(7, 2)


@pytest.mark.parametrize(
    "document",
    [None, [], "text", {"usage": None}, {"usage": "x"}, {"choices": []}, {"error": {"code": 1}}],
)
def test_no_usage(document):
    assert usage_in(document) is None


def test_nonsense_counts_read_as_zero():
    assert usage_in({"usage": {"prompt_tokens": -4, "completion_tokens": True}}) == Usage(0, 0)
    assert usage_in({"usage": {"prompt_tokens": "12", "completion_tokens": 1.5}}) == Usage(0, 0)


def event(document) -> EngineEvent:
    raw = sse(document)
    return EngineEvent(raw, event_data(raw))


def test_events_know_usage_only_chunks_and_the_end():
    assert event(USAGE_CHUNK).is_usage_only
    assert event(USAGE_CHUNK).usage == Usage(12, 3)
    assert not event(CONTENT).is_usage_only
    assert event(CONTENT).usage is None
    assert not event({**CONTENT, "usage": {"prompt_tokens": 1}}).is_usage_only
    done = EngineEvent(DONE, event_data(DONE))
    assert done.done
    assert done.document is None


def test_an_event_parses_its_json_once(monkeypatch):
    calls = []
    real = json.loads

    def counting(text):
        calls.append(text)
        return real(text)

    monkeypatch.setattr(json, "loads", counting)
    chunk = event(USAGE_CHUNK)
    assert chunk.usage == Usage(12, 3)
    assert chunk.is_usage_only
    assert chunk.document["id"] == "c"
    assert len(calls) == 1


async def relay(messages):
    sent = []

    async def send(message):
        sent.append(message)

    annotated = reading_engine_responses(send)
    for message in messages:
        await annotated(message)
    return sent


def body(chunk: bytes, more: bool = True):
    return {"type": "http.response.body", "body": chunk, "more_body": more}


@pytest.mark.anyio
async def test_stream_events_are_attached_and_the_bytes_pass_unchanged():
    stream = [sse(CONTENT), sse(CONTENT) + sse(USAGE_CHUNK), DONE]
    sent = await relay([SSE_START, *(body(c) for c in stream), body(b"", more=False)])
    assert sent[0][FROM_ENGINE] == EngineStart(200, streamed=True)
    assert [m["body"] for m in sent[1:]] == [*stream, b""]
    assert [len(engine_events(m)) for m in sent[1:]] == [1, 2, 1, 0]
    watch = ResponseWatch()
    for message in sent:
        watch.see(message)
    assert watch.from_engine
    assert watch.engine_usage(Cost()) == Usage(12, 3)


@pytest.mark.anyio
async def test_events_cut_across_chunks_and_crlf_are_held_until_complete():
    whole = sse(CONTENT) + sse(USAGE_CHUNK).replace(b"\n", b"\r\n") + DONE
    pieces = [whole[i : i + 7] for i in range(0, len(whole), 7)]
    messages = [body(piece) for piece in pieces] + [body(b"", more=False)]
    sent = await relay([SSE_START, *messages])
    assert b"".join(m["body"] for m in sent[1:]) == whole
    events = [e for m in sent[1:] for e in engine_events(m)]
    assert [e.raw for e in events] == [sse(CONTENT), events[1].raw, DONE]
    assert events[1].usage == Usage(12, 3)
    for message in sent[1:]:  # a message's bytes are exactly its complete events
        assert message["body"] == b"".join(e.raw for e in engine_events(message))


@pytest.mark.anyio
async def test_complete_events_are_never_held_back():
    chunk = sse(CONTENT)
    sent = await relay([SSE_START, body(chunk + chunk[:10]), body(chunk[10:])])
    assert [m["body"] for m in sent[1:]] == [chunk, chunk]


@pytest.mark.anyio
async def test_a_stream_without_a_final_blank_line_still_ends_with_its_tail():
    sent = await relay([SSE_START, body(sse(CONTENT) + b"data: tail", more=False)])
    assert sent[1]["body"] == sse(CONTENT) + b"data: tail"
    assert [e.payload for e in engine_events(sent[1])][-1] == b"tail"


@pytest.mark.anyio
async def test_a_json_answer_is_one_event_at_its_end():
    document = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}
    raw = json.dumps(document).encode()
    sent = await relay([JSON_START, body(raw[:10]), body(raw[10:], more=False)])
    assert [m["body"] for m in sent[1:]] == [raw[:10], raw[10:]]
    assert ENGINE_EVENTS not in sent[1]
    assert engine_events(sent[2])[0].usage == Usage(5, 1)


def test_failed_answers_report_no_usage():
    watch = ResponseWatch()
    watch.see({**JSON_START, "status": 400})
    raw = json.dumps({"usage": {"prompt_tokens": 5, "completion_tokens": 1}}).encode()
    watch.see({**body(raw, more=False), ENGINE_EVENTS: [EngineEvent(raw, raw)]})
    assert watch.engine_usage(Cost()) is None


def test_a_json_answer_whose_usage_is_known_is_metered_without_a_parse():
    # A cached answer carries the usage read from its bytes when it was first answered.
    raw = json.dumps({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}})
    answered = EngineEvent.answered(raw.encode(), Usage(5, 2))
    watch = ResponseWatch()
    watch.see(JSON_START)
    watch.see({**body(raw.encode(), more=False), ENGINE_EVENTS: [answered]})
    assert watch.engine_usage(Cost()) == Usage(5, 2)
    assert "document" not in vars(answered)  # never parsed
    assert answered.document["usage"]["prompt_tokens"] == 5  # still there when asked


def test_our_own_messages_are_not_the_engine_s():
    watch = ResponseWatch()
    watch.see(JSON_START)
    assert not watch.from_engine


def test_the_usage_chunk_we_asked_for_is_cut_and_its_usage_still_read():
    events = [event(CONTENT), event(USAGE_CHUNK)]
    message = {**body(sse(CONTENT) + sse(USAGE_CHUNK)), ENGINE_EVENTS: events}
    cut = as_client_asked(message, final_usage=False, chunk_usage=False)
    assert cut["body"] == sse(CONTENT)
    assert engine_events(cut)[1].usage == Usage(12, 3)
    plain = {**body(sse(CONTENT)), ENGINE_EVENTS: [event(CONTENT)]}
    assert as_client_asked(plain, final_usage=False, chunk_usage=False) is plain
    kept = as_client_asked(message, final_usage=True, chunk_usage=False)
    assert kept["body"] == sse(CONTENT) + sse(USAGE_CHUNK)


def vllm_chunk(index: int, text: str, completion: int, details: bool = False) -> dict[str, Any]:
    usage: dict[str, int | None] = {
        "prompt_tokens": 9,
        "total_tokens": 9 + completion,
        "completion_tokens": completion,
    }
    if details:
        usage["completion_tokens_details"] = None
    return {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "choices": [{"index": index, "delta": {"content": text}, "finish_reason": None}],
        "usage": usage,
    }


def vllm_sse(document: dict[str, Any]) -> bytes:
    # vLLM writes chunks with pydantic's compact JSON.
    return b"data: " + json.dumps(document, separators=(",", ":")).encode() + b"\n\n"


@pytest.mark.parametrize("details", [False, True])
def test_usage_on_each_chunk_is_cut_byte_for_byte_when_not_asked_for(details):
    chunk = vllm_chunk(0, 'say "usage":{} ok', 3, details)
    raw = vllm_sse(chunk)
    stripped = without_usage(EngineEvent(raw, raw[6:-2], streamed=True))
    rest = {name: value for name, value in chunk.items() if name != "usage"}
    assert stripped == vllm_sse(rest)


def test_a_chunk_spelled_otherwise_is_written_again_without_usage():
    chunk = vllm_chunk(0, "hi", 1)
    raw = b"data: " + json.dumps(chunk, indent=1).encode() + b"\n\n"
    stripped = without_usage(EngineEvent(raw, raw[6:-2], streamed=True))
    assert json.loads(stripped[6:]) == {k: v for k, v in chunk.items() if k != "usage"}


def stream_watch(*chunks: dict[str, Any], sequences: int = 2) -> ResponseWatch:
    watch = ResponseWatch(sequences)
    watch.see(SSE_START)
    events = []
    for chunk in chunks:
        raw = vllm_sse(chunk)
        events.append(EngineEvent(raw, raw[6:-2], streamed=True))
    watch.see({**body(b""), ENGINE_EVENTS: events})
    return watch


def test_a_stream_cut_short_is_metered_from_each_choice_s_last_usage():
    watch = stream_watch(vllm_chunk(0, "a", 1), vllm_chunk(1, "b", 1), vllm_chunk(0, "c", 2))
    # Both choices started, so both prefilled the 9-token prompt (as vLLM counts it).
    assert watch.engine_usage(Cost(n=2)) == Usage(18, 3)


def test_a_choice_that_never_produced_a_token_had_no_prompt_counted():
    watch = stream_watch(vllm_chunk(0, "", 0), vllm_chunk(1, "", 0), vllm_chunk(0, "a", 1))
    assert watch.engine_usage(Cost(n=2)) == Usage(9, 1)


def test_the_final_usage_chunk_gives_the_completion_total():
    final = {"id": "x", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 5}}
    watch = stream_watch(vllm_chunk(0, "a", 1), vllm_chunk(1, "b", 3), final)
    assert watch.engine_usage(Cost(n=2)) == Usage(18, 5)


def json_watch(usage: dict[str, Any]) -> ResponseWatch:
    watch = ResponseWatch()
    watch.see(JSON_START)
    raw = json.dumps({"object": "chat.completion", "choices": [{}], "usage": usage}).encode()
    watch.see({**body(raw, more=False), ENGINE_EVENTS: [EngineEvent(raw, raw)]})
    return watch


def test_a_json_answer_counts_its_prompt_once_per_sequence():
    watch = json_watch({"prompt_tokens": 7, "completion_tokens": 12})
    assert watch.engine_usage(Cost(n=3)) == Usage(21, 12)


def test_an_answer_stopped_before_its_first_token_processed_nothing_counted():
    # vLLM counts a prompt when its first token comes out; aborted before it, none.
    watch = json_watch({"prompt_tokens": 7, "completion_tokens": 0})
    assert watch.engine_usage(Cost()) == Usage(0, 0)


def test_the_splitter_keeps_unfinished_tails():
    splitter = SseSplitter()
    assert splitter.feed(b"data: a\n\ndata: b") == [b"data: a\n\n"]
    assert splitter.pending == b"data: b"
    assert splitter.feed(b"\r\n\r\n") == [b"data: b\r\n\r\n"]
    assert splitter.finish() == b""


def test_event_data_joins_data_lines():
    assert event_data(b"event: x\ndata: one\ndata:two\n\n") == b"one\ntwo"


def test_without_chunk_usage_the_choices_seen_producing_output_count_their_prompt():
    def chunk(index: int, content: str, finish: str | None = None) -> dict[str, Any]:
        choice = {"index": index, "delta": {"content": content}, "finish_reason": finish}
        return {"id": "x", "choices": [choice]}

    final = {"id": "x", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}
    watch = ResponseWatch(sequences=3)
    watch.see(SSE_START)
    events = []
    for document in (chunk(0, "a"), chunk(1, "", "abort"), chunk(2, "", "stop"), final):
        raw = vllm_sse(document)
        events.append(EngineEvent(raw, raw[6:-2], streamed=True))
    watch.see({**body(b""), ENGINE_EVENTS: events})
    # Choice 1 was aborted before showing any output: its prompt is not counted.
    assert watch.engine_usage(Cost(n=3)) == Usage(18, 4)


def _usage(completion: int) -> dict[str, Any]:
    return {"prompt_tokens": 9, "total_tokens": 9 + completion, "completion_tokens": completion}


# Stream chunks in vLLM's shape and in others: the cheap reading of a chunk's usage
# (from its last member) must agree with parsing the whole chunk, and the usage cut
# from the bytes must equal the chunk written again without it.
CHUNK_SHAPES = [
    vllm_chunk(0, "a", 1),
    vllm_chunk(0, "a", 1, details=True),
    vllm_chunk(0, ',"usage":{"prompt_tokens":1}}', 2),  # the member's bytes in a string
    {"id": "c", "choices": [], "usage": _usage(3)},  # the usage-only chunk
    {"id": "c", "choices": [], "usage": _usage(3), "system_fingerprint": "vllm-0.32-ab"},
    {"id": "c", "choices": [], "usage": _usage(3), "system_fingerprint": 'a"b\\'},
    {"id": "c", "choices": [], "usage": _usage(3), "a": "x", "b": "y"},
    {"id": "c", "choices": [], "usage": _usage(3), "system_fingerprint": "a\tb"},
    {"id": "c", "choices": [], "usage": _usage(3), "system_fingerprint": None},
    {"id": "c", "choices": [], "usage": _usage(3), "n": 1},
    {"id": "c", "usage": _usage(3), "choices": []},  # usage not last
    {"id": "c", "choices": [{"index": 0, "usage": _usage(1)}]},  # nested, none at the top
    {"id": "c", "choices": [{"index": 0, "delta": {}}], "x": {"usage": _usage(1)}},
    {"id": "c", "choices": [{"index": 0}], "usage": _usage(1) | {"extra": {"a": [1]}}},
    {"id": "c", "choices": [{"index": 0}], "usage": None},
    {"id": "c", "choices": [{"index": 0}], "usage": _usage(1), "é": "x"},
    # vLLM's running usage in its field order, with numbers its cheap reading leaves
    # to the json decoder: huge, negative, fractional; and zero, which it reads itself.
    vllm_chunk(0, "a", 10**30),
    {"id": "c", "choices": [], "usage": {**_usage(1), "prompt_tokens": -1}},
    {"id": "c", "choices": [], "usage": {**_usage(1), "completion_tokens": 1.5}},
    vllm_chunk(0, "", 0),
]


@pytest.mark.parametrize("chunk", CHUNK_SHAPES)
@pytest.mark.parametrize("spaced", [False, True])
def test_a_chunk_s_usage_reads_the_same_cheaply_as_parsed(chunk, spaced) -> None:
    separators = (", ", ": ") if spaced else (",", ":")
    raw = b"data: " + json.dumps(chunk, separators=separators).encode() + b"\n\n"
    event = EngineEvent(raw, event_data(raw), streamed=True)
    parsed = EngineEvent(raw, event_data(raw), streamed=True).document
    assert event.usage == usage_in(parsed)
    assert event.is_usage_only == (isinstance(parsed, dict) and parsed.get("choices") == [])
    cut = without_usage(event)
    rest = {name: value for name, value in parsed.items() if name != "usage"}
    assert json.loads(event_data(cut)) == rest


@pytest.mark.parametrize(
    "tail",
    [
        b',"usage":"x"}',  # json keeps the last of duplicate keys
        b',"choices":"x"}',
        b',"system_fingerprint":"a\tb"}',  # a control character: json refuses the chunk
    ],
)
def test_a_member_after_usage_that_json_would_read_otherwise_is_parsed(tail) -> None:
    raw = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4}'
    raw += tail + b"\n\n"
    event = EngineEvent(raw, event_data(raw), streamed=True)
    parsed = EngineEvent(raw, event_data(raw), streamed=True).document
    assert event.trailing_usage is None
    assert event.usage == usage_in(parsed)
    usage_only = event.usage is not None and isinstance(parsed, dict) and parsed["choices"] == []
    assert event.is_usage_only == usage_only


def test_vllm_s_final_usage_chunk_is_read_without_parsing_it() -> None:
    final = {"id": "c", "choices": [], "usage": _usage(4), "system_fingerprint": "vllm-0.32-ab"}
    raw = vllm_sse(final)
    event = EngineEvent(raw, event_data(raw), streamed=True)
    assert event.usage == Usage(9, 4)
    assert event.is_usage_only
    assert "document" not in event.__dict__  # the cached parse never ran
    rest = {name: value for name, value in final.items() if name != "usage"}
    assert without_usage(event) == vllm_sse(rest)


def test_a_vllm_chunk_s_usage_is_read_without_parsing_the_chunk() -> None:
    raw = vllm_sse(vllm_chunk(0, "a", 1))
    event = EngineEvent(raw, event_data(raw), streamed=True)
    assert event.trailing_usage is not None
    assert event.usage == Usage(9, 1)
    assert not event.is_usage_only
    assert "document" not in event.__dict__  # the cached parse never ran
    rest = {name: value for name, value in vllm_chunk(0, "a", 1).items() if name != "usage"}
    assert without_usage(event) == vllm_sse(rest)  # the same bytes, the member cut out


@pytest.mark.parametrize(
    ("chunk", "events"),
    [
        (b'data: {"a":1}\n\n', [b'data: {"a":1}\n\n']),
        (b'data: {"a":1}\n\ndata: [DONE]\n\n', [b'data: {"a":1}\n\n', b"data: [DONE]\n\n"]),
        (b"data: a\r\n\r\n", [b"data: a\r\n\r\n"]),
        (b"data: a\ndata: b\n\n", [b"data: a\ndata: b\n\n"]),
        (b"data: a\n", []),
    ],
)
def test_the_splitter_cuts_events_however_a_chunk_holds_them(chunk, events) -> None:
    assert SseSplitter().feed(chunk) == events


def test_a_leading_zero_json_refuses_is_not_read_as_usage() -> None:
    raw = b'data: {"choices":[],"usage":{"prompt_tokens":014,"total_tokens":1,'
    raw += b'"completion_tokens":1}}\n\n'
    event = EngineEvent(raw, event_data(raw), streamed=True)
    assert event.document is None  # json refuses the chunk ...
    assert event.usage is None  # ... and so does the cheap reading


@pytest.mark.anyio
async def test_every_layer_of_a_request_shares_one_watch() -> None:
    sent: list[Message] = []

    async def client(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {"type": "http"}
    watch, outer_send = watched(scope, client)
    inner_watch, inner_send = watched(scope, outer_send)
    assert inner_watch is watch
    assert inner_send is outer_send
    events = [EngineEvent(raw, event_data(raw), streamed=True) for raw in [sse(USAGE_CHUNK)]]
    await inner_send({**SSE_START, FROM_ENGINE: EngineStart(200, streamed=True)})
    await inner_send({"type": "http.response.body", "body": b"", ENGINE_EVENTS: events})
    assert watch.status == 200
    assert watch.from_engine
    assert watch.usage == Usage(12, 3)
    assert len(sent) == 2
    other_watch, _ = watched({"type": "http"}, client)
    assert other_watch is not watch  # one per request


@pytest.mark.parametrize(
    ("fingerprint", "read"),
    [(b"fp", True), ("é".encode(), False), (b"\xff", False)],
)
def test_only_an_ascii_fingerprint_after_usage_is_read_cheaply(fingerprint, read) -> None:
    raw = b'data: {"choices":[],"usage":{"prompt_tokens":5,"total_tokens":7,'
    raw += b'"completion_tokens":2},"system_fingerprint":"' + fingerprint + b'"}\n\n'
    event = EngineEvent(raw, event_data(raw), streamed=True)
    parsed = EngineEvent(raw, event_data(raw), streamed=True).document
    assert (event.trailing_usage is not None) == read
    assert event.usage == usage_in(parsed)  # json's reading: b"\xff" is no UTF-8


@pytest.mark.anyio
async def test_an_event_of_several_lines_is_read_as_sse_reads_it() -> None:
    seen: list[Message] = []

    async def client(message: Message) -> None:
        seen.append(message)

    send = reading_engine_responses(client)
    await send(SSE_START)
    await send({"type": "http.response.body", "body": b"data: a\ndata: b\n\n", "more_body": True})
    (event,) = engine_events(seen[-1])
    assert event.payload == b"a\nb"
    assert event_data(b'data: {"a":1}\nevent: x\n\n') == b'{"a":1}'


def test_the_watch_reads_vllm_s_framing_and_status_under_a_translation() -> None:
    # A Google JSON-array stream: the client gets JSON, vLLM sent SSE; and a 500 the
    # translation sent for an answer vLLM gave with 200.
    watch = ResponseWatch(sequences=2)
    start = {**JSON_START, "status": 500, FROM_ENGINE: EngineStart(200, streamed=True)}
    watch.see(start)
    raws = [
        sse({"choices": [{"index": 0, "delta": {"content": "A"}}]}),
        sse({"choices": [{"index": 1, "delta": {}, "finish_reason": "abort"}]}),
        sse({"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 1}}),
    ]
    events = [EngineEvent(raw, event_data(raw), streamed=True) for raw in raws]
    watch.see({"type": "http.response.body", "body": b"", ENGINE_EVENTS: events})
    assert watch.status == 500
    assert watch.streamed
    assert watch.succeeded
    assert watch.engine_usage(Cost(n=2)) == Usage(100, 1)  # one candidate started


@pytest.mark.anyio
async def test_a_whole_event_after_a_cut_one_completes_it_rather_than_standing_alone():
    # The chunk that ends a cut event looks like one whole event by itself; it is not.
    first, second = b'data: {"x":"', b'data: y"}\n\n'
    sent = await relay([SSE_START, body(first), body(second), body(b"", more=False)])
    events = [event for message in sent[1:] for event in engine_events(message)]
    assert [event.raw for event in events] == [first + second]
    assert [event.document for event in events] == [{"x": "data: y"}]
    assert [m["body"] for m in sent[1:]] == [b"", first + second, b""]


@pytest.mark.parametrize("digits", [18, 19])
def test_a_count_of_any_length_reads_as_json_reads_it(digits) -> None:
    count = int("9" * digits)
    raw = vllm_sse(vllm_chunk(0, "a", count))
    event = EngineEvent(raw, event_data(raw), streamed=True)
    assert event.usage == Usage(9, count)
    assert event.usage == usage_in(json.loads(event_data(raw)))
