"""Server CPU per request: vLLM's API-server process, ours vs bare, paired per round.

    .venv/bin/python -m benchmarks.request_core.server_cpu [--rounds 8] [--requests 48]
        [--before /path/to/an/older/checkout] [--pin] [--report]

Servers: bare vLLM with our engine arguments, ours (this checkout) and, with
``--before``, ours from another checkout, all at once on loopback ports. Each round
sends every case (unique 640x480 images, one repeated image, text only) at each
concurrency to every target in turn, bare twice (its second pass is the A/A noise
row), and reads the CPU time of each server's API-server process (the one listening
on its port; the engine core busy-polls, so its CPU says nothing about our code)
before and after. Ratios are taken per round and reported as the median, with the
smallest and largest round. TTFT is the first streamed token, as the client sees it.
Every request streams 8 tokens at temperature 0 without asking for usage (so ours adds
and removes its usage chunk, as in production).

With ``--pin`` every API-server process (all its threads) runs on the first CPU and
everything else (the engines, their workers, this client) on the others, so the
process measured shares its core with nothing but the idle API servers of the other
targets: on a small machine the engines' busy-polling otherwise moves its CPU time by
tens of percent from one pass to the next.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.servers import (
    REPO,
    Server,
    api_server_process,
    bare_command,
    free_port,
    ours_command,
    start,
    start_all,
    start_checkout,
    stop,
)
from qwenvl_serve.bench.goals import replace_block
from qwenvl_serve.sample_images import synthetic_jpeg

MODEL = "qwen3-vl-tiny"
CASES = ("unique_image", "repeated_image", "text")
CONCURRENCIES = (1, 8)
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
Command = tuple[list[str], dict[str, str]]  # argv and environment of a server
OUT = REPO / "benchmarks" / "results" / "server-cpu.json"


def image_url(seed: int) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(synthetic_jpeg(640, 480, seed)).decode()


def chat(image: str | None) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": "Describe this picture."}]
    if image is not None:
        content.append({"type": "image_url", "image_url": {"url": image}})
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 8,
        "temperature": 0,
        "stream": True,
    }


def pin(servers: dict[str, Server], processes: dict[str, psutil.Process]) -> None:
    """API servers on the first CPU, the rest of every tree and this client on the others."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--pin needs at least two CPUs")
    first, others = {cpus[0]}, set(cpus[1:])
    os.sched_setaffinity(0, others)
    for name, server in servers.items():
        api = processes[name]
        root = psutil.Process(server.process.pid)
        for process in [root, *root.children(recursive=True)]:
            cpuset = first if process.pid == api.pid else others
            for thread in process.threads():  # affinity is per thread on Linux
                with contextlib.suppress(ProcessLookupError):
                    os.sched_setaffinity(thread.id, cpuset)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def one(client: httpx.AsyncClient, body: bytes) -> float:
    """Send one streaming request; the seconds to its first token."""
    started = time.perf_counter()
    first: float | None = None
    headers = {"content-type": "application/json"}
    async with client.stream("POST", "/v1/chat/completions", content=body, headers=headers) as r:
        if r.status_code != 200:
            raise RuntimeError(f"status {r.status_code}: {(await r.aread())[:200]!r}")
        async for line in r.aiter_lines():
            if first is None and line.startswith("data:") and '"content"' in line:
                first = time.perf_counter() - started
    if first is None:
        raise RuntimeError("a stream ended without a token")
    return first


async def load(base_url: str, bodies: list[bytes], concurrency: int) -> list[float]:
    queue = list(bodies)
    ttfts: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            while queue:
                ttfts.append(await one(client, queue.pop()))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ttfts


@dataclass
class Sample:
    cpu_ms_per_request: float
    ttft_p50_ms: float


# Every CPU vLLM worker here busy-polls for about 1 s after its last step; a pause lets the
# previous target's spin end before the next target is measured.
QUIET_S = 1.2


def measure(server: Server, process: psutil.Process, bodies: list[bytes], c: int) -> Sample:
    time.sleep(QUIET_S)
    before = cpu_seconds(process)
    try:
        ttfts = asyncio.run(load(server.base_url, bodies, c))
    except httpx.TransportError as failed:
        # Name the target and the moment: a dropped connection is a finding, not noise.
        raise RuntimeError(
            f"{server.name} at concurrency {c}, {time.strftime('%H:%M:%S')}: {failed!r}"
        ) from failed
    used = cpu_seconds(process) - before
    return Sample(used / len(bodies) * 1000, statistics.median(ttfts) * 1000)


# Requests per case and pass, as multiples of --requests: the API server's CPU clock
# ticks in 10 ms steps, so cheap requests need more of them to be resolved.
REQUESTS_FACTOR = {"unique_image": 1, "repeated_image": 1, "text": 3}


def case_bodies(
    case: str, round_number: int, count: int, concurrency: int, pass_: int
) -> list[bytes]:
    """The requests of one pass. Unique images are unique per pass too: a server that
    saw an image before answers it from its caches, and bare's second pass (the A/A
    row) must not be flattered by its first."""
    count *= REQUESTS_FACTOR[case]
    if case == "text":
        return [json.dumps(chat(None)).encode()] * count
    if case == "repeated_image":
        return [json.dumps(chat(image_url(7))).encode()] * count
    base = 1_000_000 * pass_ + 100_000 * concurrency + 1000 * round_number
    return [json.dumps(chat(image_url(base + i))).encode() for i in range(count)]


def start_targets(before: Path | None, log_dir: Path) -> dict[str, Server]:
    """Bare vLLM, ours and, with ``before``, ours of that checkout."""

    def on_free_port(
        name: str, command_for: Callable[[int], tuple[list[str], dict[str, str]]]
    ) -> Server:
        port = free_port()
        return start(name, command_for(port), port, log_dir)

    starters: dict[str, Callable[[], Server]] = {
        "bare": partial(on_free_port, "bare", bare_command),
        "ours": partial(on_free_port, "ours", ours_command),
    }
    if before is not None:
        starters["before"] = partial(start_checkout, "before", before, log_dir)
    return start_all(starters)


def ratio_text(values: list[float]) -> str:
    return f"{statistics.median(values):.3f}× ({min(values):.3f}–{max(values):.3f})"


def delta_text(values: list[float]) -> str:
    return f"{statistics.median(values):+.1f} ms ({min(values):+.1f} to {max(values):+.1f})"


def report(results: dict[str, Any], targets: list[str]) -> str:
    compared = [name for name in ("ours", "before") if name in targets]
    lines = [
        f"{results['rounds']} rounds of {results['requests']} requests per image case "
        f"(text: {results['requests'] * REQUESTS_FACTOR['text']}), concurrency and target; "
        f"{results['date']}. CPU: vLLM's API-server process, ms per request "
        "(median of rounds). Ratios: per round against bare in the same round, median "
        "(smallest–largest round). `bare again` is bare measured a second time in each "
        "round: the A/A noise floor."
        + (" API servers pinned to a CPU of their own (`--pin`)." if results.get("pinned") else ""),
        "",
        "| case | c | bare ms | " + " | ".join(f"{n} ms" for n in compared) + " | "
        + " | ".join(f"{n}/bare" for n in compared) + " | bare again/bare (A/A) | "
        + " | ".join(f"TTFT p50 {n}−bare" for n in compared) + " | TTFT p50 A/A |",
        "|---|---|---|" + "---|" * (3 * len(compared) + 2),
    ]  # fmt: skip
    for key, cell in results["cells"].items():
        case, c = key.rsplit("@", 1)
        rounds = cell["rounds"]
        bare = [r["bare"]["cpu_ms_per_request"] for r in rounds]
        row = [case, c, f"{statistics.median(bare):.2f}"]
        row += [
            f"{statistics.median([r[n]['cpu_ms_per_request'] for r in rounds]):.2f}"
            for n in compared
        ]
        for name in [*compared, "bare again"]:
            per_round = [r[name]["cpu_ms_per_request"] / r["bare"]["cpu_ms_per_request"]
                         for r in rounds]  # fmt: skip
            row.append(ratio_text(per_round))
        for name in [*compared, "bare again"]:
            deltas = [r[name]["ttft_p50_ms"] - r["bare"]["ttft_p50_ms"] for r in rounds]
            row.append(delta_text(deltas))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def saved(cells: dict[str, Any], rounds: int, requests: int, pinned: bool) -> dict[str, Any]:
    """Write the results of the rounds so far to OUT; return them."""
    results = {
        "rounds": rounds,
        "requests": requests,
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "pinned": pinned,
        "cells": cells,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1) + "\n")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--before", type=Path, help="another checkout, served as `before`")
    parser.add_argument("--pin", action="store_true", help="API servers on a CPU of their own")
    parser.add_argument("--report", action="store_true", help="write the RESULTS.md block")
    parser.add_argument("--scratch", type=Path, default=REPO / "benchmarks" / "out" / "cpu")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    # A stop signal unwinds through `finally`, so every server started here is ended.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    servers = start_targets(args.before.resolve() if args.before else None, args.scratch)
    order = ["bare", *(n for n in ("before", "ours") if n in servers), "bare again"]
    try:
        processes = {name: api_server_process(server) for name, server in servers.items()}
        if args.pin:
            pin(servers, processes)
        cells: dict[str, Any] = {}
        for case in CASES:  # warm-up: every server has compiled and cached what it will
            for name, server in servers.items():
                measure(server, processes[name], case_bodies(case, 99, 8, 4, 9), 4)
        for round_number in range(args.rounds):
            for case in CASES:
                for c in CONCURRENCIES:
                    samples: dict[str, Any] = {}
                    # Rotate who goes first, so no target always follows the same one.
                    shift = round_number % (len(order) - 1)
                    for name in order[shift:-1] + order[:shift] + [order[-1]]:
                        server = servers[name.removesuffix(" again")]
                        again = name.endswith(" again")
                        bodies = case_bodies(case, round_number, args.requests, c, int(again))
                        sample = measure(server, processes[server.name], bodies, c)
                        samples[name] = sample.__dict__
                    cells.setdefault(f"{case}@{c}", {"rounds": []})["rounds"].append(samples)
            # Kept after every round: a run cut short still leaves its whole rounds.
            results = saved(cells, round_number + 1, args.requests, args.pin)
            print(f"round {round_number + 1}/{args.rounds}", file=sys.stderr, flush=True)
    finally:
        for server in servers.values():
            stop(server)
    table = report(results, list(servers))
    print(table)
    if args.report:
        RESULTS_MD.write_text(replace_block(RESULTS_MD.read_text(), "server-cpu", table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
