"""`serve` fails with one line that says why, for pre-flight and real engine failures."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import REPO, free_port

pytestmark = pytest.mark.e2e


def serve(*overrides: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "qwenvl_serve.cli", "serve", "--config", "configs/tiny.yaml"]
    for item in overrides:
        argv += ["--set", item]
    return subprocess.run(
        argv, capture_output=True, text=True, cwd=REPO, timeout=timeout, check=False
    )


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_bad_model_path(tmp_path: Path):
    result = serve(f"model={tmp_path / 'missing'}", f"port={free_port()}")
    assert result.returncode != 0
    assert last_line(result) == f"qwenvl-serve: model path {tmp_path / 'missing'} does not exist"


def test_port_in_use(tiny_model_dir: Path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = serve(f"model={tiny_model_dir}", f"port={port}")
    assert result.returncode != 0
    assert last_line(result).startswith(f"qwenvl-serve: cannot bind 127.0.0.1:{port}: ")


def test_engine_refusing_the_checkpoint(tmp_path: Path):
    """A real vLLM start that fails: the last line names the root cause, not a traceback."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "not_a_real_arch"}))
    result = serve(f"model={tmp_path}", f"port={free_port()}")
    assert result.returncode != 0
    line = last_line(result)
    assert line.startswith("qwenvl-serve: vLLM exited with status ")
    assert "not_a_real_arch" in line
