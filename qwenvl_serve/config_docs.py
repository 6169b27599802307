"""Render the configuration reference (Markdown) from the config models' own fields."""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from qwenvl_serve.config import InstanceConfig

REFERENCE_START = "<!-- config-reference:start -->"
REFERENCE_END = "<!-- config-reference:end -->"


def render_reference(root: type[BaseModel] = InstanceConfig) -> str:
    """One Markdown table per config section, in declaration order."""
    blocks = [_section_table(prefix, model) for prefix, model in _sections(root, "")]
    return "\n".join(blocks)


def replace_reference(document: str, reference: str) -> str:
    """Return ``document`` with the text between the reference markers replaced."""
    head, start, rest = document.partition(REFERENCE_START)
    _, end, tail = rest.partition(REFERENCE_END)
    if not start or not end:
        raise ValueError("the document has no configuration reference markers")
    return f"{head}{start}\n{reference}{end}{tail}"


def _sections(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, type[BaseModel]]]:
    yield prefix, model
    for name, info in model.model_fields.items():
        nested = _nested_model(info)
        if nested is not None:
            yield from _sections(nested, f"{prefix}{name}.")


def _nested_model(info: FieldInfo) -> type[BaseModel] | None:
    annotation = info.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _section_table(prefix: str, model: type[BaseModel]) -> str:
    title = f"`{prefix.rstrip('.')}`" if prefix else "top level"
    doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
    rows = [
        f"#### {title}",
        "",
        doc,
        "",
        "| key | type | default | description |",
        "| --- | --- | --- | --- |",
    ]
    for name, info in model.model_fields.items():
        if _nested_model(info) is not None:
            continue
        rows.append(
            f"| `{prefix}{name}` | {_type_text(info)} | {_default_text(info)} | "
            f"{info.description or ''} |"
        )
    return "\n".join(rows) + "\n"


def _type_text(info: FieldInfo) -> str:
    text = _annotation_text(info.annotation)
    bounds = [
        f"{symbol} {getattr(meta, attr)}"
        for meta in info.metadata
        for attr, symbol in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))
        if getattr(meta, attr, None) is not None
    ]
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def _annotation_text(annotation: object) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        parts = [_annotation_text(a) for a in args if a is not type(None)]
        optional = type(None) in args
        return " \\| ".join(parts) + (" or empty" if optional else "")
    if origin is typing.Annotated:
        return _annotation_text(args[0])
    if origin in (list, dict):
        inner = ", ".join(_annotation_text(a) for a in args)
        return f"{origin.__name__}[{inner}]"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def _default_text(info: FieldInfo) -> str:
    if info.default is PydanticUndefined and info.default_factory is None:
        return "required"
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "empty"
    return f"`{json.dumps(value, ensure_ascii=False)}`"
