"""Built-in caption prompts: every style in both languages, for one image or a group."""

import pytest

from qwenvl_serve.caption.prompts import (
    LANGUAGES,
    STYLES,
    all_templates,
    group_template,
    style_prompt,
)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("style", STYLES)
def test_every_style_has_a_filled_prompt_in_every_language(style, language):
    prompt = style_prompt(style, language)
    assert len(prompt) > 20
    assert "{" not in prompt


def test_english_and_chinese_prompts_are_in_their_language():
    assert "this image" in style_prompt("alt-text", "en")
    assert "这张图片" in style_prompt("alt-text", "zh")
    assert all(ord(ch) < 128 for ch in style_prompt("detailed", "en"))


def test_sd_prompt_asks_for_english_tags_even_in_chinese():
    assert "英文标签" in style_prompt("sd-prompt", "zh")
    assert "comma-separated English tags" in style_prompt("sd-prompt", "en")


def test_group_prompt_names_the_count_and_asks_for_one_joint_answer():
    english = style_prompt("social", "en", 3)
    assert "these 3 images" in english
    assert "one joint answer" in english
    chinese = style_prompt("social", "zh", 3)
    assert "这 3 张图片" in chinese
    assert "作为一个整体" in chinese


def test_group_template_keeps_a_count_placeholder_for_the_playground():
    template = group_template("ecommerce", "en")
    assert "{count}" in template
    assert template.replace("{count}", "2") == style_prompt("ecommerce", "en", 2)


def test_all_templates_cover_every_language_and_style():
    templates = all_templates()
    assert set(templates) == set(LANGUAGES)
    for language in LANGUAGES:
        assert set(templates[language]) == set(STYLES)
        assert templates[language]["detailed"]["one"] == style_prompt("detailed", language)


def test_zero_images_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        style_prompt("detailed", "en", 0)
