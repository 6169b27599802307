"""Config loading: YAML parsing, ${VAR} expansion, --set, precedence and error messages."""

from pathlib import Path

import pytest

from qwenvl_serve.config_loading import (
    ConfigError,
    apply_override,
    expand_env,
    load_config,
    parse_override,
    resolve_config,
)

MINIMAL = {"model": "Qwen/Qwen3-VL-8B-Instruct"}


def test_defaults_apply_when_the_file_is_silent():
    config = resolve_config(MINIMAL)
    assert config.port == 8000
    assert config.host == "127.0.0.1"
    assert config.engine.gpu_memory_utilization == 0.9
    assert config.engine.limit_mm_per_prompt == {"image": 4}
    assert config.engine_media_limits == {"image": 4, "video": 0}
    assert config.public_model_name == "Qwen/Qwen3-VL-8B-Instruct"


def test_precedence_is_defaults_then_file_then_set():
    file_data = {**MINIMAL, "port": 9000, "engine": {"max_model_len": 4096, "dtype": "half"}}
    config = resolve_config(file_data, ["engine.max_model_len=8192", "served_model_name=vl"])
    assert config.engine.max_model_len == 8192  # --set beats the file
    assert config.engine.dtype == "half"  # the file beats the default, untouched by --set
    assert config.port == 9000
    assert config.engine.tensor_parallel_size == 1  # default, named nowhere
    assert config.served_model_name == "vl"


def test_later_set_wins_over_earlier_set():
    config = resolve_config(MINIMAL, ["port=9001", "port=9002"])
    assert config.port == 9002


def test_set_values_are_typed_like_yaml():
    assert parse_override("engine.enforce_eager=true") == (["engine", "enforce_eager"], True)
    assert parse_override("engine.extra_args=[--a, b]") == (["engine", "extra_args"], ["--a", "b"])
    assert parse_override("model=Qwen/x") == (["model"], "Qwen/x")


@pytest.mark.parametrize("bad", ["novalue", "=3", "a..b=1", ".a=1"])
def test_malformed_set_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override(bad)


def test_apply_override_does_not_mutate_its_input():
    tree = {"engine": {"dtype": "auto"}}
    result = apply_override(tree, ["engine", "max_model_len"], 1)
    assert tree == {"engine": {"dtype": "auto"}}
    assert result == {"engine": {"dtype": "auto", "max_model_len": 1}}


def test_env_references_are_expanded_with_defaults():
    value = {"a": "${HOME_DIR}/m", "b": ["${MISSING:-fallback}"], "c": 3}
    assert expand_env(value, {"HOME_DIR": "/srv"}) == {"a": "/srv/m", "b": ["fallback"], "c": 3}


def test_unset_env_reference_names_key_and_variable():
    with pytest.raises(ConfigError, match=r"engine\.env\.TOKEN: environment variable SECRET"):
        resolve_config({**MINIMAL, "engine": {"env": {"TOKEN": "${SECRET}"}}}, environ={})


def test_env_expansion_applies_to_set_values_too():
    config = resolve_config(MINIMAL, ["served_model_name=${NAME}"], {"NAME": "from-env"})
    assert config.served_model_name == "from-env"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["engine.gpu_memory_utilization=1.5"],
            "engine.gpu_memory_utilization: invalid value 1.5: must be less than or equal to 1",
        ),
        (["port=70000"], "port: invalid value 70000: must be less than or equal to 65535"),
        (["port=0"], "port: invalid value 0: must be greater than or equal to 1"),
        (["engine.quantization=int3"], "engine.quantization: invalid value 'int3': must be 'awq'"),
        (["engine.dtype=fp64"], "engine.dtype: invalid value 'fp64': must be 'auto'"),
        (["engine.bogus=1"], "engine.bogus: unknown key; allowed here: dtype, quantization"),
        (["bogus=1"], "bogus: unknown key; allowed here: model, served_model_name"),
        (["engine.limit_mm_per_prompt={image: -1}"], "engine.limit_mm_per_prompt.image"),
        (["engine.limit_mm_per_prompt={pdf: 1}"], "engine.limit_mm_per_prompt.pdf"),
    ],
)
def test_invalid_values_name_key_value_and_what_is_allowed(overrides, expected):
    with pytest.raises(ConfigError) as caught:
        resolve_config(MINIMAL, overrides)
    assert expected in str(caught.value)


def test_missing_model_is_reported():
    with pytest.raises(ConfigError, match="model: required key is missing"):
        resolve_config({})


def test_file_errors_are_config_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line"):
        load_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listing)


def test_empty_file_only_lacks_the_model(tmp_path: Path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="model: required key is missing"):
        load_config(empty)
    assert load_config(empty, ["model=m"]).model == "m"


@pytest.mark.parametrize(
    "override",
    ["metrics.token=Sup3rS3cretTok", 'auth.keys=[{"name": "app", "key": "Sup3rS3cretTok"}]'],
)
def test_errors_about_secrets_never_echo_them(override: str):
    with pytest.raises(ConfigError) as refused:
        resolve_config(MINIMAL, [override])
    assert "Sup3rS3cretTok" not in str(refused.value)
    assert "(hidden)" in str(refused.value)


def test_a_config_file_that_is_not_utf8_is_one_clear_error(tmp_path: Path):
    config = tmp_path / "bad.yaml"
    config.write_bytes(b"model: x\n\xff\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(config)
