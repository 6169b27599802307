"""Video requests, ours vs bare vLLM configured to accept video, on the same clips.

Both servers run the tiny config's engine (bare vLLM with our engine arguments minus
the middleware: the same video limit and processor budget, vLLM's own OpenCV decoder).
Clips (H.264, 30 fps, made with PyAV) go as ``data:`` URLs, one streamed request at a
time, servers interleaved per clip and round, every request with bytes of its own (so
neither server's multimodal cache answers from an earlier decode). Per request: time
to the first streamed chunk (TTFT), the peak RSS of vLLM's API-server process over the
request (sampled every 10 ms) and of our decoder worker, and the prompt tokens vLLM
reports.

    .venv/bin/python -m benchmarks.video.vs_bare --rounds 2
    .venv/bin/python -m benchmarks.video.vs_bare --report
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.servers import REPO, bare_command, free_port, ours_command, start, stop, wait_ready
from qwenvl_serve.bench.goals import replace_block
from tests.video_clips import cached_clip

CLIP_DIR = Path(tempfile.gettempdir()) / "qwenvl-video-bench"  # clips kept across runs
CLIPS = {
    "30s-720p": {"seconds": 30, "width": 1280, "height": 720, "fps": 30},
    "30s-1080p": {"seconds": 30, "width": 1920, "height": 1080, "fps": 30},
    "2min-720p": {"seconds": 120, "width": 1280, "height": 720, "fps": 30},
    "2min-1080p": {"seconds": 120, "width": 1920, "height": 1080, "fps": 30},
}
# 10 fps keeps ten minutes of 720p under the 64 MiB request cap as a data: URL.
LONG_CLIP = {"10min-720p": {"seconds": 600, "width": 1280, "height": 720, "fps": 10}}
WORKER_MODULE = "qwenvl_serve.video.worker"


@dataclass
class Peak:
    """Peak RSS of the API server (and of our workers) while a request runs."""

    api_pid: int
    api_mb: float = 0.0
    worker_mb: float = 0.0
    running: bool = True

    def watch(self) -> None:
        api = psutil.Process(self.api_pid)
        while self.running:
            try:
                self.api_mb = max(self.api_mb, api.memory_info().rss / 2**20)
                workers = [
                    child for child in api.children()
                    if WORKER_MODULE in " ".join(child.cmdline())
                ]  # fmt: skip
                self.worker_mb = max(
                    self.worker_mb, sum(w.memory_info().rss for w in workers) / 2**20
                )
            except psutil.Error:
                pass
            time.sleep(0.01)


def api_server_pid(root_pid: int) -> int:
    """The process running vLLM's API server in a started tree."""
    root = psutil.Process(root_pid)
    for process in [root, *root.children(recursive=True)]:
        if "vllm.entrypoints.openai.api_server" in " ".join(process.cmdline()):
            return process.pid
    return root_pid


def unique_url(clip: bytes, serial: int) -> str:
    """The clip as a data: URL, with bytes no earlier request had: the ftyp box's minor
    version (which no decoder reads) carries ``serial``, so neither server's multimodal
    cache can answer from an earlier request's decode."""
    data = bytearray(clip)
    data[12:16] = struct.pack(">I", serial)
    return "data:video/mp4;base64," + base64.b64encode(bytes(data)).decode()


def one_request(base_url: str, api_pid: int, url: str) -> dict[str, Any]:
    body = {
        "model": "qwen3-vl-tiny", "max_tokens": 1, "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": url}},
            {"type": "text", "text": "What happens in this video?"},
        ]}],
    }  # fmt: skip
    payload = json.dumps(body).encode()  # serialized before the clock starts
    peak = Peak(api_pid)
    baseline = psutil.Process(api_pid).memory_info().rss / 2**20
    watcher = threading.Thread(target=peak.watch, daemon=True)
    watcher.start()
    started = time.perf_counter()
    ttft = None
    usage: dict[str, Any] = {}
    status = 0
    text = ""
    url_ = f"{base_url}/v1/chat/completions"
    headers = {"content-type": "application/json"}
    with httpx.stream("POST", url_, content=payload, headers=headers, timeout=900) as r:
        status = r.status_code
        for line in r.iter_lines():
            if not line.startswith("data: "):
                text += line
                continue
            if ttft is None:
                ttft = time.perf_counter() - started
            event = line[6:]
            if event != "[DONE]":
                usage = json.loads(event).get("usage") or usage
    peak.running = False
    watcher.join()
    return {
        "status": status, "ttft_s": ttft, "prompt_tokens": usage.get("prompt_tokens"),
        "api_peak_mb": peak.api_mb, "api_baseline_mb": baseline,
        "worker_peak_mb": peak.worker_mb, "error": text[:300] if status != 200 else None,
    }  # fmt: skip


def run(rounds: int, with_long_clip: bool) -> dict[str, Any]:
    CLIP_DIR.mkdir(exist_ok=True)
    clips = {**CLIPS, **(LONG_CLIP if with_long_clip else {})}
    data = {name: cached_clip(CLIP_DIR, f"{name}.mp4", **spec) for name, spec in clips.items()}
    serials = itertools.count(1)
    logs = Path(tempfile.mkdtemp(prefix="video-bench-"))
    ours_port, bare_port = free_port(), free_port()
    servers = {
        "ours": start("ours", ours_command(ours_port), ours_port, logs),
        "bare": start("bare", bare_command(bare_port), bare_port, logs),
    }
    rows: list[dict[str, Any]] = []
    try:
        wait_ready(list(servers.values()))
        pids = {name: api_server_pid(server.process.pid) for name, server in servers.items()}
        for name in ("ours", "bare"):  # warm both (first request pays one-time costs)
            one_request(servers[name].base_url, pids[name], unique_url(data["30s-720p"], 0))
        for round_index in range(rounds):
            for clip in CLIPS:
                order = ("ours", "bare") if round_index % 2 == 0 else ("bare", "ours")
                for name in order:
                    url = unique_url(data[clip], next(serials))
                    row = one_request(servers[name].base_url, pids[name], url)
                    rows.append({"round": round_index, "clip": clip, "target": name, **row})
                    print(json.dumps(rows[-1]), flush=True)
        for clip in LONG_CLIP if with_long_clip else ():
            for name in ("ours", "bare"):
                url = unique_url(data[clip], next(serials))
                row = one_request(servers[name].base_url, pids[name], url)
                rows.append({"round": "long", "clip": clip, "target": name, **row})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        for server in servers.values():
            stop(server)
    return {"rows": rows, "rounds": rounds, "cpu_count": psutil.cpu_count(),
            "date": time.strftime("%Y-%m-%d")}  # fmt: skip


def report(results: dict[str, Any]) -> str:
    """The RESULTS.md block: one row per clip, ours and bare side by side."""
    rows = results["rows"]
    lines = [
        f"{results['rounds']} interleaved rounds per clip, one request at a time, medians; "
        f"{results['cpu_count']} cores; {results['date']}. Growth: the API server's peak "
        "RSS over the request minus its RSS just before it.",
        "",
        "| clip | TTFT ours s | bare s | ratio | API RSS peak ours MB | bare MB "
        "| growth ours MB | bare MB | ratio | our worker peak MB | prompt tokens ours | bare |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for clip in [*CLIPS, *LONG_CLIP]:
        ours = [r for r in rows if r["clip"] == clip and r["target"] == "ours"]
        bare = [r for r in rows if r["clip"] == clip and r["target"] == "bare"]
        if ours and bare:
            lines.append(_row(clip, ours, bare))
    return "\n".join(lines)


def _row(clip: str, ours: list[dict[str, Any]], bare: list[dict[str, Any]]) -> str:
    cells = [clip]
    for key, digits in (("ttft_s", 2), ("api_peak_mb", 0), ("growth_mb", 0)):
        for side in (ours, bare):
            cells.append(_cell(side, key, digits))
        if key != "api_peak_mb":
            mine, theirs = _value(ours, key), _value(bare, key)
            ratio = mine / theirs if mine is not None and theirs else None
            cells.append(f"{ratio:.2f}×" if ratio is not None else "")
    cells.append(_cell(ours, "worker_peak_mb", 0))
    cells += [_cell(ours, "prompt_tokens", 0), _cell(bare, "prompt_tokens", 0)]
    return "| " + " | ".join(cells) + " |"


def _value(rows: list[dict[str, Any]], key: str) -> float | None:
    if any(row["status"] != 200 for row in rows):
        return None
    if key == "growth_mb":
        return float(statistics.median(r["api_peak_mb"] - r["api_baseline_mb"] for r in rows))
    return float(statistics.median(row[key] for row in rows))


def _cell(rows: list[dict[str, Any]], key: str, digits: int) -> str:
    failed = next((row for row in rows if row["status"] != 200), None)
    if failed is not None and key in ("ttft_s", "prompt_tokens"):
        message = json.loads(failed["error"] or "{}").get("error", {}).get("message", "")
        return f"HTTP {failed['status']}: {message}" if key == "ttft_s" else ""
    if key in ("api_peak_mb", "worker_peak_mb"):
        return f"{statistics.median(row[key] for row in rows):,.{digits}f}"
    value = _value(rows, key)
    return "" if value is None else f"{value:,.{digits}f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-long-clip", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/video.json")
    parser.add_argument("--report", action="store_true", help="write RESULTS.md from --out")
    args = parser.parse_args(argv)
    if args.report:
        results = json.loads(args.out.read_text())
        results_md = REPO / "benchmarks" / "RESULTS.md"
        results_md.write_text(replace_block(results_md.read_text(), "video", report(results)))
        return 0
    results = run(args.rounds, not args.no_long_clip)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
