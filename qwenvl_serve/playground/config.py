"""The ``playground:`` config section."""

from __future__ import annotations

from pydantic import Field

from qwenvl_serve.config_base import StrictModel


class PlaygroundConfig(StrictModel):
    """The web playground at /playground."""

    enabled: bool = Field(
        default=True,
        description=(
            "Serve the browser playground at `/playground`: a static page (no external "
            "resources) that calls this server's API with the key typed into it, so it "
            "gives no access of its own."
        ),
    )
