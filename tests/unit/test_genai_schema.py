"""Google responseSchema -> JSON Schema."""

from __future__ import annotations

import pytest

from qwenvl_serve.genai.fields import InvalidRequestError
from qwenvl_serve.genai.schema import json_schema_from_google

PATH = "generationConfig.responseSchema"


def test_nested_objects_arrays_and_any_of():
    schema = {
        "type": "ARRAY",
        "minItems": "1",  # int64 members arrive as strings in proto3 JSON
        "maxItems": 3,
        "items": {
            "type": "OBJECT",
            "title": "Box",
            "description": "A detected box",
            "properties": {
                "label": {"type": "STRING", "pattern": "^[a-z]+$", "maxLength": 20},
                "score": {"type": "NUMBER", "minimum": 0, "maximum": 1, "format": "float"},
                "when": {"type": "STRING", "format": "date-time", "example": "2025-01-01"},
                "either": {"anyOf": [{"type": "BOOLEAN"}, {"type": "null"}]},
            },
            "required": ["label", "score"],
            "minProperties": 2,
        },
    }
    assert json_schema_from_google(schema, PATH) == {
        "type": "array",
        "minItems": 1,
        "maxItems": 3,
        "items": {
            "type": "object",
            "title": "Box",
            "description": "A detected box",
            "minProperties": 2,
            "required": ["label", "score"],
            "properties": {
                "label": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 20},
                "score": {"type": "number", "minimum": 0, "maximum": 1},
                "when": {"type": "string", "format": "date-time"},
                "either": {"anyOf": [{"type": "boolean"}, {"type": "null"}]},
            },
        },
    }


def test_unspecified_type_constrains_nothing():
    assert json_schema_from_google({"type": "TYPE_UNSPECIFIED"}, PATH) == {}


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "DATE"}, f"{PATH}.type must be one of ARRAY, BOOLEAN, INTEGER, NULL, "),
        (
            {"type": "OBJECT", "properties": {"a": {"type": "STRING", "ref": "#/x"}}},
            f"{PATH}.properties.a.ref is not supported by this server.",
        ),
        ({"type": "OBJECT", "properties": []}, f"{PATH}.properties must be a JSON object."),
        ({"anyOf": [{"type": 1}]}, f"{PATH}.anyOf[0].type must be a string."),
        ({"type": "ARRAY", "items": "STRING"}, f"{PATH}.items must be a JSON object."),
        ({"enum": [1, 2]}, f"{PATH}.enum must be a list of strings."),
    ],
)
def test_unsupported_schemas_are_refused_with_their_path(schema, expected):
    with pytest.raises(InvalidRequestError) as caught:
        json_schema_from_google(schema, PATH)
    assert str(caught.value).startswith(expected)
