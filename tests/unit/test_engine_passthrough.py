"""engine.extra_args and engine.env: what a setting owns or a guarantee needs is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwenvl_serve.config_loading import ConfigError, load_config, resolve_config
from qwenvl_serve.engine_passthrough import RESERVED_ENV, RESERVED_FLAGS, reserved_flag
from qwenvl_serve.launch_plan import build_vllm_args, build_vllm_env

MINIMAL = {"model": "Qwen/Qwen3-VL-8B-Instruct"}
CONFIGS = sorted(Path(__file__).resolve().parents[2].joinpath("configs").glob("*.yaml"))
EVERY_OPTION = {
    **MINIMAL,
    "engine": {
        "quantization": "fp8",
        "max_model_len": 4096,
        "max_num_seqs": 8,
        "enforce_eager": True,
        "mm_encoder_tp_mode": "data",
        "enable_expert_parallel": True,
        "reasoning_parser": "qwen3",
        "cpu_kvcache_space_gib": 4,
    },
}


def refusal(extra_args: list[str]) -> str:
    with pytest.raises(ConfigError) as refused:
        resolve_config({**MINIMAL, "engine": {"extra_args": extra_args}})
    return str(refused.value)


@pytest.mark.parametrize(
    ("words", "flag"),
    [
        (["--host", "0.0.0.0"], "--host"),
        (["--host=0.0.0.0"], "--host"),
        (["--ho", "0.0.0.0"], "--host"),  # vLLM's parser takes abbreviations
        (["--root_path", "/x"], "--root-path"),
        (["--api-key", "k"], "--api-key"),
        (["-tp", "2"], "-tp"),
        (["--middleware", "x.Y"], "--middleware"),
        (["--allowed-local-media-path", "/"], "--allowed-local-media-path"),
        (["--no-disable-uvicorn-access-log"], "--no-disable-uvicorn-access-log"),
    ],
)
def test_reserved_options_are_refused_in_any_spelling(words: list[str], flag: str):
    message = refusal(["--async-scheduling", *words])
    assert f"{flag}" in message
    assert RESERVED_FLAGS[flag] in message


def test_other_options_pass_through_verbatim_and_last():
    extra = [
        "--async-scheduling",
        "--max-num-batched-tokens",
        "4096",
        "--mm-shm-cache-max-object-size-mb",
        "256",
    ]
    config = resolve_config({**MINIMAL, "engine": {"extra_args": extra}})
    assert build_vllm_args(config)[-len(extra) :] == extra


def test_every_option_the_launcher_sets_is_reserved():
    configs = [
        load_config(path, [], {"MOBILE_APP_KEY": "k" * 32, "QWENVL_API_KEY": "k" * 32})
        for path in CONFIGS
    ]
    configs.append(resolve_config(EVERY_OPTION))
    for config in configs:
        args = build_vllm_args(config)
        own = args[: len(args) - len(config.engine.extra_args)]
        assert {w for w in own if w.startswith("-")} <= RESERVED_FLAGS.keys()
        assert build_vllm_env(config).keys() - config.engine.env.keys() <= RESERVED_ENV.keys()


@pytest.mark.parametrize("name", sorted(RESERVED_ENV))
def test_reserved_environment_variables_are_refused(name: str):
    with pytest.raises(ConfigError) as refused:
        resolve_config({**MINIMAL, "engine": {"env": {name: "x", "HF_TOKEN": "hf_secret"}}})
    assert name in str(refused.value)
    assert "hf_secret" not in str(refused.value)  # env may hold secrets: never echoed


def test_values_are_not_mistaken_for_options():
    assert reserved_flag("0.0.0.0") is None
    assert reserved_flag("--max-num-batched-tokens") is None
    assert reserved_flag("--m") is None  # too short to name one option
