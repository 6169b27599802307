"""Goals a report states next to its numbers, and whether each was met. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Goal:
    """``measured`` must be at most (or at least) ``limit``; ``None`` = not measured."""

    name: str
    measured: float | None
    limit: float
    at_most: bool
    unit: str = "×"

    @property
    def met(self) -> bool | None:
        """True or False, or None when there is no measurement."""
        if self.measured is None:
            return None
        return self.measured <= self.limit if self.at_most else self.measured >= self.limit

    def verdict(self) -> str:
        """``met``, ``MISSED`` or ``not measured``."""
        return {True: "met", False: "MISSED", None: "not measured"}[self.met]

    def _show(self, value: float) -> str:
        if self.unit == " ms":
            return f"{value:+.1f} ms"
        if self.unit == " %":
            return f"{value:.1f} %"
        return f"{value:.3f}{self.unit}"

    def row(self) -> str:
        """One Markdown table row: goal, measured, limit, verdict."""
        measured = "–" if self.measured is None else self._show(self.measured)
        bound = ("≤ " if self.at_most else "≥ ") + self._show(self.limit)
        return f"| {self.name} | {measured} | {bound} | {self.verdict()} |"


def goals_table(goals: Sequence[Goal]) -> str:
    """The goals as a Markdown table."""
    lines = ["| goal | measured | target | verdict |", "| --- | --- | --- | --- |"]
    return "\n".join(lines + [goal.row() for goal in goals])


def replace_block(document: str, name: str, content: str) -> str:
    """``document`` with the text between ``<!-- bench:NAME:start/end -->`` replaced.

    ``ValueError`` if the markers are missing, so a renamed section is noticed.
    """
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    head, found_start, rest = document.partition(start)
    _, found_end, tail = rest.partition(end)
    if not found_start or not found_end:
        raise ValueError(f"markers for block {name!r} not found")
    return f"{head}{start}\n{content.strip()}\n{end}{tail}"
