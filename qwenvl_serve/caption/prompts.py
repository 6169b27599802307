"""Built-in caption prompts, in English and Chinese, for one image or a group of images.

The same templates fill the playground's style menu, so the CLI and the browser ask
the model the same questions.
"""

from __future__ import annotations

from typing import Literal, get_args

Style = Literal["ecommerce", "social", "alt-text", "sd-prompt", "detailed"]
Language = Literal["en", "zh"]

STYLES: tuple[Style, ...] = get_args(Style)
LANGUAGES: tuple[Language, ...] = get_args(Language)

# `{images}` names what is described: one image, or a group told as one.
_TEMPLATES: dict[Language, dict[Style, str]] = {
    "en": {
        "ecommerce": (
            "Write e-commerce product copy for the item in {images}: a short title (under "
            "60 characters), then 3 to 5 bullet points on its visible features, materials, "
            "colours and uses. Describe only what is visible; do not invent brand names, "
            "sizes or prices."
        ),
        "social": (
            "Write an engaging social media caption for {images}: one or two lively "
            "sentences in a natural voice, then 3 to 5 relevant hashtags."
        ),
        "alt-text": (
            "Write alt text for {images} for people using a screen reader: one concise "
            "sentence (under 125 characters) with the subject and the essential details. "
            "Do not begin with 'Image of' or 'Picture of'."
        ),
        "sd-prompt": (
            "Describe {images} as a Stable Diffusion prompt: a single line of "
            "comma-separated English tags, most important first: subject, setting, "
            "composition, lighting, colour palette, style, camera and lens. No sentences."
        ),
        "detailed": (
            "Describe {images} in detail: the main subject, the setting, people and objects "
            "and where they are, colours, lighting, any visible text, and the overall mood. "
            "Use short, well-organised paragraphs."
        ),
    },
    "zh": {
        "ecommerce": (
            "为{images}中的商品撰写电商文案：先给出一个简短标题（不超过 30 个字），再用 3 到 5 "
            "条要点介绍其可见的特点、材质、颜色和用途。只描述图中可见的内容，不要编造品牌、"
            "尺寸或价格。"
        ),
        "social": (
            "为{images}写一条吸引人的社交媒体文案：一到两句生动自然的话，"
            "再加上 3 到 5 个相关话题标签。"
        ),
        "alt-text": (
            "为{images}撰写替代文本（alt text），供使用读屏软件的用户阅读：用一句简洁的话"
            "（不超过 50 个字）说明主体和关键细节，不要以“图片显示”开头。"
        ),
        "sd-prompt": (
            "把{images}描述为 Stable Diffusion 提示词：只输出一行用逗号分隔的英文标签，"
            "按重要性排序：主体、场景、构图、光线、色调、风格、相机与镜头。不要写完整句子。"
        ),
        "detailed": (
            "详细描述{images}：主体、场景、人物和物体及其位置、颜色、光线、图中可见的文字"
            "以及整体氛围。请分段清晰地组织内容。"
        ),
    },
}

_ONE_IMAGE: dict[Language, str] = {"en": "this image", "zh": "这张图片"}
_ONE_VIDEO: dict[Language, str] = {"en": "this video", "zh": "这段视频"}
_GROUP: dict[Language, str] = {"en": "these {count} images", "zh": "这 {count} 张图片"}
_GROUP_NOTE: dict[Language, str] = {
    "en": (
        "The {count} images belong together (for example one product from several angles, "
        "or one day told as one story): write one joint answer for the whole set."
    ),
    "zh": (
        "这 {count} 张图片属于同一组（例如同一件商品的多个角度，或同一天的经历）："
        "请把它们作为一个整体，给出一个完整的回答。"
    ),
}


def style_prompt(
    style: Style, language: Language, image_count: int = 1, video: bool = False
) -> str:
    """The built-in prompt for ``style`` in ``language``, worded for ``image_count``
    images, or for one video."""
    if image_count < 1:
        raise ValueError("image_count must be at least 1")
    template = _TEMPLATES[language][style]
    if video:
        return template.format(images=_ONE_VIDEO[language])
    if image_count == 1:
        return template.format(images=_ONE_IMAGE[language])
    subject = _GROUP[language].format(count=image_count)
    note = _GROUP_NOTE[language].format(count=image_count)
    return f"{note}\n{template.format(images=subject)}"


def group_template(style: Style, language: Language) -> str:
    """The group wording with a literal ``{count}`` left in, for the playground to fill."""
    marker = 987654  # a count no real request has, swapped back for the placeholder
    return style_prompt(style, language, marker).replace(str(marker), "{count}")


def all_templates() -> dict[str, dict[str, dict[str, str]]]:
    """Every template as ``{language: {style: {"one": ..., "group": ...}}}``."""
    return {
        language: {
            style: {"one": style_prompt(style, language), "group": group_template(style, language)}
            for style in STYLES
        }
        for language in LANGUAGES
    }
