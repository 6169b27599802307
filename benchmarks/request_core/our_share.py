"""Our code's share of vLLM's API-server Python time, sampled inside the real server.

    .venv/bin/python -m benchmarks.request_core.our_share [--rounds 3] [--seconds 40]
        [--rate 200] [--before /path/to/an/older/checkout] [--report]

The server-CPU table compares whole processes, so machine noise (the engines'
busy-polling on the same CPUs) lands in every ratio. This benchmark asks a question
that noise cannot move much: of the time the API server's threads hold the GIL, how
much is in our code? py-spy samples the running server (``--gil``: only the thread
holding the GIL, so a thread blocked in a system call counts for nothing) while this
client keeps it busy with one case of the server-CPU benchmark at concurrency 8: the
same streamed 8-token requests, text only or with a unique 640x480 image each. A
sample is ours when its innermost package frame is ours
(:mod:`benchmarks.request_core.attribution`). Our share ``s`` bounds what our layers
add on the event loop: bare vLLM doing the rest would take ``1 - s`` of the time,
ours/bare ``1 / (1 - s)``; work our layers cause inside vLLM (the usage vLLM writes on
every chunk for metering) is vLLM's share here and is not counted. With ``--before``,
another checkout is served beside this one and sampled in turn, window by window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from benchmarks.request_core.attribution import Attribution, attribute
from benchmarks.request_core.server_cpu import chat, image_url, load
from benchmarks.servers import (
    REPO,
    Server,
    api_server_process,
    start_all,
    start_checkout,
    stop,
)
from qwenvl_serve.bench.goals import replace_block

CASES = ("text", "unique_image")
CONCURRENCY = 8
# Requests made ready per case and round, more than a window can send: images are
# encoded before sampling starts, so the client's own work stays out of the window.
READY_REQUESTS = {"text": 4000, "unique_image": 1200}
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
OUT = REPO / "benchmarks" / "results" / "our-share.json"
PY_SPY = Path(sys.executable).with_name("py-spy")


def bodies(case: str, round_number: int) -> list[bytes]:
    """The requests of one window: every image unique across rounds too."""
    count = READY_REQUESTS[case]
    if case == "text":
        return [json.dumps(chat(None)).encode()] * count
    base = 1_000_000 * (round_number + 1)
    return [json.dumps(chat(image_url(base + i))).encode() for i in range(count)]


def sample_window(
    base_url: str, process: psutil.Process, ready: list[bytes], seconds: int, rate: int
) -> tuple[Attribution, int]:
    """Sample ``process`` for ``seconds`` under load; the attribution and requests sent."""
    with tempfile.NamedTemporaryFile(suffix=".txt") as raw:
        spy = subprocess.Popen(
            [str(PY_SPY), "record", "--pid", str(process.pid), "--duration", str(seconds),
             "--rate", str(rate), "--format", "raw", "--output", raw.name, "--gil",
             "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        sent = 0
        try:
            while spy.poll() is None:
                batch, ready = ready[: CONCURRENCY * 10], ready[CONCURRENCY * 10 :]
                if not batch:
                    raise RuntimeError("the window outlasted the requests made ready")
                asyncio.run(load(base_url, batch, CONCURRENCY))
                sent += len(batch)
        finally:
            _, errors = spy.communicate()
        if spy.returncode != 0:
            raise RuntimeError(f"py-spy failed: {errors.decode(errors='replace')[-500:]}")
        return attribute(Path(raw.name).read_text().splitlines()), sent


def start_targets(before: Path | None, log_dir: Path) -> dict[str, Server]:
    """This checkout's server and, with ``before``, one of that checkout."""
    checkouts = {"ours": REPO} | ({"before": before} if before is not None else {})
    return start_all(
        {name: partial(start_checkout, name, path, log_dir) for name, path in checkouts.items()}
    )


def report(results: dict[str, Any]) -> str:
    """The RESULTS.md block: per case and target, our share by round and top modules."""
    lines = [
        f"{results['rounds']} rounds of {results['seconds']} s per case and target at "
        f"concurrency {CONCURRENCY}, py-spy at {results['rate']} Hz (`--gil`); "
        f"{results['date']}, {results['cpus']} CPUs. Share: our samples / all samples of "
        "the API-server process, median of rounds (smallest–largest).",
        "",
        "| case | target | requests/s | GIL samples per request | our share "
        "| ours/bare bound | our largest modules (share of all samples, all rounds) |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, cell in results["cells"].items():
        case, target = key.split("@")
        rounds = cell["rounds"]
        shares = [r["ours"] / r["samples"] for r in rounds]
        share = statistics.median(shares)
        rate = statistics.median(r["requests"] / results["seconds"] for r in rounds)
        per_request = statistics.median(r["samples"] / r["requests"] for r in rounds)
        total = sum(r["samples"] for r in rounds)
        modules = ", ".join(
            f"`{name}` {100 * count / total:.1f} %"
            for name, count in sorted(cell["modules"].items(), key=lambda kv: -kv[1])[:5]
        )
        lines.append(
            f"| {case} | {target} | {rate:.1f} | {per_request:.2f} | {100 * share:.1f} % "
            f"({100 * min(shares):.1f}–{100 * max(shares):.1f}) | {1 / (1 - share):.3f}× "
            f"| {modules} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=40, help="sampling window per case")
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument("--before", type=Path, help="another checkout, sampled in turn")
    parser.add_argument("--report", action="store_true", help="write the RESULTS.md block")
    parser.add_argument("--scratch", type=Path, default=REPO / "benchmarks" / "out" / "share")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds through `finally`
    servers = start_targets(args.before.resolve() if args.before else None, args.scratch)
    cells: dict[str, Any] = {}
    try:
        processes = {name: api_server_process(server) for name, server in servers.items()}
        for case in CASES:  # warm-up: compiled, cached and allocated before sampling
            for server in servers.values():
                asyncio.run(load(server.base_url, bodies(case, -1)[:40], CONCURRENCY))
        for round_number in range(args.rounds):
            for case in CASES:
                ready = bodies(case, round_number)
                order = list(servers.items())[:: -1 if round_number % 2 else 1]
                for name, server in order:  # who goes first alternates by round
                    found, sent = sample_window(
                        server.base_url, processes[name], list(ready), args.seconds, args.rate
                    )
                    cell = cells.setdefault(f"{case}@{name}", {"rounds": [], "modules": {}})
                    cell["rounds"].append(
                        {"samples": found.samples, "ours": found.ours, "requests": sent,
                         "owners": dict(found.by_owner)}
                    )  # fmt: skip
                    for module, count in found.ours_by_module.items():
                        cell["modules"][module] = cell["modules"].get(module, 0) + count
            print(f"round {round_number + 1}/{args.rounds}", file=sys.stderr, flush=True)
    finally:
        for server in servers.values():
            stop(server)
    results = {
        "rounds": args.rounds,
        "seconds": args.seconds,
        "rate": args.rate,
        "date": time.strftime("%Y-%m-%d"),
        "cpus": psutil.cpu_count(),
        "cells": cells,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1) + "\n")
    table = report(results)
    print(table)
    if args.report:
        RESULTS_MD.write_text(replace_block(RESULTS_MD.read_text(), "our-share", table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
