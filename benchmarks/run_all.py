"""Reproduce the measured sections of benchmarks/RESULTS.md on the CPU engine.

    .venv/bin/python -m benchmarks.run_all            # what `make bench` runs
    .venv/bin/python -m benchmarks.run_all --quick    # fewer requests: a smoke run

Starts the servers it needs on free loopback ports (our server with configs/tiny.yaml,
bare vLLM with the same engine arguments minus --middleware, bare vLLM with
max_model_len 16384 for 12 MP photos, nginx), runs every measurement with
`qwenvl-serve bench` (in-process, the same code path as the command), writes JSON,
Markdown and PNG plots under benchmarks/results/, rewrites the generated blocks of
benchmarks/RESULTS.md, and ends every process it started by pid.

On a shared machine hold the e2e lock for the whole run:
`flock /tmp/qwenvl-e2e.lock make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

from benchmarks.servers import (
    REPO,
    Server,
    bare_command,
    free_port,
    metric_total,
    nginx_command,
    ours_command,
    shell_text,
    start,
    stop,
    wait_ready,
)
from qwenvl_serve.bench.command import add_bench_arguments, settings_from_args, write_outputs
from qwenvl_serve.bench.compare import Comparison
from qwenvl_serve.bench.driver import run_bench
from qwenvl_serve.bench.goals import Goal, goals_table, replace_block
from qwenvl_serve.bench.machine import read_machine
from qwenvl_serve.bench.metrics import Distribution, Summary
from qwenvl_serve.bench.plots import Panel, plot_panels
from qwenvl_serve.bench.report import point_markdown
from qwenvl_serve.bench.results import BenchResult
from qwenvl_serve.bench.roofline import estimate_prefill, image_tokens
from qwenvl_serve.bench.workloads import (
    WorkloadSettings,
    request_factory,
    vllm_dataset_line,
    workload_copy,
)
from qwenvl_serve.sample_images import synthetic_jpeg

BENCH_DIR = REPO / "benchmarks"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
MODEL_DIR = "models/qwen3-vl-tiny"
# What a plain `vllm serve` user does not have: our layers, and the pixel cap that the
# launcher also hands to vLLM's image processor (with it, vLLM would shrink 12 MP itself).
BARE_DROPS = ("--middleware", "--mm-processor-kwargs")
SECTIONS = ("validity", "overhead", "nginx", "payoff", "scaling")
# What `make bench` runs: results 1-3 and 5. The validity check runs vLLM's own tool
# four times (about 40 s of start-up each), so it runs on request: --sections validity.
DEFAULT_SECTIONS = ("overhead", "nginx", "payoff", "scaling")


@dataclass(frozen=True)
class Sizes:
    """How many requests each measurement sends (``--quick`` shrinks them)."""

    validity: int = 20
    validity_rounds: int = 4
    one_at_a_time: int = 48  # requests per target at concurrency 1 (sections 1 and 3)
    eight_at_a_time: int = 144  # and at concurrency 8
    rounds: int = 6
    payoff: int = 6  # bare vLLM takes about 20 s per 12 MP photo on this CPU
    idle_probes: int = 40
    scaling: int = 48
    per_size: int = 4


QUICK = Sizes(validity=8, validity_rounds=2, one_at_a_time=8, eight_at_a_time=16, rounds=2,
              payoff=2, idle_probes=6, scaling=8, per_size=2)  # fmt: skip


@dataclass
class Run:
    """The servers of this run, the output folder and the text of each report block."""

    out: Path
    scratch: Path
    sizes: Sizes
    servers: dict[str, Server]
    blocks: dict[str, str]
    results: dict[str, BenchResult] = field(default_factory=dict)


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


# -- running `qwenvl-serve bench` ---------------------------------------------------------


def bench(run: Run, section: str, targets: dict[str, str], options: list[str]) -> BenchResult:
    """Run `qwenvl-serve bench` in-process; write its files under results/<section>."""
    argv = [
        word
        for name in targets
        for word in ("--target", f"{name}={run.servers[targets[name]].base_url}")
    ]
    argv += [*options, "--no-progress"]
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    settings = settings_from_args(parser.parse_args(argv))
    out_dir = run.out / section
    shown = shown_command(run, targets, options, out_dir)
    log(f"{section}: {shown}")
    result = asyncio.run(run_bench(settings, shown))
    from qwenvl_serve.bench.report import render_markdown

    write_outputs(result, render_markdown(result), out_dir)
    return result


def shown_command(run: Run, targets: dict[str, str], options: list[str], out_dir: Path) -> str:
    """The command with each server's URL as a shell variable, as the report shows it."""
    words = ["qwenvl-serve", "bench"]
    for name, server in targets.items():
        words += ["--target", f"{name}=${server.upper()}_URL"]
    words += [*options, "--out", relative(out_dir, REPO)]
    return " ".join(shlex.quote(w) if "$" not in w else w for w in words)


def summary(result: BenchResult, target: str, point: int = 0) -> Summary:
    return result.points[point].summaries[target]


def stat(distribution: Distribution | None, name: str) -> float | None:
    return None if distribution is None else float(getattr(distribution, name))


def section_header(result: BenchResult) -> str:
    return (
        f"Date: {result.started_at}. Machine: {result.machine.describe()}.\n\n"
        f"```bash\n{result.command}\n```"
    )


def points_markdown(result: BenchResult) -> str:
    parts = []
    for point in result.points:
        parts += [f"**{point.label}**", "", point_markdown(point), ""]
    return "\n".join(parts)


def relative(path: Path, to: Path = BENCH_DIR) -> str:
    """``path`` relative to ``to`` when inside it (links in RESULTS.md), else absolute."""
    return str(path.relative_to(to)) if path.is_relative_to(to) else str(path)


# -- sections -----------------------------------------------------------------------------

# Every vLLM CPU worker pins itself to core 0 and busy-polls for 1 s after its last step;
# with several servers on one 2-core machine the next target's block waits for that.
PAUSE = ["--pause-ms", "1200"]
COMMON = ["--max-tokens", "32", "--ignore-eos", *PAUSE]


def validity(run: Run) -> None:
    """Our bench and vLLM's own `vllm bench serve` in turns against one server, one workload.

    Alternating whole runs (ours, vLLM, vLLM, ours, ...) and pooling the requests of each
    tool, so that a busy moment of the machine does not decide the comparison.
    """
    n, rounds = run.sizes.validity, run.sizes.validity_rounds
    options = ["--image-size", "640x480", "--max-tokens", "32", "--ignore-eos", "--concurrency",
               "1", "--requests", str(n), "--rounds", "1", "--warmup", "2"]  # fmt: skip
    ours_ttft: list[float] = []
    ours_tpot: list[float] = []
    vllm_ttft: list[float] = []
    vllm_tpot: list[float] = []
    shown: dict[str, str] = {}
    # One unrecorded run first: right after start-up the machine is still settling.
    bench(run, "validity-warmup", {"bare": "bare"}, [*options, "--seed", "99"])
    for index in range(rounds):
        for tool in ("ours", "vllm") if index % 2 == 0 else ("vllm", "ours"):
            if tool == "ours":
                result = bench(run, f"validity-ours-{index}", {"bare": "bare"},
                               [*options, "--seed", str(100 + index)])  # fmt: skip
                done = [r for r in result.points[0].requests["bare"] if r.get("ttft_ms")]
                ours_ttft += [r["ttft_ms"] for r in done]
                ours_tpot += [r["tpot_ms"] for r in done if r["tpot_ms"] is not None]
                shown.setdefault("ours", result.command)
            else:
                data = vllm_bench(run, n, seed=200 + index, name=f"validity-vllm-{index}")
                for first, latency, tokens in zip(
                    data["ttfts"], data["latencies"], data["output_lens"], strict=True
                ):
                    vllm_ttft.append(first * 1000)
                    if tokens > 1:
                        vllm_tpot.append((latency - first) * 1000 / (tokens - 1))
                shown.setdefault("vllm", data["_command"])
    pairs = [
        ("TTFT mean (ms)", statistics.mean(ours_ttft), statistics.mean(vllm_ttft)),
        ("TTFT median (ms)", statistics.median(ours_ttft), statistics.median(vllm_ttft)),
        ("TPOT mean (ms)", statistics.mean(ours_tpot), statistics.mean(vllm_tpot)),
        ("TPOT median (ms)", statistics.median(ours_tpot), statistics.median(vllm_tpot)),
    ]
    rows = [f"| metric | qwenvl-serve bench ({len(ours_ttft)} requests) | "
            f"vllm bench serve ({len(vllm_ttft)} requests) | difference |",
            "| --- | --- | --- | --- |"]  # fmt: skip
    goals = []
    for name, mine, theirs in pairs:
        diff = (mine - theirs) / theirs
        rows.append(f"| {name} | {mine:.2f} | {theirs:.2f} | {diff * 100:+.1f} % |")
        goals.append(Goal(f"{name}: difference", abs(diff) * 100, 5.0, at_most=True, unit=" %"))
    machine = read_machine()
    run.blocks["validity"] = "\n\n".join([
        f"Date: {datetime.now(UTC):%Y-%m-%d}. Machine: {machine.describe()}. "
        f"After one unrecorded run, {rounds} runs of each tool, {n} requests each, alternating "
        "(ours, vLLM, vLLM, ours, ...); the first of each:",
        f"```bash\n{shown['ours']}\n```",
        f"```bash\n{shown['vllm']}\n```",
        "\n".join(rows),
        goals_table(goals),
    ])  # fmt: skip


def vllm_bench(run: Run, n: int, seed: int, name: str) -> dict[str, Any]:
    """`vllm bench serve` with the same request shapes (exported as its custom_image JSONL)."""
    out = run.out / name
    out.mkdir(parents=True, exist_ok=True)
    (run.scratch / name).mkdir(parents=True, exist_ok=True)
    dataset = run.scratch / name / "vllm-dataset.jsonl"
    factory = request_factory(WorkloadSettings(image_sizes=((640, 480),), seed=seed))
    dataset.write_text("".join(vllm_dataset_line(s) + "\n" for s in workload_copy(factory, 0, n)))
    server = run.servers["bare"]
    options = [
        "--backend",
        "openai-chat",
        "--base-url",
        server.base_url,
        "--endpoint",
        "/v1/chat/completions",
        "--model",
        "qwen3-vl-tiny",
        "--tokenizer",
        MODEL_DIR,
        "--dataset-name",
        "custom_image",
        "--dataset-path",
        relative(dataset, REPO),
        "--enable-multimodal-chat",
        "--disable-shuffle",
        "--custom-output-len",
        "32",
        "--ignore-eos",
        "--num-prompts",
        str(n),
        "--max-concurrency",
        "1",
        "--request-rate",
        "inf",
        "--num-warmups",
        "0",
        "--ready-check-timeout-sec",
        "0",
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--metric-percentiles",
        "50,90,99",
        "--save-result",
        "--save-detailed",
        "--result-dir",
        relative(out, REPO),
        "--result-filename",
        "vllm-bench-serve.json",
        "--disable-tqdm",
    ]
    argv = [sys.executable, "benchmarks/vllm_bench_serve.py", *options]
    log(f"{name}: vllm bench serve")
    completed = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    (run.scratch / name / "vllm-bench-serve.log").write_text(completed.stdout + completed.stderr)
    if completed.returncode != 0:
        raise RuntimeError(f"vllm bench serve failed:\n{completed.stderr[-3000:]}")
    data: dict[str, Any] = json.loads((out / "vllm-bench-serve.json").read_text())
    shown = [("$BARE_URL" if word == server.base_url else word) for word in options]
    data["_command"] = "python benchmarks/vllm_bench_serve.py " + " ".join(shown)
    return data


LOAD = ["--image-size", "640x480", *COMMON, "--warmup", "4"]


def side_by_side(
    run: Run, section: str, targets: dict[str, str]
) -> tuple[BenchResult, BenchResult]:
    """The same 640x480 load at concurrency 1 and 8, interleaved; the third target is the
    first one again (A B A'), so that A' / A shows the noise floor of the comparison."""
    sizes = run.sizes
    rounds = ["--rounds", str(sizes.rounds)]
    one = ["--concurrency", "1", "--requests", str(sizes.one_at_a_time), *rounds]
    eight = ["--concurrency", "8", "--requests", str(sizes.eight_at_a_time), *rounds]
    at_1 = bench(run, f"{section}-c1", targets, [*LOAD, *one])
    at_8 = bench(run, f"{section}-c8", targets, [*LOAD, *eight])
    return at_1, at_8


def side_by_side_goals(
    at_1: BenchResult, at_8: BenchResult, candidate: str, again: str, ttft_limit: float
) -> tuple[list[Goal], list[Goal]]:
    """Goals for ``candidate`` against the baseline, and the same numbers for the A/A pair."""

    def comparison(result: BenchResult, name: str) -> Comparison:
        return next(c for c in result.points[0].comparisons if c.candidate == name)

    def numbers(name: str) -> list[Goal]:
        base = at_1.baseline
        one, eight = comparison(at_1, name), comparison(at_8, name)
        return [
            Goal(f"throughput {name} / {base} at concurrency 8", eight.request_throughput,
                 0.97, at_most=False),
            Goal(f"throughput {name} / {base} at concurrency 1", one.request_throughput,
                 0.97, at_most=False),
            Goal(f"TTFT p50 {name} - {base} at concurrency 1", one.ttft_p50_delta_ms,
                 ttft_limit, True, " ms"),
            Goal(f"TTFT p50 {name} - {base} at concurrency 8", eight.ttft_p50_delta_ms,
                 ttft_limit, True, " ms"),
        ]  # fmt: skip

    return numbers(candidate), numbers(again)


def side_by_side_block(
    run: Run,
    at_1: BenchResult,
    at_8: BenchResult,
    goals: list[Goal],
    noise: list[Goal],
    extra: Sequence[str] = (),
) -> str:
    noise_text = (
        f"Noise floor: the same numbers for `{at_1.points[0].comparisons[-1].candidate}`, "
        f"the baseline measured again as a third target in the same run:\n\n"
    )
    return "\n\n".join([
        section_header(at_1),
        f"```bash\n{at_8.command}\n```",
        *extra,
        goals_table(goals),
        noise_text + goals_table(noise),
        "**concurrency 1**\n\n" + point_markdown(at_1.points[0]),
        "**concurrency 8**\n\n" + point_markdown(at_8.points[0]),
    ])  # fmt: skip


def event_counts(result: BenchResult, target: str) -> str:
    """``35 × 143, 34 × 1``: how many stream events how many requests had."""
    counts = Counter(row["events"] for row in result.points[0].requests[target] if not row["probe"])
    return ", ".join(f"{events} × {n}" for events, n in sorted(counts.items(), reverse=True))


def overhead(run: Run) -> None:
    """Our server vs bare vLLM on images that already comply."""
    at_1, at_8 = side_by_side(
        run, "overhead", {"bare": "bare", "ours": "ours", "bare-again": "bare"}
    )
    goals, noise = side_by_side_goals(at_1, at_8, "ours", "bare-again", ttft_limit=5.0)
    run.blocks["overhead"] = side_by_side_block(run, at_1, at_8, goals, noise)


def nginx(run: Run) -> None:
    """The same load through nginx and directly."""
    targets = {"direct": "ours", "nginx": "nginx", "direct-again": "ours"}
    at_1, at_8 = side_by_side(run, "nginx", targets)
    goals, noise = side_by_side_goals(at_1, at_8, "nginx", "direct-again", ttft_limit=2.0)
    direct = event_counts(at_8, "direct")
    proxied = event_counts(at_8, "nginx")
    events = next(c for c in at_8.points[0].comparisons if c.candidate == "nginx").events_mean
    goals.insert(2, Goal("stream events per request nginx / direct", events, 1.0, at_most=False))
    nginx_server = run.servers["nginx"]
    description = (
        "nginx: the site `qwenvl-serve render` writes for a one-model deployment "
        "(upstream = our server; rate limits 1000 r/s), run by "
        f"`{nginx_server.shell_command()}`. Stream events per request at concurrency 8 "
        f"(events × requests): direct {direct}; nginx {proxied}."
    )
    run.blocks["nginx"] = side_by_side_block(run, at_1, at_8, goals, noise, [description])


def payoff(run: Run) -> None:
    """12 MP photos: our server (normalizes to 2048x1536) vs bare vLLM at 16384 tokens."""
    targets = {"bare16k": "bare16k", "ours": "ours"}
    ours_url = run.servers["ours"].base_url
    seconds_before = metric_total(ours_url, "qwenvl_image_normalize_seconds_sum")
    count_before = metric_total(ours_url, "qwenvl_image_normalize_seconds_count")
    idle = bench(
        run,
        "payoff-idle-probes",
        targets,
        [
            "--workload",
            "text",
            "--max-tokens",
            "8",
            "--ignore-eos",
            *PAUSE,
            "--concurrency",
            "1",
            "--requests",
            str(run.sizes.idle_probes),
            "--rounds",
            "2",
            "--warmup",
            "2",
        ],
    )
    loaded = bench(
        run,
        "payoff",
        targets,
        [
            "--image-size",
            "4000x3000",
            "--max-tokens",
            "16",
            "--ignore-eos",
            *PAUSE,
            "--concurrency",
            "1",
            "--requests",
            str(run.sizes.payoff),
            "--rounds",
            "4",
            "--warmup",
            "1",
            "--probe-interval-ms",
            "250",
            "--probe-max-tokens",
            "8",
        ],
    )
    run.results["payoff"] = loaded
    normalize_s = metric_total(ours_url, "qwenvl_image_normalize_seconds_sum") - seconds_before
    normalized = metric_total(ours_url, "qwenvl_image_normalize_seconds_count") - count_before
    comparison = loaded.points[0].comparisons[0]
    probes = loaded.points[0].probes

    def probe_ratio(target: str, idle_stat: str) -> float | None:
        under_load = stat(probes[target].e2e, "p99") if target in probes else None
        at_rest = stat(summary(idle, target).e2e, idle_stat)
        return None if under_load is None or not at_rest else under_load / at_rest

    goals = [
        Goal("prompt tokens ours / bare", comparison.prompt_tokens_mean, 0.27, at_most=True),
        Goal("mean latency ours / bare", comparison.e2e_mean, 0.55, at_most=True),
        Goal("probe p99 under load / idle p99, ours", probe_ratio("ours", "p99"), 1.2, True),
    ]
    informative = [
        Goal("probe p99 under load / idle p99, bare", probe_ratio("bare16k", "p99"), 1.2, True),
        Goal("probe p99 under load / idle p50, ours", probe_ratio("ours", "p50"), 1.2, True),
        Goal("probe p99 under load / idle p50, bare", probe_ratio("bare16k", "p50"), 1.2, True),
    ]
    per_image = normalize_s / normalized if normalized else None
    estimate = h100_estimate(per_image)
    run.blocks["payoff"] = "\n\n".join(
        [
            section_header(loaded),
            f"Idle probe latency, measured first:\n\n```bash\n{idle.command}\n```",
            goals_table(goals),
            "For comparison (not goals):\n\n" + goals_table(informative),
            "Our image layer's own time (from its `qwenvl_image_normalize_seconds` histogram, this "
            f"run): {normalized:.0f} images, mean "
            f"{'–' if per_image is None else f'{per_image * 1000:.0f} ms'} per image "
            "(decode, resize to 2048x1536, re-encode).",
            "**12 MP photos, with text-only probes every 250 ms:**\n\n"
            + point_markdown(loaded.points[0]),
            "**Idle probes (text only, concurrency 1):**\n\n" + point_markdown(idle.points[0]),
            estimate,
        ]
    )


def h100_estimate(normalize_s: float | None) -> str:
    """Qwen3-VL-8B on an H100: CPU parts measured here, GPU prefill from the roofline."""
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(REPO / MODEL_DIR)  # type: ignore[no-untyped-call]
    cpu: dict[tuple[int, int], float] = {}
    for size in ((4000, 3000), (2048, 1536)):
        data = synthetic_jpeg(*size, seed=5)

        def prepare(data: bytes = data) -> None:
            import io

            image = Image.open(io.BytesIO(data)).convert("RGB")
            processor(images=[image], return_tensors="pt")

        cpu[size] = median_seconds(prepare, repeats=3)
    peak, utilization = 989.0, 0.5
    big = estimate_prefill(4000, 3000, 20, peak, utilization)
    small = estimate_prefill(2048, 1536, 20, peak, utilization)
    ours_cpu = (normalize_s or 0.0) + cpu[(2048, 1536)]
    bare_first = cpu[(4000, 3000)] + big.seconds
    ours_first = ours_cpu + small.seconds
    # Batch-1 decode reads every weight once per token: bytes / HBM bandwidth (H100 SXM).
    decode = 16 * (8.2e9 * 2) / 3.35e12
    lines = [
        "| part (one 12 MP photo, Qwen3-VL-8B on one H100) | bare vLLM | ours | how |",
        "| --- | --- | --- | --- |",
        f"| image tokens | {image_tokens(4000, 3000):,} | {image_tokens(2048, 1536):,} | "
        "exact: one token per 32x32 pixels |",
        f"| our decode + resize + re-encode (CPU) | – | {(normalize_s or 0) * 1000:.0f} ms | "
        "measured above, this machine |",
        f"| vLLM's decode + HF image processor (CPU) | {cpu[(4000, 3000)] * 1000:.0f} ms | "
        f"{cpu[(2048, 1536)] * 1000:.0f} ms | measured here (transformers processor of the "
        "checkpoint) |",
        f"| vision encoder prefill (GPU) | {big.vision_flops / 1e12:.0f} TFLOP | "
        f"{small.vision_flops / 1e12:.0f} TFLOP | FLOP count, full attention over patches |",
        f"| language model prefill (GPU) | {big.text_flops / 1e12:.0f} TFLOP | "
        f"{small.text_flops / 1e12:.0f} TFLOP | FLOP count, causal attention |",
        f"| GPU prefill time | {big.seconds * 1000:.0f} ms | {small.seconds * 1000:.0f} ms | "
        f"FLOPs / ({peak:.0f} TFLOP/s bf16 × {utilization:.0%}) — an estimate, not measured |",
        f"| time to first token | {bare_first * 1000:.0f} ms | {ours_first * 1000:.0f} ms | "
        f"sum of the above; ratio {ours_first / bare_first:.2f} |",
        f"| 16 output tokens (GPU) | {decode * 1000:.0f} ms | {decode * 1000:.0f} ms | "
        "16 × 16.4 GB of bf16 weights / 3.35 TB/s, an estimate |",
        f"| **mean latency, estimated** | **{(bare_first + decode) * 1000:.0f} ms** | "
        f"**{(ours_first + decode) * 1000:.0f} ms** | "
        f"ratio **{(ours_first + decode) / (bare_first + decode):.2f}** |",
    ]
    return "**Estimate for Qwen3-VL-8B on an H100:**\n\n" + "\n".join(lines)


def median_seconds(function: Callable[[], None], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


SCALING_SIZES = ("320x240", "640x480", "1280x960", "2048x1536", "4000x3000")


def scaling(run: Run) -> None:
    """Latency and throughput vs concurrency, and vs image size."""
    # Ours alone: sections 1 and 3 hold the side-by-side comparisons.
    sweep = ["--concurrency", "1,2,4,8,16,32", "--requests", str(run.sizes.scaling)]
    options = ["--image-size", "640x480", *COMMON, *sweep, "--rounds", "1", "--warmup", "4"]
    concurrency = bench(run, "scaling-concurrency", {"ours": "ours"}, options)
    by_size: list[BenchResult] = []
    for size in SCALING_SIZES:
        if size == "4000x3000" and "payoff" in run.results:
            # Section 2 measured this point (same servers, concurrency and output length,
            # plus its probes) with more requests: reuse it rather than spend minutes again.
            by_size.append(run.results["payoff"])
            continue
        options = ["--image-size", size, "--max-tokens", "16", "--ignore-eos", *PAUSE,
                   "--concurrency", "1", "--requests", str(run.sizes.per_size),
                   "--rounds", "2", "--warmup", "1"]  # fmt: skip
        by_size.append(
            bench(run, f"scaling-size-{size}", {"bare16k": "bare16k", "ours": "ours"}, options)
        )
    megapixels = [int(size.split("x")[0]) * int(size.split("x")[1]) / 1e6 for size in SCALING_SIZES]
    size_plot = run.out / "scaling-image-size.png"

    def series(pick: Callable[[Summary], float | None]) -> dict[str, list[float | None]]:
        return {name: [pick(summary(r, name)) for r in by_size] for name in ("bare16k", "ours")}

    plot_panels(
        size_plot,
        "Latency vs image size (concurrency 1)",
        "megapixels",
        megapixels,
        [
            Panel("prompt tokens (mean)", series(lambda s: s.prompt_tokens_mean)),
            Panel("TTFT p50 (ms)", series(lambda s: stat(s.ttft, "p50"))),
            Panel("end-to-end mean (ms)", series(lambda s: stat(s.e2e, "mean"))),
        ],
    )
    rows = [
        "| image | target | prompt tokens | TTFT p50 ms | E2E mean ms | E2E p99 ms | errors |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size, result in zip(SCALING_SIZES, by_size, strict=True):
        for name in ("bare16k", "ours"):
            s = summary(result, name)
            errors = ", ".join(f"{k}: {v}" for k, v in s.errors.items()) or "none"
            rows.append(
                f"| {size} | {name} | {fmt(s.prompt_tokens_mean)} | "
                f"{fmt(stat(s.ttft, 'p50'))} | {fmt(stat(s.e2e, 'mean'))} | "
                f"{fmt(stat(s.e2e, 'p99'))} | {errors} |"
            )
    from qwenvl_serve.bench.report import scaling_markdown

    run.blocks["scaling"] = "\n\n".join(
        [
            section_header(concurrency),
            scaling_markdown(concurrency.points),
            f"![throughput and latency vs concurrency]"
            f"({relative(run.out / 'scaling-concurrency' / 'scaling_concurrency.png')})",
            "By image size, one `qwenvl-serve bench` per size, e.g. for 2048x1536 (the 4000x3000 "
            "row is section 2's run, probes included, when that section ran too):\n\n```bash\n"
            + by_size[-2].command
            + "\n```",
            "\n".join(rows),
            f"![latency vs image size]({relative(size_plot)})",
        ]
    )


def fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f}"


# -- orchestration --------------------------------------------------------------------------


def servers_needed(sections: Sequence[str]) -> set[str]:
    needed = {
        "validity": {"bare"},
        "overhead": {"bare", "ours"},
        "nginx": {"ours", "nginx"},
        "payoff": {"bare16k", "ours"},
        "scaling": {"bare16k", "ours"},
    }
    return set().union(*(needed[section] for section in sections))


def start_servers(names: set[str], log_dir: Path) -> dict[str, Server]:
    """Start the vLLM servers together (their start-up dominates), then nginx."""
    servers: dict[str, Server] = {}
    try:
        commands: dict[str, Callable[[int], tuple[list[str], dict[str, str]]]] = {
            "ours": ours_command,
            "bare": bare_command,
            "bare16k": bare16k_command,
        }
        for name, command_for in commands.items():
            if name in names or (name == "ours" and "nginx" in names):
                port = free_port()
                servers[name] = start(name, command_for(port), port, log_dir)
        log(f"starting {', '.join(servers)} (logs in {relative(log_dir, REPO)})")
        wait_ready(list(servers.values()))
        if "nginx" in names:
            port = free_port()
            nginx_argv = nginx_command(servers["ours"].port, port, log_dir / "nginx")
            servers["nginx"] = start("nginx", nginx_argv, port, log_dir)
            wait_ready([servers["nginx"]], timeout_s=30)
    except BaseException:
        for server in servers.values():
            stop(server)
        raise
    return servers


def setup_block() -> str:
    """How each server of the report is started (ports are chosen at run time)."""
    machine = read_machine()
    port = 59999  # stands for the port; shown as $PORT
    commands = {
        "ours": ours_command(port),
        "bare": bare_command(port),
        "bare16k": bare16k_command(port),
    }
    lines = [f"Machine: {machine.describe()}, Python {machine.python}. No GPU.", "", "```bash"]
    lines += [f"# {name}\n{shell_text(command, port)}" for name, command in commands.items()]
    lines += ["# nginx: the site `qwenvl-serve render` writes, upstream = ours (section 3)", "```"]
    return "\n".join(lines)


def bare16k_command(port: int) -> tuple[list[str], dict[str, str]]:
    """Bare vLLM for 12 MP photos: a long context and no pixel cap of ours."""
    return bare_command(port, ["engine.max_model_len=16384"], BARE_DROPS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sections",
        default=",".join(DEFAULT_SECTIONS),
        help=f"comma-separated subset of {', '.join(SECTIONS)}",
    )
    parser.add_argument("--quick", action="store_true", help="few requests: a smoke run")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    parser.add_argument(
        "--scratch",
        type=Path,
        default=BENCH_DIR / "out",
        help="server logs, nginx files and request datasets (not part of the report)",
    )
    parser.add_argument("--no-report", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    if not (REPO / MODEL_DIR / "config.json").exists():
        parser.error(f"{MODEL_DIR} is missing: run `make bench` (it builds the tiny model)")
    if "nginx" in sections and shutil.which("nginx") is None:
        parser.error("nginx is not installed: run `make system-deps` (or skip --sections nginx)")
    out: Path = args.out.resolve()
    started = time.monotonic()
    servers = start_servers(servers_needed(sections), args.scratch.resolve() / "logs")
    log(f"servers ready after {time.monotonic() - started:.0f}s")
    run = Run(out, args.scratch.resolve(), QUICK if args.quick else Sizes(), servers, {})
    try:
        run.blocks["setup"] = setup_block()
        steps = {
            "validity": validity,
            "overhead": overhead,
            "nginx": nginx,
            "payoff": payoff,
            "scaling": scaling,
        }
        for section in SECTIONS:
            if section in sections:
                steps[section](run)
                log(f"{section} done at {time.monotonic() - started:.0f}s")
    finally:
        for server in reversed(list(servers.values())):
            stop(server)
    if not args.no_report:
        document = RESULTS_MD.read_text()
        for name, content in run.blocks.items():
            document = replace_block(document, name, content)
        RESULTS_MD.write_text(document)
        log(f"updated {RESULTS_MD.relative_to(REPO)}")
    log(f"total {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
