"""The rendered systemd units: `systemd-analyze verify`, hardening, stop and restart policy."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qwenvl_serve.deploy.loading import Deployment, DeploymentError, load_deployment
from qwenvl_serve.deploy.systemd import (
    TARGET_NAME,
    UNIT_NAME,
    plan_instances,
    render_systemd,
    stop_timeout_seconds,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "example.yaml"
INSTALLED_PROGRAM = Path(sys.executable).parent / "qwenvl-serve"


@pytest.fixture(scope="module")
def example() -> Deployment:
    return load_deployment(EXAMPLE, {})


def with_executable(deployment: Deployment, program: Path) -> Deployment:
    """systemd-analyze checks that ExecStart exists: point it at this checkout's program."""
    systemd = deployment.config.systemd.model_copy(update={"executable": program})
    config = deployment.config.model_copy(update={"systemd": systemd})
    return dataclasses.replace(deployment, config=config)


def verify(
    files: dict[str, str], directory: Path, instance: str
) -> subprocess.CompletedProcess[str]:
    for name in (UNIT_NAME, TARGET_NAME):
        (directory / name).write_text(files[name])
    units = [str(directory / UNIT_NAME.replace("@", f"@{instance}")), str(directory / TARGET_NAME)]
    return subprocess.run(
        ["systemd-analyze", "verify", *units], capture_output=True, text=True, check=False
    )


def unit_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_systemd_analyze_verifies_the_units_without_a_warning(example, tmp_path):
    files = render_systemd(with_executable(example, INSTALLED_PROGRAM))
    result = verify(files, tmp_path, "instruct-8001")
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_verify_would_catch_a_bad_unit(example, tmp_path):
    """The check above can fail: a missing program and an unknown value are reported."""
    files = render_systemd(with_executable(example, Path("/nonexistent/qwenvl-serve")))
    result = verify(files, tmp_path, "instruct-8001")
    assert "is not executable" in result.stderr
    files = render_systemd(with_executable(example, INSTALLED_PROGRAM))
    files[UNIT_NAME] = files[UNIT_NAME].replace("Restart=on-failure", "Restart=sometimes")
    assert "sometimes" in verify(files, tmp_path, "instruct-8001").stderr


def test_the_unit_restarts_with_backoff_and_outlasts_the_drain(example):
    lines = unit_lines(render_systemd(example)[UNIT_NAME])
    assert "Restart=on-failure" in lines
    assert "RestartSec=10" in lines
    assert "StartLimitBurst=5" in lines
    assert "StartLimitIntervalSec=900" in lines
    assert "KillSignal=SIGTERM" in lines
    assert "KillMode=mixed" in lines  # SIGTERM to qwenvl-serve alone; it stops vLLM's processes
    drain = max(model.instance.shutdown.drain_seconds for model in example.models)
    assert f"TimeoutStopSec={stop_timeout_seconds(example)}" in lines
    assert stop_timeout_seconds(example) > drain


def test_the_unit_is_hardened_and_runs_as_its_own_user(example):
    lines = unit_lines(render_systemd(example)[UNIT_NAME])
    for setting in (
        "User=qwenvl-serve",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "LimitNOFILE=65536",
        "ReadWritePaths=/var/lib/qwenvl-serve /var/cache/qwenvl-serve",
        'Environment="HF_HOME=/var/cache/qwenvl-serve/huggingface"',
        'Environment="HF_HUB_OFFLINE=1"',
        "EnvironmentFile=/etc/qwenvl-serve/instances/%i.env",
        "WantedBy=qwenvl-serve.target",
    ):
        assert setting in lines


def test_usage_logs_and_extra_paths_are_writable(example):
    instruct = example.models[0]
    metering = instruct.instance.metering.model_copy(
        update={"usage_log": Path("/srv/usage/instruct.jsonl")}
    )
    thinking = example.models[1]
    in_state = thinking.instance.metering.model_copy(update={"usage_log": Path("usage.jsonl")})
    models = (
        dataclasses.replace(
            instruct, instance=instruct.instance.model_copy(update={"metering": metering})
        ),
        dataclasses.replace(
            thinking, instance=thinking.instance.model_copy(update={"metering": in_state})
        ),
        example.models[2],
    )
    systemd = example.config.systemd.model_copy(update={"read_write_paths": [Path("/data/x")]})
    config = example.config.model_copy(update={"systemd": systemd})
    deployment = dataclasses.replace(example, models=models, config=config)
    assert (
        "ReadWritePaths=/var/lib/qwenvl-serve /var/cache/qwenvl-serve /srv/usage /data/x"
        in unit_lines(render_systemd(deployment)[UNIT_NAME])
    )


def test_one_env_file_per_instance_with_its_address_and_gpus(example):
    files = render_systemd(example)
    moe = files["instances/127.0.0.1/moe-8003.env"]
    assert "QWENVL_SERVE_CONFIG=/etc/qwenvl-serve/models/moe.yaml" in moe
    assert "QWENVL_SERVE_PORT=8003" in moe
    assert "CUDA_VISIBLE_DEVICES=2,3" in moe
    first_line, copy = files["models/moe.yaml"].split("\n", 1)
    assert first_line.startswith("# Rendered by `qwenvl-serve render` from example.yaml")
    assert copy == (REPO / "configs/qwen3-vl-30b-a3b-instruct.yaml").read_text()
    exec_start = next(
        line for line in files[UNIT_NAME].splitlines() if line.startswith("ExecStart")
    )
    assert "--config ${QWENVL_SERVE_CONFIG}" in exec_start
    assert "--set host=${QWENVL_SERVE_HOST} --set port=${QWENVL_SERVE_PORT}" in exec_start


def test_gpus_are_handed_out_per_host_by_tensor_parallel_size(example, tmp_path):
    text = EXAMPLE.read_text().replace("gpus: [2, 3]", "gpus: null")
    text = text.replace("../configs/", str(REPO / "configs") + "/")
    (tmp_path / "d.yaml").write_text(text)
    instances = {i.name: i.gpus for i in plan_instances(load_deployment(tmp_path / "d.yaml", {}))}
    assert instances == {"instruct-8001": (0,), "thinking-8002": (1,), "moe-8003": (2, 3)}


def planned_gpus(tmp_path: Path, models: list[dict[str, object]]) -> dict[str, tuple[int, ...]]:
    """Write a deployment of ``models`` (configs from configs/) and plan its instances."""
    for model in models:
        model["config"] = str(REPO / "configs" / str(model["config"]))
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"models": models}))
    return {i.name: i.gpus for i in plan_instances(load_deployment(tmp_path / "d.yaml", {}))}


def test_automatic_gpus_skip_the_ones_other_replicas_list(tmp_path):
    example = yaml.safe_load(EXAMPLE.read_text())
    example["models"][1]["replicas"].append("127.0.0.1:8004")  # thinking, after moe's [2, 3]
    assert planned_gpus(tmp_path, example["models"]) == {
        "instruct-8001": (0,),
        "thinking-8002": (1,),
        "thinking-8004": (4,),
        "moe-8003": (2, 3),
    }
    models: list[dict[str, object]] = [
        {
            "name": "instruct",
            "config": "qwen3-vl-8b-instruct.yaml",
            "replicas": [
                {"address": "127.0.0.1:8001", "gpus": [0]},
                {"address": "127.0.0.1:8002", "gpus": [1]},
            ],
        },
        {"name": "moe", "config": "qwen3-vl-30b-a3b-instruct.yaml", "replicas": ["127.0.0.1:8003"]},
    ]
    assert planned_gpus(tmp_path, models)["moe-8003"] == (2, 3)


def test_two_replicas_listing_one_gpu_on_one_host_are_refused(tmp_path):
    models: list[dict[str, object]] = [
        {
            "name": "instruct",
            "config": "qwen3-vl-8b-instruct.yaml",
            "replicas": [
                {"address": "127.0.0.1:8001", "gpus": [0]},
                {"address": "127.0.0.2:8001", "gpus": [0]},  # another host address: allowed
            ],
        },
        {
            "name": "moe",
            "config": "qwen3-vl-30b-a3b-instruct.yaml",
            "replicas": [{"address": "127.0.0.1:8003", "gpus": [1, 0]}],
        },
    ]
    with pytest.raises(DeploymentError, match="instruct-8001 and moe-8003 both list GPU 0"):
        planned_gpus(tmp_path, models)
