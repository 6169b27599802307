"""Result rows in JSON Lines and CSV, and resuming from an earlier output file."""

import csv
import io
import json

import pytest

from qwenvl_serve.caption.discovery import CaptionInputError
from qwenvl_serve.caption.output import open_output
from qwenvl_serve.caption.results import (
    CSV_FIELDS,
    ForeignOutputError,
    ResultRow,
    csv_cells,
    csv_text,
    format_for,
    images_cell,
    images_from_cell,
    jsonl_line,
    read_existing,
)

DONE = ResultRow(
    images=("shop/shoe.jpg",),
    caption="红色跑鞋, 轻量",
    model="m",
    prompt_tokens=312,
    completion_tokens=20,
    finish_reason="stop",
)
FAILED = ResultRow(images=("shop/bad.jpg",), error="HTTP 400: Failed to load image", model="m")
GROUP = ResultRow(images=("day/1.jpg", "day/2.jpg"), caption="One day.", model="m")


def jsonl(*rows):
    return "".join(jsonl_line(row) for row in rows)


def csv_file(*rows):
    return csv_text([CSV_FIELDS, *(csv_cells(row) for row in rows)])


def test_jsonl_row_keeps_unicode_and_lists_the_images():
    record = json.loads(jsonl_line(DONE))
    assert record == {
        "images": ["shop/shoe.jpg"],
        "caption": "红色跑鞋, 轻量",
        "error": None,
        "model": "m",
        "prompt_tokens": 312,
        "completion_tokens": 20,
        "finish_reason": "stop",
    }
    assert "红色" in jsonl_line(DONE)


def test_csv_row_joins_a_groups_paths_and_leaves_missing_values_empty():
    cells = dict(zip(CSV_FIELDS, csv_cells(GROUP), strict=True))
    assert cells["images"] == "day/1.jpg|day/2.jpg"
    assert cells["error"] == ""
    assert cells["prompt_tokens"] == ""


@pytest.mark.parametrize(("name", "fmt"), [("a.jsonl", "jsonl"), ("B.CSV", "csv")])
def test_format_follows_the_extension(name, fmt):
    assert format_for(name) == fmt


def test_other_extensions_are_refused():
    with pytest.raises(ValueError, match=r"\.jsonl or \.csv"):
        format_for("out.txt")


@pytest.mark.parametrize(("fmt", "text"), [("jsonl", jsonl), ("csv", csv_file)])
def test_resume_knows_finished_batches_and_drops_error_rows(fmt, text):
    existing = read_existing(text(DONE, FAILED, GROUP), fmt)
    assert existing.done == {("shop/shoe.jpg",), ("day/1.jpg", "day/2.jpg")}
    again = read_existing(existing.kept_text, fmt)
    assert again.done == existing.done
    assert "bad.jpg" not in existing.kept_text


def test_jsonl_resume_forgives_a_last_line_cut_short_by_a_crash():
    text = jsonl(DONE) + jsonl_line(GROUP)[:15]
    assert read_existing(text, "jsonl").done == {("shop/shoe.jpg",)}


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("jsonl", '{"name": "not ours"}\n'),
        ("jsonl", "garbage\n" + jsonl(DONE)),
        ("csv", "id,title\n1,x\n"),
    ],
)
def test_a_file_that_is_not_ours_is_refused(fmt, text):
    with pytest.raises(ForeignOutputError):
        read_existing(text, fmt)


def test_an_empty_file_has_nothing_finished():
    assert read_existing("", "csv").done == frozenset()


def test_open_output_rewrites_the_file_with_finished_rows_then_appends(tmp_path):
    out = tmp_path / "captions.csv"
    out.write_text(csv_file(DONE, FAILED))
    with open_output(out) as output:
        assert output.done == {("shop/shoe.jpg",)}
        output.writer.write(FAILED)
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [row["images"] for row in rows] == ["shop/shoe.jpg", "shop/bad.jpg"]
    assert not list(tmp_path.glob(".*tmp"))


def test_open_output_writes_a_csv_header_to_a_new_file(tmp_path):
    out = tmp_path / "new.csv"
    with open_output(out) as output:
        output.writer.write(GROUP)
    assert out.read_text().splitlines()[0] == ",".join(CSV_FIELDS)


def test_open_output_leaves_a_foreign_file_untouched(tmp_path):
    out = tmp_path / "mine.jsonl"
    out.write_text('{"precious": true}\n')
    with pytest.raises(CaptionInputError, match="not written by"), open_output(out):
        pass
    assert out.read_text() == '{"precious": true}\n'


def test_an_unwritable_output_is_a_user_error(tmp_path):
    with (
        pytest.raises(CaptionInputError, match=r"cannot write .*No such file or directory"),
        open_output(tmp_path / "missing" / "out.jsonl"),
    ):
        pass


ODD_BREAKS = "one\u2028two\u2029three\x85four"
NON_UTF8 = "shop/caf\udce9.png"  # b"caf\xe9.png" as Python decodes a file name


def test_jsonl_resume_splits_rows_on_newlines_only():
    # As earlier versions wrote it: the Unicode line breaks raw inside the strings.
    row = {"images": [f"a{ODD_BREAKS}.png"], "caption": ODD_BREAKS, "error": None}
    text = json.dumps(row, ensure_ascii=False) + "\n" + jsonl(DONE)
    existing = read_existing(text, "jsonl")
    assert existing.done == {(f"a{ODD_BREAKS}.png",), ("shop/shoe.jpg",)}
    assert read_existing(existing.kept_text, "jsonl").done == existing.done


def test_jsonl_escapes_lone_surrogates_and_unicode_line_breaks_but_keeps_other_text():
    row = ResultRow(images=(NON_UTF8,), caption=f"红色 {ODD_BREAKS}", model="m")
    line = jsonl_line(row)
    line.encode("utf-8")  # a lone surrogate could not be written as UTF-8
    assert len(line.splitlines()) == 1
    assert "\\udce9" in line
    assert "红色" in line
    assert json.loads(line)["images"] == [NON_UTF8]
    assert read_existing(line, "jsonl").done == {(NON_UTF8,)}


def test_csv_keeps_a_non_utf8_name_for_surrogateescape_and_drops_other_surrogates():
    row = ResultRow(images=(NON_UTF8,), caption="bad \ud800 half", model="m")
    text = csv_file(row)
    raw = text.encode("utf-8", "surrogateescape")
    assert b"caf\xe9.png" in raw
    existing = read_existing(raw.decode("utf-8", "surrogateescape"), "csv")
    assert existing.done == {(NON_UTF8,)}
    assert "bad \ufffd half" in existing.kept_text


@pytest.mark.parametrize(
    "images",
    [
        ("e|f.png",),
        ("day/a|b.jpg", "day/c.jpg"),
        ("[2024] trip.jpg",),
        ('["x.jpg"]',),
        ("back\\slash.jpg", "day/2.jpg"),
    ],
)
def test_csv_images_cell_reads_back_exactly(images):
    assert tuple(images_from_cell(images_cell(images))) == images
    existing = read_existing(csv_file(ResultRow(images=images, caption="x")), "csv")
    assert existing.done == {images}
    assert read_existing(existing.kept_text, "csv").done == {images}


@pytest.mark.parametrize(
    ("cell", "images"),
    [
        ("shop/shoe.jpg", ["shop/shoe.jpg"]),
        ("day/1.jpg|day/2.jpg", ["day/1.jpg", "day/2.jpg"]),
        ("[2024] trip.jpg", ["[2024] trip.jpg"]),
        ("C:\\photos\\a.jpg", ["C:\\photos\\a.jpg"]),
    ],
)
def test_csv_images_cells_of_earlier_versions_still_read(cell, images):
    assert images_from_cell(cell) == images
