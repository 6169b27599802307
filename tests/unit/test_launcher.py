"""Launcher pre-flight checks and the one-line failure summary."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from qwenvl_serve.launcher import (
    LaunchError,
    check_model_reachable,
    check_port_free,
    failure_reason,
    looks_like_local_path,
)

DATA = Path(__file__).resolve().parents[1] / "data"
REPO = Path(__file__).resolve().parents[2]


def test_reason_skips_the_generic_engine_wrapper_for_the_root_cause():
    lines = (DATA / "vllm-start-no-weights.log").read_text().splitlines()
    assert (
        failure_reason(lines) == "RuntimeError: Cannot find any model weights with `/tmp/noweights`"
    )


def test_reason_unwraps_pydantic_value_errors():
    lines = (DATA / "vllm-start-unknown-arch.log").read_text().splitlines()
    assert failure_reason(lines) == (
        "The checkpoint you are trying to load has model type `bogus_arch_xyz` "
        "but Transformers does not recognize this architecture"
    )


def test_reason_falls_back_to_the_wrapper_then_to_a_pointer():
    wrapper = "RuntimeError: Engine core initialization failed. See root cause above."
    assert failure_reason(["noise", wrapper]) == wrapper
    assert failure_reason(["Killed"]) == "no error message; see the output above"


def test_reason_is_one_bounded_line():
    reason = failure_reason(["ValueError: " + "x" * 2000])
    assert "\n" not in reason
    assert len(reason) == 500


@pytest.mark.parametrize(
    ("model", "local"),
    [
        ("Qwen/Qwen3-VL-8B-Instruct", False),
        ("models/qwen3-vl-tiny", False),
        ("./m", True),
        ("/srv/models/x", True),
        ("~/x", True),
        ("a/b/c", True),
        ("bare-name", True),
    ],
)
def test_hub_ids_are_told_apart_from_paths(model, local):
    assert looks_like_local_path(model) is local


def test_missing_local_model_fails_fast(tmp_path: Path):
    with pytest.raises(LaunchError, match="does not exist"):
        check_model_reachable(str(tmp_path / "nowhere"))
    with pytest.raises(LaunchError, match=r"has no config\.json"):
        check_model_reachable(str(tmp_path))
    check_model_reachable("Qwen/Qwen3-VL-8B-Instruct")  # left to vLLM


def test_port_in_use_fails_fast():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(LaunchError, match=f"cannot bind 127.0.0.1:{port}"):
            check_port_free("127.0.0.1", port)


def test_without_vllm_the_package_imports_and_serve_names_the_extra():
    script = (
        "import sys; sys.modules['vllm'] = None\n"
        "import qwenvl_serve.cli, qwenvl_serve.middleware, qwenvl_serve.launch_plan\n"
        "raise SystemExit(qwenvl_serve.cli.main(['serve', '--config', 'configs/tiny.yaml']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert result.returncode == 1
    assert "qwenvl-serve[gpu]" in result.stderr
    assert "qwenvl-serve[cpu]" in result.stderr
    assert "Traceback" not in result.stderr
