"""Result-cache hits: throughput and latency under wrk, next to bare vLLM and /health.

    .venv/bin/python -m benchmarks.cache.hits [--seconds 6] [--rounds 3] [--out PATH]

Servers, all at once on loopback ports: bare vLLM with our engine arguments (its prefix
and multimodal caches warm after the first request), ours with the cache on the memory
backend, and ours with the cache on Redis (a redis-server started here). For each of a
short text request and a 640x480 image request (temperature 0, 8 tokens), each target
answers it once (a miss), then wrk sends it for ``--seconds`` at concurrency 1, 8 and
32. Our /health runs the same way beside them, twice in a row: the ceiling of the HTTP
path, and its A/A noise. The targets of a cell run back to back, in an order that
rotates each round; the report gives medians over ``--rounds`` rounds, and each
ratio to /health is taken within a round, against the /health run of that same cell.

wrk reports requests per second and latency percentiles; the CPU vLLM's API-server
process spent per request is read around each run (our targets): on a CPU engine it is
the steadier figure, as wrk, the engine and the API server share two cores.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import statistics
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
    api_server_process,
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
    found["requests"] = float(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
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


HEALTH, HEALTH_AGAIN = "ours /health", "ours /health again"
TARGET_NAMES = {
    "bare": "bare vLLM",
    "memory": "ours, cache on memory",
    "redis": "ours, cache on Redis",
    HEALTH: HEALTH,
    HEALTH_AGAIN: HEALTH_AGAIN + " (A/A)",
}


def measured(
    url: str, connections: int, seconds: float, script: Path | None, process: psutil.Process | None
) -> dict[str, float]:
    """One wrk run, with the CPU ``process`` (an API server) spent per request."""
    before = process.cpu_times() if process is not None else None
    found = wrk(url, connections, seconds, script)
    if process is not None and before is not None and found["requests"]:
        after = process.cpu_times()
        spent = after.user + after.system - before.user - before.system
        found["cpu_us"] = spent / found["requests"] * 1e6
    return found


def rotated(items: Sequence[str], by: int) -> list[str]:
    """``items`` starting at position ``by`` (mod its length)."""
    shift = by % len(items)
    return [*items[shift:], *items[:shift]]


def cell_order(round_number: int) -> list[str]:
    """The targets of one cell, rotated by round; /health's A/A twin right after it."""
    order = rotated(["bare", "memory", "redis", HEALTH], round_number)
    at = order.index(HEALTH)
    return [*order[: at + 1], HEALTH_AGAIN, *order[at + 1 :]]


def measured_cell(
    target: str,
    servers: dict[str, Server],
    processes: dict[str, psutil.Process],
    script: Path,
    connections: int,
    seconds: float,
) -> dict[str, float]:
    """One target's run: a cached request, or our /health (on the memory server)."""
    if target in (HEALTH, HEALTH_AGAIN):
        url = f"{servers['memory'].base_url}/health"
        return measured(url, connections, seconds, None, processes["memory"])
    url = f"{servers[target].base_url}/v1/chat/completions"
    process = None if target == "bare" else processes[target]
    return measured(url, connections, seconds, script, process)


def run(seconds: float, rounds: int) -> dict[str, object]:
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
    servers: dict[str, Server] = {}
    try:
        servers = {
            name: start(name, command, ports[name], directory) for name, command in commands.items()
        }
        wait_ready(list(servers.values()))
        processes = {name: api_server_process(server) for name, server in servers.items()}
        results: dict[str, object] = {"seconds": seconds, "rounds": rounds, "rows": []}
        rows: list[dict[str, object]] = results["rows"]  # type: ignore[assignment]
        for round_number in range(rounds):
            for kind, body in (("text", text_body()), ("image 640x480", image_body())):
                script = script_for(body, directory, kind.split()[0])
                for server in servers.values():  # the miss that fills the cache
                    httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=300)
                for connections in CONCURRENCIES:
                    for target in cell_order(round_number):
                        found = measured_cell(
                            target, servers, processes, script, connections, seconds
                        )
                        rows.append({"round": round_number, "request": kind, "target": target,
                                     "c": connections, **found})  # fmt: skip
            print(f"round {round_number + 1}/{rounds} done", file=sys.stderr)
        return results
    finally:
        for server in servers.values():
            stop(server)
        redis.kill()
        redis.wait()


def _cells(results: dict[str, Any]) -> dict[tuple[str, int, str], list[dict[str, Any]]]:
    """Rows grouped by (request, concurrency, target), in round order."""
    cells: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for row in results["rows"]:
        cells.setdefault((row["request"], row["c"], row["target"]), []).append(row)
    return cells


def _median(rows: list[dict[str, Any]], field: str) -> float:
    values = [row[field] for row in rows if field in row]
    return statistics.median(values) if values else float("nan")


def ratios_to_health(
    cells: dict[tuple[str, int, str], list[dict[str, Any]]], request: str, c: int, target: str
) -> list[float]:
    """``target``'s req/s over /health's, round by round."""
    health = {row["round"]: row["rps"] for row in cells.get((request, c, HEALTH), [])}
    return [
        row["rps"] / health[row["round"]]
        for row in cells.get((request, c, target), [])
        if health.get(row["round"])
    ]


def report(results: dict[str, Any]) -> str:
    """The RESULTS.md block: medians per request kind, target and concurrency, and the
    ratios to /health, each within its round, with /health's A/A row beside them."""
    rounds = results.get("rounds", 1)
    lines = [
        f"wrk, {results['seconds']:g} s per cell, {rounds} rounds (medians), one repeated "
        f"request per row (temperature 0, 8 tokens), all targets in one run on "
        f"{results['cpu_count']} cores; {time.strftime('%Y-%m-%d')}. CPU: vLLM's API-server "
        "process per request.",
        "",
        "| request | target | c | req/s | × /health (min–max) | p50 ms | p99 ms | CPU µs/req "
        "| non-2xx |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    cells = _cells(results)
    for (request, c, target), rows in cells.items():
        ratios = ratios_to_health(cells, request, c, target)
        ratio = (
            f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})"
            if ratios and target != HEALTH
            else "–"
        )
        cpu = _median(rows, "cpu_us")
        lines.append(
            f"| {request} | {TARGET_NAMES[target]} | {c} | {_median(rows, 'rps'):,.0f} | "
            f"{ratio} | {_median(rows, 'p50_ms'):.2f} | {_median(rows, 'p99_ms'):.2f} | "
            f"{'–' if cpu != cpu else f'{cpu:.0f}'} | "
            f"{sum(row['non_2xx'] for row in rows):.0f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
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
    results = run(args.seconds, args.rounds)
    results["cpu_count"] = psutil.cpu_count()
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for row in results["rows"]:  # type: ignore[attr-defined]
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
