"""Find the image and video files named on the command line."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from qwenvl_serve.errors import UserError

# Suffixes picked up when walking a directory; a file named explicitly is always taken.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif", ".heic", ".heif"}
)
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv"})


def is_video(path: Path) -> bool:
    """A video by its name (a video is captioned on its own, one per request)."""
    return path.suffix.lower() in VIDEO_SUFFIXES


class CaptionInputError(UserError):
    """A path on the command line that cannot be captioned."""

    exit_code = 2


def is_candidate(path: Path) -> bool:
    """An image or video by its name, and not hidden (which skips ``.DS_Store`` and
    ``._x.jpg`` junk)."""
    suffix = path.suffix.lower()
    return (suffix in IMAGE_SUFFIXES or suffix in VIDEO_SUFFIXES) and not path.name.startswith(".")


def _walk(directory: Path, recursive: bool) -> Iterable[Path]:
    if not recursive:
        yield from sorted(p for p in directory.iterdir() if p.is_file() and is_candidate(p))
        return
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(root)
        yield from sorted(here / name for name in files if is_candidate(here / name))


def discover_images(paths: Sequence[Path], recursive: bool) -> list[Path]:
    """Files named directly, plus the images inside named directories, in a stable order.

    Each directory is listed in name order (subdirectories too with ``recursive``);
    a path met twice is kept once.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(_walk(path, recursive))
        elif path.is_file():
            found.append(path)
        else:
            raise CaptionInputError(f"no such file or directory: {path}")
    unique = list(dict.fromkeys(Path(os.path.normpath(p)) for p in found))
    if not unique:
        hint = "" if recursive else " (add --recursive to look in subdirectories)"
        raise CaptionInputError(f"no images or videos found in {', '.join(map(str, paths))}{hint}")
    return unique
