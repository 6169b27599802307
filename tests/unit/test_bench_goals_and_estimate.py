"""Goal verdicts, report blocks, the GPU prefill estimate and the bare-vLLM command line."""

import sys

import pytest

from benchmarks.servers import bare_command, without_options
from qwenvl_serve.bench.goals import Goal, goals_table, replace_block
from qwenvl_serve.bench.roofline import (
    QWEN3_VL_8B_TEXT,
    estimate_prefill,
    image_grid,
    image_tokens,
    vision_patches,
)
from qwenvl_serve.launch_plan import CONFIG_ENV_VAR, MIDDLEWARE_CLASS


def test_goal_verdicts():
    assert Goal("ratio", 0.98, 0.97, at_most=False).verdict() == "met"
    assert Goal("ratio", 0.96, 0.97, at_most=False).verdict() == "MISSED"
    assert Goal("delta", 5.0, 5.0, at_most=True, unit=" ms").verdict() == "met"
    assert Goal("delta", None, 5.0, at_most=True).verdict() == "not measured"


def test_goals_table_rows():
    table = goals_table([Goal("TTFT", 1.25, 2.0, True, " ms"), Goal("x", 0.5, 0.55, True)])
    assert "| TTFT | +1.2 ms | ≤ +2.0 ms | met |" in table
    assert "| x | 0.500× | ≤ 0.550× | met |" in table


def test_replace_block_keeps_everything_outside_the_markers():
    document = "intro\n<!-- bench:a:start -->\nold\n<!-- bench:a:end -->\nprose\n"
    updated = replace_block(document, "a", "new table")
    assert updated == "intro\n<!-- bench:a:start -->\nnew table\n<!-- bench:a:end -->\nprose\n"
    assert replace_block(updated, "a", "newer").count("bench:a:start") == 1
    with pytest.raises(ValueError, match="'b'"):
        replace_block(document, "b", "x")


def test_image_tokens_follow_the_32_pixel_grid():
    # Measured with the tiny checkpoint: 640x480 -> 314 prompt tokens (300 image + text)
    assert image_grid(640, 480) == (640, 480)
    assert image_tokens(640, 480) == 300
    assert image_tokens(2048, 1536) == 3072
    assert image_grid(4000, 3000) == (4000, 3008)
    assert image_tokens(4000, 3000) == 11750
    assert vision_patches(4000, 3000) == 4 * 11750


def test_prefill_flops():
    # 36 layers x (attention 41.9 M + MLP 151 M weights) = 6.95 B weights
    assert QWEN3_VL_8B_TEXT.params_per_layer() * QWEN3_VL_8B_TEXT.layers == pytest.approx(
        6.95e9, rel=0.01
    )
    one = QWEN3_VL_8B_TEXT.prefill_flops(1, causal=True)
    assert one == pytest.approx(2 * 6.95e9, rel=0.01)
    causal = QWEN3_VL_8B_TEXT.prefill_flops(1000, causal=True)
    full = QWEN3_VL_8B_TEXT.prefill_flops(1000, causal=False)
    assert full > causal > 1000 * one


def test_estimate_prefill_scales_with_the_image():
    big = estimate_prefill(4000, 3000, 20, peak_tflops=989, utilization=0.5)
    small = estimate_prefill(2048, 1536, 20, peak_tflops=989, utilization=0.5)
    assert big.seconds > 4 * small.seconds  # attention grows faster than the token count
    assert big.seconds == pytest.approx((big.vision_flops + big.text_flops) / 494.5e12)
    with pytest.raises(ValueError, match="utilization"):
        estimate_prefill(10, 10, 1, peak_tflops=989, utilization=0)


def test_bare_vllm_gets_our_engine_arguments_without_the_middleware():
    assert without_options(["--a", "1", "--middleware", "x.Y", "--b"], {"--middleware"}) == [
        "--a",
        "1",
        "--b",
    ]
    argv, env = bare_command(8123)
    assert argv[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert "--middleware" not in argv
    assert MIDDLEWARE_CLASS not in argv
    assert argv[argv.index("--port") + 1] == "8123"
    assert argv[argv.index("--max-model-len") + 1] == "4096"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert CONFIG_ENV_VAR not in env  # the middleware's settings: nothing reads them here
    long_argv, _ = bare_command(
        8123, ["engine.max_model_len=16384"], ("--middleware", "--mm-processor-kwargs")
    )
    assert long_argv[long_argv.index("--max-model-len") + 1] == "16384"
    assert "--mm-processor-kwargs" not in long_argv
