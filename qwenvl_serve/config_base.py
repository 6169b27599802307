"""The base class of every config section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors; values are validated; a loaded config is immutable."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)
