"""Retry policy: backoff with jitter, the server's Retry-After first."""

from datetime import UTC, datetime

import pytest

from qwenvl_serve.caption.retry import RETRYABLE_STATUSES, RetryPolicy, parse_retry_after

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("1", 1.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-3", 0.0),
        ("Sat, 21 Nov 2026 12:00:30 GMT", 30.0),
        ("Sat, 21 Nov 2026 11:59:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(header, seconds):
    assert parse_retry_after(header, NOW) == seconds


def test_retry_after_from_the_server_wins_over_backoff():
    policy = RetryPolicy(base_delay=0.5)
    assert policy.delay(attempts_made=4, retry_after=1.0, jitter=0.9) == 1.0


def test_retry_after_is_capped():
    assert RetryPolicy(max_retry_after=60).delay(1, retry_after=3600, jitter=0) == 60


def test_backoff_doubles_up_to_the_cap_and_jitter_spreads_its_upper_half():
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0)
    assert [policy.delay(n, None, jitter=1.0) for n in range(1, 6)] == [0.5, 1, 2, 4, 4]
    assert policy.delay(3, None, jitter=0.0) == 1.0


def test_attempts_are_bounded():
    policy = RetryPolicy(max_attempts=3)
    assert policy.should_retry(2)
    assert not policy.should_retry(3)


def test_only_overload_and_gateway_statuses_are_retried():
    assert {429, 503} <= RETRYABLE_STATUSES
    assert not {400, 401, 404, 413, 500} & RETRYABLE_STATUSES
