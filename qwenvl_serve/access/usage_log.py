"""The JSON Lines usage log: one record per inference request, written off the event loop.

:func:`usage_record` builds a record (pure). :class:`UsageLogWriter` appends records
from a background thread fed by a queue, so a slow disk never stalls a request; each
batch is one ``write`` to a file opened with ``O_APPEND``, so several server processes
can share the file without tearing lines. :meth:`UsageLogWriter.close` drains the queue.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qwenvl_serve.access.config import PricesConfig
from qwenvl_serve.core.responses import Usage

Record = dict[str, Any]
logger = logging.getLogger(__name__)
_CLOSE = object()


def usage_record(
    *,
    at: datetime,
    request_id: str,
    key_name: str,
    model: str,
    route: str,
    status: int,
    usage: Usage | None,
    images: int,
    latency_s: float,
    prices: PricesConfig,
    cache: str | None = None,
    price_factor: float = 1.0,
) -> Record:
    """One usage-log line. Only names, numbers and ids: never prompts or image data.

    ``cache`` is the result cache's outcome (None when it is off); a hit's tokens are
    what its answer holds, and its cost is ``price_factor`` of theirs.
    """
    prompt = usage.prompt_tokens if usage else 0
    completion = usage.completion_tokens if usage else 0
    return {
        "time": at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "request_id": request_id,
        "key": key_name,
        "model": model,
        "route": route,
        "status": status,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "images": images,
        "latency_s": round(latency_s, 4),
        "cost": round(prices.cost(prompt, completion) * price_factor, 8),
        "cache": cache,
    }


class UsageLogWriter:
    """Appends records to ``path`` from one background thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Opened now, so a path that cannot be written stops the server at start.
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="usage-log", daemon=True)
        self._thread.start()

    def submit(self, record: Record) -> None:
        """Queue a record; returns at once."""
        if not self._closed:
            self._queue.put(record)

    def close(self) -> None:
        """Write everything queued, then stop. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_CLOSE)
        self._thread.join()
        os.close(self._fd)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while not self._queue.empty():  # everything already waiting goes in one write
                batch.append(self._queue.get())
            records = [item for item in batch if item is not _CLOSE]
            if records:
                self._write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            if len(records) != len(batch):
                return

    def _write(self, lines: str) -> None:
        data = memoryview(lines.encode())
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError as exc:  # a full or failing disk loses these lines, not the server
            logger.error("usage log: cannot write %d bytes: %s", len(data), exc.strerror)
