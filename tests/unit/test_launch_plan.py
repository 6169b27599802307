"""Argv building: golden files pin the vLLM command line for every shipped config."""

import json
import os
from pathlib import Path

import pytest

from qwenvl_serve.config_loading import load_config, resolve_config
from qwenvl_serve.launch_plan import (
    CONFIG_ENV_VAR,
    MIDDLEWARE_CLASS,
    build_launch_plan,
    build_vllm_args,
)

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
SHIPPED = sorted((REPO / "configs").glob("*.yaml"))
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def golden_payload(config_path: Path) -> dict[str, object]:
    plan = build_launch_plan(load_config(config_path))
    env = dict(plan.env)
    env[CONFIG_ENV_VAR] = json.loads(env[CONFIG_ENV_VAR])
    return {"args": plan.args, "env": env}


@pytest.mark.parametrize("config_path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_config_argv_matches_golden(config_path: Path):
    golden_file = GOLDEN / f"{config_path.stem}.json"
    payload = golden_payload(config_path)
    if UPDATE:
        golden_file.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    assert payload == json.loads(golden_file.read_text()), (
        "argv drifted; if intended, rerun with UPDATE_GOLDEN=1"
    )


def test_every_shipped_config_has_a_golden_file():
    assert {p.stem for p in SHIPPED} == {p.stem for p in GOLDEN.glob("*.json")}
    assert {"tiny", "qwen3-vl-8b-instruct", "qwen3-vl-4b-thinking"} <= {p.stem for p in SHIPPED}


@pytest.mark.parametrize("config_path", SHIPPED, ids=lambda p: p.stem)
def test_installed_vllm_parser_accepts_the_argv(config_path: Path):
    """The argv is not only stable but valid: vLLM's own serve parser takes every flag."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    plan = build_launch_plan(load_config(config_path))
    parsed = make_arg_parser(FlexibleArgumentParser()).parse_args(plan.args)
    assert parsed.middleware == [MIDDLEWARE_CLASS]
    config = load_config(config_path)
    assert parsed.model == config.model
    assert parsed.port == config.port
    assert parsed.max_model_len == config.engine.max_model_len


def test_optional_settings_appear_only_when_set():
    bare = build_vllm_args(resolve_config({"model": "m"}))
    for flag in ("--quantization", "--max-model-len", "--enforce-eager", "--reasoning-parser"):
        assert flag not in bare
    full = build_vllm_args(
        resolve_config(
            {
                "model": "m",
                "engine": {
                    "quantization": "fp8",
                    "enforce_eager": True,
                    "extra_args": ["--seed", "7"],
                },
            }
        )
    )
    assert full[full.index("--quantization") + 1] == "fp8"
    assert "--enforce-eager" in full
    assert full[-2:] == ["--seed", "7"]  # passed through verbatim, last


def test_environment_carries_the_resolved_config_and_engine_knobs():
    config = resolve_config(
        {"model": "m", "engine": {"cpu_kvcache_space_gib": 2, "env": {"HF_HUB_OFFLINE": "1"}}}
    )
    env = build_launch_plan(config).env
    assert json.loads(env[CONFIG_ENV_VAR])["model"] == "m"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert env["HF_HUB_OFFLINE"] == "1"


def test_quantization_choices_are_all_known_to_the_installed_vllm():
    import typing

    from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS

    from qwenvl_serve.config import Quantization

    assert set(typing.get_args(Quantization)) <= set(QUANTIZATION_METHODS)
