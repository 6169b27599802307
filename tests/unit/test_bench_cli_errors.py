"""`qwenvl-serve bench` refuses what cannot work before it sends anything, and says in
its exit status whether every target answered."""

import json
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from qwenvl_serve.bench import command
from qwenvl_serve.bench.command import failed_targets
from qwenvl_serve.bench.machine import MachineInfo
from qwenvl_serve.bench.metrics import RequestRecord
from qwenvl_serve.bench.results import BenchResult, PointResult, point_result
from qwenvl_serve.cli import main

NOWHERE = "a=http://127.0.0.1:9"  # never contacted: these runs stop before sending


@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A usage error must come before the run; reaching it fails the test at once."""

    async def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the run started despite a usage error")

    monkeypatch.setattr(command, "run_bench", refuse)


def bench(*argv: str) -> int:
    return main(["bench", "--model", "m", "--no-progress", *argv])


def one_usage_line(capsys: pytest.CaptureFixture[str], *fragments: str) -> None:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("qwenvl-serve: bench: ")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.usefixtures("no_run")
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--rate", "inf"),
        ("--rate", "nan"),
        ("--rate", "0"),
        ("--rate", "-2"),
        ("--duration", "nan"),
        ("--duration", "inf"),
        ("--timeout", "inf"),
        ("--probe-interval-ms", "nan"),
        ("--pause-ms", "inf"),
        ("--pause-ms", "nan"),
    ],
)
def test_non_finite_or_non_positive_numbers_are_one_line_usage_errors(capsys, option, value):
    assert bench("--target", NOWHERE, option, value) == 2
    one_usage_line(capsys, option, value)


@pytest.mark.usefixtures("no_run")
@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:99999", "port"),
        ("http://127.0.0.1:0", "port"),
        ("http://127.0.0.1:http", "port"),
        ("ftp://127.0.0.1:21", "http://"),
        ("http://:8000", "no host"),
        ("http://[::1", "not a valid URL"),
    ],
)
def test_bad_target_urls_are_one_line_usage_errors(capsys, url, problem):
    assert bench("--target", f"a={url}") == 2
    one_usage_line(capsys, "--target", url, problem)


@pytest.mark.usefixtures("no_run")
@pytest.mark.parametrize(
    "argv",
    [
        ["--requests", "1000001"],
        ["--requests", "400000", "--concurrency", "1,2,4"],
        ["--warmup", "1000001", "--duration", "5"],
    ],
)
def test_more_requests_than_can_be_prepared_is_a_usage_error(capsys, argv):
    assert bench("--target", NOWHERE, *argv) == 2
    one_usage_line(capsys, "at most 1000000 requests per target")


@pytest.mark.usefixtures("no_run")
def test_out_that_is_a_file_is_refused_before_the_run(tmp_path, capsys):
    existing = tmp_path / "results"
    existing.write_text("not a directory")
    assert bench("--target", NOWHERE, "--out", str(existing)) == 2
    one_usage_line(capsys, f"--out {existing}: exists and is not a directory")


@pytest.mark.usefixtures("no_run")
def test_out_that_cannot_be_created_is_refused_before_the_run(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    below_a_file = tmp_path / "file" / "results"
    assert bench("--target", NOWHERE, "--out", str(below_a_file)) == 2
    one_usage_line(capsys, f"--out {below_a_file}: cannot write there")


def test_out_is_created_before_the_run(tmp_path, no_run):
    out = tmp_path / "new" / "results"
    with pytest.raises(AssertionError, match="the run started"):
        bench("--target", NOWHERE, "--out", str(out))
    assert out.is_dir()


def test_image_entries_that_are_not_regular_files_do_not_count(tmp_path, capsys):
    (tmp_path / "sub.jpg").mkdir()
    (tmp_path / "x.png").symlink_to(tmp_path / "gone.png")
    status = bench("--target", NOWHERE, "--workload", "directory", "--image-dir", str(tmp_path))
    assert status == 2
    one_usage_line(capsys, "no image files")


def test_an_unreadable_image_file_is_a_usage_error(tmp_path, capsys, monkeypatch):
    image = tmp_path / "a.png"
    Image.new("RGB", (16, 16)).save(image)
    real_open = Path.open

    def open_refusing_the_image(path: Path, *args: Any, **kwargs: Any) -> Any:
        if path == image:  # what chmod 0 does for anyone but root
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_refusing_the_image)
    status = bench("--target", NOWHERE, "--workload", "directory", "--image-dir", str(tmp_path))
    assert status == 2
    one_usage_line(capsys, f"{image}: cannot read it")


# -- exit status of a run ----------------------------------------------------------------


class StandIn(BaseHTTPRequestHandler):
    """Streams a two-token answer under /ok/...; answers 500 under /bad/..."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        if not self.path.startswith("/ok/"):
            self.send_response(500)
            self.end_headers()
            return
        chunks: list[dict[str, Any]] = [{"choices": [{"delta": {"content": "w"}}]}] * 2
        chunks.append({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}})
        body = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def stand_in() -> Iterator[str]:
    """The base URL of a stand-in server on a free loopback port, for this test only."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def run_against(base: str, out: Path, *targets: str) -> int:
    argv = [word for target in targets for word in ("--target", f"{target}={base}/{target}")]
    return bench(*argv, "--requests", "2", "--rounds", "1", "--warmup", "0", "--out", str(out))


def test_a_target_that_completed_nothing_makes_the_run_fail(stand_in, tmp_path, capsys):
    assert run_against(stand_in, tmp_path, "ok", "bad") == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1] == (
        "qwenvl-serve: bench: no request completed: bad"
    )
    assert "| requests/s |" in captured.out  # the report is still printed ...
    data = json.loads((tmp_path / "results.json").read_text())  # ... and written
    assert data["points"][0]["summaries"]["bad"]["completed"] == 0
    assert data["points"][0]["summaries"]["ok"]["completed"] == 2


def test_a_run_where_every_target_answered_succeeds(stand_in, tmp_path, capsys):
    assert run_against(stand_in, tmp_path, "ok") == 0
    assert "no request completed" not in capsys.readouterr().err


def record(target: str, index: int, status: int) -> RequestRecord:
    times = (0.5,) if status == 200 else ()
    return RequestRecord(target, index, "text", 0.0, 1.0, status, times, output_tokens=1)


def test_failed_targets_names_the_load_points_a_target_failed_at():
    def point(concurrency: int, b_status: int) -> PointResult:
        measured: dict[str, tuple[Sequence[RequestRecord], Sequence[RequestRecord], float]] = {
            "a": ([record("a", 0, 200)], [], 1.0),
            "b": ([record("b", 0, b_status)], [], 1.0),
            "c": ([record("c", 0, 503)], [], 1.0),
        }
        return point_result(concurrency, None, measured, "a")

    result = BenchResult(
        command="qwenvl-serve bench ...",
        started_at="now",
        machine=MachineInfo("cpu", 1, 1.0, "Linux", "3.12"),
        settings={},
        targets={"a": "http://a", "b": "http://b", "c": "http://c"},
        baseline="a",
        points=[point(1, 200), point(4, 500)],
    )
    assert failed_targets(result) == ["b at concurrency 4", "c"]
