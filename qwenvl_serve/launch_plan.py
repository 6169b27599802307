"""Turn a validated InstanceConfig into vLLM's command line and environment.

Pure functions, no I/O: the golden tests pin their output for every shipped config.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from qwenvl_serve.config import InstanceConfig
from qwenvl_serve.vision_tokens import DEFAULT_MIN_PIXELS

VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
MIDDLEWARE_CLASS = "qwenvl_serve.middleware.QwenVLServeMiddleware"
CONFIG_ENV_VAR = "QWENVL_SERVE_CONFIG"
# A host no URL can have (RFC 2606 reserves .invalid): vLLM then refuses every media URL.
NO_MEDIA_DOMAIN = "invalid.invalid"
# One visual token covers 32x32 pixels in each of two frames.
VIDEO_PIXELS_PER_TOKEN = 32 * 32 * 2


@dataclass(frozen=True)
class LaunchPlan:
    """What `serve` runs: ``python -m <module> <args>`` with ``env`` added."""

    args: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def argv(self, python: str) -> list[str]:
        """The full command line for the given interpreter."""
        return [python, "-m", VLLM_SERVER_MODULE, *self.args]


def build_vllm_args(config: InstanceConfig) -> list[str]:
    """vLLM OpenAI-server arguments for ``config``, in a stable order."""
    engine = config.engine
    args = [
        "--model", config.model,
        "--served-model-name", config.public_model_name,
        "--host", config.host,
        "--port", str(config.port),
        "--uvicorn-log-level", config.log_level,
        "--dtype", engine.dtype,
        "--gpu-memory-utilization", _number(engine.gpu_memory_utilization),
        "--tensor-parallel-size", str(engine.tensor_parallel_size),
        "--limit-mm-per-prompt", json.dumps(config.engine_media_limits, sort_keys=True),
        # vLLM's processor bounds image pixels exactly as our image layer does.
        "--mm-processor-kwargs", json.dumps(_processor_kwargs(config)),
        # vLLM fetches no media itself: only the data: URLs our layer vetted reach it.
        "--allowed-media-domains", NO_MEDIA_DOMAIN,
        "--middleware", MIDDLEWARE_CLASS,
        # Our JSON access log replaces uvicorn's, which would print `?key=` secrets.
        "--disable-uvicorn-access-log",
        "--shutdown-timeout", str(drain_timeout_seconds(config.shutdown.drain_seconds)),
        # vLLM's own logprobs bound, behind ours (which answers in the route's format).
        "--max-logprobs", str(config.limits.max_logprobs),
        "--mm-processor-cache-type", engine.mm_processor_cache_type,
        "--mm-processor-cache-gb", _number(engine.mm_processor_cache_gb),
    ]  # fmt: skip
    optional: list[tuple[str, object | None]] = [
        ("--quantization", engine.quantization),
        ("--max-model-len", engine.max_model_len),
        ("--max-num-seqs", engine.max_num_seqs),
        ("--mm-encoder-tp-mode", engine.mm_encoder_tp_mode),
        ("--reasoning-parser", engine.reasoning_parser),
    ]
    for flag, value in optional:
        if value is not None:
            args += [flag, str(value)]
    flags = [
        ("--enforce-eager", engine.enforce_eager),
        ("--enable-expert-parallel", engine.enable_expert_parallel),
    ]
    args += [flag for flag, enabled in flags if enabled]
    if config.video.enabled:
        # The video layer sets media_io_kwargs (the frames' timing) for the client;
        # clients' own are refused by the image layer unless the operator allows them,
        # which the config refuses while video is on.
        args.append("--trust-request-mm-kwargs")
    return args + list(engine.extra_args)


def drain_timeout_seconds(drain_seconds: float) -> int:
    """vLLM's whole-second ``--shutdown-timeout`` for a drain time, rounded up.

    0 aborts in-flight requests on SIGTERM; more lets them finish for up to that long.
    """
    return math.ceil(drain_seconds)


def _processor_kwargs(config: InstanceConfig) -> dict[str, object]:
    """Qwen-VL processor kwargs, scoped to images and videos.

    The current form of the pixel bounds: ``size`` in pixel counts (``max_pixels``
    itself makes transformers print a deprecation warning on every request). For
    video the bound is summed over all frames; the video layer's frames already fit
    it, so the processor keeps their size, and vLLM sizes its encoder budget from it.
    """
    size = {"longest_edge": config.images.max_pixels, "shortest_edge": DEFAULT_MIN_PIXELS}
    kwargs: dict[str, object] = {"images_kwargs": {"size": size}}
    if config.video.enabled:
        video_size = {
            "longest_edge": config.video.max_tokens * VIDEO_PIXELS_PER_TOKEN,
            "shortest_edge": VIDEO_PIXELS_PER_TOKEN,
        }
        # The pixel cap per frame is ours (video.max_frame_tokens): the processor's off.
        kwargs["videos_kwargs"] = {"size": video_size, "cap_pixels_per_frame": False}
    return kwargs


def build_vllm_env(config: InstanceConfig) -> dict[str, str]:
    """Environment added to vLLM's: the resolved config for our middleware, engine knobs."""
    env = {CONFIG_ENV_VAR: config.model_dump_json()}
    if config.engine.cpu_kvcache_space_gib is not None:
        env["VLLM_CPU_KVCACHE_SPACE"] = _number(config.engine.cpu_kvcache_space_gib)
    env["VLLM_MEDIA_URL_ALLOW_REDIRECTS"] = "0"  # in case vLLM is ever asked to fetch
    if config.engine.malloc_arena_max is not None:
        env["MALLOC_ARENA_MAX"] = str(config.engine.malloc_arena_max)
    env.update(config.engine.env)
    return env


def build_launch_plan(config: InstanceConfig) -> LaunchPlan:
    """Everything `serve` needs to start vLLM for ``config``."""
    return LaunchPlan(args=build_vllm_args(config), env=build_vllm_env(config))


def render_plan(plan: LaunchPlan, python: str, shown_env: Mapping[str, str] | None = None) -> str:
    """Shell-ready text of a plan, for `qwenvl-serve args`."""
    import shlex

    env = shown_env if shown_env is not None else plan.env
    lines = [f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())]
    lines.append(shlex.join(plan.argv(python)))
    return "\n".join(lines)


def _number(value: float) -> str:
    """Render 0.9 as '0.9' and 2.0 as '2', as a person would type them."""
    return f"{value:g}"
