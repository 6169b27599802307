"""Start and stop the servers a benchmark needs, on free loopback ports, ended by pid."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import yaml

from qwenvl_serve.config_loading import load_config
from qwenvl_serve.launch_plan import CONFIG_ENV_VAR, build_launch_plan

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "configs" / "tiny.yaml"
STARTUP_TIMEOUT_S = 900.0
STOP_TIMEOUT_S = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    """A started process tree: its command, port, log and process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def shell_command(self) -> str:
        """The command as a person would type it (see :func:`shell_text`)."""
        return shell_text((self.argv, self.env), self.port)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def shell_text(
    command: tuple[list[str], dict[str, str]], port: int, placeholder: str = "$PORT"
) -> str:
    """A command as a person would type it: the port as a placeholder, paths relative."""
    argv, env = command
    words = [word.replace(str(port), placeholder) for word in argv]
    words = [word.replace(f"{REPO}/", "") for word in words]
    words[0] = "python" if argv[0] == sys.executable else Path(words[0]).name
    exports = [f"{name}={shlex.quote(value)}" for name, value in sorted(env.items())]
    # Words holding the placeholder stay unquoted so that the shell expands it.
    quoted = [word if placeholder in word else shlex.quote(word) for word in words]
    return " ".join([*exports, *quoted])


def without_options(args: Sequence[str], names: Collection[str]) -> list[str]:
    """vLLM arguments with each ``--name VALUE`` pair in ``names`` removed."""
    out: list[str] = []
    skip = False
    for word in args:
        if skip:
            skip = False
            continue
        if word in names:
            skip = True
            continue
        out.append(word)
    return out


def ours_command(port: int) -> tuple[list[str], dict[str, str]]:
    """`qwenvl-serve serve` with the tiny config on ``port``."""
    argv = [str(Path(sys.executable).with_name("qwenvl-serve")), "serve", "--config",
            "configs/tiny.yaml", "--set", f"port={port}"]  # fmt: skip
    return argv, {}


def start_checkout(name: str, checkout: Path, log_dir: Path) -> Server:
    """`qwenvl-serve serve` of another checkout (a git worktree), on a free port.

    It runs from that checkout's directory with it first on the import path, so the
    package it serves is that checkout's, not this one's.
    """
    port = free_port()
    argv, env = ours_command(port)
    return start(name, (argv, {**env, "PYTHONPATH": str(checkout)}), port, log_dir, cwd=checkout)


def bare_command(
    port: int, overrides: Sequence[str] = (), drop: Collection[str] = ("--middleware",)
) -> tuple[list[str], dict[str, str]]:
    """vLLM's own server with our engine arguments for the tiny config, minus ``drop``.

    By default only ``--middleware`` goes: the same engine, without our layers.
    """
    config = load_config(TINY_CONFIG, [*overrides, f"port={port}"], os.environ)
    plan = build_launch_plan(config)
    env = {name: value for name, value in plan.env.items() if name != CONFIG_ENV_VAR}
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    return argv + without_options(plan.args, drop), env


def start(
    name: str,
    command: tuple[list[str], dict[str, str]],
    port: int,
    log_dir: Path,
    cwd: Path = REPO,
) -> Server:
    """Start a server in the background (its own session, so stray output stays in its log).

    ``cwd`` is also where ``python -m`` finds packages first: a server of another
    checkout must run there, or it would import this one's code.
    """
    argv, env = command
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, cwd=cwd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return Server(name, argv, env, port, log_path, process)


def wait_ready(servers: Sequence[Server], timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Wait until every server answers ``/health`` with 200; raise with its log if one dies."""
    pending = list(servers)
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{pending[0].name} not healthy after {timeout_s:.0f}s")
        for server in list(pending):
            if server.process.poll() is not None:
                raise RuntimeError(f"{server.name} exited:\n{server.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.base_url}/health", timeout=2).status_code == 200:
                    pending.remove(server)
        time.sleep(1)


def start_all(starters: Mapping[str, Callable[[], Server]]) -> dict[str, Server]:
    """Start every server and wait until all are healthy; if any fails, end them all."""
    servers: dict[str, Server] = {}
    try:
        for name, starter in starters.items():
            servers[name] = starter()
        wait_ready(list(servers.values()))
    except BaseException:
        for server in servers.values():
            stop(server)
        raise
    return servers


def api_server_process(server: Server) -> psutil.Process:
    """The process of ``server``'s tree that listens on its port: vLLM's API server."""
    root = psutil.Process(server.process.pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            listening = process.net_connections(kind="tcp")
        except psutil.Error:
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == server.port for c in listening):
            return process
    raise RuntimeError(f"no process of {server.name} listens on {server.port}")


def descendants(pid: int) -> list[psutil.Process]:
    """Every process below ``pid`` (none when it is gone)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        return psutil.Process(pid).children(recursive=True)
    return []


def end_process_tree(
    process: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S
) -> list[psutil.Process]:
    """SIGTERM ``process`` by pid and wait; SIGKILL it, then any of its descendants
    still alive, by pid. Returns those descendants, so a caller can report them."""
    children = descendants(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    _, alive = psutil.wait_procs(children, timeout=15)
    for leftover in alive:  # never leave anything behind, even after a failure
        with contextlib.suppress(psutil.NoSuchProcess):
            os.kill(leftover.pid, signal.SIGKILL)
    return alive


def stop(server: Server) -> None:
    """End the server and every process it started, by pid."""
    end_process_tree(server.process)


def nginx_command(
    upstream_port: int, listen_port: int, prefix: Path
) -> tuple[list[str], dict[str, str]]:
    """nginx with the config `qwenvl-serve render` writes for a one-model deployment.

    The deployment's own nginx site (routes, limits, body cap, JSON access log,
    streaming settings), run without root with every file under ``prefix``. The rate
    limits stay on but high: the benchmark measures the proxy, not the throttle.
    """
    from qwenvl_serve.deploy.loading import load_deployment
    from qwenvl_serve.deploy.local_nginx import local_variant, nginx_argv, write_local_files
    from qwenvl_serve.deploy.nginx import render_nginx

    prefix.mkdir(parents=True, exist_ok=True)
    deployment_file = prefix / "deploy.yaml"
    deployment = {
        "models": [{"name": "tiny", "config": str(TINY_CONFIG), "default": True,
                    "replicas": [f"127.0.0.1:{upstream_port}"]}],
        "limits": {"rate_per_ip": "1000r/s", "burst_per_ip": 1000,
                   "rate_per_key": "1000r/s", "burst_per_key": 1000},
    }  # fmt: skip
    deployment_file.write_text(yaml.safe_dump(deployment))
    loaded = load_deployment(deployment_file, os.environ)
    site = render_nginx(local_variant(loaded, prefix, f"127.0.0.1:{listen_port}"))
    write_local_files(site, prefix)
    return nginx_argv(prefix), {}


def metric_total(base_url: str, name: str) -> float:
    """Sum of all samples of ``name`` in the server's ``/metrics`` (0 when absent)."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total
