"""What ``engine.extra_args`` and ``engine.env`` may not carry. Pure: no I/O.

Settings of the config own some vLLM options (a typed field says what they do), and
some options would undo what this server promises (auth, the route table, images
fetched only by us). Those are refused in the pass-through lists in every spelling
vLLM's parser accepts: ``--flag value``, ``--flag=value``, ``--flag_name`` and any
unambiguous abbreviation (``--ho`` is ``--host``).
"""

from __future__ import annotations

_OUR_ACCESS_LOG = "our access log replaces uvicorn's (which would print ?key=)"
# vLLM option -> what to set instead (or why it is not offered).
RESERVED_FLAGS: dict[str, str] = {
    "--model": "set `model`",
    "--served-model-name": "set `served_model_name`",
    "--host": "set `host`",
    "--port": "set `port`",
    "--uvicorn-log-level": "set `log_level`",
    "--dtype": "set `engine.dtype`",
    "--quantization": "set `engine.quantization`",
    "-q": "set `engine.quantization`",
    "--gpu-memory-utilization": "set `engine.gpu_memory_utilization`",
    "--device-memory-utilization": "set `engine.gpu_memory_utilization`",
    "--max-model-len": "set `engine.max_model_len`",
    "--max-num-seqs": "set `engine.max_num_seqs`",
    "--tensor-parallel-size": "set `engine.tensor_parallel_size`",
    "-tp": "set `engine.tensor_parallel_size`",
    "--limit-mm-per-prompt": "set `engine.limit_mm_per_prompt`",
    "--enforce-eager": "set `engine.enforce_eager`",
    "--no-enforce-eager": "set `engine.enforce_eager`",
    "--mm-encoder-tp-mode": "set `engine.mm_encoder_tp_mode`",
    "--enable-expert-parallel": "set `engine.enable_expert_parallel`",
    "--no-enable-expert-parallel": "set `engine.enable_expert_parallel`",
    "-ep": "set `engine.enable_expert_parallel`",
    "--reasoning-parser": "set `engine.reasoning_parser`",
    "--mm-processor-kwargs": "set `images.max_pixels`: both layers must agree on it",
    "--trust-request-mm-kwargs": (
        "set `video.enabled`: clients' own processor kwargs would bypass media checks"
    ),
    "--shutdown-timeout": "set `shutdown.drain_seconds`",
    "--mm-processor-cache-type": "set `engine.mm_processor_cache_type`",
    "--mm-processor-cache-gb": "set `engine.mm_processor_cache_gb`",
    "--max-logprobs": "set `limits.max_logprobs`",
    "--middleware": "qwenvl-serve loads its own middleware",
    "--allowed-media-domains": "images are fetched by our layer; see `images.remote_urls`",
    "--allowed-local-media-path": "images arrive only as data: or http(s) URLs",
    "--api-key": "set `auth.keys`",
    "--root-path": "paths are matched as sent; put a prefix in nginx",
    "--disable-uvicorn-access-log": _OUR_ACCESS_LOG,
    "--no-disable-uvicorn-access-log": _OUR_ACCESS_LOG,
}
# Environment variables the launcher sets itself.
RESERVED_ENV: dict[str, str] = {
    "QWENVL_SERVE_CONFIG": "it carries the resolved config to our middleware",
    "VLLM_MEDIA_URL_ALLOW_REDIRECTS": "vLLM never fetches media here",
    "VLLM_CPU_KVCACHE_SPACE": "set `engine.cpu_kvcache_space_gib`",
    "MALLOC_ARENA_MAX": "set `engine.malloc_arena_max`",
}


def reserved_flag(word: str) -> str | None:
    """The reserved option ``word`` spells (None if it spells none)."""
    if not word.startswith("-"):
        return None
    name = word.split("=", 1)[0]
    if name.startswith("--"):
        name = "--" + name[2:].replace("_", "-")
    if name in RESERVED_FLAGS:
        return name
    if name.startswith("--") and len(name) > 3:  # an abbreviation of a long option
        return next((flag for flag in RESERVED_FLAGS if flag.startswith(name)), None)
    return None


def refused_extra_args(args: list[str]) -> list[str]:
    """One ``'WORD' is FLAG: HOW`` line per reserved option in ``args``."""
    problems = []
    for word in args:
        flag = reserved_flag(word)
        if flag is not None:
            spelled = "" if word.split("=", 1)[0] == flag else f" (spelled {word.split('=', 1)[0]})"
            problems.append(f"{flag}{spelled} is not allowed here: {RESERVED_FLAGS[flag]}")
    return problems


def refused_env(names: list[str]) -> list[str]:
    """One line per reserved variable in ``names``."""
    return [
        f"{name} is not allowed here: {RESERVED_ENV[name]}"
        for name in names
        if name in RESERVED_ENV
    ]
