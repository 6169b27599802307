"""Run a rendered deployment's nginx config without root: for trying it out and for tests.

nginx is started as ``nginx -p PREFIX -c PREFIX/nginx.conf -e PREFIX/startup.log``, with
every path it writes (pid, logs, temp files) under PREFIX and a loopback listener.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from qwenvl_serve.deploy.loading import Deployment

MAIN_CONFIG = "nginx.conf"
SITE_CONFIG = "qwenvl-serve.conf"
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


def local_variant(deployment: Deployment, prefix: Path, listen: str) -> Deployment:
    """The same deployment, listening on ``listen`` and logging under ``prefix``."""
    server = deployment.config.server.model_copy(
        update={
            "listen": listen,
            "tls": None,
            "access_log": str(prefix / "access.log"),
            "error_log": str(prefix / "error.log"),
        }
    )
    config = deployment.config.model_copy(update={"server": server})
    return dataclasses.replace(deployment, config=config)


def main_config(prefix: Path) -> str:
    """A complete nginx.conf around the rendered site file, with all paths under ``prefix``."""
    temp_paths = "\n".join(f"    {name}_temp_path {prefix / 'temp' / name};" for name in TEMP_DIRS)
    return (
        "worker_processes 1;\n"
        "daemon off;\n"
        f"pid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} warn;\n"
        "events { worker_connections 512; }\n"
        "http {\n"
        f"{temp_paths}\n"
        f"    include {prefix / SITE_CONFIG};\n"
        "}\n"
    )


def write_local_files(site_text: str, prefix: Path) -> Path:
    """Write nginx.conf and the site file under ``prefix``; return nginx.conf's path."""
    for name in TEMP_DIRS:
        (prefix / "temp" / name).mkdir(parents=True, exist_ok=True)
    (prefix / SITE_CONFIG).write_text(site_text, encoding="utf-8")
    main = prefix / MAIN_CONFIG
    main.write_text(main_config(prefix), encoding="utf-8")
    return main


def nginx_argv(prefix: Path, *extra: str) -> list[str]:
    """``nginx`` with the prefix, config and startup log set; add ``-t`` to only check."""
    return [
        "nginx",
        "-p",
        str(prefix),
        "-c",
        str(prefix / MAIN_CONFIG),
        "-e",
        str(prefix / "startup.log"),
        *extra,
    ]


@contextlib.contextmanager
def running_nginx(site_text: str, prefix: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """nginx in the foreground on 127.0.0.1:``port``; stopped by its pid (SIGQUIT: it
    finishes the requests it holds, then exits)."""
    write_local_files(site_text, prefix)
    process = subprocess.Popen(nginx_argv(prefix))
    try:
        wait_listening(process, port)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGQUIT)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_listening(process: subprocess.Popen[bytes], port: int) -> None:
    """Return once nginx accepts connections; fail if it exits or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited with status {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nginx did not listen on port {port}")
