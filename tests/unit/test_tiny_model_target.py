"""make-tiny-model never replaces a directory that holds anything but its own output."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwenvl_serve.tiny_model import MARKER_FILE, TinyModelError, build_tiny_model


def test_a_directory_with_other_files_is_refused_and_left_alone(tmp_path: Path):
    precious = tmp_path / "data" / "precious.txt"
    precious.parent.mkdir()
    precious.write_text("keep me")
    with pytest.raises(TinyModelError, match="not empty"):
        build_tiny_model(precious.parent)
    assert precious.read_text() == "keep me"


def test_a_file_is_refused(tmp_path: Path):
    target = tmp_path / "model"
    target.write_text("x")
    with pytest.raises(TinyModelError, match="is a file"):
        build_tiny_model(target)


def test_an_earlier_checkpoint_is_replaced(tmp_path: Path, tiny_model_dir: Path):
    assert (tiny_model_dir / MARKER_FILE).is_file()
    earlier = tmp_path / "tiny"
    earlier.mkdir()
    (earlier / MARKER_FILE).write_text("ours")
    (earlier / "stale.bin").write_bytes(b"old")
    rebuilt = build_tiny_model(earlier)
    assert not (rebuilt / "stale.bin").exists()
    assert (rebuilt / "config.json").is_file()


def test_a_checkpoint_built_before_the_marker_is_recognised(tmp_path: Path, tiny_model_dir: Path):
    earlier = tmp_path / "old"
    earlier.mkdir()
    (earlier / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    assert (build_tiny_model(earlier) / MARKER_FILE).is_file()
