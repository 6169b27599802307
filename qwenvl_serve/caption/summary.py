"""The tally of a caption run and the line printed at its end."""

from __future__ import annotations

from dataclasses import dataclass, replace

from qwenvl_serve.caption.results import ResultRow


@dataclass(frozen=True)
class Tally:
    """Counts so far. Images, not requests, since a group request holds several."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, row: ResultRow) -> Tally:
        """The tally with one more result counted."""
        images = len(row.images)
        return replace(
            self,
            done=self.done + (images if row.succeeded else 0),
            failed=self.failed + (0 if row.succeeded else images),
            prompt_tokens=self.prompt_tokens + (row.prompt_tokens or 0),
            completion_tokens=self.completion_tokens + (row.completion_tokens or 0),
        )


def format_duration(seconds: float) -> str:
    """``8.2 s``, ``3 min 05 s`` or ``1 h 02 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def summary_line(tally: Tally, seconds: float) -> str:
    """One line: done, failed, skipped, tokens, time."""
    skipped = f", {tally.skipped} skipped (already captioned)" if tally.skipped else ""
    return (
        f"captioned {tally.done} image{'s' if tally.done != 1 else ''}, "
        f"{tally.failed} failed{skipped}; "
        f"tokens: {tally.prompt_tokens:,} prompt + {tally.completion_tokens:,} completion; "
        f"time: {format_duration(seconds)}"
    )
