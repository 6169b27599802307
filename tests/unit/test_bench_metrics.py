"""Metric computations from synthetic event timelines: TTFT, ITL, TPOT, percentiles, goodput."""

import math

import numpy as np
import pytest

from qwenvl_serve.bench.compare import compare, ratio
from qwenvl_serve.bench.metrics import (
    RequestRecord,
    distribution_ms,
    end_to_end,
    error_key,
    inter_token_latencies,
    meets_slos,
    output_token_count,
    percentile,
    summarize,
    tpot,
    ttft,
)
from qwenvl_serve.bench.slo import Slo, parse_slo


def record(start=10.0, tokens=(10.1, 10.12, 10.15, 10.19), end=None, status=200, **kw):
    return RequestRecord(
        target=kw.pop("target", "a"),
        index=kw.pop("index", 0),
        label="x",
        start=start,
        end=end if end is not None else (tokens[-1] + 0.001 if tokens else start + 0.01),
        status=status,
        token_times=tuple(tokens),
        **kw,
    )


def test_ttft_is_the_time_to_the_first_token_chunk():
    assert ttft(record()) == pytest.approx(0.1)


def test_itl_are_the_gaps_between_token_chunks():
    assert inter_token_latencies(record()) == pytest.approx([0.02, 0.03, 0.04])
    assert inter_token_latencies(record(tokens=(10.5,))) == []


def test_tpot_spreads_the_decode_time_over_the_tokens_after_the_first():
    # 4 chunks but the server says 7 tokens (several tokens in some chunks): 0.09 s / 6
    assert tpot(record(output_tokens=7)) == pytest.approx(0.09 / 6)
    # without a usage count, one token per chunk: 0.09 s / 3
    assert tpot(record()) == pytest.approx(0.03)


def test_tpot_is_zero_for_one_token_answers():
    assert tpot(record(tokens=(10.2,), output_tokens=1)) == 0.0


def test_end_to_end_runs_to_the_end_of_the_stream():
    assert end_to_end(record(end=10.5)) == pytest.approx(0.5)


def test_output_tokens_prefer_the_usage_count():
    assert output_token_count(record(output_tokens=9)) == 9
    assert output_token_count(record()) == 4


@pytest.mark.parametrize("pct", [0, 1, 10, 50, 90, 99, 100])
def test_percentile_matches_numpy_linear_interpolation(pct):
    values = [5.0, 1.0, 9.5, 3.25, 7.0, 2.0, 8.0]
    assert percentile(values, pct) == pytest.approx(float(np.percentile(values, pct)))


def test_percentile_of_one_value_and_bad_inputs():
    assert percentile([4.0], 99) == 4.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 101)


def test_distribution_is_in_milliseconds():
    dist = distribution_ms([0.1, 0.2, 0.3, 0.4])
    assert dist is not None
    assert dist.count == 4
    assert dist.mean == pytest.approx(250)
    assert dist.p50 == pytest.approx(250)
    assert dist.p99 == pytest.approx(397)
    assert distribution_ms([]) is None


def test_failed_requests_are_counted_by_status_or_error_kind():
    assert error_key(record(status=400, tokens=())) == "400"
    assert error_key(record(status=None, tokens=(), error="timeout")) == "timeout"
    assert error_key(record(tokens=())) == "no_tokens"
    assert error_key(record(error="stream_error")) == "stream_error"


def test_summary_of_a_timeline():
    records = [
        record(start=0.0, tokens=(0.1, 0.2, 0.3), end=0.31, prompt_tokens=100, output_tokens=3),
        record(start=0.5, tokens=(0.8, 0.9, 1.0), end=1.01, prompt_tokens=100, output_tokens=3),
        record(start=1.0, tokens=(), status=503),
        record(start=1.0, tokens=(), status=None, error="connection"),
    ]
    summary = summarize(records, duration_s=2.0)
    assert (summary.requests, summary.completed, summary.failed) == (4, 2, 2)
    assert summary.errors == {"503": 1, "connection": 1}
    assert summary.request_throughput == pytest.approx(1.0)
    assert summary.output_token_throughput == pytest.approx(3.0)
    assert summary.prompt_tokens_mean == pytest.approx(100)
    assert summary.ttft is not None
    assert summary.ttft.mean == pytest.approx(200)  # 100 ms and 300 ms
    assert summary.tpot is not None
    assert summary.tpot.mean == pytest.approx(100)
    assert summary.itl is not None
    assert summary.itl.count == 4
    assert summary.e2e is not None
    assert summary.e2e.p50 == pytest.approx(410)
    assert summary.goodput is None


def test_goodput_counts_only_requests_within_every_slo():
    fast = record(start=0.0, tokens=(0.05, 0.06, 0.07), end=0.08)  # ttft 50, tpot 10
    slow_first = record(start=0.0, tokens=(0.6, 0.61, 0.62), end=0.63)  # ttft 600
    slow_decode = record(start=0.0, tokens=(0.05, 0.25, 0.45), end=0.5)  # tpot 200
    failed = record(start=0.0, tokens=(), status=500)
    slos = [parse_slo("ttft_ms=500"), parse_slo("tpot_ms=50")]
    assert meets_slos(fast, slos)
    assert not meets_slos(slow_first, slos)
    assert not meets_slos(slow_decode, slos)
    assert not meets_slos(failed, slos)
    summary = summarize([fast, slow_first, slow_decode, failed], duration_s=2.0, slos=slos)
    assert summary.goodput == pytest.approx(0.5)
    assert summary.slo_attainment == pytest.approx(0.25)
    e2e_only = summarize([fast, slow_first], 1.0, [Slo("e2e_ms", 100)])
    assert e2e_only.goodput == pytest.approx(1.0)


def test_summary_needs_a_positive_duration():
    with pytest.raises(ValueError, match="positive"):
        summarize([record()], 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ttft_ms", "expected METRIC=MILLISECONDS"),
        ("latency=5", "unknown metric 'latency'"),
        ("tpot_ms=fast", "not a number"),
        ("e2e_ms=-1", "positive"),
        ("e2e_ms=nan", "positive"),
    ],
)
def test_bad_slos_are_refused_with_a_clear_message(text, message):
    with pytest.raises(ValueError, match=message):
        parse_slo(text)


def test_parse_slo():
    assert parse_slo(" tpot_ms = 50 ") == Slo("tpot_ms", 50.0)


def test_comparison_of_two_summaries():
    base = summarize([record(start=0.0, tokens=(0.1, 0.2), end=0.2, prompt_tokens=1000)], 1.0)
    cand = summarize([record(start=0.0, tokens=(0.105, 0.2), end=0.4, prompt_tokens=250)], 2.0)
    result = compare("cand", cand, "base", base)
    assert result.request_throughput == pytest.approx(0.5)
    assert result.ttft_p50_delta_ms == pytest.approx(5.0)
    assert result.prompt_tokens_mean == pytest.approx(0.25)
    assert result.e2e_mean == pytest.approx(2.0)
    assert ratio(1.0, 0.0) is None
    assert ratio(None, 2.0) is None
    assert not math.isnan(result.ttft_p50 or math.nan)
