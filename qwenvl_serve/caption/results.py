"""Result rows and the output formats: JSON Lines or CSV, one row per request.

A row with an empty ``error`` is a finished caption; re-runs skip its images. The
parsing side is pure (text in, rows out) so that resuming can be tested directly.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from qwenvl_serve.caption.batches import BatchKey, path_key

OutputFormat = Literal["jsonl", "csv"]
CSV_FIELDS = (
    "images",
    "caption",
    "error",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "finish_reason",
)
# How a group's paths share the one CSV cell.
CSV_PATH_SEPARATOR = "|"


@dataclass(frozen=True)
class ResultRow:
    """The outcome of one request: a caption, or the error that stopped it."""

    images: tuple[str, ...]
    caption: str | None = None
    error: str | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None

    @property
    def succeeded(self) -> bool:
        """True for a caption, False for an error row."""
        return self.error is None and self.caption is not None


def format_for(filename: str) -> OutputFormat:
    """The output format named by a file's extension."""
    lowered = filename.lower()
    if lowered.endswith(".csv"):
        return "csv"
    if lowered.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    raise ValueError(f"--out must end in .jsonl or .csv: {filename}")


def jsonl_line(row: ResultRow) -> str:
    """The row as one JSON line (with its newline)."""
    record = {
        "images": list(row.images),
        "caption": row.caption,
        "error": row.error,
        "model": row.model,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "finish_reason": row.finish_reason,
    }
    return json.dumps(record, ensure_ascii=False) + "\n"


def csv_cells(row: ResultRow) -> list[str]:
    """The row's CSV cells, in :data:`CSV_FIELDS` order; empty cells for missing values."""
    values = (
        CSV_PATH_SEPARATOR.join(row.images),
        row.caption,
        row.error,
        row.model,
        row.prompt_tokens,
        row.completion_tokens,
        row.finish_reason,
    )
    return ["" if value is None else str(value) for value in values]


def csv_text(rows: Iterable[Sequence[str]]) -> str:
    """CSV text for rows of cells (the header is just another row)."""
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


@dataclass(frozen=True)
class ExistingOutput:
    """What a previous run left: the finished batches and the text to keep of it."""

    done: frozenset[BatchKey]
    kept_text: str


class ForeignOutputError(ValueError):
    """The output file exists but was not written by this command: it is left alone."""


def read_existing(text: str, fmt: OutputFormat) -> ExistingOutput:
    """The finished rows of an earlier output file.

    Error rows and a last line cut short by a crash are dropped, so that their images
    are tried again and the file ends up with one row per batch. Anything else that
    does not look like our rows raises :class:`ForeignOutputError`.
    """
    if not text.strip():
        return ExistingOutput(frozenset(), "")
    if fmt == "jsonl":
        return _read_jsonl(text)
    return _read_csv(text)


def _read_jsonl(text: str) -> ExistingOutput:
    done: set[BatchKey] = set()
    kept: list[str] = []
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines) and not text.endswith("\n"):
                continue  # the last row of an interrupted run
            raise ForeignOutputError(f"line {number} is not JSON") from None
        key = _jsonl_key(record)
        if key is None:
            raise ForeignOutputError(f"line {number} is not a caption row")
        if not record.get("error") and record.get("caption") is not None:
            done.add(key)
            kept.append(line + "\n")
    return ExistingOutput(frozenset(done), "".join(kept))


def _jsonl_key(record: object) -> BatchKey | None:
    images = record.get("images") if isinstance(record, dict) else None
    if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
        return None
    return tuple(path_key(image) for image in images)


def _read_csv(text: str) -> ExistingOutput:
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if tuple(rows[0]) != CSV_FIELDS:
        raise ForeignOutputError(f"its header is not {','.join(CSV_FIELDS)}")
    column = {name: index for index, name in enumerate(CSV_FIELDS)}
    done: set[BatchKey] = set()
    kept: list[list[str]] = [rows[0]]
    for cells in rows[1:]:
        if len(cells) != len(CSV_FIELDS) or cells[column["error"]] or not cells[column["images"]]:
            continue
        done.add(tuple(path_key(p) for p in cells[column["images"]].split(CSV_PATH_SEPARATOR)))
        kept.append(cells)
    return ExistingOutput(frozenset(done), csv_text(kept))
