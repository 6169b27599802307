"""Reading Google JSON objects: both spellings of a key, typed values, errors naming the field.

Google's API accepts ``inlineData`` and ``inline_data`` alike. :func:`read_object` folds
both to the snake_case name and remembers how the client spelled each key, so every
refusal names the field exactly as it was sent (``contents[0].parts[1].functionCall``).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

_UPPER = re.compile(r"(?<!^)(?=[A-Z])")


class InvalidRequestError(ValueError):
    """A request we refuse with 400; the message names the field and is safe to show."""


def snake_case(key: str) -> str:
    """``maxOutputTokens`` -> ``max_output_tokens``; snake_case keys stay as they are."""
    return _UPPER.sub("_", key).lower()


def child(path: str, key: str) -> str:
    """The dotted path of ``key`` inside the object at ``path``."""
    return f"{path}.{key}" if path else key


@dataclass(frozen=True)
class Fields:
    """One JSON object's members under their snake_case names."""

    path: str
    values: dict[str, object]
    spelled: dict[str, str]

    def name(self, key: str) -> str:
        """The path of member ``key`` as the client spelled it."""
        return child(self.path, self.spelled.get(key, key))

    def get(self, key: str) -> object | None:
        """The member's value; None when absent or JSON null."""
        return self.values.get(key)

    def number(self, key: str) -> float | int | None:
        value = self.get(key)
        if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
            return value
        raise InvalidRequestError(f"{self.name(key)} must be a number.")

    def integer(self, key: str) -> int | None:
        value = self.get(key)
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        # The SDK types some counts as floats (top_k=40.0).
        if isinstance(value, float) and value.is_integer():
            return int(value)
        # proto3 JSON writes 64-bit integers as strings.
        if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value):
            return int(value)
        raise InvalidRequestError(f"{self.name(key)} must be an integer.")

    def string(self, key: str) -> str | None:
        value = self.get(key)
        if value is None or isinstance(value, str):
            return value
        raise InvalidRequestError(f"{self.name(key)} must be a string.")

    def boolean(self, key: str) -> bool | None:
        value = self.get(key)
        if value is None or isinstance(value, bool):
            return value
        raise InvalidRequestError(f"{self.name(key)} must be true or false.")

    def string_list(self, key: str) -> list[str] | None:
        value = self.get(key)
        if value is None:
            return None
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return list(value)
        raise InvalidRequestError(f"{self.name(key)} must be a list of strings.")

    def object_list(self, key: str) -> list[object] | None:
        value = self.get(key)
        if value is None or isinstance(value, list):
            return value
        raise InvalidRequestError(f"{self.name(key)} must be a list.")


def read_object(value: object, path: str, known: Collection[str]) -> Fields:
    """Check ``value`` is an object whose every key (either spelling) is in ``known``."""
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{path or 'The request body'} must be a JSON object.")
    values: dict[str, object] = {}
    spelled: dict[str, str] = {}
    for key, member in value.items():
        name = snake_case(key)
        if name not in known:
            raise InvalidRequestError(f"{child(path, key)} is not supported by this server.")
        if name in values:
            raise InvalidRequestError(
                f"{child(path, key)} is given twice (camelCase and snake_case)."
            )
        values[name] = member
        spelled[name] = key
    return Fields(path, values, spelled)
