"""Parsing the event stream, building unique workloads, reading the machine."""

import base64
import io
import json

import pytest
from PIL import Image

from qwenvl_serve.bench.machine import cpu_model_from_cpuinfo, memory_gib_from_meminfo
from qwenvl_serve.bench.sse import StreamEvent, parse_sse_event
from qwenvl_serve.bench.workloads import (
    COPY_STRIDE,
    WorkloadSettings,
    chat_body,
    parse_size,
    probe_request,
    request_factory,
    request_number,
    text_request,
    vllm_dataset_line,
    workload_copy,
)


def test_sse_events():
    assert parse_sse_event(b"\n\n") is None
    assert parse_sse_event(b": ping\n\n") is None
    assert parse_sse_event(b"event: message\n\n") is None
    assert parse_sse_event(b"data: [DONE]\n\n") == StreamEvent("done")
    token = parse_sse_event(b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n')
    assert token == StreamEvent("token")
    usage = parse_sse_event(
        b'data: {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}}\r\n\r\n'
    )
    assert usage == StreamEvent("usage", 12, 3)
    assert parse_sse_event(b'data: {"error": {"message": "boom"}}\n\n') == StreamEvent("error")
    assert parse_sse_event(b"data: {not json\n\n") == StreamEvent("error")
    assert parse_sse_event(b'data: {"id": "x"}\n\n') == StreamEvent("other")


def test_a_token_chunk_can_carry_usage_too():
    event = (
        b'data: {"choices": [{"delta": {}}], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}'
        b"\n\n"
    )
    assert parse_sse_event(event) == StreamEvent("token", 5, 1)


@pytest.mark.parametrize(("text", "size"), [("640x480", (640, 480)), ("4000X3000", (4000, 3000))])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["640", "ax480", "8x8", "640x-1"])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(ValueError, match="image size"):
        parse_size(text)


def decoded_image(spec):
    url = spec.messages[0]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_synthetic_requests_are_unique_photos_of_the_asked_sizes():
    factory = request_factory(WorkloadSettings(image_sizes=((64, 48), (96, 64)), seed=3))
    specs = workload_copy(factory, copy=0, count=4)
    assert [spec.label for spec in specs] == ["64x48", "96x64", "64x48", "96x64"]
    images = [decoded_image(spec) for spec in specs]
    assert [image.size for image in images] == [(64, 48), (96, 64), (64, 48), (96, 64)]
    assert images[0].tobytes() != images[2].tobytes()  # same size, different pixels
    texts = {spec.messages[0]["content"][0]["text"] for spec in specs}
    assert len(texts) == 4


def test_copies_have_the_same_shape_but_never_the_same_request():
    factory = request_factory(WorkloadSettings(image_sizes=((64, 48),)))
    first, second = workload_copy(factory, 0, 3), workload_copy(factory, 1, 3)
    assert [s.label for s in first] == [s.label for s in second]
    assert not {json.dumps(s.messages) for s in first} & {json.dumps(s.messages) for s in second}
    assert workload_copy(factory, 0, 3) == first  # reproducible
    with pytest.raises(ValueError, match="per copy"):
        workload_copy(factory, 0, COPY_STRIDE + 1)


@pytest.mark.parametrize(
    "settings",
    [
        WorkloadSettings(kind="mix", image_sizes=((32, 32),), text_fraction=0.5),
        WorkloadSettings(image_sizes=((32, 32), (48, 32), (64, 32))),  # 3 does not divide 10**6
        WorkloadSettings(image_sizes=((32, 32), (48, 32), (64, 32)), images_per_request=2),
    ],
)
def test_every_copy_is_the_same_sequence_of_shapes(settings):
    factory = request_factory(settings)
    labels = [[s.label for s in workload_copy(factory, copy, 24)] for copy in range(3)]
    assert labels[0] == labels[1] == labels[2]
    assert len(set(labels[0])) > 1


def test_request_numbers_never_collide_and_go_on_past_one_copy():
    copies = 3
    indexes = [*range(5), *range(COPY_STRIDE - 2, COPY_STRIDE + 3), 5 * COPY_STRIDE + 7]
    numbers = [request_number(copy, i, copies) for copy in range(copies) for i in indexes]
    assert len(set(numbers)) == len(numbers)
    assert request_number(2, 17, copies) == 2 * COPY_STRIDE + 17  # as in workload_copy
    factory = request_factory(WorkloadSettings(kind="mix", image_sizes=((32, 32),)))
    far = [factory(request_number(copy, COPY_STRIDE + 4, copies)).label for copy in range(3)]
    assert far == [factory(request_number(0, 4, copies)).label] * 3


def test_text_and_probe_requests_differ_only_in_their_first_word():
    text, probe = text_request(0, 5, "Hi."), probe_request(0, 5, "Hi.")
    text_words = text.messages[0]["content"].split()
    probe_words = probe.messages[0]["content"].split()
    assert (text_words[0], probe_words[0]) == ("Request", "Probe")
    assert text_words[1:] == probe_words[1:]
    # fixed-width numbering: every request of a workload has the same prompt length
    assert len(text_request(0, 5, "Hi.").messages[0]["content"]) == len(
        text_request(0, 123456, "Hi.").messages[0]["content"]
    )


def test_mix_is_reproducible_and_has_both_kinds():
    settings = WorkloadSettings(kind="mix", image_sizes=((32, 32),), text_fraction=0.5, seed=1)
    labels = [s.label for s in workload_copy(request_factory(settings), 0, 40)]
    assert labels == [s.label for s in workload_copy(request_factory(settings), 0, 40)]
    assert 5 < labels.count("text") < 35
    assert "32x32" in labels


def test_directory_workload_cycles_through_the_files(tmp_path):
    for name, colour in (("b.png", "red"), ("a.jpg", "blue")):
        Image.new("RGB", (40, 30), colour).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub.jpg").mkdir()  # only regular files are images
    (tmp_path / "c.png").symlink_to(tmp_path / "gone.png")
    (tmp_path / "d.png").symlink_to(tmp_path / "a.jpg")  # a link to a file is a file
    factory = request_factory(WorkloadSettings(kind="directory", image_dir=tmp_path))
    labels = [spec.label for spec in workload_copy(factory, 0, 4)]
    assert labels == ["a.jpg", "b.png", "d.png", "a.jpg"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        request_factory(WorkloadSettings(kind="directory", image_dir=tmp_path / "empty"))


def test_chat_body_streams_with_usage():
    body = json.loads(chat_body(text_request(0, 0, "Hi."), "m", 16, ignore_eos=True))
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 16
    assert body["ignore_eos"] is True
    assert "ignore_eos" not in json.loads(chat_body(text_request(0, 0, "Hi."), "m", 16, False))


def test_vllm_dataset_line_holds_the_same_content():
    factory = request_factory(WorkloadSettings(image_sizes=((32, 32),)))
    spec = workload_copy(factory, 0, 1)[0]
    assert json.loads(vllm_dataset_line(spec)) == {"content": spec.messages[0]["content"]}
    text = json.loads(vllm_dataset_line(text_request(0, 1, "Hi.")))
    assert text["content"][0]["type"] == "text"


def test_machine_parsers():
    cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n"
    assert cpu_model_from_cpuinfo(cpuinfo) == "AMD EPYC 7B13"
    assert cpu_model_from_cpuinfo("") == "unknown"
    assert memory_gib_from_meminfo("MemTotal:       24641536 kB\nMemFree: 1 kB\n") == pytest.approx(
        23.5, abs=0.01
    )
    assert memory_gib_from_meminfo("") == 0.0
