"""The small pure parts of the image layer: sniffing, data URLs, sizes, request walking."""

from __future__ import annotations

import base64
import math

import pytest
from transformers import AutoTokenizer
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize

from qwenvl_serve import tiny_model
from qwenvl_serve.images.chat_request import (
    ImageSlot,
    RequestRules,
    find_images,
    replace_image_urls,
)
from qwenvl_serve.images.config import ImagesConfig
from qwenvl_serve.images.data_url import (
    check_payload_length,
    decode_payload,
    max_payload_length,
    parse_data_url,
)
from qwenvl_serve.images.formats import sniff_format
from qwenvl_serve.images.geometry import target_size, within_bounds
from qwenvl_serve.images.rejections import Reason, RefusalError
from qwenvl_serve.images.reserved_tokens import (
    VISION_TOKEN_IDS,
    VISION_TOKENS,
    check_completion_request,
)

RULES = RequestRules(
    max_images=2,
    allowed_fields=frozenset(),
    video_enabled=False,
    audio_enabled=False,
    remote_urls=True,
)


def refused(function, *args) -> Reason:
    with pytest.raises(RefusalError) as caught:
        function(*args)
    return caught.value.reason


# -- sniffing


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xd8\xff\xe0", "jpeg"),
        (b"\x89PNG\r\n\x1a\n", "png"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"),
        (b"GIF89a", "gif"),
        (b"BM\x00", "bmp"),
        (b"II*\x00", "tiff"),
        (b"\x00\x00\x00\x1cftypavif", "avif"),
        (b"<svg xmlns=", None),
        (b"", None),
    ],
)
def test_formats_are_told_by_magic_bytes(head: bytes, expected: str | None):
    assert sniff_format(head) == expected


# -- data URLs and base64


def test_data_url_parts_are_split_and_the_declared_type_kept_as_is():
    parsed = parse_data_url("data:image/png;base64,AAAA")
    assert (parsed.media_type, parsed.payload) == ("image/png", "AAAA")
    assert parse_data_url("data:;base64,AAAA").payload == "AAAA"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("data:image/png,rawbytes", Reason.MALFORMED_BASE64),
        ("data:image/png;base64", Reason.BAD_IMAGE_URL),
        ("image/png;base64,AAAA", Reason.BAD_IMAGE_URL),
    ],
)
def test_malformed_data_urls_are_refused(url: str, reason: Reason):
    assert refused(parse_data_url, url) is reason


def test_oversized_base64_is_refused_from_its_length_alone():
    limit = 3000
    assert max_payload_length(limit) == 4000
    check_payload_length("A" * 4000, limit)
    assert refused(check_payload_length, "A" * 4004, limit) is Reason.IMAGE_TOO_LARGE
    # Not even a valid alphabet: the length decides first.
    assert refused(check_payload_length, "!" * 10_000, limit) is Reason.IMAGE_TOO_LARGE


@pytest.mark.parametrize("payload", ["", "AAA", "AAAAA", "AA=A", "AA AA", "AAA\n", "ÄÄÄÄ", "AA-_"])
def test_malformed_base64_is_refused(payload: str):
    assert refused(decode_payload, payload, 1000) is Reason.MALFORMED_BASE64


def test_base64_decoding_that_exceeds_the_limit_by_padding_is_refused():
    payload = base64.b64encode(b"x" * 1001).decode()
    assert refused(decode_payload, payload, 1000) is Reason.IMAGE_TOO_LARGE
    assert decode_payload(base64.b64encode(b"x" * 1000).decode(), 1000) == b"x" * 1000


# -- sizes


SIZES = [
    (4000, 3000),
    (3000, 4000),
    (2048, 2048),
    (1000, 750),
    (8000, 100),
    (10, 10),
    (4032, 1816),
    (33, 4000),
]


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_target_size_meets_every_bound(width: int, height: int):
    config = ImagesConfig()
    w, h = target_size(width, height, config.max_side, config.max_pixels)
    assert w % 32 == 0
    assert h % 32 == 0
    assert min(w, h) >= 32
    assert max(w, h) <= config.max_side
    assert w * h <= config.max_pixels
    # The model's processor takes the result as it is: no second resample.
    assert hf_smart_resize(h, w, factor=32, min_pixels=32 * 32, max_pixels=config.max_pixels) == (
        h,
        w,
    )
    # The aspect ratio survives, up to rounding to whole tokens.
    if min(w, h) >= 320:  # short sides of a few tokens round coarsely
        assert math.isclose(w / h, width / height, rel_tol=0.1)


@pytest.mark.parametrize(
    ("width", "height", "max_side", "expected"),
    [
        (6000, 30, 2048, (2048, 32)),  # the thin side never rounds below one token
        (4100, 21, 2048, (2048, 32)),
        (30, 4000, 2048, (32, 2048)),
        (15, 2000, 2048, (32, 1984)),
        (256, 2, 256, (256, 32)),
    ],
)
def test_thin_images_keep_their_long_side(width, height, max_side, expected):
    assert target_size(width, height, max_side, 3_145_728) == expected


def test_twelve_megapixel_photo_fits_the_tiny_models_context():
    assert target_size(4000, 3000, 2048, 3_145_728) == (2048, 1536)  # 3,072 image tokens


def test_bounds():
    assert within_bounds(2048, 1536, 2048, 3_145_728)
    assert not within_bounds(2049, 100, 2048, 3_145_728)
    assert not within_bounds(2048, 2048, 2048, 3_145_728)


# -- request walking


def image_part(url: str = "data:image/jpeg;base64,AAAA") -> dict[str, object]:
    return {"type": "image_url", "image_url": {"url": url}}


def request(*parts: dict[str, object] | str, **fields: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": list(parts)}], **fields}


def test_images_are_found_in_order_with_their_params():
    body = request(
        {"type": "text", "text": "hi"},
        image_part("data:a;base64,QQ=="),
        image_part("https://x.test/a.jpg"),
    )
    slots = find_images(body, RULES)
    assert [(s.param, s.url) for s in slots] == [
        ("messages[0].content[1]", "data:a;base64,QQ=="),
        ("messages[0].content[2]", "https://x.test/a.jpg"),
    ]


def test_untyped_and_simple_forms_count_as_images_like_vllm_reads_them():
    body = request(
        {"image_url": "data:x;base64,QQ=="},
        {"type": "input_image", "image_url": "https://x.test/b"},
    )
    slots = find_images(body, RULES)
    assert [s.url for s in slots] == ["data:x;base64,QQ==", "https://x.test/b"]
    replace_image_urls(body, slots, ["data:new1", "data:new2"])
    parts = body["messages"][0]["content"]  # type: ignore[index]
    assert parts[0]["image_url"] == {"url": "data:new1"}
    assert parts[1]["image_url"] == "data:new2"


@pytest.mark.parametrize(
    ("body", "reason", "param"),
    [
        (
            request(image_part(), image_part(), image_part()),
            Reason.TOO_MANY_IMAGES,
            "messages[0].content[2]",
        ),
        (
            request(mm_processor_kwargs={"max_pixels": 10**9}),
            Reason.FIELD_NOT_ALLOWED,
            "mm_processor_kwargs",
        ),
        (request(media_io_kwargs={"image": {}}), Reason.FIELD_NOT_ALLOWED, "media_io_kwargs"),
        (request(chat_template="{{ x }}"), Reason.FIELD_NOT_ALLOWED, "chat_template"),
        (request(chat_template_kwargs={"a": 1}), Reason.FIELD_NOT_ALLOWED, "chat_template_kwargs"),
        (
            request({"type": "text", "text": "x <|image_pad|> y"}),
            Reason.VISION_TOKEN,
            "messages[0]",
        ),
        (
            {
                "messages": [
                    {"role": "system", "content": "ok"},
                    {"role": "user", "content": "<|vision_start|>"},
                ]
            },
            Reason.VISION_TOKEN,
            "messages[1]",
        ),
        (request(tools=[{"function": {"name": "<|video_pad|>"}}]), Reason.VISION_TOKEN, "tools"),
        (
            request(image_part(), truncate_prompt_tokens=10),
            Reason.MEDIA_WITH_TRUNCATION,
            "truncate_prompt_tokens",
        ),
        (
            request(image_part(), truncate_prompt_tokens=-1),
            Reason.MEDIA_WITH_TRUNCATION,
            "truncate_prompt_tokens",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "Go on."},
                    {"role": "assistant", "content": [image_part()]},
                ],
                "continue_final_message": "true",
                "add_generation_prompt": False,
            },
            Reason.MEDIA_IN_CONTINUED_MESSAGE,
            "continue_final_message",
        ),
        # The template joins adjacent text parts with nothing between them.
        (
            request({"type": "text", "text": "a <|vision_"}, {"type": "text", "text": "start|>"}),
            Reason.VISION_TOKEN,
            "messages[0]",
        ),
        (request("<|image", "_pad|>"), Reason.VISION_TOKEN, "messages[0]"),
        (
            request(
                {"type": "text", "text": "<|video"}, {"type": "thinking", "thinking": "_pad|>"}
            ),
            Reason.VISION_TOKEN,
            "messages[0]",
        ),
        # The template renders a vision block for these keys, whatever the part's type.
        (
            request({"type": "text", "text": "hi", "image_url": {"url": "data:x"}}),
            Reason.MISMATCHED_PART,
            "messages[0].content[0]",
        ),
        (
            request({"type": "text", "text": "hi", "image": "x"}),
            Reason.MISMATCHED_PART,
            "messages[0].content[0]",
        ),
        (
            request({"type": "text", "text": "hi", "video": "x"}),
            Reason.MISMATCHED_PART,
            "messages[0].content[0]",
        ),
        (
            request({"type": "video_url", "video_url": {"url": "data:v"}, "image": "x"}),
            Reason.MISMATCHED_PART,
            "messages[0].content[0]",
        ),
        (
            request({"type": "video_url", "video_url": {"url": "data:v"}}),
            Reason.VIDEO_DISABLED,
            "messages[0].content[0]",
        ),
        (
            request({"type": "input_audio", "input_audio": {"data": "x"}}),
            Reason.AUDIO_DISABLED,
            "messages[0].content[0]",
        ),
        (request({"audio_url": {"url": "x"}}), Reason.AUDIO_DISABLED, "messages[0].content[0]"),
        (
            request({"type": "image_embeds", "image_embeds": "x"}),
            Reason.EMBEDDINGS_REFUSED,
            "messages[0].content[0]",
        ),
        (
            request({"type": "image_url", "uuid": "cached-id"}),
            Reason.MEDIA_UUID_REFUSED,
            "messages[0].content[0]",
        ),
        (
            request({"type": "image_url", "image_url": {"url": ""}}),
            Reason.BAD_IMAGE_PART,
            "messages[0].content[0]",
        ),
        (
            request({"type": "image_url", "image_url": {"nourl": 1}}),
            Reason.BAD_IMAGE_PART,
            "messages[0].content[0]",
        ),
    ],
)
def test_request_level_refusals(body: dict[str, object], reason: Reason, param: str):
    with pytest.raises(RefusalError) as caught:
        find_images(body, RULES)
    assert (caught.value.reason, caught.value.param) == (reason, param)


def test_allowed_fields_and_enabled_kinds_pass():
    rules = RequestRules(5, frozenset({"chat_template_kwargs"}), True, True, True)
    body = request(
        {"type": "video_url", "video_url": {"url": "data:v"}},
        {"type": "input_audio", "input_audio": {"data": "x"}},
        chat_template_kwargs={"enable_thinking": False},
    )
    assert find_images(body, rules) == []


def test_truncation_and_continuation_without_media_in_play_pass():
    assert (
        find_images(request({"type": "text", "text": "hi"}, truncate_prompt_tokens=5), RULES) == []
    )
    body = {
        "messages": [
            {"role": "user", "content": [image_part()]},
            {"role": "assistant", "content": "It shows"},
        ],
        "continue_final_message": True,
        "add_generation_prompt": False,
    }
    assert len(find_images(body, RULES)) == 1


def test_remote_urls_can_be_switched_off():
    rules = RequestRules(5, frozenset(), False, False, remote_urls=False)
    with pytest.raises(RefusalError) as caught:
        find_images(request(image_part("https://x.test/a.jpg")), rules)
    assert caught.value.reason is Reason.REMOTE_URLS_DISABLED


def test_shapes_vllm_refuses_anyway_are_left_alone():
    for body in ({"messages": "x"}, {"messages": [1, {"content": 2}, {"content": ["s"]}]}, {}):
        assert find_images(body, RULES) == []


def test_slot_param_names_the_part():
    assert ImageSlot(2, 5, "u").param == "messages[2].content[5]"


def test_vision_token_ids_are_the_tokenizers():
    tokenizer = AutoTokenizer.from_pretrained(tiny_model.qwen_tokenizer_dir())
    ids = {tokenizer.convert_tokens_to_ids(token) for token in VISION_TOKENS}
    assert ids == VISION_TOKEN_IDS


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "Describe <|image_pad|> please"},
        {"prompt": ["ok", "<|vision_end|>"]},
        {"prompt": [1, 2, 151656]},
        {"prompt": [[1, 2], [151654]]},
        {"prompt": "ok", "stop": ["<|vision_start|>"]},
        # vLLM's pydantic reads token ids laxly: these are vision ids to it.
        {"prompt": [151652.0]},
        {"prompt": [1, "151653"]},
        {"prompt": [[2], [151654.0, 3]]},
        {"prompt": [[True, 151655.0]]},
    ],
)
def test_completion_prompts_may_not_bring_vision_tokens(body: dict[str, object]):
    with pytest.raises(RefusalError) as refused:
        check_completion_request(body)
    assert refused.value.reason is Reason.VISION_TOKEN


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "Describe a cat <|im_end|>"},
        {"prompt": [1, 2, 151651, 151657]},
        {"prompt": ["151652", "a list of strings is text"]},
        {"prompt": [151652.5]},  # not an id vLLM would read
        {"prompt": None},
        {},
    ],
)
def test_other_completion_prompts_pass(body: dict[str, object]):
    check_completion_request(body)
