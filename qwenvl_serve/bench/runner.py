"""Drive the load: warm-up, then interleaved blocks per target at each load point.

The shell around :func:`~qwenvl_serve.bench.client.send_streaming`: it decides which
request goes out when, at fixed concurrency or with Poisson arrivals, and collects the
records; everything it measures is summarized by the pure functions in ``metrics``.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from qwenvl_serve.bench.client import RequestMeta, send_streaming
from qwenvl_serve.bench.metrics import RequestRecord
from qwenvl_serve.bench.schedule import Block, interleaved_blocks, poisson_offsets

OnDone = Callable[[RequestRecord], None]
# Before a timed block, build twice as many requests as the busiest earlier block of that
# target took; more are built while the clock runs only if the server got much faster.
AHEAD_FACTOR = 2
AHEAD_MAX_BYTES = 256 * 2**20  # per target


@dataclass(frozen=True)
class Target:
    """A server under test: a short name for tables and its OpenAI-compatible base URL."""

    name: str
    base_url: str

    @property
    def chat_url(self) -> str:
        """The chat-completions endpoint, whether or not the base URL ends in ``/v1``."""
        base = self.base_url.rstrip("/")
        if not base.endswith("/v1"):
            base += "/v1"
        return f"{base}/chat/completions"


def parse_target(text: str) -> Target:
    """``"ours=http://127.0.0.1:8000"`` -> ``Target``; ``ValueError`` otherwise."""
    name, separator, url = text.partition("=")
    name, url = name.strip(), url.strip()
    if not separator or not name:
        raise ValueError(f"target {text!r}: expected NAME=http://HOST:PORT")
    problem = url_problem(url)
    if problem is not None:
        raise ValueError(f"target {text!r}: {problem}")
    return Target(name, url)


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a server's base URL, or ``None`` when it can."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed [ of an IPv6 address
        return "not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "expected an http:// or https:// URL"
    if not parts.hostname:
        return "the URL has no host"
    try:
        port = parts.port  # ValueError when not a number in 0-65535
    except ValueError:
        port = 0
    if port == 0:
        return "the port must be a number from 1 to 65535"
    return None


@dataclass(frozen=True)
class Prepared:
    """A request ready to send: its label and encoded body."""

    label: str
    body: bytes


Make = Callable[[int], Prepared]


@dataclass(frozen=True)
class TargetLoad:
    """A target with its own copy of the workload: warm-up requests first, then measured ones.

    ``make`` and ``make_probe`` build request (probe) number ``index`` past the prepared
    ones; without them a target cannot be sent more than was prepared.
    """

    target: Target
    requests: Sequence[Prepared]
    probes: Sequence[Prepared] = ()
    make: Make | None = None
    make_probe: Make | None = None


@dataclass(frozen=True)
class LoadPoint:
    """How hard to push: at most ``concurrency`` in flight, with Poisson arrivals at ``rate``
    per second if given, else a new request as soon as one finishes."""

    concurrency: int | None
    rate: float | None = None


@dataclass(frozen=True)
class RunSettings:
    """How long to measure and how: per target, in ``rounds`` interleaved blocks."""

    requests: int | None = None
    duration_s: float | None = None
    rounds: int = 4
    warmup: int = 2
    probe_interval_s: float | None = None
    seed: int = 0
    # Quiet time before each block. On a machine that hosts several targets, one
    # server's idle-time work must not land on the next target's block: a CPU vLLM
    # worker busy-polls for 1 s after its last step, on the core it is pinned to.
    pause_s: float = 0.0


@dataclass
class Measured:
    """One target's records at one load point and the seconds they were measured over."""

    records: list[RequestRecord] = field(default_factory=list)
    probes: list[RequestRecord] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Cursor:
    """Where one target is in its own workload; it only moves forward, so no request
    is sent twice to the same target (which would measure vLLM's caches instead).

    Past the prepared requests it builds the next ones with the load's ``make``; those
    built ahead of time by :meth:`prepare_ahead` wait in ``ahead`` until taken.
    """

    load: TargetLoad
    next_request: int = 0
    next_probe: int = 0
    ahead: dict[int, Prepared] = field(default_factory=dict)

    def take(self) -> tuple[int, Prepared]:
        """The next request and its number."""
        index = self.next_request
        self.next_request += 1
        prepared = self.load.requests
        if index < len(prepared):
            return index, prepared[index]
        if index in self.ahead:
            return index, self.ahead.pop(index)
        return index, _build(self.load.make, index, f"{self.load.target.name} requests")

    def take_probe(self) -> tuple[int, Prepared]:
        """The next probe and its number."""
        index = self.next_probe
        self.next_probe += 1
        if index < len(self.load.probes):
            return index, self.load.probes[index]
        return index, _build(self.load.make_probe, index, f"{self.load.target.name} probes")

    def ready(self) -> int:
        """Requests that can be taken without building one."""
        return max(0, len(self.load.requests) - self.next_request) + len(self.ahead)

    def prepare_ahead(self, count: int, max_bytes: int = AHEAD_MAX_BYTES) -> None:
        """Build requests until ``count`` are ready, so that a block does not wait for
        encoding (a new photo per request) while its clock runs; stop early once those
        built ahead hold ``max_bytes`` (12 MP photos take megabytes each)."""
        if self.load.make is None:
            return
        index = max(self.next_request, len(self.load.requests)) + len(self.ahead)
        held = sum(len(request.body) for request in self.ahead.values())
        while self.ready() < count and held < max_bytes:
            self.ahead[index] = self.load.make(index)
            held += len(self.ahead[index].body)
            index += 1


def _build(make: Make | None, index: int, what: str) -> Prepared:
    if make is None:  # a caller prepared too few and gave no way to make more
        raise IndexError(f"{what}: number {index} was not prepared")
    return make(index)


async def _send(
    client: httpx.AsyncClient, cursor: Cursor, probe: bool, on_done: OnDone | None
) -> RequestRecord:
    index, request = cursor.take_probe() if probe else cursor.take()
    meta = RequestMeta(cursor.load.target.name, index, request.label, probe)
    record = await send_streaming(client, cursor.load.target.chat_url, request.body, meta)
    if on_done is not None and not probe:
        on_done(record)
    return record


async def _closed_loop(
    client: httpx.AsyncClient,
    cursor: Cursor,
    concurrency: int,
    count: int | None,
    deadline: float | None,
    on_done: OnDone | None,
) -> list[RequestRecord]:
    """``concurrency`` workers, each sending its next request when the last one finished."""
    tickets: Iterator[int] = iter(range(count)) if count is not None else itertools.count()
    records: list[RequestRecord] = []

    async def worker() -> None:
        for _ in tickets:  # the shared iterator hands each ticket to exactly one worker
            if deadline is not None and time.perf_counter() >= deadline:
                return
            records.append(await _send(client, cursor, False, on_done))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return records


async def _open_loop(
    client: httpx.AsyncClient,
    cursor: Cursor,
    offsets: Sequence[float],
    concurrency: int | None,
    on_done: OnDone | None,
) -> list[RequestRecord]:
    """Requests released at ``offsets`` seconds, whether or not earlier ones have finished."""
    gate = asyncio.Semaphore(concurrency) if concurrency else None
    start = time.perf_counter()

    async def one() -> RequestRecord:
        if gate is None:
            return await _send(client, cursor, False, on_done)
        async with gate:
            return await _send(client, cursor, False, on_done)

    tasks = []
    for offset in offsets:
        await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
        tasks.append(asyncio.create_task(one()))
    return list(await asyncio.gather(*tasks))


async def _probe_loop(
    client: httpx.AsyncClient, cursor: Cursor, interval_s: float, stop: asyncio.Event
) -> list[RequestRecord]:
    """A probe every ``interval_s`` seconds until ``stop``; waits for the last ones to finish."""
    tasks = []
    while not stop.is_set():
        tasks.append(asyncio.create_task(_send(client, cursor, True, None)))
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        except TimeoutError:
            continue
    return list(await asyncio.gather(*tasks))


async def _run_block(
    client: httpx.AsyncClient,
    cursor: Cursor,
    block: Block,
    point: LoadPoint,
    settings: RunSettings,
    on_done: OnDone | None,
) -> tuple[list[RequestRecord], list[RequestRecord], float]:
    """One block against one target: its records, its probes and its wall time."""
    stop = asyncio.Event()
    probing = None
    if settings.probe_interval_s and cursor.load.probes:
        probing = asyncio.create_task(_probe_loop(client, cursor, settings.probe_interval_s, stop))
    start = time.perf_counter()
    deadline = None if block.seconds is None else start + block.seconds
    if point.rate is not None:
        # The same arrival pattern for every target within a round: a fair comparison.
        rng = random.Random(f"{settings.seed}-{block.round}")  # noqa: S311 - not a secret
        offsets = poisson_offsets(point.rate, rng, block.requests, block.seconds)
        records = await _open_loop(client, cursor, offsets, point.concurrency, on_done)
    else:
        concurrency = point.concurrency or 1
        records = await _closed_loop(client, cursor, concurrency, block.requests, deadline, on_done)
    seconds = time.perf_counter() - start
    stop.set()
    probes = await probing if probing is not None else []
    return records, probes, seconds


async def warm_up(
    client: httpx.AsyncClient, cursors: Sequence[Cursor], warmup: int, concurrency: int
) -> None:
    """Send each target its next ``warmup`` requests; nothing is recorded."""
    for cursor in cursors:
        workers = max(1, min(concurrency, warmup))
        await _closed_loop(client, cursor, workers, warmup, None, None)


async def run_point(
    client: httpx.AsyncClient,
    cursors: Sequence[Cursor],
    point: LoadPoint,
    settings: RunSettings,
    on_done: OnDone | None = None,
) -> dict[str, Measured]:
    """Measure every target at ``point``, in interleaved blocks (A B A B ...)."""
    results = {cursor.load.target.name: Measured() for cursor in cursors}
    blocks = interleaved_blocks(
        len(cursors), settings.rounds, settings.requests, settings.duration_s
    )
    most_per_block = dict.fromkeys(results, 0)
    for block in blocks:
        cursor = cursors[block.target]
        name = cursor.load.target.name
        if block.seconds is not None:  # a timed block takes as many as the server allows
            cursor.prepare_ahead(AHEAD_FACTOR * most_per_block[name])
        await asyncio.sleep(settings.pause_s)
        records, probes, seconds = await _run_block(client, cursor, block, point, settings, on_done)
        most_per_block[name] = max(most_per_block[name], len(records))
        measured = results[name]
        measured.records += records
        measured.probes += probes
        measured.seconds += seconds
    return results
