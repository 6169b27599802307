"""Latency and throughput metrics from per-request event timelines. Pure functions.

Definitions follow vLLM's own ``vllm bench serve`` so that the two agree:

- TTFT: from sending the request to the first streamed chunk that carries ``choices``.
- ITL: the gaps between consecutive such chunks.
- TPOT: (last chunk - first chunk) / (output tokens - 1); 0 for one-token answers.
- End-to-end latency: from sending the request to the end of the response stream.

All times are seconds from one monotonic clock; distributions are reported in ms.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from qwenvl_serve.bench.slo import Slo


@dataclass(frozen=True)
class RequestRecord:
    """What happened to one request, as seen by the client."""

    target: str
    index: int
    label: str
    start: float
    end: float
    status: int | None
    token_times: tuple[float, ...] = ()
    error: str | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    events: int = 0
    probe: bool = False

    @property
    def ok(self) -> bool:
        """Answered 200 with at least one token chunk and no error mid-stream."""
        return self.status == 200 and self.error is None and bool(self.token_times)


def ttft(record: RequestRecord) -> float:
    """Seconds from sending to the first token chunk."""
    return record.token_times[0] - record.start


def inter_token_latencies(record: RequestRecord) -> list[float]:
    """Seconds between consecutive token chunks."""
    times = record.token_times
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def output_token_count(record: RequestRecord) -> int:
    """Generated tokens: the server's usage count, else one per token chunk."""
    if record.output_tokens is not None:
        return record.output_tokens
    return len(record.token_times)


def tpot(record: RequestRecord) -> float:
    """Seconds per output token after the first; 0 when there is at most one token."""
    tokens = output_token_count(record)
    if tokens <= 1:
        return 0.0
    return (record.token_times[-1] - record.token_times[0]) / (tokens - 1)


def end_to_end(record: RequestRecord) -> float:
    """Seconds from sending the request to the end of its response."""
    return record.end - record.start


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct``-th percentile with linear interpolation (numpy's default method)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile {pct} is outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Distribution:
    """Mean and percentiles of one metric, in milliseconds."""

    count: int
    mean: float
    p50: float
    p90: float
    p99: float


def distribution_ms(seconds: Sequence[float]) -> Distribution | None:
    """Summary in ms of values given in seconds; ``None`` when there are none."""
    if not seconds:
        return None
    ms = [value * 1000 for value in seconds]
    return Distribution(
        count=len(ms),
        mean=sum(ms) / len(ms),
        p50=percentile(ms, 50),
        p90=percentile(ms, 90),
        p99=percentile(ms, 99),
    )


def meets_slos(record: RequestRecord, slos: Iterable[Slo]) -> bool:
    """Whether a request succeeded and stayed within every objective."""
    if not record.ok:
        return False
    measured_ms = {
        "ttft_ms": ttft(record) * 1000,
        "tpot_ms": tpot(record) * 1000,
        "e2e_ms": end_to_end(record) * 1000,
    }
    return all(measured_ms[slo.metric] <= slo.limit_ms for slo in slos)


def error_key(record: RequestRecord) -> str:
    """How a failed request failed: its HTTP status, else the client-side error kind."""
    if record.status is not None and record.status != 200:
        return str(record.status)
    return record.error or "no_tokens"


@dataclass(frozen=True)
class Summary:
    """Everything reported for one target (or its probes) at one load point."""

    requests: int
    completed: int
    failed: int
    errors: dict[str, int]
    duration_s: float
    request_throughput: float
    output_token_throughput: float
    prompt_tokens_mean: float | None
    output_tokens_mean: float | None
    events_mean: float | None
    ttft: Distribution | None
    tpot: Distribution | None
    itl: Distribution | None
    e2e: Distribution | None
    goodput: float | None = None
    slo_attainment: float | None = None
    slos: list[Slo] = field(default_factory=list)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(
    records: Sequence[RequestRecord], duration_s: float, slos: Sequence[Slo] = ()
) -> Summary:
    """Aggregate the records of one target measured over ``duration_s`` seconds."""
    if duration_s <= 0:
        raise ValueError("duration must be positive")
    done = [record for record in records if record.ok]
    errors = Counter(error_key(record) for record in records if not record.ok)
    output_tokens = [output_token_count(record) for record in done]
    prompt_tokens = [r.prompt_tokens for r in done if r.prompt_tokens is not None]
    good = sum(meets_slos(record, slos) for record in records) if slos else None
    return Summary(
        requests=len(records),
        completed=len(done),
        failed=len(records) - len(done),
        errors=dict(sorted(errors.items())),
        duration_s=duration_s,
        request_throughput=len(done) / duration_s,
        output_token_throughput=sum(output_tokens) / duration_s,
        prompt_tokens_mean=_mean([float(tokens) for tokens in prompt_tokens]),
        output_tokens_mean=_mean([float(tokens) for tokens in output_tokens]),
        events_mean=_mean([float(record.events) for record in done]),
        ttft=distribution_ms([ttft(record) for record in done]),
        tpot=distribution_ms([tpot(record) for record in done if output_token_count(record) > 1]),
        itl=distribution_ms([gap for record in done for gap in inter_token_latencies(record)]),
        e2e=distribution_ms([end_to_end(record) for record in done]),
        goodput=None if good is None else good / duration_s,
        slo_attainment=None if good is None or not records else good / len(records),
        slos=list(slos),
    )
