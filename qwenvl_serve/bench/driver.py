"""One benchmark run from settings to results: prepare, warm up, measure, summarize."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NoReturn

import httpx
from tqdm import tqdm

from qwenvl_serve.bench.errors import BenchUsageError
from qwenvl_serve.bench.machine import read_machine
from qwenvl_serve.bench.metrics import RequestRecord
from qwenvl_serve.bench.results import BenchResult, point_result
from qwenvl_serve.bench.runner import (
    Cursor,
    LoadPoint,
    Prepared,
    RunSettings,
    Target,
    TargetLoad,
    run_point,
    warm_up,
)
from qwenvl_serve.bench.slo import Slo
from qwenvl_serve.bench.workloads import (
    DEFAULT_TEXT_PROMPT,
    RequestSpec,
    WorkloadSettings,
    chat_body,
    probe_request,
    request_factory,
    request_number,
)

PROBE_POOL = 4096  # probes prepared up front; later ones are made as they are sent


@dataclass(frozen=True)
class BenchSettings:
    """Everything a run needs; the command line fills it in."""

    targets: list[Target]
    workload: WorkloadSettings
    run: RunSettings
    points: list[LoadPoint]
    baseline: str | None = None
    model: str | None = None
    max_tokens: int = 64
    ignore_eos: bool = False
    probe_max_tokens: int = 8
    probe_prompt: str = DEFAULT_TEXT_PROMPT
    slos: list[Slo] = field(default_factory=list)
    timeout_s: float = 300.0
    duration_pool: int = 256
    headers: dict[str, str] = field(default_factory=dict)
    progress: bool = True


def workload_size(settings: BenchSettings) -> int:
    """Requests to prepare per target: warm-up plus every measured request, or a pool."""
    run = settings.run
    if run.requests is not None:
        return run.warmup + run.requests * len(settings.points)
    return run.warmup + settings.duration_pool


def prepare_loads(
    settings: BenchSettings, model: str, factory: Callable[[int], RequestSpec]
) -> list[TargetLoad]:
    """Each target's own copy of the workload, encoded once before any clock starts.

    With ``--duration`` nobody knows how many requests a target will take: a pool is
    encoded up front and the runner makes more as needed (``TargetLoad.make``), each
    one new. Request ``i`` has the same shape for every target, as with a count.
    """
    copies = len(settings.targets)
    timed = settings.run.requests is None
    probes = PROBE_POOL if settings.run.probe_interval_s else 0
    loads = []
    for copy in range(copies):

        def make(index: int, copy: int = copy) -> Prepared:
            spec = factory(request_number(copy, index, copies))
            return Prepared(
                spec.label, chat_body(spec, model, settings.max_tokens, settings.ignore_eos)
            )

        def make_probe(index: int, copy: int = copy) -> Prepared:
            number = request_number(copy, index, copies)
            spec = probe_request(settings.workload.seed, number, settings.probe_prompt)
            body = chat_body(spec, model, settings.probe_max_tokens, settings.ignore_eos)
            return Prepared("probe", body)

        requests = [make(index) for index in range(workload_size(settings))]
        loads.append(
            TargetLoad(
                settings.targets[copy],
                requests,
                [make_probe(index) for index in range(probes)],
                make=make if timed else None,
                make_probe=make_probe if probes else None,
            )
        )
    return loads


async def discover_model(client: httpx.AsyncClient, target: Target) -> str:
    """The first model id the target serves (``GET /v1/models``)."""
    base = target.base_url.rstrip("/")
    url = f"{base}/models" if base.endswith("/v1") else f"{base}/v1/models"
    try:
        response = await client.get(url)
        response.raise_for_status()
        return str(response.json()["data"][0]["id"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
        raise BenchUsageError(
            f"cannot learn the model name from {url}; check the URL or give --model"
        ) from None


def _progress_bar(settings: BenchSettings) -> tqdm[NoReturn]:
    run = settings.run
    total = None
    if run.requests is not None:
        total = run.requests * len(settings.points) * len(settings.targets)
    return tqdm(
        total=total, unit="req", desc="bench", file=sys.stderr, disable=not settings.progress
    )


async def run_bench(
    settings: BenchSettings, command: str, transport: httpx.AsyncBaseTransport | None = None
) -> BenchResult:
    """Run every load point against every target and summarize.

    ``transport`` replaces the network (tests pass an in-process ASGI app).
    """
    started = datetime.now(UTC).isoformat(timespec="seconds")
    baseline = settings.baseline or settings.targets[0].name
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    timeout = httpx.Timeout(settings.timeout_s)
    async with httpx.AsyncClient(
        timeout=timeout, limits=limits, headers=settings.headers, transport=transport
    ) as client:
        model = settings.model or await discover_model(client, settings.targets[0])
        try:
            factory = request_factory(settings.workload)
        except ValueError as exc:  # e.g. an image directory without images
            raise BenchUsageError(str(exc)) from None
        cursors = [Cursor(load) for load in prepare_loads(settings, model, factory)]
        first_concurrency = settings.points[0].concurrency or 1
        await warm_up(client, cursors, settings.run.warmup, first_concurrency)
        points = []
        with _progress_bar(settings) as bar:

            def advance(_: RequestRecord) -> None:
                bar.update(1)

            for point in settings.points:
                measured = await run_point(client, cursors, point, settings.run, advance)
                per_target: dict[
                    str, tuple[Sequence[RequestRecord], Sequence[RequestRecord], float]
                ] = {name: (m.records, m.probes, m.seconds) for name, m in measured.items()}
                points.append(
                    point_result(point.concurrency, point.rate, per_target, baseline, settings.slos)
                )
    return BenchResult(
        command=command,
        started_at=started,
        machine=read_machine(),
        settings=_settings_record(settings, model),
        targets={target.name: target.base_url for target in settings.targets},
        baseline=baseline,
        points=points,
    )


def _settings_record(settings: BenchSettings, model: str) -> dict[str, object]:
    workload = settings.workload
    return {
        "model": model,
        "workload": workload.kind,
        "image_sizes": [f"{w}x{h}" for w, h in workload.image_sizes],
        "image_dir": None if workload.image_dir is None else str(workload.image_dir),
        "images_per_request": workload.images_per_request,
        "text_fraction": workload.text_fraction,
        "max_tokens": settings.max_tokens,
        "ignore_eos": settings.ignore_eos,
        "requests": settings.run.requests,
        "duration_s": settings.run.duration_s,
        "rounds": settings.run.rounds,
        "warmup": settings.run.warmup,
        "probe_interval_s": settings.run.probe_interval_s,
        "pause_s": settings.run.pause_s,
        "probe_max_tokens": settings.probe_max_tokens,
        "seed": workload.seed,
        "slos": [f"{slo.metric}={slo.limit_ms:g}" for slo in settings.slos],
    }
