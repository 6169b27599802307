"""Result rows and the output formats: JSON Lines or CSV, one row per request.

A row with an empty ``error`` is a finished caption; re-runs skip its images. The
parsing side is pure (text in, rows out) so that resuming can be tested directly.
"""

from __future__ import annotations

import csv
import io
import json
import re
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
# How a group's paths share the one CSV cell. A path that contains it (or a cell that
# would start with "[") is written as a JSON list instead, so the cell reads back exactly.
CSV_PATH_SEPARATOR = "|"
# Characters a JSON line carries as \u escapes: lone surrogates (a non-UTF-8 filename,
# as Python decodes it) cannot be written as UTF-8 at all, and the Unicode line breaks
# would split the line for readers that use str.splitlines.
_JSONL_ESCAPED = re.compile("[\ud800-\udfff\u2028\u2029\x85]")
# Lone surrogates that the "surrogateescape" error handler cannot write back as bytes.
_NOT_CSV_WRITABLE = re.compile("[\ud800-\udc7f\udd00-\udfff]")
# How CSV output is encoded: a non-UTF-8 filename goes back to its own bytes.
CSV_ENCODING_ERRORS = "surrogateescape"


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
    text = json.dumps(record, ensure_ascii=False)
    return _JSONL_ESCAPED.sub(lambda found: f"\\u{ord(found.group()):04x}", text) + "\n"


def csv_cells(row: ResultRow) -> list[str]:
    """The row's CSV cells, in :data:`CSV_FIELDS` order; empty cells for missing values."""
    values = (
        images_cell(row.images),
        row.caption,
        row.error,
        row.model,
        row.prompt_tokens,
        row.completion_tokens,
        row.finish_reason,
    )
    return ["" if value is None else _csv_writable(str(value)) for value in values]


def _csv_writable(text: str) -> str:
    # Only a surrogate that no filename byte decodes to is lost (to U+FFFD), so that
    # writing never fails; the bytes of a non-UTF-8 filename are kept.
    return _NOT_CSV_WRITABLE.sub("\ufffd", text)


def images_cell(images: Sequence[str]) -> str:
    """A batch's paths in one CSV cell: joined with ``|``, or a JSON list when that
    would not read back exactly (a path holding ``|``, or a cell starting with ``[``)."""
    joined = CSV_PATH_SEPARATOR.join(images)
    if any(CSV_PATH_SEPARATOR in image for image in images) or joined.startswith("["):
        return json.dumps(list(images), ensure_ascii=False)
    return joined


def images_from_cell(cell: str) -> list[str]:
    """The paths of an images cell, as :func:`images_cell` wrote them (or earlier
    versions, which always joined with ``|``)."""
    if cell.startswith("["):
        try:
            listed = json.loads(cell)
        except (ValueError, RecursionError):
            listed = None  # a plain path that starts with "["
        if isinstance(listed, list) and listed and all(isinstance(p, str) for p in listed):
            return listed
    return cell.split(CSV_PATH_SEPARATOR)


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
    # Only "\n" ends a row: captions and paths may hold other characters that
    # str.splitlines treats as line breaks (U+2028, U+2029, U+0085, ...).
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
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
        done.add(tuple(path_key(p) for p in images_from_cell(cells[column["images"]])))
        kept.append(cells)
    return ExistingOutput(frozenset(done), csv_text(kept))
