"""Sliding windows and the limiter, with time passed in."""

from qwenvl_serve.access.config import ApiKeyConfig
from qwenvl_serve.access.limiter import (
    MAX_CONCURRENT,
    MAX_IN_FLIGHT,
    RPM,
    TPM,
    Limiter,
    Refusal,
    Ticket,
)
from qwenvl_serve.access.windows import SlidingWindow


def key(name="k", **limits):
    return ApiKeyConfig(name=name, key="k" * 16, **limits)


def admitted(decision):
    assert isinstance(decision, Ticket), decision
    return decision


def refused(decision, reason):
    assert isinstance(decision, Refusal), decision
    assert decision.reason == reason
    return decision


def test_window_forgets_after_its_span():
    window = SlidingWindow(60)
    window.add(0.0, 5)
    window.add(30.0, 7)
    assert window.total(59.9) == 12
    assert window.total(60.0) == 7
    assert window.total(90.0) == 0


def test_window_says_when_it_will_be_below_a_ceiling():
    window = SlidingWindow(60)
    window.add(0.0, 5)
    window.add(30.0, 7)
    assert window.seconds_until_below(10.0, 12) == 1  # already there: at least 1
    assert window.seconds_until_below(10.0, 7) == 50  # the first event expires at 60
    assert window.seconds_until_below(10.0, 0) == 80  # both expire by 90
    assert window.seconds_until_below(10.0, -5) == 80  # never enough: until empty


def test_rpm_refuses_the_fourth_request_in_a_minute_with_retry_after():
    limiter = Limiter([key(rpm=3)], max_in_flight=None)
    for second in (0.0, 10.0, 20.0):
        limiter.release(admitted(limiter.admit("k", 0, second)), 0, second)
    refusal = refused(limiter.admit("k", 0, 30.0), RPM)
    assert refusal.retry_after == 30  # the request at 0 leaves the window at 60
    admitted(limiter.admit("k", 0, 60.0))


def test_limits_are_per_key_and_unlimited_keys_pass():
    limiter = Limiter([key("a", rpm=1), key("b")], max_in_flight=None)
    admitted(limiter.admit("a", 0, 0.0))
    refused(limiter.admit("a", 0, 1.0), RPM)
    for _ in range(100):
        admitted(limiter.admit("b", 0, 1.0))
    admitted(limiter.admit("-", 0, 1.0))  # no key (auth off): only the instance limit


def test_max_concurrent_counts_requests_in_flight():
    limiter = Limiter([key(max_concurrent=2)], max_in_flight=None)
    first = admitted(limiter.admit("k", 0, 0.0))
    admitted(limiter.admit("k", 0, 0.0))
    assert refused(limiter.admit("k", 0, 0.0), MAX_CONCURRENT).retry_after == 1
    limiter.release(first, 0, 1.0)
    admitted(limiter.admit("k", 0, 1.0))


def test_max_in_flight_is_instance_wide_and_comes_first():
    limiter = Limiter([key("a", rpm=1), key("b")], max_in_flight=2)
    first = admitted(limiter.admit("a", 0, 0.0))
    admitted(limiter.admit("b", 0, 0.0))
    refused(limiter.admit("b", 0, 0.0), MAX_IN_FLIGHT)
    refused(limiter.admit("a", 0, 0.0), MAX_IN_FLIGHT)  # not charged to a's rpm
    limiter.release(first, 0, 0.0)
    assert limiter.in_flight == 1
    admitted(limiter.admit("b", 0, 0.0))


def test_a_refused_request_books_nothing():
    limiter = Limiter([key(rpm=2, max_concurrent=1)], max_in_flight=None)
    ticket = admitted(limiter.admit("k", 0, 0.0))
    refused(limiter.admit("k", 0, 0.0), MAX_CONCURRENT)
    limiter.release(ticket, 0, 0.0)
    admitted(limiter.admit("k", 0, 0.0))  # the refused one did not use the second rpm slot


def test_tpm_is_prechecked_from_max_tokens_and_charged_from_usage():
    limiter = Limiter([key(tpm=100)], max_in_flight=None)
    ticket = admitted(limiter.admit("k", 80, 0.0))
    refused(limiter.admit("k", 30, 1.0), TPM)  # 80 reserved + 30 > 100
    limiter.release(ticket, 40, 2.0)  # it used 40: the reservation is replaced
    admitted(limiter.admit("k", 30, 3.0))  # 40 + 30 <= 100
    refusal = refused(limiter.admit("k", 31, 3.0), TPM)  # 40 + 30 reserved + 31 > 100
    assert refusal.retry_after == 59  # the 40 tokens charged at 2.0 leave at 62.0


def test_tpm_lets_one_request_larger_than_the_budget_run_alone():
    limiter = Limiter([key(tpm=100)], max_in_flight=None)
    ticket = admitted(limiter.admit("k", 500, 0.0))
    refused(limiter.admit("k", 1, 0.0), TPM)
    limiter.release(ticket, 450, 10.0)
    assert refused(limiter.admit("k", 1, 11.0), TPM).retry_after == 59
    admitted(limiter.admit("k", 500, 70.0))


def test_release_is_idempotent():
    limiter = Limiter([key(max_concurrent=1)], max_in_flight=5)
    ticket = admitted(limiter.admit("k", 0, 0.0))
    limiter.release(ticket, 0, 0.0)
    limiter.release(ticket, 0, 0.0)
    assert limiter.in_flight == 0
    admitted(limiter.admit("k", 0, 0.0))
