"""From YAML text, `--set` overrides and the environment to a validated InstanceConfig.

Precedence lives in :func:`resolve_config` alone: model defaults < file < ``--set``.
Every failure is a :class:`ConfigError` whose message names the key, the value and
what is allowed, so the CLI can print one line and exit 2 before anything loads.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from qwenvl_serve.config import InstanceConfig
from qwenvl_serve.errors import UserError

ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(UserError, ValueError):
    """The configuration is invalid; the message is meant for the user as is."""

    exit_code = 2
    prefix = "config error: "


def parse_yaml_document(text: str, source: str) -> dict[str, Any]:
    """Parse one YAML mapping; an empty document is an empty mapping."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{source}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys to values")
    return data


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML config file into a plain mapping (no validation yet)."""
    return parse_yaml_document(read_text_file(path, "config file"), str(path))


def read_text_file(path: Path, what: str) -> str:
    """The UTF-8 text of ``path``; ConfigError naming ``what`` it is when unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {what} {path}: it is not UTF-8 text") from None


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """Split ``engine.max_model_len=8192`` into a key path and a YAML-typed value."""
    key, sep, raw_value = assignment.partition("=")
    path = key.strip().split(".")
    if not sep or not all(path):
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE with a dotted KEY")
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else ""
    except yaml.YAMLError:
        value = raw_value
    return path, value


def apply_override(tree: dict[str, Any], path: Sequence[str], value: Any) -> dict[str, Any]:
    """Return a copy of ``tree`` with ``value`` set at the dotted ``path``."""
    head, *rest = path
    result = dict(tree)
    if not rest:
        result[head] = value
        return result
    child = result.get(head, {})
    if not isinstance(child, dict):
        child = {}
    result[head] = apply_override(child, rest, value)
    return result


def expand_env(value: Any, environ: Mapping[str, str], where: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of a nested value."""
    if isinstance(value, dict):
        return {
            k: expand_env(v, environ, f"{where}.{k}" if where else str(k)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [expand_env(v, environ, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{where}: environment variable {name} is not set")

    return ENV_REFERENCE.sub(substitute, value)


def resolve_config(
    file_data: Mapping[str, Any],
    overrides: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> InstanceConfig:
    """Apply precedence (defaults < file < ``--set``), expand ``${VAR}``, validate."""
    tree: dict[str, Any] = dict(file_data)
    for assignment in overrides:
        path, value = parse_override(assignment)
        tree = apply_override(tree, path, value)
    tree = expand_env(tree, environ if environ is not None else {})
    try:
        return InstanceConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def load_config(
    path: Path, overrides: Iterable[str] = (), environ: Mapping[str, str] | None = None
) -> InstanceConfig:
    """Read, merge and validate a config file; the I/O shell around resolve_config."""
    return resolve_config(read_config_file(path), overrides, environ)


# Keys whose values may be secrets (API keys, the metrics token, tokens in the engine's
# environment): errors about them never echo the value.
_SECRET_PARTS = frozenset({"keys", "key", "token", "env"})


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem: the dotted key, the offending value, and what is allowed."""
    return "\n".join(_describe_one(error) for error in exc.errors())


def _describe_one(error: Mapping[str, Any]) -> str:
    location = [str(part) for part in error["loc"]]
    key = ".".join(location) or "(top level)"
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(location[:-1]))
        return f"{key}: unknown key; allowed here: {allowed}"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    value = "(hidden)" if _SECRET_PARTS & set(location) else _short_repr(error.get("input"))
    return f"{key}: invalid value {value}: {_allowed_phrase(error)}"


def _allowed_phrase(error: Mapping[str, Any]) -> str:
    message = str(error["msg"])
    # pydantic says "Input should be ..."; the value was already named, so say "must be".
    return re.sub(r"^Input should be", "must be", message)


def _allowed_keys(location: Sequence[str]) -> list[str]:
    model: type[BaseModel] = InstanceConfig
    for part in location:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return []
    return list(model.model_fields)


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
