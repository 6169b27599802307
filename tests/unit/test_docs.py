"""The README stays true: its configuration reference is the generated one."""

from pathlib import Path

import pytest

from qwenvl_serve.cli import main
from qwenvl_serve.config_docs import (
    REFERENCE_END,
    REFERENCE_START,
    render_reference,
    replace_reference,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_configuration_reference_is_in_sync():
    text = README.read_text()
    assert replace_reference(text, render_reference()) == text, (
        "README reference is stale: run `make docs`"
    )


def test_reference_lists_every_engine_setting_with_its_description():
    reference = render_reference()
    for key in ("engine.gpu_memory_utilization", "engine.limit_mm_per_prompt", "port"):
        assert f"`{key}`" in reference
    assert "Fraction of GPU memory" in reference
    assert "(> 0, ≤ 1)" in reference


def test_replace_reference_needs_both_markers():
    with pytest.raises(ValueError, match="markers"):
        replace_reference(f"no end {REFERENCE_START}", "x")
    assert replace_reference(f"a{REFERENCE_START}old{REFERENCE_END}b", "new\n") == (
        f"a{REFERENCE_START}\nnew\n{REFERENCE_END}b"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "No such file"), ("no markers here\n", "no configuration reference markers")],
)
def test_updating_a_missing_or_unmarked_document_is_one_line(tmp_path, capsys, content, message):
    document = tmp_path / "doc.md"
    if content is not None:
        document.write_text(content)
    assert main(["config-reference", "--update", str(document)]) == 1
    assert message in capsys.readouterr().err
