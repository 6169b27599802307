"""The live progress bar on stderr (rate and ETA from tqdm)."""

from __future__ import annotations

import sys
from types import TracebackType

from tqdm import tqdm

from qwenvl_serve.caption.summary import Tally


class ProgressBar:
    """A tqdm bar counting images, with the failures so far; notes print above it."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._bar = tqdm(
            total=total,
            unit="img",
            desc="captioning",
            file=sys.stderr,
            disable=not enabled,
            dynamic_ncols=True,
        )
        self._enabled = enabled

    def advance(self, images: int, tally: Tally) -> None:
        """Count finished images and show the failures."""
        self._bar.set_postfix(failed=tally.failed, refresh=False)
        self._bar.update(images)

    def note(self, message: str) -> None:
        """Print a line above the bar (or plainly, when the bar is off)."""
        if self._enabled:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._bar.close()
