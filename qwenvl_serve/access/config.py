"""The ``auth:``, ``limits:``, ``metering:`` and ``metrics:`` config sections."""

from __future__ import annotations

from qwenvl_serve.config_base import StrictModel


class AuthConfig(StrictModel):
    """API keys. An empty list means no auth, allowed only on a loopback host."""


class LimitsConfig(StrictModel):
    """Whole-instance limits."""


class MeteringConfig(StrictModel):
    """Token metering and the usage log."""


class MetricsConfig(StrictModel):
    """Who may read /metrics."""
