"""Compute-bound prefill estimate for Qwen3-VL on a GPU: FLOPs / (peak x utilization).

Used to carry ratios measured on the CPU engine over to a GPU host where none is at
hand: prompt tokens are exact (they follow from the image geometry alone), the
GPU's share is estimated here, and the CPU preprocessing is measured. Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TransformerShape:
    """The parts of a transformer stack that decide its prefill FLOPs."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    gated_mlp: bool

    def params_per_layer(self) -> int:
        """Weights of the attention projections and the MLP of one layer."""
        attention = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        mlp = (3 if self.gated_mlp else 2) * self.hidden * self.intermediate
        return attention + mlp

    def prefill_flops(self, tokens: int, causal: bool) -> float:
        """2 FLOPs per weight per token, plus QK^T and AV (halved when causal)."""
        linear = 2.0 * self.params_per_layer() * tokens * self.layers
        attention = 4.0 * tokens * tokens * self.heads * self.head_dim * self.layers
        return linear + (attention / 2 if causal else attention)


# Qwen3-VL-8B-Instruct: the Qwen3-8B language model and its 27-layer vision encoder.
QWEN3_VL_8B_TEXT = TransformerShape(
    layers=36, hidden=4096, intermediate=12288, heads=32, kv_heads=8, head_dim=128, gated_mlp=True
)
QWEN3_VL_8B_VISION = TransformerShape(
    layers=27, hidden=1152, intermediate=4304, heads=16, kv_heads=16, head_dim=72, gated_mlp=False
)
PATCH = 16  # pixels per vision patch side
MERGE = 2  # 2x2 patches become one language-model token


def image_grid(width: int, height: int, unit: int = PATCH * MERGE) -> tuple[int, int]:
    """The processor's size: each side rounded to a multiple of ``unit`` (32 px)."""
    return (
        max(unit, round(width / unit) * unit),
        max(unit, round(height / unit) * unit),
    )


def vision_patches(width: int, height: int) -> int:
    """Vision-encoder tokens (16x16 patches) for one image."""
    grid_w, grid_h = image_grid(width, height)
    return (grid_w // PATCH) * (grid_h // PATCH)


def image_tokens(width: int, height: int) -> int:
    """Language-model tokens for one image: one per 32x32 pixels."""
    return vision_patches(width, height) // (MERGE * MERGE)


@dataclass(frozen=True)
class PrefillEstimate:
    """Estimated GPU prefill of one request with one image."""

    vision_flops: float
    text_flops: float
    seconds: float


def estimate_prefill(
    width: int, height: int, text_tokens: int, peak_tflops: float, utilization: float
) -> PrefillEstimate:
    """Vision encoder over the patches, then the language model over image + text tokens.

    Full attention within the image in the vision encoder, causal in the language model.
    """
    if not 0 < utilization <= 1 or peak_tflops <= 0:
        raise ValueError("need a positive peak and a utilization in (0, 1]")
    vision = QWEN3_VL_8B_VISION.prefill_flops(vision_patches(width, height), causal=False)
    text = QWEN3_VL_8B_TEXT.prefill_flops(image_tokens(width, height) + text_tokens, causal=True)
    return PrefillEstimate(vision, text, (vision + text) / (peak_tflops * 1e12 * utilization))
