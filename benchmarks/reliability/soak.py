"""A mixed soak: the tiny config under steady mixed traffic, checked for errors and leaks.

One server (``qwenvl-serve serve configs/tiny.yaml``, with any ``--set`` overrides, such
as the processor-cache settings) takes ``--concurrency`` clients for ``--minutes``: small
images each with bytes of their own, a few images repeated (vLLM's multimodal caches
answer them), 12 MP photos, streamed answers with their usage chunk, and bad inputs that
must be refused.
Recorded: every status by kind, server errors (5xx), dropped connections, bad inputs
accepted, vLLM's "P0/P1 cache drift" log lines, and the RSS of the server's process
tree every 5 s (growth over the last half of the run is the leak check).

    .venv/bin/python -m benchmarks.reliability.soak --minutes 10 --label default
    .venv/bin/python -m benchmarks.reliability.soak --minutes 3 --label lru \\
        --set engine.mm_processor_cache_type=lru --set engine.mm_processor_cache_gb=4
    .venv/bin/python -m benchmarks.reliability.soak --report
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.servers import REPO, free_port, ours_command, start, stop, wait_ready
from qwenvl_serve.bench.goals import replace_block
from qwenvl_serve.sample_images import progressive_scan_bomb, synthetic_jpeg

MODEL = "qwen3-vl-tiny"
CHAT = "/v1/chat/completions"
RESULTS = REPO / "benchmarks" / "results" / "soak"
DRIFT_LINE = "P0/P1 cache drift"
STARTED_LINE = "Application startup complete"
RSS_PERIOD_S = 5.0
# Share of requests per kind (bad inputs cycle through BAD_INPUTS).
MIX = {"small": 30, "repeated": 30, "photo_12mp": 5, "stream": 15, "bad": 20}


def data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


def chat(*images: str, stream: bool = False, **fields: Any) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": "Describe the picture."}]
    content += [{"type": "image_url", "image_url": {"url": url}} for url in images]
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 8}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body | fields


def bad_inputs(server_url: str) -> list[tuple[str, bytes, dict[str, str]]]:
    """(name, body, headers) of requests that must each be refused with a 4xx."""
    small = synthetic_jpeg(320, 240, seed=1)
    json_type = {"content-type": "application/json"}

    def body(document: dict[str, Any]) -> bytes:
        return json.dumps(document).encode()

    cases = {
        "broken base64": chat("data:image/jpeg;base64,@@@@"),
        "not an image": chat(data_url(b"\x00" * 4096)),
        "truncated jpeg": chat(data_url(small[: len(small) // 2])),
        "scan bomb": chat(data_url(progressive_scan_bomb(256))),
        "loopback url": chat(f"{server_url}/health"),
        "vision token in text": chat(
            messages=[{"role": "user", "content": "<|vision_start|><|image_pad|>"}]
        ),
        "five images": chat(*[data_url(small)] * 5),
        "truncation with an image": chat(data_url(small), truncate_prompt_tokens=8),
        "string temperature": chat(temperature="hot"),
        "lone surrogate": chat(messages=[{"role": "user", "content": "\ud800"}]),
        "too many tokens": chat(max_tokens=100_000),
    }
    requests = [(name, body(document), json_type) for name, document in cases.items()]
    requests.append(("not json", b"{", json_type))
    requests.append(("not declared json", body(chat()), {"content-type": "text/plain"}))
    return requests


@dataclass
class Tally:
    """What the clients saw."""

    statuses: Counter[str] = field(default_factory=Counter)  # "kind status"
    dropped: Counter[str] = field(default_factory=Counter)  # kind -> connection errors
    bad_accepted: Counter[str] = field(default_factory=Counter)  # bad input -> 2xx count
    server_errors: list[str] = field(default_factory=list)  # "kind status body" (first 20)

    def record(self, kind: str, status: int, text: str) -> None:
        self.statuses[f"{kind} {status}"] += 1
        if status >= 500 and len(self.server_errors) < 20:
            self.server_errors.append(f"{kind} {status} {text[:200]}")


class Requests:
    """The request mix, drawn in a fixed pseudo-random order."""

    def __init__(self, server_url: str, seed: int = 7) -> None:
        self.random = random.Random(seed)  # noqa: S311 (a reproducible mix, not a secret)
        self.serial = itertools.count()
        self.repeated = [data_url(synthetic_jpeg(640, 480, seed=100 + n)) for n in range(3)]
        self.photos = [data_url(synthetic_jpeg(4000, 3000, seed=200 + n)) for n in range(2)]
        self.bad = itertools.cycle(bad_inputs(server_url))
        self.kinds = [kind for kind, weight in MIX.items() for _ in range(weight)]

    def next(self) -> tuple[str, str, bytes, dict[str, str]]:
        """(kind, name, body, headers) of the next request."""
        kind = self.random.choice(self.kinds)
        json_type = {"content-type": "application/json"}
        if kind == "bad":
            name, body, headers = next(self.bad)
            return kind, name, body, headers
        if kind == "small":  # bytes of its own: a miss in every cache
            image = synthetic_jpeg(320, 240, seed=1000 + next(self.serial), quality=80)
            document = chat(data_url(image))
        elif kind == "repeated":
            document = chat(self.random.choice(self.repeated))
        elif kind == "photo_12mp":
            document = chat(self.random.choice(self.photos))
        else:
            document = chat(self.random.choice(self.repeated), stream=True)
        return kind, kind, json.dumps(document).encode(), json_type


async def client_loop(
    http: httpx.AsyncClient, requests: Requests, tally: Tally, deadline: float
) -> None:
    while time.monotonic() < deadline:
        kind, name, body, headers = requests.next()
        try:
            response = await http.post(CHAT, content=body, headers=headers)
        except httpx.HTTPError:
            tally.dropped[name] += 1
            continue
        text = response.text
        if kind == "stream" and response.status_code == 200:
            text_ok = text.rstrip().endswith("data: [DONE]") and '"error"' not in text
            tally.record(kind, response.status_code if text_ok else 599, text)
            continue
        tally.record(name if kind == "bad" else kind, response.status_code, text)
        if kind == "bad" and response.status_code < 400:
            tally.bad_accepted[name] += 1


async def drive(base_url: str, concurrency: int, seconds: float) -> Tally:
    requests = Requests(base_url)
    tally = Tally()
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=300, limits=limits) as http:
        loops = [client_loop(http, requests, tally, deadline) for _ in range(concurrency)]
        await asyncio.gather(*loops)
    return tally


@contextlib.contextmanager
def sampling_rss(root_pid: int, samples: list[list[Any]]) -> Iterator[None]:
    """Every RSS_PERIOD_S: [seconds, tree MB, {process: MB}] of ``root_pid``'s tree."""
    stopped = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while not stopped.wait(RSS_PERIOD_S):
            parts = tree_rss_mb(root_pid)
            samples.append([time.monotonic() - started, sum(parts.values()), parts])

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopped.set()
        thread.join()


def tree_rss_mb(root_pid: int) -> dict[str, float]:
    """RSS in MB of each process of the tree, named by its title (``VLLM::EngineCore``)
    or its command, and its pid."""
    parts: dict[str, float] = {}
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(root_pid)
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
                words = process.cmdline() or [process.name()]
                title = " ".join(Path(word).name for word in words[:3])[:40]
                parts[f"{title} ({process.pid})"] = process.memory_info().rss / 2**20
    return parts


def run(minutes: float, concurrency: int, overrides: Sequence[str], label: str) -> dict[str, Any]:
    port = free_port()
    argv, env = ours_command(port)
    for override in overrides:
        argv += ["--set", override]
    server = start(f"soak-{label}", (argv, env), port, Path(tempfile.mkdtemp()))
    samples: list[list[Any]] = []
    try:
        wait_ready([server])
        with sampling_rss(server.process.pid, samples):
            tally = asyncio.run(drive(server.base_url, concurrency, minutes * 60))
        health = httpx.get(f"{server.base_url}/health", timeout=10).status_code
    finally:
        stop(server)
    log = server.log_path.read_text(errors="replace")
    return {
        "label": label,
        "minutes": minutes,
        "concurrency": concurrency,
        "overrides": list(overrides),
        "command": server.shell_command(),
        "statuses": dict(sorted(tally.statuses.items())),
        "dropped": dict(tally.dropped),
        "bad_accepted": dict(tally.bad_accepted),
        "server_errors": tally.server_errors,
        "drift_lines": log.count(DRIFT_LINE),
        "warning_lines": warnings_after_startup(log),
        "health_after": health,
        "rss_mb": samples,
    }


def warnings_after_startup(log: str) -> list[str]:
    """The log's warning lines once the server was up (the first 20)."""
    _, _, served = log.partition(STARTED_LINE)
    lines = [line for line in served.splitlines() if "warn" in line.lower()]
    return lines[:20]


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers the report shows for one run."""
    statuses = Counter(result["statuses"])
    total = sum(statuses.values())
    server_errors = sum(n for key, n in statuses.items() if int(key.rsplit(" ", 1)[1]) >= 500)
    samples = result["rss_mb"]
    half = samples[-1][0] / 2 if samples else 0
    second_half = [sample[1] for sample in samples if sample[0] >= half]
    return {
        "requests": total,
        "server_errors": server_errors,
        "dropped": sum(result["dropped"].values()),
        "bad_sent": sum(n for key, n in statuses.items() if key.rsplit(" ", 1)[0] not in MIX),
        "bad_accepted": sum(result["bad_accepted"].values()),
        "drift_lines": result["drift_lines"],
        "warning_lines": len(result.get("warning_lines", [])),
        "rss_start_mb": samples[0][1] if samples else 0.0,
        "rss_half_mb": second_half[0] if second_half else 0.0,
        "rss_end_mb": samples[-1][1] if samples else 0.0,
        "rss_peak_mb": max((sample[1] for sample in samples), default=0.0),
    }


def report(results: list[dict[str, Any]]) -> str:
    rows = [
        "| run | settings | minutes | requests | 5xx | dropped | bad inputs sent / accepted "
        "| drift lines | warnings | RSS at start / half / end (MB) | growth, last half | peak |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        s = summary(result)
        flags = " ".join(result.get("overrides") or result.get("vllm_args") or []) or "tiny.yaml"
        rows.append(
            f"| {result['label']} | `{flags}` | {result['minutes']:g} | {s['requests']:,} "
            f"| {s['server_errors']} | {s['dropped']} | {s['bad_sent']:,} / {s['bad_accepted']} "
            f"| {s['drift_lines']} | {s['warning_lines']} "
            f"| {s['rss_start_mb']:,.0f} / {s['rss_half_mb']:,.0f} / "
            f"{s['rss_end_mb']:,.0f} | {s['rss_end_mb'] - s['rss_half_mb']:+,.0f} MB "
            f"| {s['rss_peak_mb']:,.0f} |"
        )
    rows += ["", "RSS by process (MB) at the start, half-way and the end of each run:", ""]
    rows += ["| run | process | start | half | end |", "| --- | --- | ---: | ---: | ---: |"]
    for result in results:
        for name, (first, half, end) in process_rss(result["rss_mb"]).items():
            rows.append(f"| {result['label']} | {name} | {first:,.0f} | {half:,.0f} | {end:,.0f} |")
    return "\n".join(rows)


def process_rss(samples: list[list[Any]]) -> dict[str, tuple[float, float, float]]:
    """Each process's RSS at the first sample, the first of the second half, the last
    (named without its pid; processes under 100 MB left out)."""
    if not samples or len(samples[0]) < 3:  # runs recorded before per-process sampling
        return {}
    half = next(sample for sample in samples if sample[0] >= samples[-1][0] / 2)
    rows = {}
    for key, first in samples[0][2].items():
        name = key.rsplit(" (", 1)[0].strip()
        end = samples[-1][2].get(key, 0.0)
        if max(first, end) >= 100:
            rows[name] = (first, half[2].get(key, 0.0), end)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--label", default="default")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override"
    )
    parser.add_argument("--report", action="store_true", help="write RESULTS.md from the runs")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # still stop the server by pid
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.report:
        runs = [json.loads(path.read_text()) for path in RESULTS.glob("*.json")]
        runs.sort(key=lambda run: (run["minutes"], run["label"]))
        results_md = REPO / "benchmarks" / "RESULTS.md"
        results_md.write_text(replace_block(results_md.read_text(), "soak", report(runs)))
        return 0
    result = run(args.minutes, args.concurrency, args.set, args.label)
    (RESULTS / f"{args.label}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(report([result]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
