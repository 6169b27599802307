"""PNG plots with matplotlib: latency CDFs and metrics against load or image size.

Uses matplotlib's object API (``Figure``) rather than ``pyplot``, so no global figure
state and no display is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from qwenvl_serve.bench.metrics import Distribution
from qwenvl_serve.bench.results import BenchResult


@dataclass(frozen=True)
class Panel:
    """One subplot: a y-axis title and named series of y values (``None`` = no point)."""

    y_label: str
    series: dict[str, list[float | None]]
    log_y: bool = False


def plot_panels(
    path: Path, title: str, x_label: str, x_values: Sequence[float], panels: Sequence[Panel]
) -> Path:
    """Side-by-side line plots sharing one x axis; written to ``path`` as PNG."""
    figure = Figure(figsize=(5.0 * len(panels), 4.0), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        for name, values in panel.series.items():
            points = [(x, y) for x, y in zip(x_values, values, strict=True) if y is not None]
            ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=name)
        ax.set_xlabel(x_label)
        ax.set_ylabel(panel.y_label)
        if panel.log_y:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    figure.suptitle(title)
    figure.savefig(path, dpi=110)
    return path


def plot_latency_cdf(result: BenchResult, path: Path) -> Path:
    """Empirical CDFs of TTFT and end-to-end latency, one line per target and load point."""
    figure = Figure(figsize=(10.0, 4.0), layout="constrained")
    ttft_ax, e2e_ax = figure.subplots(1, 2)
    for point in result.points:
        for name, rows in point.requests.items():
            label = name if len(result.points) == 1 else f"{name}, {point.label}"
            for ax, key in ((ttft_ax, "ttft_ms"), (e2e_ax, "e2e_ms")):
                values = sorted(r[key] for r in rows if not r["probe"] and r.get("ttft_ms"))
                if values:
                    fractions = [0.0] + [(i + 1) / len(values) for i in range(len(values))]
                    ax.step([values[0], *values], fractions, where="post", label=label)
    for ax, title in ((ttft_ax, "time to first token (ms)"), (e2e_ax, "end-to-end latency (ms)")):
        ax.set_xlabel(title)
        ax.set_ylabel("fraction of requests")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    figure.suptitle("Latency CDF")
    figure.savefig(path, dpi=110)
    return path


def _stat(distribution: Distribution | None, name: str) -> float | None:
    return None if distribution is None else float(getattr(distribution, name))


def plot_concurrency_scaling(result: BenchResult, path: Path) -> Path:
    """Throughput and latency against concurrency, one line per target."""
    points = [point for point in result.points if point.concurrency is not None]
    x_values = [float(point.concurrency or 0) for point in points]
    names = list(result.targets)

    def series(metric: str, stat: str | None = None) -> dict[str, list[float | None]]:
        out: dict[str, list[float | None]] = {}
        for name in names:
            values: list[float | None] = []
            for point in points:
                summary = point.summaries[name]
                value = getattr(summary, metric)
                values.append(value if stat is None else _stat(value, stat))
            out[name if stat is None else f"{name} {metric.upper()} {stat}"] = values
        return out

    latency = {**series("ttft", "p50"), **series("e2e", "p50"), **series("e2e", "p99")}
    panels = [
        Panel("requests/s", series("request_throughput")),
        Panel("output tokens/s", series("output_token_throughput")),
        Panel("latency (ms)", latency, log_y=True),
    ]
    return plot_panels(
        path, "Throughput and latency vs concurrency", "concurrency", x_values, panels
    )
