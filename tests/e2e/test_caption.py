"""`qwenvl-serve caption` against the real engine: bad files, resuming, groups, 429s."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from qwenvl_serve.sample_images import synthetic_jpeg
from tests.servers import REPO, RunningServer, free_port
from tests.video_clips import make_clip

pytestmark = pytest.mark.e2e
SIZES = [(640, 480), (480, 640), (512, 512), (800, 600), (320, 240)]


def caption(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qwenvl_serve.cli", "caption", "--max-tokens", "8", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )


def write_photos(directory: Path, count: int, seed: int = 0) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        width, height = SIZES[index % len(SIZES)]
        path = directory / f"photo-{index + 1}.jpg"
        path.write_bytes(synthetic_jpeg(width, height, seed=seed + index))
        paths.append(path)
    return paths


def rows_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@dataclass
class Throttle:
    """What the throttling proxy did: 429s given, chat requests passed on."""

    upstream: str
    refuse_first: int
    refused: int = 0
    forwarded_chats: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _ThrottlingHandler(BaseHTTPRequestHandler):
    """Answers the first N chat requests with 429 and Retry-After: 1, forwards the rest."""

    server: _ThrottlingServer

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        throttle = self.server.throttle
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        is_chat = self.path.endswith("/chat/completions")
        with throttle.lock:
            refuse = is_chat and throttle.refused < throttle.refuse_first
            throttle.refused += refuse
            throttle.forwarded_chats += is_chat and not refuse
        if refuse:
            self._reply(429, b'{"error": {"message": "Too many requests."}}', {"Retry-After": "1"})
            return
        upstream = httpx.request(
            self.command,
            throttle.upstream + self.path,
            content=body,
            headers={"content-type": self.headers.get("content-type", "application/json")},
            timeout=120,
        )
        self._reply(upstream.status_code, upstream.content, {})

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads the counters instead."""


class _ThrottlingServer(ThreadingHTTPServer):
    throttle: Throttle


@contextlib.contextmanager
def running_proxy(upstream: str, refuse_first: int) -> Iterator[tuple[str, Throttle]]:
    """A loopback proxy in front of ``upstream``; yields its /v1 URL and its counters."""
    proxy = _ThrottlingServer(("127.0.0.1", free_port()), _ThrottlingHandler)
    proxy.throttle = Throttle(upstream=upstream, refuse_first=refuse_first)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{proxy.server_address[1]}/v1", proxy.throttle
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join()


@pytest.fixture
def throttling_proxy(tiny_server: RunningServer) -> Iterator[tuple[str, Throttle]]:
    """429 with Retry-After: 1 for the first 4 chat requests, then the tiny server."""
    with running_proxy(tiny_server.base_url, refuse_first=4) as proxy:
        yield proxy


@pytest.fixture
def counting_proxy(tiny_server: RunningServer) -> Iterator[tuple[str, Throttle]]:
    """Refuses nothing: only counts the chat requests it passes on."""
    with running_proxy(tiny_server.base_url, refuse_first=0) as proxy:
        yield proxy


def test_a_corrupt_file_is_recorded_and_a_rerun_skips_the_captioned_ones(
    tiny_server: RunningServer, counting_proxy: tuple[str, Throttle], tmp_path: Path
):
    photos = tmp_path / "shop"
    good = write_photos(photos, 5)
    corrupt = photos / "photo-6.jpg"
    corrupt.write_bytes(synthetic_jpeg(640, 480, seed=9)[:3000])  # cut short: undecodable
    out = tmp_path / "captions.jsonl"

    first = caption(str(photos), "--out", str(out), "--base-url", f"{tiny_server.base_url}/v1")
    assert first.returncode == 0, first.stderr
    rows = rows_of(out)
    assert len(rows) == 6
    captioned = [row for row in rows if row["error"] is None]
    assert sorted(row["images"][0] for row in captioned) == sorted(map(str, good))
    for row in captioned:
        assert isinstance(row["caption"], str)
        assert row["model"] == "qwen3-vl-tiny"
        assert isinstance(row["prompt_tokens"], int)
        assert row["prompt_tokens"] > 50
    (failed,) = [row for row in rows if row["error"] is not None]
    assert failed["images"] == [str(corrupt)]
    # The server's own message: 400 from bare vLLM, 422 once our image layer decodes first.
    assert re.match(r"HTTP 4\d\d: \S", failed["error"]), failed["error"]
    assert failed["caption"] is None
    assert "captioned 5 images, 1 failed" in first.stderr.splitlines()[-1]

    base_url, counter = counting_proxy
    second = caption(str(photos), "--out", str(out), "--base-url", base_url, "--fail-on-error")
    assert second.returncode == 1
    assert "captioned 0 images, 1 failed, 5 skipped" in second.stderr.splitlines()[-1]
    assert counter.forwarded_chats == 1  # only the corrupt file was sent again
    again = rows_of(out)
    assert again[:5] == captioned  # kept as they were, the old error row replaced
    assert len(again) == 6
    assert again[5]["images"] == [str(corrupt)]


def test_group_sends_a_directorys_images_in_one_request(tiny_server: RunningServer, tmp_path):
    day = tmp_path / "day"
    photos = write_photos(day, 3)
    out = tmp_path / "story.csv"
    result = caption(
        str(day),
        "--group",
        "--style",
        "social",
        "--lang",
        "zh",
        "--out",
        str(out),
        "--base-url",
        f"{tiny_server.base_url}/v1",
        "--fail-on-error",
    )
    assert result.returncode == 0, result.stderr
    (row,) = list(csv.DictReader(out.open()))
    assert row["images"] == "|".join(map(str, photos))
    assert row["error"] == ""
    # All three images went into the one prompt: 300 + 300 + 256 image tokens, plus text.
    assert int(row["prompt_tokens"]) > 300 + 300 + 256


def test_videos_are_captioned_one_per_request_next_to_grouped_photos(
    tiny_server: RunningServer, tmp_path: Path
):
    day = tmp_path / "day"
    photos = write_photos(day, 2)
    clip = day / "walk.mp4"
    clip.write_bytes(make_clip(seconds=4, width=320, height=240))
    out = tmp_path / "captions.jsonl"
    base_url = f"{tiny_server.base_url}/v1"
    result = caption(str(day), "--group", "--out", str(out), "--base-url", base_url)
    assert result.returncode == 0, result.stderr
    rows = {tuple(row["images"]): row for row in rows_of(out)}
    assert set(rows) == {tuple(map(str, photos)), (str(clip),)}
    video = rows[(str(clip),)]
    assert video["error"] is None
    # 8 frames of 320x256: 4 pairs of 80 tokens, timestamps and markers, plus the prompt.
    assert video["prompt_tokens"] > 4 * 80


def test_a_server_answering_429_at_first_is_waited_for(
    throttling_proxy: tuple[str, Throttle], tmp_path: Path
):
    base_url, throttle = throttling_proxy
    photos = write_photos(tmp_path / "busy", 3, seed=20)
    out = tmp_path / "busy.jsonl"
    result = caption(
        str(tmp_path / "busy"),
        "--out",
        str(out),
        "--base-url",
        base_url,
        "--concurrency",
        "2",
        "--fail-on-error",
    )
    assert result.returncode == 0, result.stderr
    assert throttle.refused == 4
    assert throttle.forwarded_chats == 3
    rows = rows_of(out)
    assert sorted(row["images"][0] for row in rows) == sorted(map(str, photos))
    assert all(row["error"] is None for row in rows)
    # The wait is the server's Retry-After (1 s), not the first backoff step (at most 0.5 s).
    assert "HTTP 429; retrying in 1.0 s" in result.stderr
    assert "captioned 3 images, 0 failed" in result.stderr.splitlines()[-1]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_odd_file_names_round_trip_and_resume_against_the_real_engine(
    tiny_server: RunningServer,
    counting_proxy: tuple[str, Throttle],
    tmp_path: Path,
    suffix: str,
):
    photos = tmp_path / "odd"
    photos.mkdir()
    latin1 = os.path.join(os.fsencode(photos), b"caf\xe9.jpg")  # not UTF-8
    with open(latin1, "wb") as file:
        file.write(synthetic_jpeg(320, 240, seed=41))
    (photos / "a|b.jpg").write_bytes(synthetic_jpeg(320, 240, seed=42))
    out = tmp_path / f"captions{suffix}"

    first = caption(str(photos), "--out", str(out), "--base-url", f"{tiny_server.base_url}/v1")
    assert first.returncode == 0, first.stderr
    assert "captioned 2 images, 0 failed" in first.stderr.splitlines()[-1]
    base_url, counter = counting_proxy
    second = caption(str(photos), "--out", str(out), "--base-url", base_url)
    assert second.returncode == 0, second.stderr
    assert "captioned 0 images, 0 failed, 2 skipped" in second.stderr.splitlines()[-1]
    assert counter.forwarded_chats == 0
