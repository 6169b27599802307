"""Usage-log records and the background writer."""

import json
import threading
from datetime import UTC, datetime, timedelta, timezone

from qwenvl_serve.access.config import PricesConfig
from qwenvl_serve.access.usage_log import UsageLogWriter, usage_record
from qwenvl_serve.core.responses import Usage

AT = datetime(2026, 11, 21, 10, 30, 0, 123456, tzinfo=UTC)


def record(**overrides):
    fields = {
        "at": AT,
        "request_id": "req-1",
        "key_name": "mobile-app",
        "model": "qwen3-vl-tiny",
        "route": "chat_completions",
        "status": 200,
        "usage": Usage(1000, 500),
        "images": 2,
        "latency_s": 1.23456,
        "prices": PricesConfig(prompt_per_1k=0.5, completion_per_1k=1.5),
    }
    return usage_record(**{**fields, **overrides})


def test_record_fields_and_cost():
    assert record() == {
        "time": "2026-11-21T10:30:00.123Z",
        "request_id": "req-1",
        "key": "mobile-app",
        "model": "qwen3-vl-tiny",
        "route": "chat_completions",
        "status": 200,
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "images": 2,
        "latency_s": 1.2346,
        "cost": 1.25,
        "cache": None,
    }


def test_record_without_usage_costs_nothing_and_time_is_utc():
    plus_two = timezone(timedelta(hours=2))
    entry = record(usage=None, status=400, at=AT.astimezone(plus_two))
    assert (entry["prompt_tokens"], entry["completion_tokens"], entry["cost"]) == (0, 0, 0)
    assert entry["time"] == "2026-11-21T10:30:00.123Z"


def test_writer_appends_every_record_and_close_drains_the_queue(tmp_path):
    path = tmp_path / "deep" / "dir" / "usage.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text('{"earlier": true}\n')
    writer = UsageLogWriter(path)

    def submit_many(n: int) -> None:
        for i in range(250):
            writer.submit({"n": n, "i": i})

    submitters = [threading.Thread(target=submit_many, args=(n,)) for n in range(4)]
    for thread in submitters:
        thread.start()
    for thread in submitters:
        thread.join()
    writer.close()
    lines = path.read_text().splitlines()
    assert lines[0] == '{"earlier": true}'  # appended, never truncated
    written = [json.loads(line) for line in lines[1:]]
    assert len(written) == 1000
    assert {(r["n"], r["i"]) for r in written} == {(n, i) for n in range(4) for i in range(250)}
    writer.close()  # a second close is harmless
    writer.submit({"late": True})  # and records after close are dropped, not written
    assert len(path.read_text().splitlines()) == 1001


def test_writer_creates_missing_directories(tmp_path):
    path = tmp_path / "a" / "b" / "usage.jsonl"
    writer = UsageLogWriter(path)
    writer.submit({"x": 1})
    writer.close()
    assert path.read_text() == '{"x": 1}\n'
