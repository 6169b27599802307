"""The CLI's contract: exit 2 and one message per problem, never a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from qwenvl_serve.cli import main

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qwenvl_serve.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("engine.gpu_memory_utilization=1.5", "engine.gpu_memory_utilization: invalid value 1.5"),
        ("engine.quantization=magic", "engine.quantization: invalid value 'magic': must be"),
        ("port=99999", "port: invalid value 99999: must be less than or equal to 65535"),
    ],
)
def test_invalid_config_exits_2_with_one_clear_message(override, message):
    result = run_cli("args", "--config", "configs/tiny.yaml", "--set", override)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("qwenvl-serve: config error: ")
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_serve_with_invalid_config_fails_before_loading_anything(capsys):
    status = main(["serve", "--config", "configs/tiny.yaml", "--set", "port=-1"])
    assert status == 2
    assert "port: invalid value -1" in capsys.readouterr().err


def test_args_prints_the_exact_command_and_environment():
    result = run_cli("args", "--config", "configs/tiny.yaml", "--set", "port=8123")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1].startswith(f"{sys.executable} -m vllm.entrypoints.openai.api_server ")
    assert "--port 8123" in lines[-1]
    assert "--middleware qwenvl_serve.middleware.QwenVLServeMiddleware" in lines[-1]
    assert any(line.startswith("export QWENVL_SERVE_CONFIG=") for line in lines)
    assert "export VLLM_CPU_KVCACHE_SPACE=1" in lines


def test_make_tiny_model_help_says_the_text_is_random():
    result = run_cli("make-tiny-model", "--help")
    assert result.returncode == 0
    assert "text output is random" in " ".join(result.stdout.split())
