"""Result-cache hits: throughput and latency under wrk, next to bare vLLM and /health.

    .venv/bin/python -m benchmarks.cache.hits [--seconds 8] [--out PATH]

Servers, all at once on loopback ports: bare vLLM with our engine arguments (its prefix
and multimodal caches warm after the first request), ours with the cache on the memory
backend, and ours with the cache on Redis (a redis-server started here). For each of a
short text request and a 640x480 image request (temperature 0, 8 tokens), each target
answers it once (a miss), then wrk sends it for ``--seconds`` at concurrency 1, 8 and
32; our /health runs the same way in the same round, as the ceiling of the HTTP path.
wrk reports requests per second and latency percentiles.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.servers import (
    REPO,
    Server,
    bare_command,
    free_port,
    ours_command,
    start,
    stop,
    wait_ready,
)
from qwenvl_serve.bench.goals import replace_block
from qwenvl_serve.sample_images import synthetic_jpeg

CONCURRENCIES = (1, 8, 32)
MODEL = "qwen3-vl-tiny"
_WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
"""


def text_body() -> dict[str, object]:
    message = {"role": "user", "content": "Describe a sunny beach in one line."}
    return {"model": MODEL, "messages": [message], "temperature": 0, "max_tokens": 8}


def image_body() -> dict[str, object]:
    url = "data:image/jpeg;base64," + base64.b64encode(synthetic_jpeg(640, 480, seed=3)).decode()
    content = [
        {"type": "text", "text": "Describe this photo in one line."},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    return {**text_body(), "messages": [{"role": "user", "content": content}]}


# A CPU vLLM engine busy-polls for about 1 s after its last step: a pause before each
# cell keeps the previous target's spin (bare's engine, after its own cell) out of it.
QUIET_S = 1.2


def wrk(url: str, connections: int, seconds: float, script: Path | None) -> dict[str, float]:
    """requests/s and latency percentiles (ms) of one wrk run, after a quiet pause."""
    time.sleep(QUIET_S)
    argv = ["wrk", f"-t{min(connections, 2)}", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    if script is not None:
        argv += ["-s", str(script)]
    output = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    found = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}  # type: ignore[union-attr]
    for label, percent in (("p50_ms", "50"), ("p99_ms", "99")):
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if match:
            value, unit = float(match.group(1)), match.group(2)
            found[label] = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    found["non_2xx"] = float(errors.group(1)) if errors else 0.0
    return found


def script_for(body: dict[str, object], directory: Path, name: str) -> Path:
    body_path = directory / f"{name}.json"
    body_path.write_text(json.dumps(body))
    script = directory / f"{name}.lua"
    script.write_text(_WRK_LUA.format(body=body_path))
    return script


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(directory)]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return process, port


def ours(port: int, overrides: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    argv, env = ours_command(port)
    for item in overrides:
        argv += ["--set", item]
    return argv, env


def run(seconds: float) -> dict[str, object]:
    directory = Path(tempfile.mkdtemp(prefix="cache-bench-"))
    redis, redis_port = start_redis(directory)
    ports = {name: free_port() for name in ("bare", "memory", "redis")}
    cache_on = ["cache.enabled=true"]
    commands = {
        "bare": bare_command(ports["bare"]),
        "memory": ours(ports["memory"], cache_on),
        "redis": ours(
            ports["redis"],
            [*cache_on, "cache.backend=redis", f"cache.redis_url=redis://127.0.0.1:{redis_port}/0"],
        ),
    }
    servers: list[Server] = []
    try:
        servers = [
            start(name, command, ports[name], directory) for name, command in commands.items()
        ]
        wait_ready(servers)
        results: dict[str, object] = {"seconds": seconds, "rows": []}
        rows: list[dict[str, object]] = results["rows"]  # type: ignore[assignment]
        for kind, body in (("text", text_body()), ("image 640x480", image_body())):
            script = script_for(body, directory, kind.split()[0])
            for server in servers:
                httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=300)
            for connections in CONCURRENCIES:
                for server in servers:
                    url = f"{server.base_url}/v1/chat/completions"
                    rows.append({"request": kind, "target": server.name, "c": connections,
                                 **wrk(url, connections, seconds, script)})  # fmt: skip
                health = f"{servers[1].base_url}/health"
                rows.append({"request": kind, "target": "ours /health", "c": connections,
                             **wrk(health, connections, seconds, None)})  # fmt: skip
        return results
    finally:
        for server in servers:
            stop(server)
        redis.kill()
        redis.wait()


TARGET_NAMES = {
    "bare": "bare vLLM",
    "memory": "ours, cache on memory",
    "redis": "ours, cache on Redis",
    "ours /health": "ours /health",
}


def report(results: dict[str, Any]) -> str:
    """The RESULTS.md block: one row per request kind, target and concurrency."""
    lines = [
        f"wrk, {results['seconds']:g} s per cell, one repeated request per row (temperature 0, "
        f"8 tokens), all targets in one run on {results['cpu_count']} cores; "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        "| request | target | c | req/s | p50 ms | p99 ms | non-2xx |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['request']} | {TARGET_NAMES[row['target']]} | {row['c']} | "
            f"{row['rps']:,.0f} | {row.get('p50_ms', float('nan')):.2f} | "
            f"{row.get('p99_ms', float('nan')):.2f} | {row['non_2xx']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/cache-hits.json")
    parser.add_argument(
        "--report", action="store_true", help="write the RESULTS.md block from --out"
    )
    args = parser.parse_args(argv)
    if args.report:
        results = json.loads(args.out.read_text())
        results_md = REPO / "benchmarks" / "RESULTS.md"
        results_md.write_text(replace_block(results_md.read_text(), "cache-hits", report(results)))
        return 0
    results = run(args.seconds)
    results["cpu_count"] = psutil.cpu_count()
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for row in results["rows"]:  # type: ignore[attr-defined]
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
