"""CPU of our whole middleware stack per request, around a stand-in engine (no vLLM).

    .venv/bin/python benchmarks/request_core/bench_stack.py [--rounds 9] [--requests 300]
        [--tree before=/path/to/an/older/checkout]

Each round measures every tree in turn (the current one twice: A/A noise), each in a
fresh worker process, so the figures of one round are taken minutes apart at most.
A worker drives ``--requests`` requests per case straight through the ASGI stack (no
HTTP client, no sockets) and reports the process CPU (all threads, so the image pool
counts) per request. The stand-in engine reads the body and answers a fixed completion.

Cases: a compliant 640x480 JPEG request, a text request, and the text request streamed
(an answer of 8 tokens, one event per message, shaped as vLLM writes them, with the
usage the request asks for), with the result cache off
(the default); then, for the current tree only, the same with the cache on: every
request unique (``+ cache miss``: what the cache adds to a request it cannot answer)
and one request repeated (``+ cache hit``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
MODEL = "qwen3-vl-tiny"
CONTENTS = ("compliant_image", "text", "text streamed")
CACHE_MODES = ("", " + cache miss", " + cache hit")
CASES = tuple(content + mode for mode in CACHE_MODES for content in CONTENTS)
RESULT_ENV = "QWENVL_BENCH_RESULT"
ANSWER = json.dumps(
    {
        "id": "c1",
        "object": "chat.completion",
        "model": MODEL,
        "choices": [{"index": 0, "message": {"content": "A cat."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 314, "completion_tokens": 3, "total_tokens": 317},
    }
).encode()


STREAMED_TOKENS = 8


def _chunk(delta: dict[str, str], finish: str | None, usage: dict[str, int] | None) -> bytes:
    """One SSE event as vLLM writes a chat chunk (compact JSON, usage last)."""
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    chunk: dict[str, Any] = {
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
        "model": MODEL, "choices": [choice],
    }  # fmt: skip
    if usage is not None:
        chunk["usage"] = usage
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def _usage(completion: int) -> dict[str, int]:
    return {"prompt_tokens": 14, "total_tokens": 14 + completion, "completion_tokens": completion}


def _stream(per_chunk: bool) -> list[bytes]:
    """The events of a streamed answer of STREAMED_TOKENS tokens, with usage on every
    chunk when ``per_chunk``; the usage-only chunk is added when the request asks."""
    deltas = [{"role": "assistant", "content": ""}] + [{"content": " a"}] * STREAMED_TOKENS
    events = [
        _chunk(delta, None, _usage(number) if per_chunk else None)
        for number, delta in enumerate(deltas)
    ]
    return [*events, _chunk({}, "length", _usage(STREAMED_TOKENS) if per_chunk else None)]


# Rendered once: the stand-in's own work must stay out of the figures.
STREAMS = {per_chunk: _stream(per_chunk) for per_chunk in (False, True)}
USAGE_ONLY = (
    b"data: "
    + json.dumps(
        {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
         "choices": [], "usage": _usage(STREAMED_TOKENS)},
        separators=(",", ":"),
    ).encode()
    + b"\n\n"
)  # fmt: skip


def request_body(case: str, number: int = 0) -> bytes:
    from qwenvl_serve.sample_images import synthetic_jpeg

    text = "Describe this image." + (f" ({number})" if number else "")
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    if case.startswith("compliant_image"):
        url = "data:image/jpeg;base64," + base64.b64encode(synthetic_jpeg(640, 480, 5)).decode()
        content.append({"type": "image_url", "image_url": {"url": url}})
    document = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
    streamed = {"stream": True} if "streamed" in case else {}
    return json.dumps({**document, "max_tokens": 16, "temperature": 0, **streamed}).encode()


async def stand_in_engine(scope: Any, receive: Any, send: Any) -> None:
    """Answers one completion: JSON, or a stream of vLLM's shape, one message per
    event as vLLM sends them, with the usage the request's stream_options ask for."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if b'"stream": true' not in body:  # the client's spelling (json.dumps) in request_body
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": ANSWER})
        return
    headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for event in STREAMS[b'"continuous_usage_stats":true' in body]:
        await send({"type": "http.response.body", "body": event, "more_body": True})
    if b'"include_usage":true' in body:
        await send({"type": "http.response.body", "body": USAGE_ONLY, "more_body": True})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def drive(app: Any, bodies: list[bytes], requests: int) -> float:
    """CPU seconds per request for ``requests`` sequential requests through ``app``, the
    first 20 (warm-up) and then the rest of ``bodies`` in turn."""

    async def one(body: bytes) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if delivered:
                await asyncio.sleep(3600)  # the client stays connected
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        statuses: list[int] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions", "query_string": b"", "headers": list(headers),
            "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000), "state": {},
        }  # fmt: skip
        await app(scope, receive, send)
        if statuses != [200]:
            raise RuntimeError(f"the stack answered {statuses}")

    for number in range(20):  # warm-up: pools, caches, lazy imports
        await one(bodies[number % len(bodies)])
    started = time.process_time()
    for number in range(requests):
        await one(bodies[(20 + number) % len(bodies)])
    return (time.process_time() - started) / requests


def worker(case: str, requests: int) -> None:
    """Run in a fresh process: print the CPU seconds per request of ``case``."""
    from prometheus_client import CollectorRegistry

    from qwenvl_serve.config_loading import resolve_config
    from qwenvl_serve.middleware import QwenVLServeMiddleware

    settings: dict[str, Any] = {"model": "models/qwen3-vl-tiny", "served_model_name": MODEL}
    if "cache" in case:
        settings["cache"] = {"enabled": True}
    config = resolve_config(settings)
    app = QwenVLServeMiddleware(stand_in_engine, config, CollectorRegistry())
    unique = case.endswith("cache miss")
    bodies = (
        [request_body(case, n) for n in range(20 + requests)] if unique else [request_body(case)]
    )
    per_request = asyncio.run(drive(app, bodies, requests))
    Path(os.environ[RESULT_ENV]).write_text(json.dumps({"cpu_s_per_request": per_request}))


def measure(tree: Path, case: str, requests: int) -> float:
    """One worker run; its access log goes to /dev/null, as a log file costs little."""
    with tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / "result.json"
        env = {**os.environ, "PYTHONPATH": str(tree), RESULT_ENV: str(result)}
        argv = [sys.executable, __file__, "--worker", case, "--requests", str(requests)]
        subprocess.run(argv, env=env, cwd=tree, stdout=subprocess.DEVNULL, check=True)
        return float(json.loads(result.read_text())["cpu_s_per_request"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH of a checkout")
    parser.add_argument("--worker", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/stack-cpu.json")
    parser.add_argument("--report", action="store_true", help="write the RESULTS.md block")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.requests)
        return 0
    from qwenvl_serve.bench.goals import replace_block

    trees = {"now": REPO, **{n: Path(p).resolve() for n, p in (t.split("=", 1) for t in args.tree)}}
    order = ["now", *[name for name in trees if name != "now"], "now (A/A)"]
    samples: dict[str, dict[str, list[float]]] = {case: {n: [] for n in order} for case in CASES}
    for round_number in range(args.rounds):
        for case in CASES:
            # The older trees may predate the result cache: its cases run on this one.
            for name in order if case in CONTENTS else ["now", "now (A/A)"]:
                tree = trees[name.removesuffix(" (A/A)")]
                samples[case][name].append(measure(tree, case, args.requests))
        print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)
    report = {
        case: {name: statistics.median(values) * 1000 for name, values in by_tree.items() if values}
        for case, by_tree in samples.items()
    }
    args.out.write_text(json.dumps({"median_ms": report, "samples_s": samples}, indent=2) + "\n")
    lines = [
        f"{args.rounds} rounds of {args.requests} requests per case and tree; "
        f"{time.strftime('%Y-%m-%d')}. ms of CPU per request, median of rounds.",
        "",
        "| case | " + " | ".join(order) + " |",
        "|---|" + "---|" * len(order),
    ]
    for case, medians in report.items():
        cells = [f"{medians[name]:.3f}" if name in medians else "–" for name in order]
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    if args.report:
        results_md = REPO / "benchmarks" / "RESULTS.md"
        results_md.write_text(replace_block(results_md.read_text(), "stack-cpu", table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
