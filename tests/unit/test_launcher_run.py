"""run_server against stand-in children: exit statuses, leftover writers, stop signals."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from qwenvl_serve.launcher import failure_reason

REPO = Path(__file__).resolve().parents[2]
# Bounds a launcher run so that a hang fails the test instead of stalling the suite.
HANG_LIMIT_SECONDS = 20

# Runs the real run_server with the vLLM command swapped for `python -c <child script>`.
DRIVER = """
import sys
from qwenvl_serve import launcher
from qwenvl_serve.config import InstanceConfig
from qwenvl_serve.launch_plan import LaunchPlan

class StandIn(LaunchPlan):
    def argv(self, python):
        return [python, "-c", self.args[0]]

launcher.check_engine_installed = lambda: None
config = InstanceConfig(model="Qwen/Qwen3-VL-8B-Instruct", port=int(sys.argv[2]))
raise SystemExit(launcher.run_server(config, StandIn(args=[sys.argv[1]])))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_launcher(child_script: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, child_script, str(free_port())],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_launcher(child_script: str) -> subprocess.CompletedProcess[str]:
    launcher = start_launcher(child_script)
    try:
        out, err = launcher.communicate(timeout=HANG_LIMIT_SECONDS)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    return subprocess.CompletedProcess(launcher.args, launcher.returncode, out, err)


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_unrequested_exit_zero_is_a_failure():
    # vLLM's watchdog stops uvicorn cleanly after an engine-core crash (vllm#48966).
    result = run_launcher("print('INFO Shutting down'); raise SystemExit(0)")
    assert result.returncode == 1
    assert last_line(result.stderr) == (
        "qwenvl-serve: vLLM exited unexpectedly with status 0: "
        "no error message; see the output above"
    )
    assert "INFO Shutting down" in result.stdout


def test_exit_zero_after_a_stop_signal_stays_zero():
    child = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    launcher = start_launcher(child)
    try:
        assert launcher.stdout is not None
        # The launcher forwards signals before it pumps output, so "ready" means armed.
        assert launcher.stdout.readline() == "ready\n"
        launcher.send_signal(signal.SIGTERM)
        _, err = launcher.communicate(timeout=HANG_LIMIT_SECONDS)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode == 0
    assert "qwenvl-serve:" not in err


def test_a_leftover_holding_the_output_pipe_does_not_hang_the_launcher(tmp_path: Path):
    pid_file = tmp_path / "leftover.pid"
    child = (
        "import subprocess, sys\n"
        # Inherits vLLM's stdout pipe and process group, as an engine core would.
        "leftover = subprocess.Popen(['sleep', '600'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(leftover.pid))\n"
        "print('ValueError: the engine fell over', flush=True)\n"
        "raise SystemExit(1)\n"
    )
    try:
        result = run_launcher(child)
    finally:
        if pid_file.exists():  # without the fix the leftover outlives the killed launcher
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
    assert result.returncode == 1
    # The tail read by the pump is complete before the failure line is computed.
    assert last_line(result.stderr) == (
        "qwenvl-serve: vLLM exited with status 1: ValueError: the engine fell over"
    )


def test_reason_recognises_argparse_errors():
    lines = [
        "usage: api_server.py [-h] [--host HOST]",
        "api_server.py: error: unrecognized arguments: --shutdown-timeout 30",
    ]
    assert failure_reason(lines) == (
        "api_server.py: error: unrecognized arguments: --shutdown-timeout 30"
    )
