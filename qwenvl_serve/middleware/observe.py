"""Count, time and log every request: the outermost of the access layers' views.

Inner layers leave what they learned on the way in (key name, why refused) in the
request's :class:`~qwenvl_serve.access.notes.RequestNotes`; status and usage are read
from the response messages as they pass. Each request is counted and logged once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from starlette.types import ASGIApp, Receive, Scope, Send

from qwenvl_serve.access.logs import access_line_writer, access_log_line
from qwenvl_serve.access.notes import RequestNotes, final_status, notes_for, request_id_of
from qwenvl_serve.core.responses import Usage, watched
from qwenvl_serve.core.view import inference_request
from qwenvl_serve.metrics import Children, ServeMetrics
from qwenvl_serve.routes import route_of

LogLine = Callable[[str], None]


class ObserveMiddleware:
    """``qwenvl_requests_total{key,route,status}``, ``qwenvl_request_duration_seconds{route}``
    and one JSON access-log line per HTTP request."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: ServeMetrics,
        log_line: LogLine | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.requests = Children(metrics.requests)
        self.durations = Children(metrics.duration)
        self.log_line = log_line if log_line is not None else access_line_writer()
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = self.clock()
        notes = notes_for(scope)
        watch, send = watched(scope, send)
        failed = True
        try:
            await self.app(scope, receive, send)
            failed = False
        finally:
            status = final_status(watch.status, failed)
            request = inference_request(scope)
            usage = None if request is None else watch.engine_usage(request.cost)
            self._record(scope, notes, status, usage, self.clock() - started)

    def _record(
        self, scope: Scope, notes: RequestNotes, status: int, usage: Usage | None, elapsed: float
    ) -> None:
        route = route_of(scope).name
        self.requests(key=notes.key_name, route=route, status=str(status)).inc()
        self.durations(route=route).observe(elapsed)
        self.log_line(
            access_log_line(
                at=datetime.now(UTC),
                request_id=request_id_of(scope),
                key_name=notes.key_name,
                method=scope["method"],
                route=route,
                status=status,
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
                duration_s=elapsed,
                rejection=notes.rejection,
            )
        )
