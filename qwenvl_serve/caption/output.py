"""Where result rows go: a JSONL or CSV file that doubles as the resume record, or stdout."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from qwenvl_serve.caption.batches import BatchKey
from qwenvl_serve.caption.discovery import CaptionInputError
from qwenvl_serve.caption.results import (
    CSV_ENCODING_ERRORS,
    CSV_FIELDS,
    ForeignOutputError,
    OutputFormat,
    ResultRow,
    csv_cells,
    csv_text,
    format_for,
    jsonl_line,
    read_existing,
)


@dataclass
class RowWriter:
    """Appends rows to an open text stream, flushing each so a crash loses at most one."""

    stream: TextIO
    fmt: OutputFormat

    def write(self, row: ResultRow) -> None:
        """Write one row."""
        text = jsonl_line(row) if self.fmt == "jsonl" else csv_text([csv_cells(row)])
        self.stream.write(text)
        self.stream.flush()


@dataclass(frozen=True)
class OpenOutput:
    """The writer for new rows and the batches an earlier run already captioned."""

    writer: RowWriter
    done: frozenset[BatchKey]


@contextlib.contextmanager
def open_output(path: Path | None) -> Iterator[OpenOutput]:
    """Open ``path`` for resuming (or stdout, as JSON Lines, when it is None).

    An existing file is first rewritten with only its finished rows, atomically, so the
    errors of the last run are tried again rather than listed twice.
    """
    if path is None:
        yield OpenOutput(RowWriter(sys.stdout, "jsonl"), frozenset())
        return
    try:
        fmt = format_for(path.name)
    except ValueError as exc:
        raise CaptionInputError(str(exc)) from None
    try:
        done = _keep_finished_rows(path, fmt)
        stream = path.open("a", encoding="utf-8", errors=_errors(fmt), newline="")
    except OSError as exc:
        raise CaptionInputError(f"cannot write {path}: {exc.strerror}") from None
    with stream:
        if fmt == "csv" and stream.tell() == 0:
            stream.write(csv_text([CSV_FIELDS]))
        yield OpenOutput(RowWriter(stream, fmt), done)


def _errors(fmt: OutputFormat) -> str:
    # CSV keeps a non-UTF-8 filename as its own bytes, both ways; JSON Lines carries it
    # as a \u escape, so its files are plain UTF-8 and read strictly.
    return CSV_ENCODING_ERRORS if fmt == "csv" else "strict"


def _keep_finished_rows(path: Path, fmt: OutputFormat) -> frozenset[BatchKey]:
    if not path.exists():
        return frozenset()
    try:
        existing = read_existing(path.read_text(encoding="utf-8", errors=_errors(fmt)), fmt)
    except (ForeignOutputError, UnicodeDecodeError) as exc:
        raise CaptionInputError(
            f"{path} was not written by `qwenvl-serve caption` ({exc}); choose another --out"
        ) from None
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(existing.kept_text, encoding="utf-8", errors=_errors(fmt), newline="")
    os.replace(temporary, path)
    return existing.done
