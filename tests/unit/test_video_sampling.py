"""The sampling rule: which frames, how large, what they cost; and what vLLM gets."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from qwenvl_serve.config import InstanceConfig
from qwenvl_serve.launch_plan import build_vllm_args
from qwenvl_serve.tiny_model import qwen_tokenizer_dir
from qwenvl_serve.video.containers import sniff_container
from qwenvl_serve.video.engine_input import media_io_kwargs, model_timestamps, video_prompt_tokens
from qwenvl_serve.video.protocol import DecodedVideo
from qwenvl_serve.video.sampling import (
    SamplingRules,
    SourceVideo,
    frame_size,
    pair_times,
    plan_sampling,
    prompt_tokens,
    timestamp_tokens,
)
from tests.video_clips import make_clip

RULES = SamplingRules(
    fps=2, max_frames=768, max_tokens=2048, min_frame_tokens=16, max_frame_tokens=768
)


def source(duration: float, width: int = 1280, height: int = 720, fps: float = 30) -> SourceVideo:
    return SourceVideo(duration, fps, width, height, round(duration * fps))


def test_a_minute_of_720p_takes_two_frames_a_second_within_the_budget():
    plan = plan_sampling(source(60), RULES)
    assert len(plan.times) == 120
    # 60 pairs share 2,046 tokens (2 for the template's markers): 34 each, 9 of them
    # the timestamp's text and markers at most, so 25 visual: 6x4 tokens of 16:9.
    assert (plan.width, plan.height) == (192, 128)
    assert plan.times[0] == pytest.approx(0.25)
    assert plan.times[-1] == pytest.approx(59.75)
    tokens = prompt_tokens(pair_times(list(plan.times)), plan.tokens_per_pair)
    assert tokens == 2 + 60 * (2 + 24) + 10 * 6 + 50 * 7 == 1972


def test_a_long_video_gets_fewer_frames_not_frames_below_the_floor():
    plan = plan_sampling(source(600, 640, 360), RULES)
    # Each pair costs at least 16 visual tokens and 10 of text: 2,046 // 26 = 78 pairs.
    assert len(plan.times) == 156
    # A share of 16 tokens: 5x3 of them keep 16:9 on the grid.
    assert (plan.width, plan.height) == (160, 96)
    assert prompt_tokens(pair_times(list(plan.times)), plan.tokens_per_pair) <= RULES.max_tokens


@pytest.mark.parametrize("duration", [0.1, 0.5, 3, 45, 61, 99.9, 119, 1200, 7200])
@pytest.mark.parametrize("size", [(1920, 1080), (1080, 1920), (640, 480), (4096, 32), (32, 32)])
def test_every_plan_stays_within_every_bound(duration, size):
    width, height = size
    plan = plan_sampling(source(duration, width, height), RULES)
    assert len(plan.times) % 2 == 0
    assert len(plan.times) <= RULES.max_frames
    assert plan.width % 32 == 0
    assert plan.height % 32 == 0
    assert plan.width <= max(32, round(width / 32) * 32)
    assert plan.tokens_per_pair <= RULES.max_frame_tokens
    assert prompt_tokens(pair_times(list(plan.times)), plan.tokens_per_pair) <= RULES.max_tokens
    assert list(plan.times) == sorted(plan.times)
    assert plan.times[0] > 0
    assert plan.times[-1] < duration


def test_a_short_clip_keeps_its_own_size():
    plan = plan_sampling(source(4, 320, 240), RULES)
    assert (plan.width, plan.height) == (320, 256)  # 240 rounds to 256 on the grid


def test_frame_size_never_exceeds_its_token_share():
    assert frame_size(1920, 1080, 768) == (1152, 672)  # 36x21 = 756 tokens
    assert frame_size(1920, 1080, 1) == (32, 32)
    assert frame_size(100, 100, 10_000) == (96, 96)


def test_timestamp_token_counts_match_the_qwen_tokenizer():
    tokenizer = AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir()))
    for seconds in (0.25, 0.5, 9.96, 12.3, 99.95, 123.4, 1234.5):
        text = f"<{seconds:.1f} seconds>"
        assert timestamp_tokens(seconds) == len(tokenizer.encode(text, add_special_tokens=False))


def test_the_engine_gets_the_source_timing_and_our_frames_only():
    video = DecodedVideo(
        codec="h264", source_width=1280, source_height=720, width=192, height=128,
        source_fps=25.0, duration=2.0, total_frames=50, frame_indices=[3, 9, 16, 22],
        frame_times=[0.12, 0.36, 0.64, 0.88], payload=b"a,b,c,d",
    )  # fmt: skip
    kwargs = media_io_kwargs(video)["video"]
    assert kwargs == {
        "num_frames": 4, "fps": 25.0, "frames_indices": [3, 9, 16, 22],
        "total_num_frames": 50, "duration": 2.0, "do_sample_frames": False,
    }  # fmt: skip
    assert model_timestamps(video) == pytest.approx([0.24, 0.76])
    assert video_prompt_tokens(video) == 2 + 2 * (6 + 2 + 24)


@pytest.mark.parametrize(
    ("clip", "container"),
    [
        ({"container": "mp4"}, "mp4"),
        ({"container": "mov"}, "mp4"),
        ({"container": "webm", "codec": "libvpx-vp9"}, "webm"),
        ({"container": "mkv", "codec": "libvpx"}, "mkv"),
    ],
)
def test_containers_are_told_by_their_magic_bytes(clip, container):
    assert sniff_container(make_clip(seconds=0.5, width=64, height=64, **clip)) == container


def test_video_settings_follow_one_rule():
    on = InstanceConfig.model_validate({"model": "m", "video": {"enabled": True}})
    assert on.engine_media_limits["video"] == on.max_videos_per_request == 1
    args = build_vllm_args(on)
    assert "--trust-request-mm-kwargs" in args
    processor = args[args.index("--mm-processor-kwargs") + 1]
    assert '"videos_kwargs": {"size": {"longest_edge": 33554432' in processor
    off = InstanceConfig.model_validate({"model": "m"})
    assert off.engine_media_limits["video"] == 0
    assert "--trust-request-mm-kwargs" not in build_vllm_args(off)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"engine": {"limit_mm_per_prompt": {"video": 1}}}, "follows video.enabled"),
        (
            {"video": {"enabled": True}, "engine": {"limit_mm_per_prompt": {"video": 2}}},
            "follows video.enabled",
        ),
        (
            {"video": {"enabled": True}, "images": {"allowed_request_fields": ["media_io_kwargs"]}},
            "sets on the client's behalf",
        ),
        (
            {"video": {"enabled": True, "max_tokens": 8192}, "engine": {"max_model_len": 4096}},
            "below engine.max_model_len",
        ),
    ],
)
def test_contradicting_video_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        InstanceConfig.model_validate({"model": "m", **settings})
