"""The ``generate_content:`` config section."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from qwenvl_serve.config_base import StrictModel

# A name that fits in one path segment before ``:generateContent``.
ModelAlias = Annotated[str, StringConstraints(min_length=1, pattern=r"^[^/:?#%\s]+$")]


class GenerateContentConfig(StrictModel):
    """The Google-style generateContent routes."""

    model_aliases: list[ModelAlias] = Field(
        default_factory=list,
        description=(
            "Further model names accepted in `/v1beta/models/{model}:generateContent` "
            "besides the served model name, e.g. `gemini-2.5-flash` so Gemini code runs "
            "unchanged. Needed when the served name contains `/`, which cannot appear "
            "in that path segment."
        ),
    )
