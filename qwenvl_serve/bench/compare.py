"""Ratios between a target and the baseline it was measured against. Pure functions."""

from __future__ import annotations

from dataclasses import dataclass

from qwenvl_serve.bench.metrics import Distribution, Summary


@dataclass(frozen=True)
class Comparison:
    """``candidate / baseline`` for each headline metric (``None`` where undefined).

    ``ttft_p50_delta_ms`` is a difference, not a ratio: small fixed overheads read
    better in milliseconds than as a fraction of a latency that varies with load.
    """

    candidate: str
    baseline: str
    request_throughput: float | None
    output_token_throughput: float | None
    ttft_p50_delta_ms: float | None
    ttft_p50: float | None
    ttft_mean: float | None
    tpot_p50: float | None
    tpot_mean: float | None
    e2e_mean: float | None
    e2e_p99: float | None
    prompt_tokens_mean: float | None
    events_mean: float | None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or ``None`` if either is missing or the divisor is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def _stat(distribution: Distribution | None, name: str) -> float | None:
    return None if distribution is None else float(getattr(distribution, name))


def compare(
    candidate_name: str, candidate: Summary, baseline_name: str, baseline: Summary
) -> Comparison:
    """How ``candidate`` did relative to ``baseline`` under the same load."""
    ttft_p50 = _stat(candidate.ttft, "p50")
    base_ttft_p50 = _stat(baseline.ttft, "p50")
    delta = None if ttft_p50 is None or base_ttft_p50 is None else ttft_p50 - base_ttft_p50
    return Comparison(
        candidate=candidate_name,
        baseline=baseline_name,
        request_throughput=ratio(candidate.request_throughput, baseline.request_throughput),
        output_token_throughput=ratio(
            candidate.output_token_throughput, baseline.output_token_throughput
        ),
        ttft_p50_delta_ms=delta,
        ttft_p50=ratio(ttft_p50, base_ttft_p50),
        ttft_mean=ratio(_stat(candidate.ttft, "mean"), _stat(baseline.ttft, "mean")),
        tpot_p50=ratio(_stat(candidate.tpot, "p50"), _stat(baseline.tpot, "p50")),
        tpot_mean=ratio(_stat(candidate.tpot, "mean"), _stat(baseline.tpot, "mean")),
        e2e_mean=ratio(_stat(candidate.e2e, "mean"), _stat(baseline.e2e, "mean")),
        e2e_p99=ratio(_stat(candidate.e2e, "p99"), _stat(baseline.e2e, "p99")),
        prompt_tokens_mean=ratio(candidate.prompt_tokens_mean, baseline.prompt_tokens_mean),
        events_mean=ratio(candidate.events_mean, baseline.events_mean),
    )
