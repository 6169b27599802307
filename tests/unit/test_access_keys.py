"""Where keys are read from, and matching that does the same work for every wrong key."""

import hashlib
import secrets
import sys

import pytest

from qwenvl_serve.access.keys import (
    StoredKey,
    bearer_token,
    match_key,
    presented_key,
    stored_key,
    without_query_key,
)

RIGHT = b"right-key-0123456789abcdef"
KEYS = (
    StoredKey("first", hashlib.sha256(b"first-key-0123456789").digest()),
    StoredKey("right", hashlib.sha256(RIGHT).digest()),
    StoredKey("third", hashlib.sha256(b"third-key-0123456789").digest()),
)
WRONG_KEYS = [
    None,  # missing
    b"",  # empty
    b"x",  # short
    RIGHT[:-1],  # a prefix of the right key
    RIGHT[:-1] + b"g",  # one byte off at the end
    b"s" + RIGHT[1:],  # one byte off at the start
    RIGHT + b"-and-more",  # longer
    b"\xff\xfe not ascii",  # malformed
    b"x" * 4096,  # huge
]


def test_the_right_key_matches_by_name():
    assert match_key(RIGHT, KEYS) == KEYS[1]


@pytest.mark.parametrize("presented", WRONG_KEYS)
def test_wrong_keys_match_nothing(presented):
    assert match_key(presented, KEYS) is None


def traced_run(presented):
    """The lines executed inside match_key, and every comparison it made."""
    comparisons = []

    def compare(a: bytes, b: bytes) -> bool:
        comparisons.append((len(a), b))
        return secrets.compare_digest(a, b)

    lines = []

    def tracer(frame, event, arg):
        if frame.f_code.co_filename.endswith("access/keys.py"):
            if event == "line":
                lines.append((frame.f_code.co_name, frame.f_lineno))
            return tracer
        return None

    sys.settrace(tracer)
    try:
        result = match_key(presented, KEYS, compare=compare)
    finally:
        sys.settrace(None)
    return result, lines, comparisons


def test_every_wrong_key_takes_the_same_code_path():
    runs = [traced_run(presented) for presented in WRONG_KEYS]
    reference_result, reference_lines, reference_comparisons = runs[0]
    assert reference_result is None
    assert reference_lines  # the trace saw the function run
    # Every configured digest is compared, in order, with a full 32-byte digest.
    assert reference_comparisons == [(32, key.digest) for key in KEYS]
    for result, lines, comparisons in runs[1:]:
        assert result is None
        assert lines == reference_lines
        assert comparisons == reference_comparisons


def test_the_right_key_is_still_compared_with_every_configured_key():
    result, _, comparisons = traced_run(RIGHT)
    assert result == KEYS[1]
    assert comparisons == [(32, key.digest) for key in KEYS]  # no early exit on a match


def test_stored_key_reads_the_config_digest_form():
    digest = hashlib.sha256(RIGHT).hexdigest()
    assert stored_key("right", f"sha256:{digest}") == KEYS[1]


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (b"Bearer abc", b"abc"),
        (b"bearer   abc  ", b"abc"),
        (b"BEARER abc", b"abc"),
        (b"Basic abc", None),
        (b"Bearer", None),
        (b"Bearer ", None),
        (b"abc", None),
        (None, None),
    ],
)
def test_bearer_token(header, token):
    assert bearer_token(header) == token


def test_key_sources_in_order():
    both = [(b"authorization", b"Bearer from-bearer"), (b"x-goog-api-key", b"from-goog")]
    assert presented_key(both, b"key=from-query", True) == b"from-bearer"
    assert presented_key(both[1:], b"key=from-query", True) == b"from-goog"
    assert presented_key([], b"alt=sse&key=from%2Bquery", True) == b"from+query"
    assert presented_key([], b"key=%E2%82%AC%FF", True) == "€\ufffd".encode()  # no crash


def test_query_keys_only_where_allowed():
    assert presented_key([], b"key=from-query", False) is None
    assert presented_key([], b"", True) is None
    assert presented_key([], b"key=", True) is None
    assert presented_key([(b"x-goog-api-key", b"")], b"", True) is None


def test_the_query_key_is_removed_before_the_request_goes_on():
    assert without_query_key(b"alt=sse&key=secret") == b"alt=sse"
    assert without_query_key(b"%6Bey=secret&alt=sse") == b"alt=sse"
    assert without_query_key(b"key=a&key=b") == b""
    assert without_query_key(b"monkey=1") == b"monkey=1"
