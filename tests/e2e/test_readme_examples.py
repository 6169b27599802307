"""The README's client examples, run as written against the live tiny server."""

import json
import re
import subprocess
import sys

import pytest

from tests.servers import REPO, RunningServer

pytestmark = pytest.mark.e2e
README_ADDRESS = "127.0.0.1:8000"


def readme_example(tag: str) -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(rf"```\w+\n# readme-example: {tag}\n(.*?)```", text, re.DOTALL)
    assert match, f"README has no example tagged {tag}"
    return match.group(1)


def pointed_at(example: str, server: RunningServer) -> str:
    assert README_ADDRESS in example
    return example.replace(README_ADDRESS, f"127.0.0.1:{server.port}")


def run_readme_example(tag: str, server: RunningServer, *, python: bool = False) -> str:
    """Run the README example tagged ``tag`` against ``server``; its standard output."""
    script = pointed_at(readme_example(tag), server)
    argv = [sys.executable, "-c", script] if python else ["bash", "-euc", script]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120, check=True)
    return result.stdout


def test_curl_example(tiny_server: RunningServer):
    body = json.loads(run_readme_example("curl", tiny_server))
    assert body["model"] == "qwen3-vl-tiny"
    assert body["usage"]["prompt_tokens"] > 300  # 640x480 photo: 302 image tokens
    assert body["choices"][0]["message"]["role"] == "assistant"


def test_openai_sdk_example(tiny_server: RunningServer):
    output = run_readme_example("openai", tiny_server, python=True)
    assert "CompletionUsage(" in output
    assert "prompt_tokens=" in output
