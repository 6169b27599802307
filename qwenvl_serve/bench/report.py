"""Markdown tables of a benchmark run. Pure functions."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from qwenvl_serve.bench.compare import Comparison
from qwenvl_serve.bench.metrics import Distribution, Summary
from qwenvl_serve.bench.results import BenchResult, PointResult


def number(value: float | None, digits: int = 1) -> str:
    """``12.345`` -> ``12.3``; missing values as an en dash."""
    return "–" if value is None else f"{value:,.{digits}f}"


def times(value: float | None) -> str:
    """A ratio as ``0.98×``."""
    return "–" if value is None else f"{value:.3f}×"


def delta_ms(value: float | None) -> str:
    """A signed difference in milliseconds."""
    return "–" if value is None else f"{value:+.1f} ms"


def spread(distribution: Distribution | None) -> str:
    """``mean / p50 / p90 / p99`` in ms."""
    if distribution is None:
        return "–"
    stats = (distribution.mean, distribution.p50, distribution.p90, distribution.p99)
    return " / ".join(number(value) for value in stats)


def errors(summary: Summary) -> str:
    """``400: 3, timeout: 1`` or ``none``."""
    return ", ".join(f"{key}: {count}" for key, count in summary.errors.items()) or "none"


Row = tuple[str, Callable[[Summary], str], Callable[[Comparison], str] | None]

ROWS: list[Row] = [
    ("completed / failed", lambda s: f"{s.completed} / {s.failed}", None),
    ("errors by status", errors, None),
    ("requests/s", lambda s: number(s.request_throughput, 3),
     lambda c: times(c.request_throughput)),
    ("output tokens/s", lambda s: number(s.output_token_throughput),
     lambda c: times(c.output_token_throughput)),
    ("prompt tokens (mean)", lambda s: number(s.prompt_tokens_mean),
     lambda c: times(c.prompt_tokens_mean)),
    ("output tokens (mean)", lambda s: number(s.output_tokens_mean), None),
    ("TTFT ms mean / p50 / p90 / p99", lambda s: spread(s.ttft),
     lambda c: f"p50 {delta_ms(c.ttft_p50_delta_ms)} ({times(c.ttft_p50)})"),
    ("TPOT ms mean / p50 / p90 / p99", lambda s: spread(s.tpot),
     lambda c: f"p50 {times(c.tpot_p50)}"),
    ("ITL ms mean / p50 / p90 / p99", lambda s: spread(s.itl), None),
    ("E2E ms mean / p50 / p90 / p99", lambda s: spread(s.e2e),
     lambda c: f"mean {times(c.e2e_mean)}, p99 {times(c.e2e_p99)}"),
    ("stream events per request (mean)", lambda s: number(s.events_mean),
     lambda c: times(c.events_mean)),
    ("measured over (s)", lambda s: number(s.duration_s), None),
]  # fmt: skip

GOODPUT_ROW: Row = (
    "goodput requests/s (SLO attainment)",
    lambda s: f"{number(s.goodput, 3)} ({number((s.slo_attainment or 0) * 100)} %)",
    None,
)


def summary_table(
    summaries: dict[str, Summary], comparisons: Sequence[Comparison], rows: Sequence[Row]
) -> str:
    """Metrics down, targets across, then one ``candidate / baseline`` column per comparison."""
    names = list(summaries)
    header = ["metric", *names, *(f"{c.candidate} vs {c.baseline}" for c in comparisons)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for title, cell, versus in rows:
        cells = [title, *(cell(summaries[name]) for name in names)]
        cells += [versus(c) if versus else "" for c in comparisons]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def slo_text(summary: Summary) -> str:
    """``ttft_ms <= 500, tpot_ms <= 50``."""
    return ", ".join(f"{slo.metric} <= {slo.limit_ms:g}" for slo in summary.slos)


def point_markdown(point: PointResult) -> str:
    """The tables of one load point: the load itself, then the probes if any."""
    rows = list(ROWS)
    first = next(iter(point.summaries.values()))
    if first.slos:
        rows.append(GOODPUT_ROW)
    parts = [summary_table(point.summaries, point.comparisons, rows)]
    if first.slos:
        parts.append(f"Goodput counts requests that met every SLO: {slo_text(first)}.")
    if point.probes:
        probe_rows = [row for row in ROWS if row[0] not in {"prompt tokens (mean)"}]
        parts.append("Text-only probes sent during the load:")
        parts.append(summary_table(point.probes, point.probe_comparisons, probe_rows))
    return "\n\n".join(parts)


def scaling_markdown(points: Sequence[PointResult]) -> str:
    """One compact row per (load point, target): how the numbers move with load."""
    header = ["load", "target", "req/s", "out tok/s", "TTFT p50", "TTFT p99", "TPOT p50",
              "E2E p50", "E2E p99", "errors"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for point in points:
        for name, s in point.summaries.items():

            def stat(d: Distribution | None, field: str) -> str:
                return number(None if d is None else getattr(d, field))

            cells = [point.label, name, number(s.request_throughput, 3),
                     number(s.output_token_throughput), stat(s.ttft, "p50"), stat(s.ttft, "p99"),
                     stat(s.tpot, "p50"), stat(s.e2e, "p50"), stat(s.e2e, "p99"),
                     errors(s)]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nLatencies in ms."


def render_markdown(result: BenchResult) -> str:
    """The whole run as Markdown: what ran, where, then a table per load point."""
    targets = ", ".join(f"`{name}` = {url}" for name, url in result.targets.items())
    lines = [
        f"Command: `{result.command}`",
        "",
        f"Date: {result.started_at}. Machine: {result.machine.describe()}.",
        "",
        f"Targets: {targets}; ratios are against `{result.baseline}`.",
        "",
    ]
    if len(result.points) > 1:
        lines += [scaling_markdown(result.points), ""]
    for point in result.points:
        if len(result.points) > 1:
            lines += [f"#### {point.label}", ""]
        lines += [point_markdown(point), ""]
    return "\n".join(lines)
