"""The instance configuration: one typed model, the single source of truth for settings.

Each field carries its own description; the README's configuration reference and the
CLI's error messages are generated from these models, never written by hand.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import Field, NonNegativeInt, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from qwenvl_serve.access.config import AuthConfig, LimitsConfig, MeteringConfig, MetricsConfig
from qwenvl_serve.cache.config import CacheConfig
from qwenvl_serve.config_base import StrictModel
from qwenvl_serve.engine_passthrough import refused_env, refused_extra_args
from qwenvl_serve.genai.config import GenerateContentConfig
from qwenvl_serve.images.config import ImagesConfig
from qwenvl_serve.playground.config import PlaygroundConfig
from qwenvl_serve.video.config import VideoConfig

Dtype = Literal["auto", "half", "float16", "bfloat16", "float", "float32"]
MediaKind = Literal["image", "video", "audio"]
LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]

# Quantization methods that vLLM accepts and that exist as Qwen3-VL checkpoints or
# apply online. A test checks this list against the installed vLLM's own list.
Quantization = Literal[
    "awq",
    "awq_marlin",
    "gptq",
    "gptq_marlin",
    "fp8",
    "compressed-tensors",
    "modelopt",
    "modelopt_fp4",
    "mxfp4",
    "experts_int8",
    "moe_wna16",
    "torchao",
]


def _default_media_limits() -> dict[MediaKind, int]:
    return {"image": 4}


# Videos per request: vLLM takes the frames' timing per request (media_io_kwargs keyed
# by modality), so one request can describe one video.
VIDEOS_PER_REQUEST = 1
# What vLLM allows of a media kind that `--limit-mm-per-prompt` does not name
# (`MultiModalConfig.get_limit_per_prompt`).
VLLM_DEFAULT_MEDIA_LIMIT = 999


class EngineConfig(StrictModel):
    """vLLM engine settings. Each maps to one vLLM command-line option."""

    dtype: Dtype = Field(
        "auto",
        description="Weights and activations dtype; `auto` keeps the checkpoint's (bf16).",
    )
    quantization: Quantization | None = Field(
        None,
        description="Quantization method; leave empty for checkpoints that declare their own.",
    )
    gpu_memory_utilization: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Fraction of GPU memory vLLM may use for weights, activations and KV cache.",
    )
    max_model_len: int | None = Field(
        None,
        ge=256,
        description="Context length in tokens (prompt + output). Empty: the model's maximum.",
    )
    max_num_seqs: int | None = Field(
        None,
        ge=1,
        description="Most sequences batched at once. Empty: vLLM's default.",
    )
    tensor_parallel_size: int = Field(
        1,
        ge=1,
        description="GPUs to shard the model across (vLLM tensor parallelism).",
    )
    limit_mm_per_prompt: dict[MediaKind, NonNegativeInt] = Field(
        default_factory=_default_media_limits,
        description=(
            "Most media items of each kind per request; 0 turns a kind off and frees "
            "the memory vLLM would reserve for it. The video entry follows `video.enabled` "
            "(one video per request, or none)."
        ),
    )
    enforce_eager: bool = Field(
        False,
        description="Disable CUDA graphs: slower decoding, faster start, less memory.",
    )
    mm_encoder_tp_mode: Literal["weights", "data"] | None = Field(
        None,
        description=(
            "How the vision encoder uses tensor parallelism: `data` runs a full copy per "
            "GPU, which is faster for Qwen3-VL's small encoder."
        ),
    )
    enable_expert_parallel: bool = Field(
        False,
        description="Shard MoE experts across GPUs instead of slicing every expert.",
    )
    reasoning_parser: str | None = Field(
        None,
        description="vLLM reasoning parser that splits thinking from the answer (Thinking models).",
    )
    mm_processor_cache_type: Literal["shm", "lru"] = Field(
        "shm",
        description=(
            "vLLM's cache of processed images between its API server and engine. `shm` "
            "(shared memory) holds each item once; `lru`, vLLM's default, keeps a shadow "
            "in the API server that can fall out of step with the engine's copy under "
            "concurrent repeated images, and the engine then fails the request with a 500 "
            "(measured: benchmarks/RESULTS.md, Reliability)."
        ),
    )
    mm_processor_cache_gb: float = Field(
        1.0,
        ge=0,
        description=(
            "Size of that cache in GiB (vLLM's default is 4): memory the server takes as "
            "distinct images arrive. 0 turns it off: repeated images are processed again."
        ),
    )
    malloc_arena_max: int | None = Field(
        2,
        ge=1,
        description=(
            "glibc malloc arenas per vLLM process (sets MALLOC_ARENA_MAX). glibc's default, "
            "8 per core, lets memory fragment under varied images until RSS creeps up for "
            "good; 2 holds it flat (measured: benchmarks/RESULTS.md, Reliability). Empty: "
            "glibc's default."
        ),
    )
    cpu_kvcache_space_gib: float | None = Field(
        None,
        gt=0,
        description="CPU engine only: KV cache size in GiB (sets VLLM_CPU_KVCACHE_SPACE).",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Extra environment variables for the vLLM process (not those the launcher sets)."
        ),
    )
    extra_args: list[str] = Field(
        default_factory=list,
        description=(
            "Further vLLM command-line arguments, passed through verbatim, last. Options "
            "that a setting above owns, or that would bypass auth or image checks, are refused."
        ),
    )

    @field_validator("extra_args")
    @classmethod
    def _no_reserved_flags(cls, args: list[str]) -> list[str]:
        problems = refused_extra_args(args)
        if problems:
            raise PydanticCustomError("reserved_option", "; ".join(problems))
        return args

    @field_validator("env")
    @classmethod
    def _no_reserved_env(cls, env: dict[str, str]) -> dict[str, str]:
        problems = refused_env(list(env))
        if problems:
            raise PydanticCustomError("reserved_variable", "; ".join(problems))
        return env


class ShutdownConfig(StrictModel):
    """What happens on SIGTERM."""

    drain_seconds: float = Field(
        30.0,
        ge=0,
        description=(
            "On SIGTERM, stop taking new requests and give in-flight ones this long to "
            "finish before exiting."
        ),
    )


def video_config_problem(config: InstanceConfig) -> str | None:
    """Why the video settings contradict the rest of ``config``, or None."""
    video = config.video
    explicit = config.engine.limit_mm_per_prompt.get("video")
    wanted = VIDEOS_PER_REQUEST if video.enabled else 0
    if explicit is not None and explicit != wanted:
        return (
            f"engine.limit_mm_per_prompt.video is {explicit}, but it follows video.enabled "
            f"({wanted} here): leave it out and set video.enabled"
        )
    if not video.enabled:
        return None
    trusted = {"mm_processor_kwargs", "media_io_kwargs"} & set(config.images.allowed_request_fields)
    if trusted:
        return (
            f"images.allowed_request_fields lists {', '.join(sorted(trusted))}, which the "
            "video layer sets on the client's behalf: remove it or turn video off"
        )
    max_len = config.engine.max_model_len
    if max_len is not None and video.max_tokens >= max_len:
        return f"video.max_tokens ({video.max_tokens}) must be below engine.max_model_len"
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class InstanceConfig(StrictModel):
    """One model instance: one vLLM server process with our middleware in front."""

    model: Annotated[str, Field(min_length=1)] = Field(
        description="Hugging Face model id or local checkpoint directory.",
    )
    served_model_name: str | None = Field(
        None,
        min_length=1,
        description="Name clients put in `model`. Empty: the `model` value.",
    )
    host: str = Field("127.0.0.1", min_length=1, description="Address the server binds.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port the server binds.")
    log_level: LogLevel = Field("info", description="Server log level.")
    engine: EngineConfig = Field(
        default_factory=EngineConfig,  # type: ignore[arg-type]
        description="vLLM engine settings.",
    )
    images: ImagesConfig = Field(default_factory=ImagesConfig, description="Image handling.")
    video: VideoConfig = Field(default_factory=VideoConfig, description="Video handling.")
    auth: AuthConfig = Field(
        default_factory=AuthConfig,
        validate_default=True,  # an omitted `auth:` must still meet the loopback rule
        description="API keys.",
    )
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Instance limits.")
    metering: MeteringConfig = Field(default_factory=MeteringConfig, description="Usage.")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="/metrics access.")
    cache: CacheConfig = Field(default_factory=CacheConfig, description="The result cache.")
    generate_content: GenerateContentConfig = Field(
        default_factory=GenerateContentConfig, description="generateContent routes."
    )
    playground: PlaygroundConfig = Field(
        default_factory=PlaygroundConfig, description="The web playground."
    )
    shutdown: ShutdownConfig = Field(
        default_factory=ShutdownConfig,  # type: ignore[arg-type]
        description="Graceful stop.",
    )

    @field_validator("auth")
    @classmethod
    def _keys_required_off_loopback(cls, auth: AuthConfig, info: ValidationInfo) -> AuthConfig:
        host = info.data.get("host")
        if not auth.enabled and host is not None and not _is_loopback(host):
            raise PydanticCustomError(
                "auth_required",
                "auth.keys is empty, which means no auth, but host {host} is not loopback: "
                "add keys or bind 127.0.0.1",
                {"host": host},
            )
        return auth

    @model_validator(mode="after")
    def _video_rules_agree(self) -> InstanceConfig:
        problem = video_config_problem(self)
        if problem is not None:
            raise PydanticCustomError("video_config", problem)
        return self

    @property
    def public_model_name(self) -> str:
        """The model name clients use in requests and see in responses."""
        return self.served_model_name or self.model

    def engine_media_limit(self, kind: MediaKind) -> int:
        """How many items of ``kind`` vLLM accepts in one prompt under this config."""
        if kind == "video":
            return VIDEOS_PER_REQUEST if self.video.enabled else 0
        return self.engine.limit_mm_per_prompt.get(kind, VLLM_DEFAULT_MEDIA_LIMIT)

    @property
    def engine_media_limits(self) -> dict[MediaKind, int]:
        """vLLM's ``--limit-mm-per-prompt``: the configured kinds, video as it follows."""
        return {**self.engine.limit_mm_per_prompt, "video": self.engine_media_limit("video")}

    @property
    def max_tokens_per_media(self) -> int:
        """The most prompt tokens one media item (image or video) can become."""
        video = self.video.max_tokens if self.video.enabled else 0
        return max(self.images.max_tokens_per_image, video)

    @property
    def max_videos_per_request(self) -> int:
        """The most videos one request can carry (the video layer and vLLM agree)."""
        return self.engine_media_limit("video")

    @property
    def max_images_per_request(self) -> int:
        """The most images one request can carry: both the image layer and vLLM cap it.
        The server's checks and nginx's body cap both read this one rule."""
        return min(self.images.max_per_request, self.engine_media_limit("image"))

    @property
    def binds_loopback_only(self) -> bool:
        """True when the server is reachable from this host only."""
        return _is_loopback(self.host)
