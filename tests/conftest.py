"""Session fixtures: the tiny checkpoint and one real engine shared by the e2e tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from qwenvl_serve.tiny_model import build_tiny_model
from tests.servers import REPO, RunningServer, start_server, stop_server

TINY_CONFIG = REPO / "configs" / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight Qwen3-VL checkpoint, built once per session."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "qwen3-vl-tiny")


@pytest.fixture(scope="session")
def tiny_server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """`qwenvl-serve serve configs/tiny.yaml` on a free loopback port, for the whole session."""
    log_path = tmp_path_factory.mktemp("logs") / "tiny-server.log"
    server = start_server(TINY_CONFIG, [f"model={tiny_model_dir}"], log_path, _port())
    yield server
    leftovers = stop_server(server)
    assert server.process.returncode == 0, server.log_tail()
    assert not leftovers, f"processes left behind: {[p.pid for p in leftovers]}"


def _port() -> int:
    from tests.servers import free_port

    return free_port()


@pytest.fixture(scope="module")
def usage_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh usage-log path for one test module's server."""
    return tmp_path_factory.mktemp("usage") / "usage.jsonl"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
