"""Service-level objectives given on the command line, e.g. ``--slo ttft_ms=500``."""

from __future__ import annotations

import math
from dataclasses import dataclass

# What each SLO key limits, in milliseconds, per request.
SLO_METRICS: dict[str, str] = {
    "ttft_ms": "time to first token",
    "tpot_ms": "time per output token after the first",
    "e2e_ms": "end-to-end latency",
}


@dataclass(frozen=True)
class Slo:
    """One objective: a request meets it when its ``metric`` is at most ``limit_ms``."""

    metric: str
    limit_ms: float


def parse_slo(text: str) -> Slo:
    """``"ttft_ms=500"`` -> ``Slo("ttft_ms", 500.0)``; ``ValueError`` with a clear message."""
    name, separator, value = text.partition("=")
    name = name.strip()
    if not separator:
        raise ValueError(f"SLO {text!r}: expected METRIC=MILLISECONDS, e.g. ttft_ms=500")
    if name not in SLO_METRICS:
        known = ", ".join(sorted(SLO_METRICS))
        raise ValueError(f"SLO {text!r}: unknown metric {name!r} (known: {known})")
    try:
        limit = float(value)
    except ValueError:
        raise ValueError(f"SLO {text!r}: {value!r} is not a number of milliseconds") from None
    if not math.isfinite(limit) or limit <= 0:
        raise ValueError(f"SLO {text!r}: the limit must be a positive number of milliseconds")
    return Slo(name, limit)
