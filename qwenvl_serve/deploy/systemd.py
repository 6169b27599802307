"""Render the systemd units and per-instance files: pure functions of the Deployment.

Every replica of every model is one instance of the template unit
``qwenvl-serve@<model>-<port>.service``; its environment file says which model config,
address and GPUs it gets. ``qwenvl-serve.target`` starts and stops the enabled ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from qwenvl_serve.deploy.config import DeploymentConfig, Replica
from qwenvl_serve.deploy.loading import DeployedModel, Deployment, DeploymentError

UNIT_NAME = "qwenvl-serve@.service"
TARGET_NAME = "qwenvl-serve.target"
STATE_DIR = PurePosixPath("/var/lib/qwenvl-serve")
CACHE_DIR = PurePosixPath("/var/cache/qwenvl-serve")


@dataclass(frozen=True)
class Instance:
    """One replica as systemd runs it."""

    name: str  # the template's instance name: <model>-<port>
    model: str
    host: str  # as the instance binds it (no IPv6 brackets)
    port: int
    gpus: tuple[int, ...]


def plan_instances(deployment: Deployment) -> list[Instance]:
    """Every replica with its GPUs: given ones, else the lowest ones on its host that no
    other replica lists or was given; DeploymentError if two replicas list one GPU."""
    taken = listed_gpus(deployment)
    instances = []
    for model in deployment.models:
        width = model.instance.engine.tensor_parallel_size
        for replica in model.entry.replicas:
            host = replica.host.strip("[]")
            if replica.gpus is not None:
                gpus = tuple(replica.gpus)
            else:
                gpus = free_gpus(taken.setdefault(host, {}), width)
                taken[host].update(dict.fromkeys(gpus, replica_name(model, replica)))
            instances.append(
                Instance(replica_name(model, replica), model.entry.name, host, replica.port, gpus)
            )
    return instances


def replica_name(model: DeployedModel, replica: Replica) -> str:
    """The template instance name of a replica: <model>-<port>."""
    return f"{model.entry.name}-{replica.port}"


def listed_gpus(deployment: Deployment) -> dict[str, dict[int, str]]:
    """Host -> GPU -> the replica that lists it under `gpus:`; two on one GPU are refused."""
    owners: dict[str, dict[int, str]] = {}
    for model in deployment.models:
        for replica in model.entry.replicas:
            name = replica_name(model, replica)
            host = owners.setdefault(replica.host.strip("[]"), {})
            for gpu in replica.gpus or ():
                other = host.setdefault(gpu, name)
                if other != name:
                    raise DeploymentError(
                        f"replicas {other} and {name} both list GPU {gpu} on host "
                        f"{replica.host}: give each replica its own GPUs"
                    )
    return owners


def free_gpus(taken: dict[int, str], width: int) -> tuple[int, ...]:
    """The ``width`` lowest GPU indexes not in ``taken``."""
    free = (gpu for gpu in range(len(taken) + width) if gpu not in taken)
    return tuple(next(free) for _ in range(width))


def render_systemd(deployment: Deployment) -> dict[str, str]:
    """Relative path -> text: the unit, the target, model configs, one env file per instance."""
    config = deployment.config
    files = {
        UNIT_NAME: render_unit(deployment),
        TARGET_NAME: render_target(deployment.source),
    }
    for model in deployment.models:
        files[f"models/{model.entry.name}.yaml"] = copied_config(model, deployment.source)
    for instance in plan_instances(deployment):
        path = f"instances/{instance.host}/{instance.name}.env"
        files[path] = render_env_file(instance, config, deployment.source)
    return files


def render_unit(deployment: Deployment) -> str:
    """The template unit every instance runs under."""
    config = deployment.config
    systemd = config.systemd
    env_dir = PurePosixPath(systemd.config_dir) / "instances"
    writable = read_write_paths(deployment)
    environment = {
        "HOME": str(STATE_DIR),
        "XDG_CACHE_HOME": str(CACHE_DIR),
        "HF_HOME": str(CACHE_DIR / "huggingface"),
        "PYTHONUNBUFFERED": "1",
        **systemd.environment,
    }
    exec_start = (
        f"{systemd.executable} serve --config ${{QWENVL_SERVE_CONFIG}} "
        "--set host=${QWENVL_SERVE_HOST} --set port=${QWENVL_SERVE_PORT}"
    )
    lines = [
        rendered_note(deployment.source),
        "# One instance per model replica: systemctl enable --now qwenvl-serve@<model>-<port>",
        "[Unit]",
        "Description=qwenvl-serve model instance %i",
        "After=network-online.target",
        "Wants=network-online.target",
        f"PartOf={TARGET_NAME}",
        "# Back off: wait RestartSec between tries, give up after StartLimitBurst tries.",
        f"StartLimitIntervalSec={systemd.start_limit_interval_seconds}",
        f"StartLimitBurst={systemd.start_limit_burst}",
        "",
        "[Service]",
        "Type=exec",
        f"User={systemd.user}",
        f"Group={systemd.user}",
        f"WorkingDirectory={STATE_DIR}",
        "# Secrets the model configs read with ${VAR} (mode 600), then the instance's own file.",
        f"EnvironmentFile=-{PurePosixPath(systemd.config_dir) / 'secrets.env'}",
        f"EnvironmentFile={env_dir}/%i.env",
        *(f'Environment="{escape_unit(f"{name}={value}")}"' for name, value in environment.items()),
        f"ExecStart={exec_start}",
        "# Stop: SIGTERM to qwenvl-serve alone, which passes it to vLLM: in-flight requests",
        "# finish (shutdown.drain_seconds), new ones get 503, then every process exits.",
        "KillSignal=SIGTERM",
        "KillMode=mixed",
        f"TimeoutStopSec={stop_timeout_seconds(deployment)}",
        "Restart=on-failure",
        f"RestartSec={systemd.restart_seconds}",
        f"LimitNOFILE={systemd.limit_nofile}",
        "StateDirectory=qwenvl-serve",
        "CacheDirectory=qwenvl-serve",
        "# Hardening: the file system is read-only except the paths below.",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        f"ReadWritePaths={' '.join(str(path) for path in writable)}",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "",
        "[Install]",
        f"WantedBy={TARGET_NAME}",
    ]
    return "\n".join(lines) + "\n"


def render_target(source: str) -> str:
    """The target that groups the enabled instances of this host."""
    lines = [
        rendered_note(source),
        "# Starts every enabled qwenvl-serve@ instance; stopping or restarting it does the same",
        "# to them (they are PartOf it).",
        "[Unit]",
        "Description=qwenvl-serve model instances",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def render_env_file(instance: Instance, config: DeploymentConfig, source: str) -> str:
    """One instance's environment: its model config, address and GPUs."""
    config_dir = PurePosixPath(config.systemd.config_dir)
    model_config = config_dir / "models" / f"{instance.model}.yaml"
    target = config_dir / "instances" / f"{instance.name}.env"
    lines = [
        f"# Rendered by `qwenvl-serve render` from {source}: instance {instance.name}.",
        f"# Install on {instance.host} as {target}.",
        f"QWENVL_SERVE_CONFIG={model_config}",
        f"QWENVL_SERVE_HOST={instance.host}",
        f"QWENVL_SERVE_PORT={instance.port}",
        f"CUDA_VISIBLE_DEVICES={','.join(str(gpu) for gpu in instance.gpus)}",
    ]
    return "\n".join(lines) + "\n"


def stop_timeout_seconds(deployment: Deployment) -> int:
    """Longer than the longest drain, so systemd never kills a draining instance."""
    drain = max(model.instance.shutdown.drain_seconds for model in deployment.models)
    return math.ceil(drain) + deployment.config.systemd.stop_margin_seconds


def read_write_paths(deployment: Deployment) -> list[PurePosixPath]:
    """State and cache directories, each usage log's directory, and the extra paths."""
    paths = [STATE_DIR, CACHE_DIR]
    for model in deployment.models:
        paths += usage_log_dirs(model)
    paths += [PurePosixPath(path) for path in deployment.config.systemd.read_write_paths]
    kept: list[PurePosixPath] = []
    for path in paths:
        if not any(path == other or path.is_relative_to(other) for other in kept):
            kept.append(path)
    return kept


def usage_log_dirs(model: DeployedModel) -> list[PurePosixPath]:
    """The directory of the model's usage log (relative paths start in the state dir)."""
    usage_log = model.instance.metering.usage_log
    if usage_log is None:
        return []
    return [(STATE_DIR / PurePosixPath(Path(usage_log).as_posix())).parent]


def copied_config(model: DeployedModel, source: str) -> str:
    """The model's instance config as written, under a first line marking it rendered."""
    note = (
        f"# Rendered by `qwenvl-serve render` from {source}: a copy of the config of "
        f"model {model.entry.name}; edit that file, not this one."
    )
    return f"{note}\n{model.config_text}"


def rendered_note(source: str) -> str:
    """The first line of every rendered unit."""
    return f"# Rendered by `qwenvl-serve render` from {source}; edit that file, not this one."


def escape_unit(text: str) -> str:
    """Quote a value for a double-quoted unit-file word: backslash, quote and specifier."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
