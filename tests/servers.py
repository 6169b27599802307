"""Start and stop real `qwenvl-serve serve` processes for end-to-end tests.

Every server binds 127.0.0.1 on a port chosen at run time and is ended by its pid,
together with every process it started.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from benchmarks.servers import end_process_tree
from benchmarks.servers import free_port as free_port  # re-exported for the tests

REPO = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 90.0


@dataclass
class RunningServer:
    """A started server: its process, address and log file."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def start_server(
    config: Path, overrides: Sequence[str], log_path: Path, port: int
) -> RunningServer:
    """Launch `qwenvl-serve serve` in the background and wait until /health answers 200."""
    argv = [sys.executable, "-m", "qwenvl_serve.cli", "serve", "--config", str(config)]
    for item in [*overrides, f"port={port}", "host=127.0.0.1"]:
        argv += ["--set", item]
    log = log_path.open("wb")
    process = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    server = RunningServer(process, port, log_path)
    try:
        wait_healthy(server)
    except BaseException:
        stop_server(server)
        raise
    return server


def wait_healthy(server: RunningServer, timeout: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"server exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.base_url}/health", timeout=2).status_code == 200:
                return
        time.sleep(1)
    raise TimeoutError(f"server not healthy after {timeout}s:\n{server.log_tail()}")


def stop_server(server: RunningServer) -> list[psutil.Process]:
    """SIGTERM the server by pid, wait, and return any of its processes still alive."""
    return end_process_tree(server.process, STOP_TIMEOUT_S)


@contextlib.contextmanager
def running_server(
    config: Path, overrides: Sequence[str], log_path: Path, port: int | None = None
) -> Iterator[RunningServer]:
    server = start_server(config, overrides, log_path, port or free_port())
    try:
        yield server
    finally:
        stop_server(server)


@contextlib.contextmanager
def running_server_with_env(
    config: Path, overrides: Sequence[str], log_path: Path, environment: Mapping[str, str]
) -> Iterator[RunningServer]:
    """:func:`running_server` with ``environment`` set for the config's ``${VAR}``s."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        with running_server(config, overrides, log_path) as server:
            yield server
