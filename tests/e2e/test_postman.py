"""The Postman collection, run by newman against the live tiny server."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.servers import REPO, RunningServer

pytestmark = pytest.mark.e2e
POSTMAN = REPO / "deploy" / "postman"
COLLECTION = POSTMAN / "qwenvl-serve.postman_collection.json"
ENVIRONMENT = POSTMAN / "qwenvl-serve.postman_environment.json"
REQUESTS = [
    "List models",
    "Chat with an image",
    "Chat with an image, streamed",
    "generateContent (Google format)",
    "No API key",
    "Oversize image",
]


def test_environment_names_the_three_settings():
    values = {item["key"]: item["value"] for item in json.loads(ENVIRONMENT.read_text())["values"]}
    assert set(values) == {"baseUrl", "apiKey", "model"}


def test_newman_runs_every_request_and_every_test_passes(
    tiny_server: RunningServer, tmp_path: Path
):
    newman = shutil.which("newman")
    assert newman, "newman is missing: run `make system-deps`"
    report = tmp_path / "newman.json"
    result = subprocess.run(
        [
            newman,
            "run",
            str(COLLECTION),
            "-e",
            str(ENVIRONMENT),
            "--env-var",
            f"baseUrl={tiny_server.base_url}",
            "--reporters",
            "cli,json",
            "--reporter-json-export",
            str(report),
            "--color",
            "off",
            "--timeout-request",
            "120000",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    run = json.loads(report.read_text())["run"]
    assert [execution["item"]["name"] for execution in run["executions"]] == REQUESTS
    for execution in run["executions"]:
        assertions = execution.get("assertions", [])
        assert len(assertions) >= 2, execution["item"]["name"]  # status and shape at least
        assert not [a for a in assertions if a.get("error")], execution["item"]["name"]
    assert run["stats"]["assertions"]["failed"] == 0
    assert run["stats"]["prerequestScripts"]["failed"] == 0
    assert run["stats"]["testScripts"]["failed"] == 0
