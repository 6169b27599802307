"""Video end to end: the real engine behind `qwenvl-serve serve`, clips made here.

vLLM receives only the JPEG frames our worker sampled, with the source's timing, so
the prompt's token count follows the sampling rule exactly and its timestamps are the
source video's. Bad videos get clean 4xx answers in the route's format; a decoder that
crashes or hangs costs its own request only.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import math
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import httpx
import psutil
import pytest
from transformers import AutoTokenizer

from qwenvl_serve.sample_images import synthetic_jpeg
from tests.conftest import TINY_CONFIG
from tests.e2e.test_serve import MODEL
from tests.servers import RunningServer, running_server_with_env
from tests.video_clips import cached_clip, make_clip
from tests.video_corpus import HLS_PLAYLIST

pytestmark = pytest.mark.e2e

PROMPT = "What happens in this video?"
WORKER = "qwenvl_serve.video.worker"
TIMESTAMP = re.compile(r"<(\d+\.\d) seconds>")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


def video_url(data: bytes, mime: str = "video/mp4") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def video_messages(url: str, *extra: dict[str, object]) -> list[dict[str, object]]:
    parts = [{"type": "video_url", "video_url": {"url": url}}, *extra]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": PROMPT}]}]


def chat(
    server: RunningServer, messages: list[dict[str, object]], **fields: object
) -> httpx.Response:
    body = {"model": MODEL, "messages": messages, "max_tokens": 2, **fields}
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=600)


def text_only_prompt_tokens(server: RunningServer) -> int:
    response = chat(server, [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}])
    assert response.status_code == 200, response.text
    return int(response.json()["usage"]["prompt_tokens"])


def described(response: httpx.Response) -> dict[str, str]:
    """The ``x-qwenvl-video`` header as a dict (the size is under ``size``)."""
    size, *fields = response.headers["x-qwenvl-video"].split(";")
    return {"size": size, **dict(field.split("=", 1) for field in fields)}


def test_a_minute_of_720p_costs_exactly_what_the_sampling_rule_says(
    tiny_server: RunningServer, clips: Path
):
    clip = cached_clip(clips, "60s-720p.mp4", seconds=60, width=1280, height=720)
    response = chat(tiny_server, video_messages(video_url(clip)))
    assert response.status_code == 200, response.text
    # configs/tiny.yaml: 2 fps -> 120 frames, 60 pairs sharing 2,046 tokens: 34 each, of
    # which at most 9 are the timestamp's text and markers, so 25 visual: 6x4 at 16:9,
    # 192x128. Tokens: 2 outer markers, then per pair its visual tokens, 2 markers and
    # the timestamp (<0.5 seconds> is 6 tokens up to 9.5, 7 from 10.5 on).
    expected = 2 + 60 * (24 + 2) + 10 * 6 + 50 * 7
    assert expected == 1972
    assert described(response)["size"] == "192x128"
    assert described(response)["frames"] == "120"
    assert int(described(response)["tokens"]) == expected
    video_tokens = response.json()["usage"]["prompt_tokens"] - text_only_prompt_tokens(tiny_server)
    assert video_tokens == expected <= 2048


def test_a_ten_minute_video_is_sampled_within_the_budget(tiny_server: RunningServer, clips: Path):
    clip = cached_clip(clips, "600s-360p.mp4", seconds=600, width=640, height=360, fps=5)
    response = chat(tiny_server, video_messages(video_url(clip)))
    assert response.status_code == 200, response.text
    info = described(response)
    # Each pair costs at least 16 visual tokens and 10 of text: 2,046 // 26 = 78 pairs.
    assert info["frames"] == "156"
    assert info["duration"] == "600.00s"
    video_tokens = response.json()["usage"]["prompt_tokens"] - text_only_prompt_tokens(tiny_server)
    assert video_tokens == int(info["tokens"]) <= 2048


def test_the_model_reads_the_source_video_times(tiny_server: RunningServer, tiny_model_dir: Path):
    fps, seconds = 25, 12
    clip = make_clip(seconds=seconds, width=320, height=240, fps=fps)
    response = chat(tiny_server, video_messages(video_url(clip)), return_token_ids=True)
    assert response.status_code == 200, response.text
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    rendered = str(tokenizer.decode(response.json()["prompt_token_ids"]))
    # 24 frames aimed at the middle of each 0.5 s; each is the first source frame at or
    # after its aim (within half a frame), and each pair's time is its frames' mean.
    frames = 2 * seconds
    aims = [(index + 0.5) * seconds / frames for index in range(frames)]
    source_times = [math.ceil(aim * fps - 0.5) / fps for aim in aims]
    pairs = [(a + b) / 2 for a, b in zip(source_times[::2], source_times[1::2], strict=True)]
    assert TIMESTAMP.findall(rendered) == [f"{time:.1f}" for time in pairs]
    assert rendered.count("<|video_pad|>") == 12 * (320 // 32) * (256 // 32)


def test_a_video_and_an_image_in_one_request(tiny_server: RunningServer):
    clip = make_clip(seconds=4, width=320, height=240)
    image: dict[str, object] = {
        "type": "image_url",
        "image_url": {"url": video_url(synthetic_jpeg(320, 256, seed=5), "image/jpeg")},
    }
    response = chat(tiny_server, video_messages(video_url(clip), image))
    assert response.status_code == 200, response.text
    assert response.headers["x-qwenvl-normalized-images"] == "320x256"
    assert described(response)["frames"] == "8"


def test_generate_content_takes_inline_video(tiny_server: RunningServer):
    clip = make_clip(seconds=4, width=320, height=240, codec="libvpx-vp9", container="webm")
    part = {"inline_data": {"mime_type": "video/webm", "data": base64.b64encode(clip).decode()}}
    body = {"contents": [{"role": "user", "parts": [part, {"text": PROMPT}]}],
            "generation_config": {"max_output_tokens": 2}}  # fmt: skip
    url = f"{tiny_server.base_url}/v1beta/models/{MODEL}:generateContent"
    response = httpx.post(url, json=body, timeout=300)
    assert response.status_code == 200, response.text
    assert described(response)["codec"] == "vp9"
    assert response.json()["usageMetadata"]["promptTokenCount"] > int(described(response)["tokens"])
    bad = {"contents": [{"role": "user", "parts": [
        {"inline_data": {"mime_type": "video/mp4", "data": base64.b64encode(HLS_PLAYLIST).decode()}}
    ]}]}  # fmt: skip
    refused = httpx.post(url, json=bad, timeout=60)
    assert refused.status_code == 415
    assert refused.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "video container" in refused.json()["error"]["message"]


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (HLS_PLAYLIST, 415, "unsupported_video_format"),
        (b"\x00\x00\x00\x18ftypisom" + bytes(4000), 422, "invalid_video"),
        ("mpeg4", 415, "unsupported_video_codec"),
    ],
)
def test_bad_videos_get_clean_refusals_and_the_server_keeps_serving(
    tiny_server: RunningServer, data: bytes | str, status: int, code: str
):
    if data == "mpeg4":
        data = make_clip(seconds=1, width=64, height=64, codec="mpeg4")
    assert isinstance(data, bytes)
    response = chat(tiny_server, video_messages(video_url(data)))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, "messages[0].content[0]")
    assert "Traceback" not in response.text
    assert "av." not in response.text
    assert text_only_prompt_tokens(tiny_server) > 0


def test_clients_cannot_set_the_frame_timing_themselves(tiny_server: RunningServer):
    clip = make_clip(seconds=2, width=64, height=64)
    forged = {"video": {"fps": 1000, "frames_indices": [0, 1, 2, 3], "num_frames": -1}}
    response = chat(tiny_server, video_messages(video_url(clip)), media_io_kwargs=forged)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "media_io_kwargs"
    jpeg_frames = "data:video/jpeg;base64," + ",".join(
        [base64.b64encode(synthetic_jpeg(64, 64, seed=1)).decode()] * 4
    )
    response = chat(tiny_server, video_messages(jpeg_frames))
    # vLLM's own frame-list form is not one base64 payload: refused before any decode.
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_base64"


def test_video_metrics_are_exposed(tiny_server: RunningServer):
    assert chat(tiny_server, video_messages(video_url(make_clip(2, 64, 64)))).status_code == 200
    text = httpx.get(f"{tiny_server.base_url}/metrics", timeout=10).text
    for name in (
        'qwenvl_videos_total{outcome="sampled"}',
        "qwenvl_video_output_frames_total",
        "qwenvl_video_prompt_tokens_total",
        "qwenvl_video_decode_seconds_bucket",
    ):
        assert name in text


class _Files(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        data = self.files.get(self.path)
        self.send_response(200 if data is not None else 404)
        self.send_header("Content-Length", str(len(data or b"")))
        self.end_headers()
        self.wfile.write(data or b"")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def file_server() -> Iterator[tuple[str, type[_Files]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Files
    server.shutdown()
    server.server_close()
    thread.join()


CRASHING = make_clip(seconds=1, width=96, height=64)
HANGING = make_clip(seconds=1, width=64, height=96)


@pytest.fixture(scope="module")
def lab_server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """The tiny config with loopback URLs allowed and two videos whose decoder fails
    on purpose (the test-only fault hook, keyed by the videos' digests)."""
    faults = ",".join(
        [
            f"crash:{hashlib.sha256(CRASHING).hexdigest()}",
            f"hang:{hashlib.sha256(HANGING).hexdigest()}",
        ]
    )
    overrides = [f"model={tiny_model_dir}", "images.allow_loopback_urls_for_testing=true",
                 "video.worker_timeout_seconds=5"]  # fmt: skip
    log = tmp_path_factory.mktemp("logs") / "video-lab.log"
    environment = {"QWENVL_SERVE_VIDEO_WORKER_FAULT": faults}
    with running_server_with_env(TINY_CONFIG, overrides, log, environment) as server:
        yield server


def test_a_remote_video_is_fetched_through_the_vetted_fetcher(
    lab_server: RunningServer, file_server: tuple[str, type[_Files]]
):
    base, files = file_server
    files.files["/clip.webm"] = make_clip(
        seconds=3, width=320, height=240, codec="libvpx", container="webm"
    )
    response = chat(lab_server, video_messages(f"{base}/clip.webm"))
    assert response.status_code == 200, response.text
    assert described(response)["codec"] == "vp8"
    missing = chat(lab_server, video_messages(f"{base}/missing.mp4"))
    assert missing.status_code == 422
    assert missing.json()["error"]["code"] == "image_url_unreachable"


def test_ssrf_guards_cover_video_urls(
    tiny_server: RunningServer, file_server: tuple[str, type[_Files]]
):
    base, files = file_server
    before = len(files.seen)
    for url in (f"{base}/clip.webm", base.replace("127.0.0.1", "localhost") + "/a.mp4",
                "http://169.254.169.254/latest/meta-data", "file:///etc/passwd"):  # fmt: skip
        response = chat(tiny_server, video_messages(url))
        assert response.status_code == 400, (url, response.text)
        assert response.json()["error"]["code"] in {"image_url_refused", "invalid_video_url"}
    assert len(files.seen) == before


@pytest.mark.parametrize(
    ("clip", "code"), [(CRASHING, "video_decode_failed"), (HANGING, "video_decode_timeout")]
)
def test_a_failing_decoder_costs_its_own_request_only(
    lab_server: RunningServer, clip: bytes, code: str
):
    with httpx.Client(base_url=lab_server.base_url, timeout=120) as client:
        body = {"model": MODEL, "messages": video_messages(video_url(clip)), "max_tokens": 2}
        refused = client.post("/v1/chat/completions", json=body)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == code
        healthy = make_clip(seconds=1, width=64, height=64)
        body = {"model": MODEL, "messages": video_messages(video_url(healthy)), "max_tokens": 2}
        assert client.post("/v1/chat/completions", json=body).status_code == 200


def _workers(server: RunningServer) -> list[psutil.Process]:
    """The server's live decoder workers (a killed one awaiting its reaping is gone)."""
    workers = []
    for process in psutil.Process(server.process.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):  # ended, or a zombie about to be reaped
            if process.status() != psutil.STATUS_ZOMBIE and WORKER in " ".join(process.cmdline()):
                workers.append(process)
    return workers


def test_a_client_that_leaves_stops_its_video_worker(lab_server: RunningServer):
    body = {"model": MODEL, "messages": video_messages(video_url(HANGING)), "max_tokens": 2}
    started = time.monotonic()

    def impatient_client() -> None:
        with contextlib.suppress(httpx.TimeoutException):
            httpx.post(f"{lab_server.base_url}/v1/chat/completions", json=body, timeout=1.5)

    client = threading.Thread(target=impatient_client)
    client.start()
    while not _workers(lab_server):  # the hanging decode is under way
        assert time.monotonic() - started < 10, "no worker started"
        time.sleep(0.05)
    client.join()
    while _workers(lab_server):
        time.sleep(0.05)
    # Gone with its client, well before its 5 s deadline would have ended it.
    assert time.monotonic() - started < 4.5
    text = httpx.get(f"{lab_server.base_url}/metrics", timeout=10).text
    assert 'qwenvl_videos_total{outcome="client_gone"} 1.0' in text
