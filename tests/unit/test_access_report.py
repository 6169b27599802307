"""`qwenvl-serve usage` on a generated usage log."""

import json
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from qwenvl_serve.access.config import PricesConfig
from qwenvl_serve.access.report import (
    Totals,
    parse_entries,
    parse_since,
    render_table,
    summarize,
)
from qwenvl_serve.access.usage_log import usage_record
from qwenvl_serve.core.responses import Usage

REPO = Path(__file__).resolve().parents[2]
PRICES = PricesConfig(prompt_per_1k=0.25, completion_per_1k=1.0)
START = datetime(2026, 11, 1, 22, 0, tzinfo=UTC)


def generated_log(count: int = 300, seed: int = 7) -> list[dict[str, Any]]:
    """Records as the server writes them, with random keys, models, days and tokens."""
    rng = random.Random(seed)
    return [
        usage_record(
            at=START + timedelta(minutes=37 * i),
            request_id=f"r{i}",
            key_name=rng.choice(["mobile-app", "batch", "web"]),
            model=rng.choice(["qwen3-vl-8b", "qwen3-vl-4b"]),
            route="chat_completions",
            status=200,
            usage=Usage(rng.randrange(300, 4000), rng.randrange(0, 512)),
            images=rng.randrange(0, 3),
            latency_s=rng.random(),
            prices=PRICES,
        )
        for i in range(count)
    ]


def expected(records: list[dict[str, Any]], group_of) -> dict[str, tuple[int, int, int, float]]:
    """Totals computed straight from the records, independently of the report code."""
    sums: dict[str, list[float]] = {}
    for r in records:
        row = sums.setdefault(group_of(r), [0, 0, 0, 0.0])
        row[0] += 1
        row[1] += r["prompt_tokens"]
        row[2] += r["completion_tokens"]
        row[3] += r["prompt_tokens"] * 0.25 / 1000 + r["completion_tokens"] * 1.0 / 1000
    return {k: (int(v[0]), int(v[1]), int(v[2]), v[3]) for k, v in sums.items()}


def as_tuples(rows):
    return {g: (t.requests, t.prompt_tokens, t.completion_tokens, t.cost) for g, t in rows}


@pytest.mark.parametrize(
    ("by", "group_of"),
    [
        ("key", lambda r: r["key"]),
        ("model", lambda r: r["model"]),
        ("day", lambda r: r["time"][:10]),
    ],
)
def test_summary_totals_match_the_records(by, group_of):
    records = generated_log()
    entries, skipped = parse_entries(json.dumps(r) for r in records)
    assert skipped == 0
    got = as_tuples(summarize(entries, by))
    want = expected(records, group_of)
    assert got.keys() == want.keys()
    for group, (requests, prompt, completion, cost) in want.items():
        assert got[group][:3] == (requests, prompt, completion)
        assert got[group][3] == pytest.approx(cost)


def test_since_filters_by_time():
    records = generated_log()
    entries, _ = parse_entries(json.dumps(r) for r in records)
    since = START + timedelta(days=2)
    kept = [r for r in records if datetime.fromisoformat(r["time"]) >= since]
    assert 0 < len(kept) < len(records)
    rows = summarize(entries, "key", since)
    assert sum(t.requests for _, t in rows) == len(kept)
    assert sum(t.prompt_tokens for _, t in rows) == sum(r["prompt_tokens"] for r in kept)


def test_parse_since():
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("24h", now) == now - timedelta(hours=24)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since("2026-11-01T12:30+02:00", now) == datetime(2026, 11, 1, 10, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match=r"expected e\.g\."):
        parse_since("yesterday", now)


def test_lines_that_are_not_records_are_counted_and_skipped():
    good = json.dumps(generated_log(1)[0])
    lines = [good, "", "not json", "[]", '{"time": "never"}', '{"prompt_tokens": 5}', good]
    lines.append(json.dumps({**generated_log(1)[0], "prompt_tokens": "5"}))
    entries, skipped = parse_entries(lines)
    assert len(entries) == 2
    assert skipped == 5


def test_table_has_a_row_per_group_and_a_total():
    rows = [("a", Totals(2, 1000, 10, 0.5)), ("b", Totals(1, 234, 5, 0.25))]
    lines = render_table(rows, "key").splitlines()
    header = "key  requests  prompt tokens  completion tokens  total tokens  cost"
    assert lines[0].split() == header.split()
    assert lines[2].split() == ["a", "2", "1,000", "10", "1,010", "0.500000"]
    assert lines[3].split() == ["b", "1", "234", "5", "239", "0.250000"]
    assert lines[-1].split() == ["TOTAL", "3", "1,234", "15", "1,249", "0.750000"]
    assert len({len(line) for line in lines[:2]}) == 1  # aligned columns


def run_usage(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qwenvl_serve.cli", "usage", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )


def test_the_command_prints_correct_totals(tmp_path):
    records = generated_log()
    log = tmp_path / "usage.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = run_usage("--log", str(log), "--by", "model")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[2:]}
    want = expected(records, lambda r: r["model"])
    for model, (requests, prompt, completion, cost) in want.items():
        assert rows[model] == [
            f"{requests:,}",
            f"{prompt:,}",
            f"{completion:,}",
            f"{prompt + completion:,}",
            f"{cost:.6f}",
        ]
    total_prompt = sum(r["prompt_tokens"] for r in records)
    assert rows["TOTAL"][:2] == [f"{len(records):,}", f"{total_prompt:,}"]


def test_the_command_filters_with_since_and_groups_by_day(tmp_path):
    log = tmp_path / "usage.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in generated_log()))
    result = run_usage("--log", str(log), "--by", "day", "--since", "2026-11-03")
    assert result.returncode == 0, result.stderr
    days = [line.split()[0] for line in result.stdout.splitlines()[2:-2]]
    assert days[0] == "2026-11-03"
    assert days == sorted(days)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--log", "/nonexistent/usage.jsonl"), "cannot read usage log /nonexistent/usage.jsonl"),
        (("--log", "x", "--since", "soon"), "--since 'soon': expected e.g."),
    ],
)
def test_the_command_explains_bad_input_in_one_line(args, message):
    result = run_usage(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_undecodable_lines_are_skipped_and_a_huge_since_means_everything(tmp_path):
    records = generated_log()[:3]
    log = tmp_path / "usage.jsonl"
    log.write_bytes(
        b"\xff\xfe not text\n" + "".join(json.dumps(r) + "\n" for r in records).encode()
    )
    result = run_usage("--log", str(log), "--since", "9999999999d")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2].split()[:2] == ["TOTAL", "3"]
    assert "(1 lines were not usage records and were skipped)" in result.stdout
