"""The built wheel, installed (not editable) into a fresh virtual environment, works.

The wheel is built offline with the setuptools of the test environment (PEP 517, no
build isolation) and installed with uv without its dependencies; the fresh environment
borrows the test environment's third-party packages through a ``.pth`` line, which
never runs the test environment's own editable-install hook, so ``qwenvl_serve`` can
only come from the wheel.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.servers import REPO


def uv_command() -> list[str]:
    found = shutil.which("uv")
    return [found] if found else ["python3", "-m", "uv"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "qwenvl_serve"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    build = f"import setuptools.build_meta as b, sys; print(b.build_wheel({str(out)!r}))"
    done = subprocess.run(
        [sys.executable, "-c", build], cwd=source, capture_output=True, text=True, check=True
    )
    return out / done.stdout.strip().splitlines()[-1]


def test_the_wheel_carries_the_package_data(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "qwenvl_serve/tiny/chat_template.jinja",
        "qwenvl_serve/playground/static/index.html",
        "qwenvl_serve/py.typed",
    ):
        assert needed in names


def test_make_tiny_model_and_args_run_from_the_installed_wheel(wheel: Path, tmp_path: Path):
    env_dir = tmp_path / "venv"
    subprocess.run([*uv_command(), "venv", "-q", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(purelib) / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [*uv_command(), "pip", "install", "-q", "--offline", "--no-deps",
         "--python", str(python), str(wheel)],
        check=True,
    )  # fmt: skip
    where = subprocess.run(
        [str(python), "-c", "import qwenvl_serve; print(qwenvl_serve.__file__)"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    ).stdout.strip()  # fmt: skip
    assert where.startswith(purelib)  # the wheel's copy, not the checkout's
    command = env_dir / "bin" / "qwenvl-serve"
    model = tmp_path / "tiny"
    subprocess.run([str(command), "make-tiny-model", str(model)], check=True, cwd=tmp_path)
    assert json.loads((model / "config.json").read_text())["model_type"] == "qwen3_vl"
    config = tmp_path / "tiny.yaml"
    config.write_text(f"model: {model}\nserved_model_name: tiny\n")
    args = subprocess.run(
        [str(command), "args", "--config", str(config)],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    assert "--middleware" in args.stdout
