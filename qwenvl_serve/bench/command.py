"""The ``qwenvl-serve bench`` subcommand: parse options, run, write JSON, Markdown and plots."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shlex
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from qwenvl_serve.bench.driver import BenchSettings, run_bench
from qwenvl_serve.bench.errors import BenchUsageError
from qwenvl_serve.bench.results import BenchResult
from qwenvl_serve.bench.runner import LoadPoint, RunSettings, Target, parse_target
from qwenvl_serve.bench.slo import SLO_METRICS, parse_slo
from qwenvl_serve.bench.workloads import (
    COPY_STRIDE,
    DEFAULT_IMAGE_PROMPT,
    DEFAULT_TEXT_PROMPT,
    WORKLOAD_KINDS,
    WorkloadSettings,
    parse_size,
)

T = TypeVar("T")

DESCRIPTION = """\
Load-test one or more OpenAI-compatible servers with streaming chat requests and report
TTFT, ITL, TPOT, end-to-end latency (mean, p50, p90, p99), requests/s, output tokens/s,
errors by status and goodput under SLOs. Several targets are measured in interleaved
blocks (A B A B ...) and compared with the first (or --baseline). Every request is unique,
so vLLM's image and prefix caches do not flatter the numbers.

Exit status: 0 when every target completed requests at every load point; 1 when a target
completed none at some load point (the report and --out files are still written); 2 for
a usage error, found before anything is sent; 130 when interrupted."""


def _parsed(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type`` that turns our ValueErrors into argparse's own messages."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _concurrency_list(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise ValueError(f"concurrency {text!r}: expected positive integers, e.g. 1,2,4")
    return values


def _check_positive(option: str, value: float | None) -> None:
    # `not value > 0` also refuses nan; inf would make a block or a sleep last forever
    if value is not None and not (math.isfinite(value) and value > 0):
        raise BenchUsageError(f"{option} must be a positive finite number, not {value:g}")


def _check_non_negative(option: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise BenchUsageError(f"{option} must be zero or a positive finite number, not {value:g}")


def _header(text: str) -> tuple[str, str]:
    name, separator, value = text.partition(":")
    if not separator or not name.strip():
        raise ValueError(f"header {text!r}: expected 'Name: value'")
    return name.strip(), value.strip()


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option of ``qwenvl-serve bench``."""
    where = parser.add_argument_group("targets")
    where.add_argument(
        "--target",
        dest="targets",
        action="append",
        required=True,
        metavar="NAME=URL",
        help="a server to measure, e.g. ours=http://127.0.0.1:8000 (repeatable)",
    )
    where.add_argument(
        "--baseline",
        metavar="NAME",
        help="target the others are compared with (default: the first)",
    )
    where.add_argument("--model", help="model name to send (default: the first target's first)")
    where.add_argument(
        "--header",
        dest="headers",
        action="append",
        default=[],
        type=_parsed(_header),
        metavar="'NAME: VALUE'",
        help="extra request header, e.g. 'Authorization: Bearer KEY' (repeatable)",
    )

    what = parser.add_argument_group("workload")
    what.add_argument(
        "--workload",
        choices=WORKLOAD_KINDS,
        default="synthetic",
        help="synthetic photos, a directory of images, text only, or a text/image "
        "mix (default: synthetic)",
    )
    what.add_argument(
        "--image-size",
        dest="image_sizes",
        action="append",
        type=_parsed(parse_size),
        metavar="WxH",
        help="synthetic photo size, e.g. 4000x3000; several are cycled (default: 640x480)",
    )
    what.add_argument(
        "--image-dir",
        type=Path,
        metavar="DIR",
        help="images for --workload directory (cycled in name order)",
    )
    what.add_argument("--images-per-request", type=int, default=1, metavar="N")
    what.add_argument("--prompt", default=DEFAULT_IMAGE_PROMPT, help="text sent with images")
    what.add_argument(
        "--text-prompt", default=DEFAULT_TEXT_PROMPT, help="text of text-only requests and probes"
    )
    what.add_argument(
        "--text-fraction",
        type=float,
        default=0.5,
        metavar="F",
        help="share of text-only requests in --workload mix (default: 0.5)",
    )
    what.add_argument(
        "--max-tokens",
        type=int,
        default=64,
        metavar="N",
        help="tokens to generate per request (default: 64)",
    )
    what.add_argument(
        "--ignore-eos",
        action="store_true",
        help="ask vLLM to generate exactly --max-tokens every time",
    )
    what.add_argument("--seed", type=int, default=0, help="seed for images, mix and arrivals")

    load = parser.add_argument_group("load")
    load.add_argument(
        "--concurrency",
        type=_parsed(_concurrency_list),
        default=None,
        metavar="N[,N...]",
        help="requests in flight; a list such as 1,2,4,8 measures each in turn "
        "(default: 1; with --rate, an optional cap)",
    )
    load.add_argument(
        "--rate",
        type=float,
        metavar="PER_SECOND",
        help="Poisson arrivals at this many requests per second (open loop)",
    )
    amount = load.add_mutually_exclusive_group()
    amount.add_argument(
        "--requests",
        type=int,
        metavar="N",
        help="measured requests per target and load point (default: 32)",
    )
    amount.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="measure for this long per target and load point instead",
    )
    load.add_argument(
        "--warmup",
        type=int,
        default=2,
        metavar="N",
        help="unmeasured requests per target first (default: 2)",
    )
    load.add_argument(
        "--rounds",
        type=int,
        default=4,
        metavar="K",
        help="interleaved blocks per target and load point (default: 4)",
    )
    load.add_argument(
        "--pause-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="quiet time before each block, so one target's idle-time work (a CPU vLLM "
        "worker busy-polls for 1 s after its last step) does not land on the next (default: 0)",
    )
    load.add_argument(
        "--probe-interval-ms",
        type=float,
        metavar="MS",
        help="also send a small text-only probe this often and report its latency",
    )
    load.add_argument("--probe-max-tokens", type=int, default=8, metavar="N")
    load.add_argument(
        "--slo",
        dest="slos",
        action="append",
        default=[],
        type=_parsed(parse_slo),
        metavar="METRIC=MS",
        help=f"objective for goodput, one of {', '.join(sorted(SLO_METRICS))} (repeatable)",
    )
    load.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="per-request timeout (default: 300)",
    )

    out = parser.add_argument_group("output")
    out.add_argument(
        "--out", type=Path, metavar="DIR", help="write results.json, results.md and PNG plots here"
    )
    out.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """Validated settings; a :class:`BenchUsageError` for combinations that cannot work."""
    targets = _targets(args.targets)
    names = [target.name for target in targets]
    if len(set(names)) != len(names):
        raise BenchUsageError("target names must differ")
    if args.baseline is not None and args.baseline not in names:
        raise BenchUsageError(f"--baseline {args.baseline!r} is not one of the targets")
    if args.workload == "directory" and args.image_dir is None:
        raise BenchUsageError("--workload directory needs --image-dir")
    if args.image_dir is not None and not args.image_dir.is_dir():
        raise BenchUsageError(f"--image-dir {args.image_dir}: not a directory")
    for option, value, least in (("--max-tokens", args.max_tokens, 1),
                                 ("--images-per-request", args.images_per_request, 1),
                                 ("--rounds", args.rounds, 1), ("--warmup", args.warmup, 0),
                                 ("--probe-max-tokens", args.probe_max_tokens, 1)):  # fmt: skip
        if value < least:
            raise BenchUsageError(f"{option} must be at least {least}")
    for option, value in (("--rate", args.rate), ("--duration", args.duration),
                          ("--probe-interval-ms", args.probe_interval_ms),
                          ("--timeout", args.timeout)):  # fmt: skip
        _check_positive(option, value)
    _check_non_negative("--pause-ms", args.pause_ms)
    if args.requests is not None and args.requests < 1:
        raise BenchUsageError("--requests must be at least 1")
    if not 0 <= args.text_fraction <= 1:
        raise BenchUsageError("--text-fraction must be between 0 and 1")
    if args.rate is not None and args.concurrency is not None and len(args.concurrency) > 1:
        raise BenchUsageError("with --rate, --concurrency is one cap, not a list")
    requests = args.requests if args.duration is None else None
    if requests is None and args.duration is None:
        requests = 32
    concurrencies: list[int | None]
    if args.rate is not None:
        concurrencies = [args.concurrency[0] if args.concurrency else None]
    else:
        concurrencies = list(args.concurrency or [1])
    _check_request_total(args.warmup, requests, len(concurrencies))
    workload = WorkloadSettings(
        kind=args.workload,
        image_sizes=tuple(args.image_sizes or [(640, 480)]),
        image_dir=args.image_dir,
        images_per_request=args.images_per_request,
        image_prompt=args.prompt,
        text_prompt=args.text_prompt,
        text_fraction=args.text_fraction,
        seed=args.seed,
    )
    run = RunSettings(
        requests=requests,
        duration_s=args.duration,
        rounds=args.rounds,
        warmup=args.warmup,
        probe_interval_s=None if args.probe_interval_ms is None else args.probe_interval_ms / 1000,
        seed=args.seed,
        pause_s=args.pause_ms / 1000,
    )
    return BenchSettings(
        targets=targets,
        workload=workload,
        run=run,
        points=[LoadPoint(concurrency, args.rate) for concurrency in concurrencies],
        baseline=args.baseline,
        model=args.model,
        max_tokens=args.max_tokens,
        ignore_eos=args.ignore_eos,
        probe_max_tokens=args.probe_max_tokens,
        probe_prompt=args.text_prompt,
        slos=list(args.slos),
        timeout_s=args.timeout,
        headers=dict(args.headers),
        progress=not args.no_progress,
    )


def _targets(texts: list[str]) -> list[Target]:
    """``--target`` values parsed; a bad one is a usage error before anything is sent."""
    try:
        return [parse_target(text) for text in texts]
    except ValueError as exc:
        raise BenchUsageError(f"--target: {exc}") from None


def _check_request_total(warmup: int, requests: int | None, points: int) -> None:
    """Requests of a target are encoded before the run: cap how many that may be."""
    total = warmup + (requests or 0) * points
    if total > COPY_STRIDE:
        raise BenchUsageError(
            f"at most {COPY_STRIDE} requests per target in all (--warmup + --requests "
            f"x load points = {total}); use --duration for longer runs"
        )


def prepare_out_dir(directory: Path) -> None:
    """Create ``directory`` (and parents) and check that files can be written there.

    Done before the run so that a mistyped ``--out`` costs a second, not a whole run.
    """
    if directory.exists() and not directory.is_dir():
        raise BenchUsageError(f"--out {directory}: exists and is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise BenchUsageError(f"--out {directory}: cannot write there ({reason})") from None


def failed_targets(result: BenchResult) -> list[str]:
    """``name`` (or ``name at <load point>``) for each target that completed no request
    at a load point; a whole-run failure of a target is named once."""
    failed = []
    for name in result.targets:
        points = [p.label for p in result.points if p.summaries[name].completed == 0]
        if len(points) == len(result.points):
            failed.append(name)
        else:
            failed += [f"{name} at {label}" for label in points]
    return failed


def write_outputs(result: BenchResult, markdown: str, directory: Path) -> list[Path]:
    """results.json, results.md, latency_cdf.png and, for a sweep, scaling_concurrency.png."""
    from qwenvl_serve.bench.plots import plot_concurrency_scaling, plot_latency_cdf

    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "results.json"
    json_path.write_text(json.dumps(result.to_json(), indent=1) + "\n")
    markdown_path = directory / "results.md"
    markdown_path.write_text(markdown)
    written = [json_path, markdown_path, plot_latency_cdf(result, directory / "latency_cdf.png")]
    if len({point.concurrency for point in result.points}) > 1:
        written.append(plot_concurrency_scaling(result, directory / "scaling_concurrency.png"))
    return written


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmark, print its Markdown and write the files asked for."""
    from qwenvl_serve.bench.report import render_markdown

    settings = settings_from_args(args)
    if args.out is not None:
        prepare_out_dir(args.out)
    argv = sys.argv[sys.argv.index("bench") + 1 :] if "bench" in sys.argv else []
    command = shlex.join(["qwenvl-serve", "bench", *argv])
    result = asyncio.run(run_bench(settings, command))
    markdown = render_markdown(result)
    print(markdown)
    if args.out is not None:
        for path in write_outputs(result, markdown, args.out):
            print(f"wrote {path}", file=sys.stderr)
    failed = failed_targets(result)
    if failed:
        print(f"qwenvl-serve: bench: no request completed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def register_bench(commands: Any) -> None:
    """Add ``bench`` to the CLI."""
    parser = commands.add_parser(
        "bench",
        help="load-test OpenAI-compatible servers and compare them",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_bench_arguments(parser)
    parser.set_defaults(handler=cmd_bench)
