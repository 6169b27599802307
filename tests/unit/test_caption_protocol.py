"""Request bodies, answers, server error messages, image type sniffing and the summary."""

import base64

import pytest

from qwenvl_serve.caption.image_files import NotAnImageError, image_data_url, sniff_image_type
from qwenvl_serve.caption.protocol import (
    UnexpectedAnswerError,
    chat_request,
    error_summary,
    model_ids,
    parse_completion,
)
from qwenvl_serve.caption.results import ResultRow
from qwenvl_serve.caption.summary import Tally, format_duration, summary_line
from tests.video_clips import make_clip


def test_request_puts_the_images_first_then_the_prompt():
    body = chat_request("m", "Describe.", ["data:image/png;base64,AA", "data:x"], 64, 0.2)
    content = body["messages"][0]["content"]
    assert [part["type"] for part in content] == ["image_url", "image_url", "text"]
    assert content[0]["image_url"]["url"] == "data:image/png;base64,AA"
    assert content[-1]["text"] == "Describe."
    assert body["max_tokens"] == 64
    assert body["temperature"] == 0.2


def test_temperature_is_left_to_the_model_when_not_given():
    assert "temperature" not in chat_request("m", "p", ["u"], 10, None)


def test_completion_text_and_usage_are_read():
    completion = parse_completion(
        {
            "choices": [{"message": {"content": " A cat. \n"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 314, "completion_tokens": 4},
        }
    )
    assert completion.text == "A cat."
    assert (completion.prompt_tokens, completion.completion_tokens) == (314, 4)
    assert completion.finish_reason == "stop"


@pytest.mark.parametrize(
    "body", [{}, {"choices": []}, {"choices": [{"message": {"content": None}}]}, None, "x"]
)
def test_anything_else_is_an_unexpected_answer(body):
    with pytest.raises(UnexpectedAnswerError):
        parse_completion(body)


@pytest.mark.parametrize(
    "body",
    [
        {"choices": "x"},
        {"choices": {"0": {"message": {"content": "x"}}}},
        {"choices": ["x"]},
        {"choices": [{"message": "x"}]},
        {"choices": [{"message": ["x"]}]},
        {"choices": [{"message": {"content": ["x"]}}]},
        [{"choices": [{"message": {"content": "x"}}]}],
    ],
)
def test_wrongly_shaped_answers_are_unexpected(body):
    with pytest.raises(UnexpectedAnswerError):
        parse_completion(body)


@pytest.mark.parametrize("usage", [[1], "x", 3, None])
def test_a_wrongly_shaped_usage_or_finish_reason_is_left_empty(usage):
    completion = parse_completion(
        {"choices": [{"message": {"content": "A cat."}, "finish_reason": [1]}], "usage": usage}
    )
    assert completion.text == "A cat."
    assert (completion.prompt_tokens, completion.completion_tokens) == (None, None)
    assert completion.finish_reason is None


def test_model_ids_in_the_servers_order():
    assert model_ids({"data": [{"id": "qwen3-vl-tiny"}, {"id": "b"}, {"x": 1}]}) == [
        "qwen3-vl-tiny",
        "b",
    ]
    assert model_ids({"data": []}) == []
    assert model_ids({"error": {}}) == []


@pytest.mark.parametrize(
    ("status", "body", "summary"),
    [
        (
            400,
            '{"error": {"message": "image too large", "type": "x"}}',
            "HTTP 400: image too large",
        ),
        (429, '{"error": {"code": 429, "message": "slow down"}}', "HTTP 429: slow down"),
        (404, '{"detail": "Not Found"}', "HTTP 404: Not Found"),
        (502, "<html>bad gateway</html>", "HTTP 502: Bad Gateway"),
        (599, "", "HTTP 599: unexpected status"),
    ],
)
def test_error_summary_shows_the_servers_message(status, body, summary):
    assert error_summary(status, body) == summary


@pytest.mark.parametrize(
    ("head", "mime"),
    [
        (b"\xff\xd8\xff\xe0", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"GIF89a", "image/gif"),
        (b"RIFF\0\0\0\0WEBPVP8 ", "image/webp"),
        (b"BM", "image/bmp"),
        (b"II*\x00", "image/tiff"),
        (b"\0\0\0\x1cftypavif", "image/avif"),
        (b"\0\0\0\x18ftypheic", "image/heic"),
        (b"%PDF-1.7", None),
    ],
)
def test_image_type_comes_from_the_first_bytes(head, mime):
    assert sniff_image_type(head + b"\0" * 16) == mime


def test_data_url_carries_the_sniffed_type_and_the_bytes():
    data = b"\x89PNG\r\n\x1a\n" + b"rest"
    url = image_data_url(data)
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == data


def test_a_video_file_becomes_a_video_part():
    url = image_data_url(
        make_clip(seconds=0.5, width=64, height=64, container="webm", codec="libvpx")
    )
    assert url.startswith("data:video/webm;base64,")
    body = chat_request("m", "Describe this video.", [url], 8, None)
    assert body["messages"][0]["content"][0] == {"type": "video_url", "video_url": {"url": url}}


@pytest.mark.parametrize(("data", "message"), [(b"", "empty"), (b"hello", "not an image")])
def test_empty_or_non_image_files_are_refused(data, message):
    with pytest.raises(NotAnImageError, match=message):
        image_data_url(data)


def test_tally_counts_images_of_groups_and_tokens():
    tally = (
        Tally(skipped=2)
        .add(ResultRow(images=("a", "b"), caption="x", prompt_tokens=600, completion_tokens=9))
        .add(ResultRow(images=("c",), error="HTTP 400: bad"))
    )
    assert (tally.done, tally.failed, tally.skipped) == (2, 1, 2)
    assert (tally.prompt_tokens, tally.completion_tokens) == (600, 9)


def test_summary_line_names_done_failed_skipped_tokens_and_time():
    line = summary_line(
        Tally(done=5, failed=1, skipped=3, prompt_tokens=1560, completion_tokens=80), 12.34
    )
    assert line == (
        "captioned 5 images, 1 failed, 3 skipped (already captioned); "
        "tokens: 1,560 prompt + 80 completion; time: 12.3 s"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.04, "0.0 s"), (59.9, "59.9 s"), (185, "3 min 05 s"), (3725, "1 h 02 min")],
)
def test_durations_read_naturally(seconds, text):
    assert format_duration(seconds) == text
