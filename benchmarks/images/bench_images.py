"""Image normalization benchmark: our path against the naive Pillow pipeline and the
other candidates, interleaved in one run; medians and ratios.

    .venv/bin/python benchmarks/images/bench_images.py [--rounds 15] [--engine-model DIR]

``--engine-model`` also measures, with vLLM's own processor on that checkpoint, how
many image tokens a 12 MP photo costs bare vLLM and behind our launch settings.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import PIL
import pyvips
from PIL import Image
from prometheus_client import CollectorRegistry

from qwenvl_serve.config_loading import resolve_config
from qwenvl_serve.images.config import ImagesConfig
from qwenvl_serve.images.middleware import prepare_data_url
from qwenvl_serve.images.normalize import normalize_image
from qwenvl_serve.middleware import QwenVLServeMiddleware
from qwenvl_serve.sample_images import synthetic_jpeg

TARGET = (2048, 1536)


def save_jpeg(image: Image.Image, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def naive_pillow(data: bytes) -> bytes:
    """open -> convert RGB -> resize bicubic -> save q95: what a first attempt does."""
    image = Image.open(io.BytesIO(data)).convert("RGB").resize(TARGET, Image.Resampling.BICUBIC)
    return save_jpeg(image)


def pillow_draft_reduce(data: bytes) -> bytes:
    """Pillow's speed tricks: JPEG draft (DCT scaling) and reducing_gap before resampling."""
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", TARGET)
    image = image.convert("RGB").resize(TARGET, Image.Resampling.BICUBIC, reducing_gap=2.0)
    return save_jpeg(image)


def pillow_draft_half(data: bytes) -> bytes:
    """Decode at half size with DCT scaling (below the target), then scale up slightly."""
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (image.width // 2, image.height // 2))
    image = image.convert("RGB").resize(TARGET, Image.Resampling.BICUBIC)
    return save_jpeg(image)


def vips_thumbnail(data: bytes) -> bytes:
    """libvips' thumbnail (shrink-on-load, streaming) and JPEG save without metadata."""
    image = pyvips.Image.thumbnail_buffer(data, TARGET[0], height=TARGET[1], size="force")
    encoded: bytes = image.jpegsave_buffer(Q=95, keep="none")
    return encoded


def ours(data: bytes) -> bytes:
    """The full image core: checks, header probe, libvips resize, JPEG encode."""
    return normalize_image(data, ImagesConfig()).data


def interleaved(candidates: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each candidate, run in turn round after round."""
    for run in candidates.values():  # warm up caches, imports, thread pools
        run()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, run in candidates.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return times


def table(times: dict[str, list[float]], baseline: str) -> list[dict[str, Any]]:
    reference = statistics.median(times[baseline])
    rows = []
    for name, samples in times.items():
        median = statistics.median(samples)
        rows.append(
            {
                "candidate": name,
                "median_ms": round(median * 1000, 3),
                "p90_ms": round(sorted(samples)[int(0.9 * (len(samples) - 1))] * 1000, 3),
                "ratio": round(median / reference, 3),
            }
        )
    return rows


def resize_benchmark(rounds: int) -> list[dict[str, Any]]:
    photo = synthetic_jpeg(4000, 3000, seed=3, quality=90)
    pyvips.cache_set_max(0)  # as the layer runs: no operation cache
    candidates: dict[str, Callable[[], object]] = {
        "naive_pillow": lambda: naive_pillow(photo),
        "pillow_draft_reduce": lambda: pillow_draft_reduce(photo),
        "pillow_draft_half": lambda: pillow_draft_half(photo),
        "vips_thumbnail": lambda: vips_thumbnail(photo),
        "ours_normalize_image": lambda: ours(photo),
    }
    return table(interleaved(candidates, rounds), "naive_pillow")


def passthrough_benchmark(rounds: int) -> list[dict[str, Any]]:
    jpeg = synthetic_jpeg(1152, 864, seed=5, quality=90)  # 1 MP, within every bound
    url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    config = ImagesConfig()
    candidates: dict[str, Callable[[], object]] = {
        "core_normalize_image": lambda: normalize_image(jpeg, config),
        "with_base64_decode": lambda: prepare_data_url(url, config),
    }
    return table(interleaved(candidates, rounds), "core_normalize_image")


async def inner_app(scope: Any, receive: Any, send: Any) -> None:
    """A stand-in for vLLM: reads the body, answers a small JSON completion."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b'{"choices": []}'})


async def one_request(app: Any, body: bytes) -> None:
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            await asyncio.sleep(3600)  # the client stays connected until answered
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
        "query_string": b"", "headers": headers, "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000), "state": {},
    }  # fmt: skip
    await app(scope, receive, send)


def middleware_benchmark(rounds: int) -> list[dict[str, Any]]:
    jpeg = synthetic_jpeg(1152, 864, seed=6, quality=90)
    url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    body = json.dumps(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Describe this image."},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                }
            ],
        }
    ).encode()
    # The whole stack: the image layer works on the view the intake builds. Its log
    # lines are written to /dev/null (see main), so stdout stays this report's JSON.
    layer = QwenVLServeMiddleware(inner_app, resolve_config({"model": "m"}), CollectorRegistry())
    loop = asyncio.new_event_loop()
    try:
        candidates: dict[str, Callable[[], object]] = {
            "inner_app_alone": lambda: loop.run_until_complete(one_request(inner_app, body)),
            "through_our_stack": lambda: loop.run_until_complete(one_request(layer, body)),
        }
        return table(interleaved(candidates, rounds), "inner_app_alone")
    finally:
        loop.close()


def engine_baseline(model_dir: Path) -> dict[str, int]:
    """Image tokens of a 4000x3000 photo in vLLM's own processor: as bare vLLM would
    count them, and with the processor bound our launcher sets."""
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY

    from qwenvl_serve.launch_plan import build_launch_plan

    plan = build_launch_plan(resolve_config({"model": str(model_dir)}))
    ours_kwargs = json.loads(plan.args[plan.args.index("--mm-processor-kwargs") + 1])
    counts = {}
    for label, kwargs in (("bare_vllm", None), ("with_our_launch_settings", ours_kwargs)):
        config = ModelConfig(model=str(model_dir), mm_processor_kwargs=kwargs, max_model_len=32768)
        processor = MULTIMODAL_REGISTRY.create_processor(config)
        items = processor.info.data_parser.parse_mm_data(
            {"image": [Image.new("RGB", (4000, 3000))]}
        )
        grid = processor._apply_hf_processor_main(items, {})["image_grid_thw"].tolist()[0]
        counts[label] = grid[1] * grid[2] // 4
    return counts


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    import os

    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "pillow": PIL.__version__,
        "libvips": f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="rounds of the 12 MP comparison")
    parser.add_argument("--engine-model", type=Path, help="checkpoint for the engine baseline")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": machine()}
    results["resize_12mp_to_2048"] = resize_benchmark(args.rounds)
    results["passthrough_1mp"] = passthrough_benchmark(args.rounds * 20)
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # the access log
        results["middleware_added_latency"] = middleware_benchmark(args.rounds * 20)
    if args.engine_model:
        results["engine_image_tokens_4000x3000"] = engine_baseline(args.engine_model)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
