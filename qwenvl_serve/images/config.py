"""The ``images:`` config section."""

from __future__ import annotations

from qwenvl_serve.config_base import StrictModel


class ImagesConfig(StrictModel):
    """How images in requests are checked and normalized before the engine sees them."""
