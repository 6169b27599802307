"""The ``generate_content:`` config section."""

from __future__ import annotations

from qwenvl_serve.config_base import StrictModel


class GenerateContentConfig(StrictModel):
    """The Google-style generateContent routes."""
