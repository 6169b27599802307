"""The runner and the whole command against an in-process streaming server (no network)."""

import argparse
import asyncio
import json
from typing import Any

import httpx
import pytest

from qwenvl_serve.bench.command import (
    add_bench_arguments,
    settings_from_args,
    write_outputs,
)
from qwenvl_serve.bench.driver import BenchSettings, run_bench
from qwenvl_serve.bench.errors import BenchUsageError
from qwenvl_serve.bench.report import render_markdown
from qwenvl_serve.bench.runner import (
    Cursor,
    LoadPoint,
    Prepared,
    RunSettings,
    Target,
    TargetLoad,
    parse_target,
    run_point,
    warm_up,
)
from qwenvl_serve.bench.slo import parse_slo
from qwenvl_serve.bench.workloads import WorkloadSettings
from tests.unit.request_core import whole_body


class FakeOpenAIServer:
    """Streams a role chunk, ``tokens`` content chunks, a usage chunk and [DONE];
    answers 503 to requests for the host ``down.test``. Records what it saw."""

    def __init__(self, tokens=3, delay=0.004):
        self.tokens = tokens
        self.delay = delay
        self.seen: list[tuple[str, str]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def __call__(self, scope, receive, send):
        assert scope["type"] == "http"
        body = await whole_body(receive)
        host = dict(scope["headers"])[b"host"].decode()
        if scope["path"] == "/v1/models":
            payload = json.dumps({"data": [{"id": "fake-model"}]}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": payload})
            return
        request = json.loads(body)
        content = request["messages"][0]["content"]
        text = content if isinstance(content, str) else content[0]["text"]
        self.seen.append((host, text))
        if host == "down.test":
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b'{"error": "busy"}'})
            return
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(self.delay)
        self.in_flight -= 1
        tokens = min(self.tokens, request["max_tokens"])
        chunks: list[dict[str, Any]] = [
            {"choices": [{"delta": {"role": "assistant", "content": ""}}]}
        ]
        chunks += [{"choices": [{"delta": {"content": "w"}}]}] * tokens
        chunks.append({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": tokens}})
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for chunk in [*(json.dumps(c) for c in chunks), "[DONE]"]:
            data = f"data: {chunk}\n\n".encode()
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def loads_for(*names, count=40, probes=0):
    loads = []
    for name in names:
        requests = [Prepared("text", body(f"{name}-{i}")) for i in range(count)]
        probe_list = [Prepared("probe", body(f"{name}-probe-{i}")) for i in range(probes)]
        loads.append(TargetLoad(Target(name, f"http://{name}.test"), requests, probe_list))
    return loads


def body(text, max_tokens=3):
    request = {"model": "m", "messages": [{"role": "user", "content": text}],
               "max_tokens": max_tokens, "stream": True}  # fmt: skip
    return json.dumps(request).encode()


def client_for(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app))


@pytest.mark.anyio
async def test_targets_are_measured_in_interleaved_blocks_of_unique_requests():
    app = FakeOpenAIServer()
    cursors = [Cursor(load) for load in loads_for("a", "b")]
    async with client_for(app) as client:
        await warm_up(client, cursors, warmup=1, concurrency=2)
        measured = await run_point(
            client, cursors, LoadPoint(concurrency=2), RunSettings(requests=6, rounds=3)
        )
    hosts = [host.split(".")[0] for host, _ in app.seen]
    assert hosts == ["a", "b"] + ["a", "a", "b", "b"] * 3  # warm-up, then A B A B A B
    assert [text for _, text in app.seen][:2] == ["a-0", "b-0"]
    assert len({text for _, text in app.seen}) == len(app.seen)  # nothing sent twice
    assert app.most_in_flight == 2
    for name in ("a", "b"):
        records = measured[name].records
        assert len(records) == 6
        assert all(record.ok for record in records)
        assert {record.output_tokens for record in records} == {3}
        assert {record.prompt_tokens for record in records} == {7}
        assert {len(record.token_times) for record in records} == {4}  # role chunk + 3 tokens
        assert {record.events for record in records} == {6}  # + usage + [DONE]
        assert measured[name].seconds > 0


@pytest.mark.anyio
async def test_failures_are_recorded_by_status_not_raised():
    app = FakeOpenAIServer()
    cursors = [Cursor(loads_for("down")[0])]
    async with client_for(app) as client:
        measured = await run_point(client, cursors, LoadPoint(1), RunSettings(requests=3, rounds=1))
    assert [record.status for record in measured["down"].records] == [503] * 3
    assert not any(record.ok for record in measured["down"].records)


@pytest.mark.anyio
async def test_poisson_arrivals_send_every_request():
    app = FakeOpenAIServer()
    cursors = [Cursor(load) for load in loads_for("a", "b")]
    async with client_for(app) as client:
        measured = await run_point(
            client, cursors, LoadPoint(concurrency=None, rate=500.0), RunSettings(requests=8)
        )
    assert [len(measured[name].records) for name in ("a", "b")] == [8, 8]


@pytest.mark.anyio
async def test_duration_mode_and_probes():
    app = FakeOpenAIServer(delay=0.01)
    cursors = [Cursor(load) for load in loads_for("a", count=500, probes=100)]
    settings = RunSettings(duration_s=0.2, rounds=2, probe_interval_s=0.02)
    async with client_for(app) as client:
        measured = await run_point(client, cursors, LoadPoint(2), settings)
    assert len(measured["a"].records) >= 4
    assert measured["a"].seconds >= 0.2
    probes = measured["a"].probes
    assert len(probes) >= 4
    assert all(p.probe and p.ok and p.label == "probe" for p in probes)
    probe_texts = [text for _, text in app.seen if "probe" in text]
    assert len(set(probe_texts)) == len(probe_texts)


def prepared(name, index):
    return Prepared("text", body(f"{name}-{index}"))


def test_a_cursor_makes_new_requests_past_the_prepared_ones():
    made = []

    def make(index):
        made.append(index)
        return prepared("a", index)

    cursor = Cursor(TargetLoad(Target("a", "http://a.test"), [prepared("a", 0)], make=make))
    assert [cursor.take()[1] for _ in range(3)] == [prepared("a", i) for i in range(3)]
    assert made == [1, 2]
    cursor.prepare_ahead(2)  # built before a block's clock starts ...
    assert made == [1, 2, 3, 4]
    assert [cursor.take()[1] for _ in range(3)] == [prepared("a", i) for i in (3, 4, 5)]
    assert made == [1, 2, 3, 4, 5]  # ... and taken from there, not built twice
    cursor.prepare_ahead(10, max_bytes=1)  # but not past a memory budget
    assert made == [1, 2, 3, 4, 5, 6]
    fixed = Cursor(TargetLoad(Target("b", "http://b.test"), [prepared("b", 0)]))
    fixed.take()
    with pytest.raises(IndexError, match="not prepared"):
        fixed.take()  # never wraps around to a request already sent


@pytest.mark.anyio
async def test_duration_mode_sends_every_target_new_requests_of_the_same_shapes():
    app = FakeOpenAIServer(delay=0)
    settings = BenchSettings(
        targets=[Target("a", "http://a.test"), Target("b", "http://b.test")],
        workload=WorkloadSettings(kind="mix", image_sizes=((32, 32),)),
        # every timed block sends at least one request: 3 rounds outrun a pool of 1
        run=RunSettings(duration_s=0.6, rounds=3, warmup=0, probe_interval_s=0.01),
        points=[LoadPoint(2)],
        duration_pool=1,
        progress=False,
    )
    result = await run_bench(settings, "qwenvl-serve bench ...", httpx.ASGITransport(app=app))
    texts = [text for _, text in app.seen]
    assert len(set(texts)) == len(texts)  # requests and probes alike, never sent twice
    rows = result.points[0].requests
    labels = {}
    for name in ("a", "b"):
        sent = sorted((row["index"], row["label"]) for row in rows[name] if not row["probe"])
        assert len(sent) >= 3
        labels[name] = [label for _, label in sent]
    common = min(len(labels["a"]), len(labels["b"]))
    assert labels["a"][:common] == labels["b"][:common]  # request i: same shape for both


@pytest.mark.anyio
async def test_timed_blocks_get_requests_built_before_their_clock_starts(monkeypatch):
    app = FakeOpenAIServer(delay=0)
    make = lambda index: prepared("a", index)  # noqa: E731
    cursor = Cursor(TargetLoad(Target("a", "http://a.test"), [prepared("a", 0)], make=make))
    asked = []  # (requests sent so far, requests asked to be ready, requests ready)

    def spy(count):
        Cursor.prepare_ahead(cursor, count)
        asked.append((cursor.next_request, count, cursor.ready()))

    monkeypatch.setattr(cursor, "prepare_ahead", spy)
    async with client_for(app) as client:
        await run_point(client, [cursor], LoadPoint(1), RunSettings(duration_s=0.1, rounds=2))
    assert len(asked) == 2
    (_, first_count, _), (sent_first, second_count, ready) = asked
    assert first_count == 0  # nothing known yet: the prepared pool goes first
    assert second_count == 2 * sent_first
    assert ready >= second_count


def test_parse_target():
    assert parse_target("ours=http://127.0.0.1:8000") == Target("ours", "http://127.0.0.1:8000")
    assert parse_target(" v = https://h/v1 ") == Target("v", "https://h/v1")
    assert Target("x", "http://h:1/v1/").chat_url == "http://h:1/v1/chat/completions"
    assert Target("x", "http://h:1").chat_url == "http://h:1/v1/chat/completions"
    with pytest.raises(ValueError, match="NAME=http"):
        parse_target("http://127.0.0.1:8000")
    with pytest.raises(ValueError, match="from 1 to 65535"):
        parse_target("a=http://127.0.0.1:99999")
    with pytest.raises(ValueError, match="no host"):
        parse_target("a=http:///v1")


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    return settings_from_args(parser.parse_args(list(argv)))


def test_command_line_to_settings():
    settings = parse(
        "--target", "bare=http://a.test", "--target", "ours=http://b.test",
        "--concurrency", "1,2,4", "--requests", "10", "--image-size", "4000x3000",
        "--slo", "ttft_ms=500", "--probe-interval-ms", "250", "--ignore-eos",
    )  # fmt: skip
    assert [t.name for t in settings.targets] == ["bare", "ours"]
    assert [p.concurrency for p in settings.points] == [1, 2, 4]
    assert settings.run.requests == 10
    assert settings.run.probe_interval_s == 0.25
    assert settings.workload.image_sizes == ((4000, 3000),)
    assert settings.slos == [parse_slo("ttft_ms=500")]
    assert settings.ignore_eos
    assert settings.run.pause_s == 0
    assert parse("--target", "a=http://a.test", "--pause-ms", "1500").run.pause_s == 1.5
    poisson = parse("--target", "a=http://a.test", "--rate", "2.5", "--duration", "30")
    assert [(p.concurrency, p.rate) for p in poisson.points] == [(None, 2.5)]
    assert (poisson.run.requests, poisson.run.duration_s) == (None, 30.0)
    assert parse("--target", "a=http://a.test").run.requests == 32


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target", "a=http://x", "--target", "a=http://y"], "names must differ"),
        (["--target", "a=http://x", "--baseline", "b"], "not one of the targets"),
        (["--target", "a=http://x", "--workload", "directory"], "needs --image-dir"),
        (["--target", "a=http://x", "--rate", "2", "--concurrency", "1,2"], "one cap"),
        (["--target", "a=http://x", "--max-tokens", "0"], "at least 1"),
    ],
)
def test_impossible_options_are_usage_errors(argv, message):
    with pytest.raises(BenchUsageError, match=message) as caught:
        parse(*argv)
    assert caught.value.exit_code == 2


@pytest.mark.anyio
async def test_whole_run_writes_json_markdown_and_plots(tmp_path):
    app = FakeOpenAIServer(tokens=4)
    settings = BenchSettings(
        targets=[Target("bare", "http://bare.test"), Target("ours", "http://ours.test")],
        workload=WorkloadSettings(kind="mix", image_sizes=((32, 32),)),
        run=RunSettings(requests=4, rounds=2, warmup=1, probe_interval_s=0.005),
        points=[LoadPoint(1), LoadPoint(2)],
        max_tokens=4,
        slos=[parse_slo("ttft_ms=10000")],
        progress=False,
    )
    result = await run_bench(settings, "qwenvl-serve bench ...", httpx.ASGITransport(app=app))
    assert result.settings["model"] == "fake-model"
    assert [p.concurrency for p in result.points] == [1, 2]
    point = result.points[0]
    assert point.summaries["ours"].completed == 4
    assert point.summaries["ours"].goodput is not None
    assert point.comparisons[0].candidate == "ours"
    assert point.comparisons[0].prompt_tokens_mean == pytest.approx(1.0)
    assert point.probes["ours"].completed >= 1
    markdown = render_markdown(result)
    assert "| requests/s |" in markdown
    assert "ours vs bare" in markdown
    assert "#### concurrency 2" in markdown
    assert "Text-only probes" in markdown
    paths = write_outputs(result, markdown, tmp_path)
    names = sorted(path.name for path in paths)
    assert names == ["latency_cdf.png", "results.json", "results.md", "scaling_concurrency.png"]
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["points"][1]["summaries"]["bare"]["completed"] == 4
    assert (tmp_path / "latency_cdf.png").read_bytes()[:4] == b"\x89PNG"


def test_an_unreachable_target_is_one_clear_line_and_status_2(capsys):
    from qwenvl_serve.cli import main
    from tests.servers import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    status = main(["bench", "--target", f"down={url}", "--requests", "1", "--no-progress"])
    assert status == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"qwenvl-serve: bench: cannot learn the model name from {url}/v1/models; "
        "check the URL or give --model"
    )


def test_an_image_directory_without_images_is_a_usage_error(tmp_path, capsys):
    from qwenvl_serve.cli import main

    status = main(["bench", "--target", "a=http://127.0.0.1:9", "--model", "m",
                   "--workload", "directory", "--image-dir", str(tmp_path)])  # fmt: skip
    assert status == 2
    assert "no image files" in capsys.readouterr().err
