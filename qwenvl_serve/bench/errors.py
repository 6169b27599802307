"""The error a benchmark run reports as one line, without a traceback."""

from __future__ import annotations

from qwenvl_serve.errors import UserError


class BenchUsageError(UserError):
    """A bench option or target that cannot work; exit status 2 like other usage errors."""

    exit_code = 2
    prefix = "bench: "
