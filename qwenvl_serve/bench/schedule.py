"""When requests go out: interleaved blocks per target and Poisson arrivals. Pure functions.

Targets are measured in turns (A B A B ...): each round runs one block against each
target, so slow drifts of the machine (other processes, thermal, caches) land on all
targets alike instead of on whichever happened to run last.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Block:
    """One turn of load against one target: a number of requests or a number of seconds."""

    round: int
    target: int
    requests: int | None = None
    seconds: float | None = None


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` whole numbers that differ by at most one, larger first."""
    if parts < 1:
        raise ValueError("parts must be at least 1")
    base, extra = divmod(total, parts)
    return [base + (1 if part < extra else 0) for part in range(parts)]


def interleaved_blocks(
    targets: int, rounds: int, requests: int | None = None, duration_s: float | None = None
) -> list[Block]:
    """Blocks in the order they run: round 0 for every target, then round 1, and so on.

    Give exactly one of ``requests`` (per target, in total) or ``duration_s`` (per target,
    in total). Rounds that would be empty are dropped.
    """
    if (requests is None) == (duration_s is None):
        raise ValueError("give either a number of requests or a duration")
    if targets < 1 or rounds < 1:
        raise ValueError("need at least one target and one round")
    if requests is not None:
        counts = [count for count in split_evenly(requests, rounds) if count > 0]
        return [
            Block(round=index, target=target, requests=count)
            for index, count in enumerate(counts)
            for target in range(targets)
        ]
    assert duration_s is not None
    seconds = duration_s / rounds
    return [
        Block(round=index, target=target, seconds=seconds)
        for index in range(rounds)
        for target in range(targets)
    ]


def poisson_offsets(
    rate: float, rng: random.Random, count: int | None = None, horizon_s: float | None = None
) -> list[float]:
    """Arrival times (seconds from the block start) of a Poisson process at ``rate`` per second.

    Stops after ``count`` arrivals or at the first arrival past ``horizon_s``; the first
    request goes out at 0 so that every block starts under load.
    """
    if rate <= 0:
        raise ValueError("rate must be positive")
    if count is None and horizon_s is None:
        raise ValueError("give a count or a horizon")
    offsets: list[float] = []
    now = 0.0
    while True:
        if count is not None and len(offsets) >= count:
            return offsets
        if horizon_s is not None and now >= horizon_s:
            return offsets
        offsets.append(now)
        now += rng.expovariate(rate)
