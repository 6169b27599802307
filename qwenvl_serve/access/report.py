"""``qwenvl-serve usage``: totals and cost from a usage log, grouped by key, model or day.

The core (:func:`parse_entries`, :func:`summarize`, :func:`render_table`,
:func:`parse_since`) is pure; :func:`cmd_usage` only reads the file and prints.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from qwenvl_serve.errors import UserError

GroupBy = Literal["key", "model", "day"]
_RELATIVE = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
COLUMNS = ("requests", "prompt tokens", "completion tokens", "total tokens", "cost")


class UsageCommandError(UserError):
    """The usage log cannot be read, or an option is invalid."""

    exit_code = 2


@dataclass(frozen=True)
class UsageEntry:
    """The fields of one usage-log line that the summary adds up."""

    at: datetime
    key: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost: float

    def group(self, by: GroupBy) -> str:
        """The row this entry belongs to."""
        if by == "day":
            return self.at.astimezone(UTC).date().isoformat()
        return self.key if by == "key" else self.model


@dataclass(frozen=True)
class Totals:
    """Sums over a group of usage entries."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            requests=self.requests + other.requests,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost=self.cost + other.cost,
        )

    @classmethod
    def of(cls, entry: UsageEntry) -> Totals:
        """The totals of one entry."""
        return cls(1, entry.prompt_tokens, entry.completion_tokens, entry.cost)

    def cells(self) -> tuple[str, ...]:
        """The table cells, in :data:`COLUMNS` order."""
        total = self.prompt_tokens + self.completion_tokens
        counts = (self.requests, self.prompt_tokens, self.completion_tokens, total)
        return (*(f"{n:,}" for n in counts), f"{self.cost:.6f}")


def parse_since(text: str, now: datetime) -> datetime:
    """``30m``, ``24h``, ``7d`` (before ``now``) or an ISO date or time (UTC unless it says)."""
    relative = _RELATIVE.match(text.strip())
    if relative:
        amount, unit = int(relative.group(1)), _UNITS[relative.group(2)]
        try:
            return now - timedelta(**{unit: amount})
        except OverflowError:  # further back than datetime reaches: everything counts
            return datetime.min.replace(tzinfo=UTC)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r}: expected e.g. 30m, 24h, 7d, 2026-11-01 or 2026-11-01T12:00"
        ) from None
    return _aware(moment)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("not a token count")
    return value


def parse_entry(line: str) -> UsageEntry:
    """One usage-log line; ValueError when it is not one."""
    try:
        record: dict[str, Any] = json.loads(line)
        cost = record.get("cost", 0.0)
        if isinstance(cost, bool) or not isinstance(cost, int | float):
            raise ValueError("cost is not a number")
        return UsageEntry(
            at=_aware(datetime.fromisoformat(record["time"])),
            key=str(record.get("key", "-")),
            model=str(record.get("model", "-")),
            prompt_tokens=_count(record.get("prompt_tokens", 0)),
            completion_tokens=_count(record.get("completion_tokens", 0)),
            cost=float(cost),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError("not a usage record") from exc


def parse_entries(lines: Iterable[str]) -> tuple[list[UsageEntry], int]:
    """The usage entries in ``lines``, and how many non-blank lines were not entries."""
    entries: list[UsageEntry] = []
    skipped = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            entries.append(parse_entry(line))
        except ValueError:
            skipped += 1
    return entries, skipped


def summarize(
    entries: Iterable[UsageEntry], by: GroupBy, since: datetime | None = None
) -> list[tuple[str, Totals]]:
    """Totals per group, sorted by group, for entries at or after ``since``."""
    groups: dict[str, Totals] = {}
    for entry in entries:
        if since is None or entry.at >= since:
            group = entry.group(by)
            groups[group] = groups.get(group, Totals()) + Totals.of(entry)
    return sorted(groups.items())


def render_table(rows: list[tuple[str, Totals]], by: GroupBy) -> str:
    """A plain-text table with one line per group and a TOTAL line."""
    grand = sum((totals for _, totals in rows), Totals())
    table = [(by, *COLUMNS), *((group, *t.cells()) for group, t in rows), ("TOTAL", *grand.cells())]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join(_aligned(row, widths) for row in _with_rules(table, widths)) + "\n"


def _with_rules(table: list[tuple[str, ...]], widths: list[int]) -> Iterator[tuple[str, ...]]:
    rule = tuple("-" * width for width in widths)
    yield table[0]
    yield rule
    yield from table[1:-1]
    yield rule
    yield table[-1]


def _aligned(row: tuple[str, ...], widths: list[int]) -> str:
    first = row[0].ljust(widths[0])
    rest = (cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))
    return "  ".join((first, *rest)).rstrip()


def cmd_usage(args: argparse.Namespace) -> int:
    """Print the usage summary of a usage log."""
    path: Path = args.log
    try:
        since = None if args.since is None else parse_since(args.since, datetime.now(UTC))
    except ValueError as exc:
        raise UsageCommandError(str(exc)) from None
    try:
        # Undecodable bytes become U+FFFD: such a line is not a record and is skipped.
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UsageCommandError(f"cannot read usage log {path}: {exc.strerror}") from None
    entries, skipped = parse_entries(text.splitlines())
    print(render_table(summarize(entries, args.by, since), args.by), end="")
    if skipped:
        print(f"({skipped} lines were not usage records and were skipped)")
    return 0


def register_usage(commands: Any) -> None:
    """The ``usage`` subcommand."""
    usage = commands.add_parser(
        "usage", help="summarize a usage log: requests, tokens and cost per key, model or day"
    )
    usage.add_argument("--log", required=True, type=Path, metavar="FILE", help="usage log (JSONL)")
    usage.add_argument(
        "--since", metavar="WHEN", help="only records from then on: 30m, 24h, 7d, or an ISO date"
    )
    usage.add_argument(
        "--by", choices=("key", "model", "day"), default="key", help="group rows by (default: key)"
    )
    usage.set_defaults(handler=cmd_usage)
