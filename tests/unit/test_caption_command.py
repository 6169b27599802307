"""The caption command line: options, the API key from the environment, exit statuses."""

import argparse
from pathlib import Path

import pytest

from qwenvl_serve.caption.command import add_caption_arguments
from qwenvl_serve.caption.run import CaptionOptions, api_key_from, http_client
from qwenvl_serve.cli import build_parser, main


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_caption_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_are_one_image_per_request_with_the_detailed_english_prompt():
    options = CaptionOptions.from_args(parse("photos"), environ={})
    assert options.paths == [Path("photos")]
    assert options.group_size is None
    assert options.api_key is None
    assert options.progress
    assert "this image in detail" in options.prompt_for(1, False)
    assert "this video in detail" in options.prompt_for(1, True)


def test_group_uses_the_group_size_and_style_and_language_choose_the_prompt():
    options = CaptionOptions.from_args(
        parse("d", "--group", "--group-size", "3", "--style", "social", "--lang", "zh"), {}
    )
    assert options.group_size == 3
    assert "这 3 张图片" in options.prompt_for(3, False)


def test_own_prompt_is_used_as_is_for_any_count():
    options = CaptionOptions.from_args(parse("d", "--prompt", "Name the colours."), {})
    assert options.prompt_for(1, False) == options.prompt_for(4, True) == "Name the colours."


@pytest.mark.parametrize(
    ("given", "environ", "key"),
    [
        ("flag", {"QWENVL_API_KEY": "q", "OPENAI_API_KEY": "o"}, "flag"),
        (None, {"QWENVL_API_KEY": "q", "OPENAI_API_KEY": "o"}, "q"),
        (None, {"QWENVL_API_KEY": "", "OPENAI_API_KEY": "o"}, "o"),
        (None, {}, None),
    ],
)
def test_api_key_comes_from_the_flag_then_the_environment(given, environ, key):
    assert api_key_from(given, environ) == key


def test_the_key_is_sent_as_a_bearer_token_to_the_base_url():
    options = CaptionOptions.from_args(
        parse("d", "--api-key", "sk-1", "--base-url", "http://h:9/v1/"), {}
    )
    client = http_client(options)
    assert client.headers["authorization"] == "Bearer sk-1"
    assert str(client.base_url) == "http://h:9/v1/"


@pytest.mark.parametrize(
    "argv",
    [
        ["d", "--prompt", "x", "--style", "social"],
        ["d", "--group-size", "0"],
        ["d", "--concurrency", "0"],
        ["d", "--temperature", "3"],
        ["d", "--style", "poem"],
        ["d", "--timeout", "0"],
    ],
)
def test_bad_options_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["caption", *argv])
    assert stopped.value.code == 2


def test_a_missing_path_exits_2_with_one_line(capsys, tmp_path):
    status = main(["caption", str(tmp_path / "missing"), "--quiet"])
    assert status == 2
    assert capsys.readouterr().err.strip() == (
        f"qwenvl-serve: no such file or directory: {tmp_path / 'missing'}"
    )


def test_a_wrong_output_extension_exits_2(capsys, tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8\xff")
    status = main(["caption", str(tmp_path), "--out", str(tmp_path / "out.txt")])
    assert status == 2
    assert "--out must end in .jsonl or .csv" in capsys.readouterr().err


def test_nothing_left_to_do_needs_no_server(capsys, tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8\xff")
    out = tmp_path / "out.jsonl"
    out.write_text(f'{{"images": ["{tmp_path / "a.jpg"}"], "caption": "done", "error": null}}\n')
    status = main(["caption", str(tmp_path), "--out", str(out), "--base-url", "http://127.0.0.1:9"])
    assert status == 0
    assert "captioned 0 images, 0 failed, 1 skipped" in capsys.readouterr().err
