"""Whole caption runs through the command line, twice over the same --out: awkward file
names and captions must be written, read back and skipped, never crash the run."""

import csv
import io
import json
import os

import httpx
import pytest

from qwenvl_serve.caption import run as caption_run
from qwenvl_serve.cli import main

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
ODD_BREAKS = "one\u2028two\u2029three\x85four"


class StandInServer:
    """Answers /models and /chat/completions in-process; counts the captions asked for."""

    def __init__(self, caption="A photo.", answer=None):
        self.caption = caption
        self.answer = answer
        self.captions_asked = 0

    def handle(self, request):
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "tiny"}]})
        self.captions_asked += 1
        if self.answer is not None:
            return httpx.Response(200, json=self.answer)
        return httpx.Response(
            200,
            json={
                "choices": [{"message": {"content": self.caption}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 2},
            },
        )

    def client(self, options):
        return httpx.AsyncClient(
            transport=httpx.MockTransport(self.handle), base_url="http://api/v1/"
        )


@pytest.fixture
def server(monkeypatch):
    stand_in = StandInServer()
    monkeypatch.setattr(caption_run, "http_client", stand_in.client)
    return stand_in


def caption(*argv):
    return main(["caption", *map(str, argv), "--quiet"])


def non_utf8_image(directory):
    """A PNG named b"caf\\xe9.png" (Latin-1, not UTF-8)."""
    name = os.path.join(os.fsencode(directory), b"caf\xe9.png")
    with open(name, "wb") as file:
        file.write(PNG)
    return os.fsdecode(name)


def rows_of(out):
    if out.suffix == ".jsonl":
        return [json.loads(line) for line in out.read_bytes().decode().split("\n") if line]
    text = out.read_bytes().decode("utf-8", "surrogateescape")
    return list(csv.DictReader(io.StringIO(text, newline="")))


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_non_utf8_file_name_is_written_and_skipped_on_the_rerun(server, tmp_path, capsys, suffix):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(PNG)
    odd = non_utf8_image(photos)
    out = tmp_path / f"captions{suffix}"

    assert caption(photos, "--out", out) == 0
    assert server.captions_asked == 2
    assert caption(photos, "--out", out) == 0
    assert server.captions_asked == 2  # nothing asked again
    assert "captioned 0 images, 0 failed, 2 skipped" in capsys.readouterr().err

    rows = rows_of(out)
    assert len(rows) == 2
    assert all(not row["error"] for row in rows)
    if suffix == ".csv":
        assert b"caf\xe9.png" in out.read_bytes()  # the name's own bytes
        assert sorted(row["images"] for row in rows) == sorted([str(photos / "a.png"), odd])
    else:
        out.read_bytes().decode("utf-8")  # plain UTF-8: the name is a \u escape
        assert sorted(row["images"][0] for row in rows) == sorted([str(photos / "a.png"), odd])


def test_a_non_utf8_file_name_on_stdout_does_not_crash(server, tmp_path, capsys):
    odd = non_utf8_image(tmp_path)
    assert caption(tmp_path) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["images"] == [odd]


@pytest.mark.parametrize("group", [[], ["--group"]])
def test_a_bar_in_a_csv_file_name_is_skipped_on_the_rerun_without_a_duplicate_row(
    server, tmp_path, capsys, group
):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "e|f.png").write_bytes(PNG)
    (photos / "g.png").write_bytes(PNG)
    out = tmp_path / "captions.csv"

    assert caption(photos, "--out", out, *group) == 0
    asked = server.captions_asked
    for _ in range(2):
        assert caption(photos, "--out", out, *group) == 0
        assert server.captions_asked == asked
    assert "captioned 0 images, 0 failed, 2 skipped" in capsys.readouterr().err
    assert len(rows_of(out)) == asked


def test_a_caption_with_unicode_line_breaks_is_kept_and_skipped_on_the_rerun(
    server, tmp_path, capsys
):
    server.caption = ODD_BREAKS
    (tmp_path / f"x{ODD_BREAKS}.png").write_bytes(PNG)
    out = tmp_path / "captions.jsonl"

    assert caption(tmp_path, "--out", out) == 0
    assert caption(tmp_path, "--out", out) == 0
    assert server.captions_asked == 1
    assert "captioned 0 images, 0 failed, 1 skipped" in capsys.readouterr().err
    (row,) = rows_of(out)
    assert row["caption"] == ODD_BREAKS
    assert row["images"] == [str(tmp_path / f"x{ODD_BREAKS}.png")]


@pytest.mark.parametrize(
    "answer",
    [
        {"choices": "x"},
        {"choices": {"0": {"message": {"content": "x"}}}},
        {"choices": [{"message": "x"}]},
        {"choices": [{"message": {"content": ["x"]}}]},
        {"choices": [{"message": {"content": "x"}}], "usage": [1]},
    ],
)
def test_a_wrongly_shaped_answer_is_an_error_row_or_a_caption_never_a_traceback(
    server, tmp_path, capsys, answer
):
    server.answer = answer
    (tmp_path / "a.png").write_bytes(PNG)
    (tmp_path / "b.png").write_bytes(PNG)
    assert caption(tmp_path) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2  # the run went on past the first image
    for row in rows:
        assert bool(row["error"]) != (row["caption"] is not None)


@pytest.mark.parametrize(
    ("base_url", "message"),
    [
        ("http://127.0.0.1:99999/v1", "--base-url has a port outside 1-65535"),
        ("http://127.0.0.1:0/v1", "--base-url has a port outside 1-65535"),
        ("http://127.0.0.1:port/v1", "--base-url is not a valid URL"),
        ("ftp://127.0.0.1/v1", "--base-url must be an http:// or https:// URL with a host"),
        ("127.0.0.1:8000/v1", "--base-url must be an http:// or https:// URL with a host"),
        ("http:///v1", "--base-url must be an http:// or https:// URL with a host"),
    ],
)
def test_a_bad_base_url_exits_2_with_one_line(tmp_path, capsys, base_url, message):
    (tmp_path / "a.png").write_bytes(PNG)
    assert caption(tmp_path, "--base-url", base_url) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"qwenvl-serve: {message}")
    assert err.count("\n") == 1
    assert base_url in err
