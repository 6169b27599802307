"""Who a sampled stack belongs to: our package, or the library running beneath it. Pure.

py-spy's raw output has one line per distinct stack, ``frame;frame;...;frame count``,
outermost frame first, each frame ``function (path:line)`` with the path relative to
the import path (``vllm/v1/engine/async_llm.py``, ``json/decoder.py``). A sample
belongs to the top-level package of its innermost frame that is not the standard
library's: ours (``qwenvl_serve``), vLLM, uvicorn, starlette... Standard-library frames
(json, re, asyncio's own machinery) belong to whoever called them, so ``json.loads`` of a
body counts as ours when our intake calls it and as vLLM's when vLLM does; a stack of
nothing but the standard library (the event loop itself) is ``stdlib``.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

OURS = "qwenvl_serve"
STDLIB = "stdlib"
_FRAME_PATH = re.compile(r"\((?P<path>[^()]*?):\d+\)$")


@dataclass
class Attribution:
    """Samples counted by owner, and ours by module (``core/responses``, ...)."""

    samples: int = 0
    by_owner: Counter[str] = field(default_factory=Counter)
    ours_by_module: Counter[str] = field(default_factory=Counter)

    @property
    def ours(self) -> int:
        """Samples whose innermost package frame is ours."""
        return self.by_owner[OURS]

    @property
    def our_share(self) -> float:
        """Our samples as a fraction of all (0 when nothing was sampled)."""
        return self.ours / self.samples if self.samples else 0.0

    def add(self, other: Attribution) -> None:
        """Count ``other``'s samples in this one too."""
        self.samples += other.samples
        self.by_owner.update(other.by_owner)
        self.ours_by_module.update(other.ours_by_module)


def frame_owner(frame: str) -> tuple[str, str | None] | None:
    """``(owner, our module or None)`` of one frame; None for the standard library."""
    found = _FRAME_PATH.search(frame)
    path = found.group("path") if found else ""
    if "site-packages/" in path:  # a full path, where py-spy could not shorten it
        path = path.rpartition("site-packages/")[2]
    top = path.split("/", 1)[0].removesuffix(".py")
    if not top or top.startswith("<") or top in sys.stdlib_module_names:
        return None
    if top == OURS:
        return OURS, path.removeprefix(f"{OURS}/").removesuffix(".py")
    return top, None


def attribute(lines: Iterable[str]) -> Attribution:
    """Count the samples of py-spy's raw output by owner."""
    result = Attribution()
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        result.samples += count
        owner, module = next(
            (found for frame in reversed(stack.split(";")) if (found := frame_owner(frame))),
            (STDLIB, None),
        )
        result.by_owner[owner] += count
        if module is not None:
            result.ours_by_module[module] += count
    return result
