"""The deployment file: validation, one-line errors with exit 2, instance configs read once."""

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from qwenvl_serve.cli import main
from qwenvl_serve.config_loading import resolve_config
from qwenvl_serve.deploy.body_size import MIB, derived_body_bytes
from qwenvl_serve.deploy.config import Replica, split_address
from qwenvl_serve.deploy.loading import PLACEHOLDER_PREFIX, DeploymentError, load_deployment
from qwenvl_serve.images.middleware import rules_from_config

REPO = Path(__file__).resolve().parents[2]
TINY = {"model": "models/qwen3-vl-tiny", "served_model_name": "tiny-a"}


def write(
    tmp_path: Path, deployment: dict[str, Any], configs: dict[str, dict[str, Any]] | None = None
) -> Path:
    for name, tree in (configs or {"a.yaml": TINY}).items():
        (tmp_path / name).write_text(yaml.safe_dump(tree))
    path = tmp_path / "deploy.yaml"
    path.write_text(yaml.safe_dump(deployment))
    return path


def one_model(**overrides: Any) -> dict[str, Any]:
    return {
        "models": [{"name": "a", "config": "a.yaml", "replicas": ["127.0.0.1:9001"], **overrides}]
    }


def test_example_deployment_loads_with_the_shipped_configs():
    deployment = load_deployment(REPO / "deploy" / "example.yaml", {})
    names = [model.entry.name for model in deployment.models]
    assert names == ["instruct", "thinking", "moe"]
    assert deployment.config.default_model is not None
    assert deployment.config.default_model.name == "instruct"
    served = {model.entry.name: model.instance.public_model_name for model in deployment.models}
    assert served == {
        "instruct": "qwen3-vl-8b-instruct",
        "thinking": "qwen3-vl-4b-thinking",
        "moe": "qwen3-vl-30b-a3b-instruct",
    }


def test_replica_is_written_as_host_port_or_as_a_mapping():
    assert Replica.model_validate("10.0.0.5:8001").port == 8001
    full = Replica.model_validate({"address": "[fd00::5]:8002", "gpus": [1, 2]})
    assert (full.host, full.port, full.gpus) == ("[fd00::5]", 8002, [1, 2])
    for bad in ("8001", "host:", "host:99999", "bad host:80", ":80"):
        with pytest.raises(ValueError):  # noqa: PT011 - the message is checked below
            split_address(bad)


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        (one_model(name="V1"), "models.0.name: invalid value 'V1'"),
        (one_model(name="health"), "is a path the server uses itself"),
        (one_model(replicas=["nohostport"]), "'nohostport' is not HOST:PORT"),
        (one_model(replicas=[]), "models.0.replicas: invalid value []"),
        (one_model(colour="red"), "models.0.colour: unknown key; allowed here: name, config,"),
        ({**one_model(), "limits": {"rate_per_ip": "10/s"}}, "must be like 10r/s or 600r/m"),
        ({**one_model(), "server": {"listen": "80; evil"}}, "server.listen: invalid value"),
        ({**one_model(), "serve": {}}, "serve: unknown key; allowed here: models, server,"),
        ({}, "models: required key is missing"),
    ],
)
def test_invalid_deployments_name_the_key_and_what_is_allowed(tmp_path, tree, message):
    with pytest.raises(DeploymentError) as raised:
        load_deployment(write(tmp_path, tree), {})
    assert message in str(raised.value)


def test_names_addresses_and_the_default_must_be_unambiguous(tmp_path):
    configs = {"a.yaml": TINY, "b.yaml": {**TINY, "served_model_name": "tiny-b"}}
    entry_a = {"name": "a", "config": "a.yaml", "replicas": ["127.0.0.1:9001"], "default": True}
    entry_b = {"name": "b", "config": "b.yaml", "replicas": ["127.0.0.1:9002"], "default": True}
    cases = [
        ([entry_a, {**entry_b, "name": "a", "default": False}], "model names must be unique"),
        ([entry_a, entry_b], "at most one model may be `default: true`"),
        (
            [entry_a, {**entry_b, "replicas": ["127.0.0.1:9001"], "default": False}],
            "every replica needs its own HOST:PORT",
        ),
    ]
    for models, message in cases:
        with pytest.raises(DeploymentError, match=message):
            load_deployment(write(tmp_path, {"models": models}, configs), {})


def test_two_models_serving_one_name_are_refused(tmp_path):
    configs = {"a.yaml": TINY, "b.yaml": TINY}
    models = [
        {"name": "a", "config": "a.yaml", "replicas": ["127.0.0.1:9001"]},
        {"name": "b", "config": "b.yaml", "replicas": ["127.0.0.1:9002"]},
    ]
    with pytest.raises(DeploymentError, match="both serve the model name 'tiny-a'"):
        load_deployment(write(tmp_path, {"models": models}, configs), {})
    aliased: dict[str, dict[str, Any]] = {
        "a.yaml": {**TINY, "generate_content": {"model_aliases": ["gemini-2.5-flash"]}},
        "b.yaml": {**TINY, "served_model_name": "gemini-2.5-flash"},
    }
    with pytest.raises(DeploymentError, match=r"both serve the model name 'gemini-2\.5-flash'"):
        load_deployment(write(tmp_path, {"models": models}, aliased), {})


def test_each_replica_is_validated_as_it_will_run(tmp_path):
    """A replica on a non-loopback address needs keys: the instance config's own rule."""
    tree = one_model(replicas=["127.0.0.1:9001", "10.0.0.12:9001"])
    with pytest.raises(DeploymentError) as raised:
        load_deployment(write(tmp_path, tree), {})
    assert str(raised.value).startswith("models[a]: ")
    assert "10.0.0.12 is not loopback" in str(raised.value)


def test_instance_config_errors_and_missing_files_name_the_model(tmp_path):
    bad = {"a.yaml": {**TINY, "engine": {"gpu_memory_utilization": 1.5}}}
    with pytest.raises(DeploymentError, match=r"models\[a\]: .*gpu_memory_utilization"):
        load_deployment(write(tmp_path, one_model(), bad), {})
    with pytest.raises(DeploymentError, match=r"models\[a\]: cannot read .*missing.yaml"):
        load_deployment(write(tmp_path, one_model(config="missing.yaml")), {})


def test_secrets_are_not_needed_to_render(tmp_path):
    keyed = {
        **TINY,
        "auth": {"keys": [{"name": "app", "key": "${APP_KEY}"}]},
        "served_model_name": "${SERVED:-tiny-x}",
    }
    deployment = load_deployment(write(tmp_path, one_model(), {"a.yaml": keyed}), {})
    instance = deployment.models[0].instance
    assert instance.public_model_name == "tiny-x"
    assert instance.auth.enabled  # the unset key read as a placeholder, kept as a digest only
    assert PLACEHOLDER_PREFIX not in deployment.models[0].instance.model_dump_json()


def test_deployment_file_reads_the_environment(tmp_path):
    tree = one_model(replicas=["127.0.0.1:${PORT_A}"])
    deployment = load_deployment(write(tmp_path, tree), {"PORT_A": "9123"})
    assert deployment.models[0].entry.replicas[0].port == 9123
    with pytest.raises(DeploymentError, match="PORT_A is not set"):
        load_deployment(write(tmp_path, tree), {})


def test_cli_prints_one_message_and_exits_2(tmp_path, capsys):
    path = write(tmp_path, one_model(name="Bad Name"))
    assert main(["render", "--deploy", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qwenvl-serve: deployment error: models.0.name: invalid value")
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_body_size_follows_the_image_limits():
    tiny = resolve_config({"model": "m"})
    assert tiny.max_images_per_request == 4
    # 4 images of 10 MiB, base64 (x4/3), plus 1 MiB of text: 54.3 MiB, under the 64 MiB cap.
    assert derived_body_bytes(tiny) == math.ceil(4 * 10 * MIB * 4 / 3) + MIB
    fewer = resolve_config({"model": "m", "engine": {"limit_mm_per_prompt": {"image": 1}}})
    assert derived_body_bytes(fewer) == math.ceil(10 * MIB * 4 / 3) + MIB
    text_only = resolve_config({"model": "m", "images": {"max_per_request": 0}})
    assert derived_body_bytes(text_only) == MIB
    capped = resolve_config({"model": "m", "images": {"max_request_bytes": 8 * MIB}})
    assert derived_body_bytes(capped) == 8 * MIB


def test_body_size_holds_a_video_when_video_is_on():
    video = resolve_config(
        {
            "model": "m",
            "video": {"enabled": True, "max_bytes": 8 * MIB},
            "images": {"max_per_request": 1},
        }
    )
    assert derived_body_bytes(video) == math.ceil((10 + 8) * MIB * 4 / 3) + MIB


def test_nginx_and_the_server_read_a_missing_image_limit_the_same_way():
    # No `image` in the engine limits: vLLM allows 999, so the image layer's own cap holds.
    video_only = resolve_config({"model": "m", "engine": {"limit_mm_per_prompt": {"audio": 0}}})
    served = rules_from_config(video_only).max_images
    assert served == video_only.max_images_per_request == 4
    assert derived_body_bytes(video_only) == math.ceil(served * 10 * MIB * 4 / 3) + MIB
