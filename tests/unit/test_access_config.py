"""The auth, limits, metering and metrics config sections."""

import hashlib
import json

import pytest

from qwenvl_serve.config_loading import ConfigError, resolve_config
from qwenvl_serve.launch_plan import build_launch_plan

PLAIN = "test-key-0123456789abcdef"
DIGEST = "sha256:" + hashlib.sha256(PLAIN.encode()).hexdigest()


def config_with_keys(*keys, **extra):
    return resolve_config({"model": "m", "auth": {"keys": list(keys)}, **extra})


def test_a_plain_key_is_kept_only_as_its_digest():
    config = config_with_keys({"name": "app", "key": PLAIN})
    assert config.auth.keys[0].key == DIGEST
    launch_env = build_launch_plan(config).env
    assert PLAIN not in json.dumps(launch_env)
    assert DIGEST in json.dumps(launch_env)


def test_a_key_from_the_environment():
    config = resolve_config(
        {"model": "m", "auth": {"keys": [{"name": "app", "key": "${APP_KEY}"}]}},
        environ={"APP_KEY": PLAIN},
    )
    assert config.auth.keys[0].key == DIGEST


def test_a_digest_is_accepted_in_either_case_and_kept_in_lower_case():
    config = config_with_keys({"name": "app", "key": DIGEST.upper().replace("SHA256", "sha256")})
    assert config.auth.keys[0].key == DIGEST


def test_the_resolved_config_round_trips_without_rehashing():
    config = config_with_keys({"name": "app", "key": PLAIN, "rpm": 3})
    assert type(config).model_validate_json(config.model_dump_json()) == config


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("short", "at least 16 characters"),
        ("", "at least 16 characters"),
        ("has spaces in the middle", "printable ASCII without spaces"),
        ("sha256:" + hashlib.sha256(b"").hexdigest(), "digest of an empty key"),
    ],
)
def test_weak_or_malformed_keys_are_refused(key, message):
    with pytest.raises(ConfigError, match=message):
        config_with_keys({"name": "app", "key": key})


def test_an_unset_environment_variable_is_an_error_not_an_empty_key():
    with pytest.raises(ConfigError, match="APP_KEY is not set"):
        resolve_config(
            {"model": "m", "auth": {"keys": [{"name": "a", "key": "${APP_KEY}"}]}}, environ={}
        )


def test_names_and_keys_must_be_unique():
    with pytest.raises(ConfigError, match="key names must be unique"):
        config_with_keys({"name": "a", "key": PLAIN}, {"name": "a", "key": PLAIN + "x"})
    with pytest.raises(ConfigError, match="listed twice"):
        config_with_keys({"name": "a", "key": PLAIN}, {"name": "b", "key": DIGEST})


@pytest.mark.parametrize("name", ["", "has space", "-leading", 'quote"', "x" * 65])
def test_key_names_are_safe_labels(name):
    with pytest.raises(ConfigError, match=r"auth\.keys\.0\.name"):
        config_with_keys({"name": name, "key": PLAIN})


@pytest.mark.parametrize("field", ["rpm", "tpm", "max_concurrent"])
def test_limits_are_positive(field):
    with pytest.raises(ConfigError, match=f"auth.keys.0.{field}"):
        config_with_keys({"name": "a", "key": PLAIN, field: 0})


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "example.internal", "::"])
def test_no_keys_off_loopback_is_refused(host):
    with pytest.raises(ConfigError, match=f"auth.keys is empty.*host {host} is not loopback"):
        resolve_config({"model": "m", "host": host})


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_no_keys_on_loopback_is_allowed(host):
    assert not resolve_config({"model": "m", "host": host}).auth.enabled


def test_keys_allow_any_host():
    config = resolve_config(
        {"model": "m", "host": "0.0.0.0", "auth": {"keys": [{"name": "a", "key": PLAIN}]}}
    )
    assert config.auth.enabled


def test_defaults():
    config = resolve_config({"model": "m"})
    assert config.limits.max_in_flight == 256
    assert config.metering.usage_log is None
    assert config.metering.prices.cost(1000, 1000) == 0
    assert config.metrics.public is False
    assert config.metrics.token is None


def test_metrics_token_is_kept_as_a_digest_and_prices_give_cost():
    config = resolve_config(
        {
            "model": "m",
            "metrics": {"token": PLAIN},
            "metering": {"prices": {"prompt_per_1k": 0.5, "completion_per_1k": 2.0}},
        }
    )
    assert config.metrics.token == DIGEST
    assert config.metering.prices.cost(2000, 500) == pytest.approx(2.0)


def test_an_empty_usage_log_means_no_log():
    empty = resolve_config({"model": "m", "metering": {"usage_log": "${LOG:-}"}}, [], {})
    assert empty.metering.usage_log is None
