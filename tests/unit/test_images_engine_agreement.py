"""vLLM, started with our launch plan, bounds images exactly as the image layer does and
fetches no media itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from qwenvl_serve.config_loading import resolve_config
from qwenvl_serve.images.geometry import target_size
from qwenvl_serve.launch_plan import NO_MEDIA_DOMAIN, build_launch_plan


def parsed_args(config_data: dict[str, object]):
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    plan = build_launch_plan(resolve_config(config_data))
    return plan, make_arg_parser(FlexibleArgumentParser()).parse_args(plan.args)


def test_vllm_fetches_no_media_and_follows_no_redirects():
    plan, parsed = parsed_args({"model": "m"})
    assert parsed.allowed_media_domains == [NO_MEDIA_DOMAIN]
    assert plan.env["VLLM_MEDIA_URL_ALLOW_REDIRECTS"] == "0"


@pytest.mark.parametrize("max_pixels", [3_145_728, 1_048_576])
def test_vllms_processor_resizes_to_the_same_bounds_as_our_layer(
    tiny_model_dir: Path, max_pixels: int
):
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY

    _, parsed = parsed_args({"model": str(tiny_model_dir), "images": {"max_pixels": max_pixels}})
    model_config = ModelConfig(
        model=str(tiny_model_dir),
        mm_processor_kwargs=parsed.mm_processor_kwargs,
        max_model_len=32768,
    )
    processor = MULTIMODAL_REGISTRY.create_processor(model_config)
    items = processor.info.data_parser.parse_mm_data({"image": [Image.new("RGB", (4000, 3000))]})
    grid = processor._apply_hf_processor_main(items, {})["image_grid_thw"].tolist()
    width, height = target_size(4000, 3000, 8192, max_pixels)  # the pixel bound alone
    assert grid == [[1, height // 16, width // 16]]
