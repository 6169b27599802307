"""What one benchmark run produced, in a shape that serializes to JSON. Pure functions."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qwenvl_serve.bench.compare import Comparison, compare
from qwenvl_serve.bench.machine import MachineInfo
from qwenvl_serve.bench.metrics import (
    RequestRecord,
    Summary,
    end_to_end,
    output_token_count,
    summarize,
    tpot,
    ttft,
)
from qwenvl_serve.bench.slo import Slo


@dataclass(frozen=True)
class PointResult:
    """All targets at one load point: summaries, probe summaries, ratios, per-request rows."""

    concurrency: int | None
    rate: float | None
    summaries: dict[str, Summary]
    probes: dict[str, Summary]
    comparisons: list[Comparison]
    probe_comparisons: list[Comparison]
    requests: dict[str, list[dict[str, Any]]]

    @property
    def label(self) -> str:
        """``concurrency 4``, ``rate 2/s``, or both."""
        parts = []
        if self.rate is not None:
            parts.append(f"Poisson {self.rate:g}/s")
        if self.concurrency is not None:
            parts.append(f"concurrency {self.concurrency}")
        return ", ".join(parts) or "default load"


@dataclass(frozen=True)
class BenchResult:
    """One `qwenvl-serve bench` run."""

    command: str
    started_at: str
    machine: MachineInfo
    settings: dict[str, Any]
    targets: dict[str, str]
    baseline: str
    points: list[PointResult]

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``json.dumps``."""
        return dataclasses.asdict(self)


def request_row(record: RequestRecord) -> dict[str, Any]:
    """The per-request numbers kept in the JSON (enough for CDF plots and re-analysis)."""
    row: dict[str, Any] = {
        "index": record.index,
        "label": record.label,
        "probe": record.probe,
        "status": record.status,
        "error": record.error,
        "e2e_ms": end_to_end(record) * 1000,
        "prompt_tokens": record.prompt_tokens,
        "output_tokens": record.output_tokens,
        "events": record.events,
    }
    if record.ok:
        row["ttft_ms"] = ttft(record) * 1000
        row["tpot_ms"] = tpot(record) * 1000 if output_token_count(record) > 1 else None
    return row


def point_result(
    concurrency: int | None,
    rate: float | None,
    measured: dict[str, tuple[Sequence[RequestRecord], Sequence[RequestRecord], float]],
    baseline: str,
    slos: Sequence[Slo] = (),
) -> PointResult:
    """Summaries and ratios from each target's (records, probe records, seconds)."""
    summaries = {
        name: summarize(main, seconds, slos) for name, (main, _, seconds) in measured.items()
    }
    probes = {
        name: summarize(probe, seconds) for name, (_, probe, seconds) in measured.items() if probe
    }
    comparisons = [
        compare(name, summary, baseline, summaries[baseline])
        for name, summary in summaries.items()
        if name != baseline
    ]
    probe_comparisons = [
        compare(name, summary, baseline, probes[baseline])
        for name, summary in probes.items()
        if name != baseline and baseline in probes
    ]
    requests = {
        name: [request_row(record) for record in [*main, *probe]]
        for name, (main, probe, _) in measured.items()
    }
    return PointResult(
        concurrency, rate, summaries, probes, comparisons, probe_comparisons, requests
    )
