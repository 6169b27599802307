"""Google's ``responseSchema`` (an OpenAPI 3.0 subset) -> the JSON Schema vLLM enforces.

Only keywords with a JSON Schema equivalent that vLLM's structured output honours are
accepted; anything else is refused with the path of the keyword, never dropped silently
(annotations that do not constrain output, such as ``example``, are dropped).
"""

from __future__ import annotations

from qwenvl_serve.genai.fields import Fields, InvalidRequestError, child, read_object

_TYPES = frozenset({"string", "number", "integer", "boolean", "array", "object", "null"})
# Google's numeric formats only restate the type; ``enum`` restates the enum keyword.
_REDUNDANT_FORMATS = frozenset({"enum", "float", "double", "int32", "int64"})
_PASSED_AS_IS = ("title", "description", "pattern", "minimum", "maximum", "default")
_COUNTS = {
    "min_items": "minItems",
    "max_items": "maxItems",
    "min_length": "minLength",
    "max_length": "maxLength",
    "min_properties": "minProperties",
    "max_properties": "maxProperties",
}
_DROPPED = ("example", "property_ordering")
_KNOWN = frozenset(
    {
        "type",
        "format",
        "nullable",
        "enum",
        "items",
        "properties",
        "required",
        "any_of",
        *_PASSED_AS_IS,
        *_COUNTS,
        *_DROPPED,
    }
)


def json_schema_from_google(schema: object, path: str) -> dict[str, object]:
    """The JSON Schema equivalent of the Google ``Schema`` object at ``path``."""
    fields = read_object(schema, path, _KNOWN)
    result: dict[str, object] = {}
    type_name = _type(fields)
    if type_name is not None:
        nullable = fields.boolean("nullable")
        result["type"] = [type_name, "null"] if nullable else type_name
    format_name = fields.string("format")
    if format_name is not None and format_name not in _REDUNDANT_FORMATS:
        result["format"] = format_name
    for key in _PASSED_AS_IS:
        if fields.get(key) is not None:
            result[key] = fields.get(key)
    for key, json_key in _COUNTS.items():
        count = fields.integer(key)
        if count is not None:
            result[json_key] = count
    enum = fields.string_list("enum")
    if enum is not None:
        result["enum"] = enum
    required = fields.string_list("required")
    if required is not None:
        result["required"] = required
    result.update(_nested(fields))
    return result


def _type(fields: Fields) -> str | None:
    type_name = fields.string("type")
    if type_name is None or type_name.upper() == "TYPE_UNSPECIFIED":
        return None
    if type_name.lower() not in _TYPES:
        allowed = ", ".join(sorted(name.upper() for name in _TYPES))
        raise InvalidRequestError(f"{fields.name('type')} must be one of {allowed}.")
    return type_name.lower()


def _nested(fields: Fields) -> dict[str, object]:
    nested: dict[str, object] = {}
    if fields.get("items") is not None:
        nested["items"] = json_schema_from_google(fields.get("items"), fields.name("items"))
    properties = fields.get("properties")
    if properties is not None:
        if not isinstance(properties, dict):
            raise InvalidRequestError(f"{fields.name('properties')} must be a JSON object.")
        base = fields.name("properties")
        nested["properties"] = {
            name: json_schema_from_google(member, child(base, name))
            for name, member in properties.items()
        }
    any_of = fields.object_list("any_of")
    if any_of is not None:
        base = fields.name("any_of")
        nested["anyOf"] = [
            json_schema_from_google(member, f"{base}[{index}]")
            for index, member in enumerate(any_of)
        ]
    return nested
