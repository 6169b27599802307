"""The ``playground:`` config section."""

from __future__ import annotations

from qwenvl_serve.config_base import StrictModel


class PlaygroundConfig(StrictModel):
    """The web playground at /playground."""
