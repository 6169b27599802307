"""`qwenvl-serve render`: the checked-in deploy/ output matches the renderer; write and check."""

from pathlib import Path

from qwenvl_serve.cli import main
from qwenvl_serve.deploy.loading import load_deployment
from qwenvl_serve.deploy.render import (
    deployment_reference,
    drift,
    existing_files,
    rendered_files,
)

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RERENDER = "qwenvl-serve render --deploy deploy/example.yaml --out deploy"


def test_checked_in_files_match_the_renderer():
    files = rendered_files(load_deployment(DEPLOY / "example.yaml", {}))
    assert drift(files, existing_files(DEPLOY)) == [], f"deploy/ is stale: run `{RERENDER}`"
    assert "nginx/qwenvl-serve.conf" in files
    assert "systemd/qwenvl-serve@.service" in files


def test_drift_names_missing_stale_and_changed_files():
    assert drift({"a": "1", "b": "2"}, {"b": "3", "c": "4"}) == [
        "missing: a",
        "differs: b",
        "stale: c",
    ]


def test_render_writes_then_check_passes_then_fails_on_an_edit(tmp_path, capsys):
    example = str(DEPLOY / "example.yaml")
    out = tmp_path / "out"
    (out / "systemd" / "instances" / "gone").mkdir(parents=True)
    stale = out / "systemd" / "instances" / "gone" / "old-9000.env"
    stale.write_text("# Rendered by `qwenvl-serve render` from old.yaml: instance old-9000.\n")
    (out / "postman").mkdir()
    (out / "postman" / "kept.json").write_text("{}")
    # Files render did not write are never removed, even under nginx/ and systemd/.
    (out / "nginx" / "sites-enabled").mkdir(parents=True)
    (out / "nginx" / "sites-enabled" / "default").write_text("server { listen 80; }\n")
    (out / "systemd" / "sshd.service").write_text("[Unit]\n")
    (out / "systemd" / ".unit.swp").write_bytes(b"\xff\xfe binary")

    assert main(["render", "--deploy", example, "--out", str(out)]) == 0
    assert "wrote 9 files" in capsys.readouterr().out
    assert not stale.exists()
    assert (out / "postman" / "kept.json").exists()
    assert (out / "nginx" / "sites-enabled" / "default").exists()
    assert (out / "systemd" / "sshd.service").exists()
    assert (out / "systemd" / ".unit.swp").exists()
    assert main(["render", "--deploy", example, "--out", str(out), "--check"]) == 0

    unit = out / "systemd" / "qwenvl-serve@.service"
    unit.write_text(unit.read_text() + "# edited\n")
    assert main(["render", "--deploy", example, "--out", str(out), "--check"]) == 1
    assert "differs: systemd/qwenvl-serve@.service" in capsys.readouterr().err


def test_render_needs_both_paths(capsys):
    assert main(["render", "--deploy", "x.yaml"]) == 2
    assert "render needs --deploy FILE and --out DIR" in capsys.readouterr().err


def test_reference_lists_list_item_keys(capsys):
    assert main(["render", "--reference"]) == 0
    printed = capsys.readouterr().out
    assert printed == deployment_reference()
    for key in ("models[].name", "models[].replicas[].gpus", "limits.rate_per_ip", "systemd.user"):
        assert f"| `{key}` |" in printed
