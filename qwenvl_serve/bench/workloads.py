"""The requests a benchmark sends: synthetic photos, a directory of images, text, or a mix.

Every request is unique (its own text prefix and, for images, its own pixels): vLLM
caches processed images by content and reuses cached prompt prefixes, so repeating one
request would measure those caches instead of the serving path.
"""

from __future__ import annotations

import base64
import io
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from PIL import Image, ImageDraw

from qwenvl_serve.sample_images import synthetic_photo

WorkloadKind = Literal["synthetic", "directory", "text", "mix"]
WORKLOAD_KINDS: tuple[WorkloadKind, ...] = ("synthetic", "directory", "text", "mix")

DEFAULT_IMAGE_PROMPT = "Describe this image."
DEFAULT_TEXT_PROMPT = "Write one sentence about a lighthouse."
IMAGE_SUFFIXES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
                  ".webp": "image/webp", ".gif": "image/gif"}  # fmt: skip

Message = dict[str, Any]
COPY_STRIDE = 1_000_000  # request numbers per workload copy
MARK_BITS = 32  # the corner mark tells apart this many bits of request number


@dataclass(frozen=True)
class ImageFile:
    """Encoded image bytes with their MIME type and a short label (e.g. ``640x480``)."""

    data: bytes
    mime: str
    label: str


@dataclass(frozen=True)
class RequestSpec:
    """One chat request, before the model name and sampling settings are added."""

    label: str
    messages: list[Message]


@dataclass(frozen=True)
class WorkloadSettings:
    """What to send. ``image_sizes`` are cycled through, one size per request."""

    kind: WorkloadKind = "synthetic"
    image_sizes: tuple[tuple[int, int], ...] = ((640, 480),)
    image_dir: Path | None = None
    images_per_request: int = 1
    image_prompt: str = DEFAULT_IMAGE_PROMPT
    text_prompt: str = DEFAULT_TEXT_PROMPT
    text_fraction: float = 0.5
    seed: int = 0


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> ``(640, 480)``; ``ValueError`` otherwise."""
    width, separator, height = text.lower().partition("x")
    if not separator or not width.isdigit() or not height.isdigit():
        raise ValueError(f"image size {text!r}: expected WIDTHxHEIGHT, e.g. 640x480")
    size = (int(width), int(height))
    if min(size) < 16:
        raise ValueError(f"image size {text!r}: both sides must be at least 16 pixels")
    return size


def data_url(image: ImageFile) -> str:
    """The image as a ``data:`` URL."""
    return f"data:{image.mime};base64,{base64.b64encode(image.data).decode('ascii')}"


def unique_prefix(seed: int, index: int) -> str:
    """Text that makes request ``index`` differ from every other from its first tokens.

    Fixed width, so every request of a workload has the same number of prompt tokens.
    """
    return f"Request {seed}:{index:010d}."


def text_request(seed: int, index: int, prompt: str) -> RequestSpec:
    """A text-only request."""
    return RequestSpec(
        "text", [{"role": "user", "content": f"{unique_prefix(seed, index)} {prompt}"}]
    )


def probe_request(seed: int, index: int, prompt: str) -> RequestSpec:
    """A small text-only request sent alongside the load to see how long it waits.

    As long as :func:`text_request` in tokens but never equal to one, so an idle
    measurement with the text workload cannot warm a cache for the probes.
    """
    return RequestSpec(
        "probe", [{"role": "user", "content": f"Probe {seed}:{index:010d}. {prompt}"}]
    )


def image_request(seed: int, index: int, prompt: str, images: Sequence[ImageFile]) -> RequestSpec:
    """A request with the text first and then the images, as data URLs."""
    text = f"{unique_prefix(seed, index)} {prompt}"
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    content += [{"type": "image_url", "image_url": {"url": data_url(image)}} for image in images]
    label = "+".join(image.label for image in images)
    return RequestSpec(label, [{"role": "user", "content": content}])


def chat_body(spec: RequestSpec, model: str, max_tokens: int, ignore_eos: bool) -> bytes:
    """The JSON body of a streaming chat completion that reports usage at the end."""
    body: dict[str, Any] = {
        "model": model,
        "messages": spec.messages,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if ignore_eos:  # a vLLM extension: every answer is exactly max_tokens long
        body["ignore_eos"] = True
    return json.dumps(body).encode()


def vllm_dataset_line(spec: RequestSpec) -> str:
    """``spec`` as one line of ``vllm bench serve --dataset-name custom_image`` JSONL."""
    content = spec.messages[0]["content"]
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    return json.dumps({"content": content})


def marked_copy(photo: Image.Image, index: int) -> Image.Image:
    """``photo`` with a small pattern that encodes ``index`` in one corner: unique pixels."""
    marked = photo.copy()
    draw = ImageDraw.Draw(marked)
    cell = max(2, min(marked.size) // 100)
    for bit in range(MARK_BITS):
        on = (index >> bit) & 1
        x0 = cell * bit
        draw.rectangle((x0, 0, x0 + cell - 1, cell - 1), fill=(255, 255, 255) if on else (0, 0, 0))
    return marked


def encode_jpeg(photo: Image.Image, quality: int = 90) -> bytes:
    """JPEG bytes of ``photo``."""
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


ImageSource = Callable[[int, int], ImageFile]  # (shape index, unique index) -> image


def synthetic_images(sizes: Sequence[tuple[int, int]], seed: int) -> ImageSource:
    """A synthetic photo of size ``sizes[shape % len]``, marked with ``unique``.

    One base photo is drawn per size (drawing a 12 MP photo takes seconds) and each
    request gets a copy with its own mark, re-encoded as JPEG.
    """
    bases: dict[tuple[int, int], Image.Image] = {}

    def image(shape: int, unique: int) -> ImageFile:
        size = sizes[shape % len(sizes)]
        if size not in bases:
            bases[size] = synthetic_photo(*size, seed=seed)
        data = encode_jpeg(marked_copy(bases[size], unique))
        return ImageFile(data, "image/jpeg", f"{size[0]}x{size[1]}")

    return image


def image_files(directory: Path) -> list[Path]:
    """The readable image files of ``directory`` in name order; ``ValueError`` otherwise.

    Only regular files count: a subdirectory named ``x.jpg``, a dangling ``x.png`` link
    or a FIFO are not images and are left out. A regular image file that cannot be read
    is an error, not skipped: measuring a different set than the one asked for would
    go unnoticed.
    """
    try:
        named = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files = [path for path in named if path.is_file()]
    except OSError as exc:
        raise ValueError(f"{directory}: cannot list it ({exc.strerror})") from None
    for path in files:
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise ValueError(f"{path}: cannot read it ({exc.strerror})") from None
    if not files:
        raise ValueError(f"{directory}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def directory_images(directory: Path) -> ImageSource:
    """The files of ``directory`` in name order, cycled by shape index (sent as they are)."""
    files = image_files(directory)

    def image(shape: int, unique: int) -> ImageFile:
        path = files[shape % len(files)]
        return ImageFile(path.read_bytes(), IMAGE_SUFFIXES[path.suffix.lower()], path.name)

    return image


def request_factory(settings: WorkloadSettings) -> Callable[[int], RequestSpec]:
    """Request number ``index`` of the workload; the same index always gives the same request."""
    if settings.kind == "text":
        return lambda index: text_request(settings.seed, index, settings.text_prompt)
    if settings.kind == "directory":
        if settings.image_dir is None:
            raise ValueError("the directory workload needs an image directory")
        image_for = directory_images(settings.image_dir)
    else:
        image_for = synthetic_images(settings.image_sizes, settings.seed)

    def request(index: int) -> RequestSpec:
        # Shapes (text or image, size, file) follow the position within a copy, so every
        # copy (one per target) is the same sequence of shapes; text and pixels follow
        # the whole number, so no two requests are equal.
        position = index % COPY_STRIDE
        if settings.kind == "mix":
            chooser = random.Random(f"{settings.seed}-{position}")  # noqa: S311 - not a secret
            if chooser.random() < settings.text_fraction:
                return text_request(settings.seed, index, settings.text_prompt)
        per = settings.images_per_request
        images = [image_for(position * per + extra, index * per + extra) for extra in range(per)]
        return image_request(settings.seed, index, settings.image_prompt, images)

    return request


def workload_copy(
    factory: Callable[[int], RequestSpec], copy: int, count: int
) -> list[RequestSpec]:
    """The first ``count`` requests of copy number ``copy`` of a workload.

    Copies have the same shapes (sizes, prompts, lengths) but different pixels and text,
    so two targets that are in fact one server (direct and through a proxy) never see
    each other's requests.
    """
    if count > COPY_STRIDE:
        raise ValueError(f"at most {COPY_STRIDE} requests per copy")
    return [factory(copy * COPY_STRIDE + index) for index in range(count)]


def request_number(copy: int, index: int, copies: int) -> int:
    """The factory number of request ``index`` of copy ``copy`` out of ``copies``.

    The first :data:`COPY_STRIDE` requests are numbered as in :func:`workload_copy`; a
    long ``--duration`` run goes on in further stripes of :data:`COPY_STRIDE` numbers,
    one per copy, so no two requests of any copies ever share a number.
    """
    stripe, position = divmod(index, COPY_STRIDE)
    return (stripe * copies + copy) * COPY_STRIDE + position
