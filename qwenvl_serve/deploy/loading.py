"""From a deployment file to a validated :class:`Deployment`: the I/O shell of `render`.

The deployment file and every instance config it names are read and validated here,
once; the renderers get plain values and do no I/O. Errors are one line per problem,
with exit status 2, like the instance config's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from qwenvl_serve.config import InstanceConfig
from qwenvl_serve.config_loading import (
    ENV_REFERENCE,
    ConfigError,
    expand_env,
    parse_yaml_document,
    read_text_file,
    resolve_config,
)
from qwenvl_serve.deploy.config import DeploymentConfig, ModelEntry, Replica

# What an unset ${VAR} in an instance config reads as while rendering: secrets such as
# API keys are needed to serve, not to render, and never end up in rendered files.
PLACEHOLDER_PREFIX = "unset-while-rendering-"


class DeploymentError(ConfigError):
    """The deployment file or an instance config it names is invalid."""

    prefix = "deployment error: "


@dataclass(frozen=True)
class DeployedModel:
    """A model of the deployment with its instance config read and validated."""

    entry: ModelEntry
    instance: InstanceConfig
    config_text: str  # the instance config file as written, installed next to the units


@dataclass(frozen=True)
class Deployment:
    """Everything the renderers need, already validated."""

    config: DeploymentConfig
    models: tuple[DeployedModel, ...]
    source: str  # the deployment file's name, quoted in the rendered files' headers


def render_environ(text: str, environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` plus a placeholder for each ``${VAR}`` in ``text`` that is unset and
    has no default."""
    missing = {
        match.group(1)
        for match in ENV_REFERENCE.finditer(text)
        if match.group(2) is None and match.group(1) not in environ
    }
    return {**environ, **{name: PLACEHOLDER_PREFIX + name for name in missing}}


def load_deployment(path: Path, environ: Mapping[str, str]) -> Deployment:
    """Read the deployment file and every instance config it names, and validate all."""
    try:
        text = read_text_file(path, "deployment file")
        tree = expand_env(parse_yaml_document(text, str(path)), environ)
    except ConfigError as exc:
        raise DeploymentError(str(exc)) from None
    config = validate_deployment(tree)
    models = tuple(load_model(entry, path.parent, environ) for entry in config.models)
    check_served_names_unique(models)
    return Deployment(config=config, models=models, source=path.name)


def validate_deployment(tree: Mapping[str, Any]) -> DeploymentConfig:
    """The typed deployment, or a DeploymentError naming every bad key."""
    try:
        return DeploymentConfig.model_validate(tree)
    except ValidationError as exc:
        lines = [describe_error(error) for error in exc.errors()]
        raise DeploymentError("\n".join(lines)) from None


def load_model(entry: ModelEntry, base: Path, environ: Mapping[str, str]) -> DeployedModel:
    """Read a model's instance config; validate it as each of its replicas will run it."""
    config_path = entry.config if entry.config.is_absolute() else base / entry.config
    where = f"models[{entry.name}]"
    try:
        text = read_text_file(config_path, "config file")
        data = parse_yaml_document(text, str(config_path))
        rendering = render_environ(text, environ)
        instance = resolve_config(data, (), rendering)
        for replica in entry.replicas:
            resolve_config(data, replica_overrides(replica), rendering)
    except ConfigError as exc:
        raise DeploymentError(f"{where}: {exc}") from None
    return DeployedModel(entry=entry, instance=instance, config_text=text)


def replica_overrides(replica: Replica) -> list[str]:
    """The `--set` overrides that make a model's config one replica's."""
    return [f"host={replica.host.strip('[]')}", f"port={replica.port}"]


def check_served_names_unique(models: Sequence[DeployedModel]) -> None:
    """generateContent routes are told apart by the model name in the path: served
    names and aliases must each belong to one model."""
    seen: dict[str, str] = {}
    for model in models:
        instance = model.instance
        for name in (instance.public_model_name, *instance.generate_content.model_aliases):
            if seen.setdefault(name, model.entry.name) != model.entry.name:
                raise DeploymentError(
                    f"models {seen[name]} and {model.entry.name} both serve the model "
                    f"name {name!r}: set distinct `served_model_name`s and aliases"
                )


def describe_error(error: Mapping[str, Any]) -> str:
    """One line: the dotted key, the offending value, and what is allowed."""
    location = [str(part) for part in error["loc"]]
    key = ".".join(location) or "(top level)"
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(allowed_keys(DeploymentConfig, error["loc"][:-1]))
        return f"{key}: unknown key; allowed here: {allowed}"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    value = repr(error.get("input"))
    value = value if len(value) <= 60 else value[:57] + "..."
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{key}: invalid value {value}: {message.replace('Input should be', 'must be')}"


def allowed_keys(model: type[BaseModel], location: Sequence[Any]) -> list[str]:
    """The keys allowed at ``location`` (list indexes skipped) under ``model``."""
    for part in location:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        nested = _model_in(field.annotation) if field is not None else None
        if nested is None:
            return []
        model = nested
    return list(model.model_fields)


def _model_in(annotation: object) -> type[BaseModel] | None:
    """The model class in ``X``, ``list[X]`` or ``X | None``, if there is one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
