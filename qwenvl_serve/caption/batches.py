"""What goes into each request: one image or video, or a group of images from one
directory (a video is always alone: the server takes one video per request)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qwenvl_serve.caption.discovery import is_video

BatchKey = tuple[str, ...]


def path_key(path: Path | str) -> str:
    """How a path is compared when resuming: normalized, as it was given."""
    return os.path.normpath(str(path))


@dataclass(frozen=True)
class Batch:
    """The images of one request, in the order the model sees them."""

    images: tuple[Path, ...]

    @property
    def key(self) -> BatchKey:
        """Identifies the batch in the output file."""
        return tuple(path_key(p) for p in self.images)


def plan_batches(images: Sequence[Path], group_size: int | None) -> list[Batch]:
    """One batch per image, or with ``group_size`` the images of each directory in runs
    of at most ``group_size`` (a directory of 10 with size 4 gives 4 + 4 + 2)."""
    if group_size is None:
        return [Batch((image,)) for image in images]
    if group_size < 1:
        raise ValueError("group_size must be at least 1")
    by_directory: dict[Path, list[Path]] = {}
    for image in images:
        if not is_video(image):
            by_directory.setdefault(image.parent, []).append(image)
    grouped = [
        Batch(tuple(members[start : start + group_size]))
        for members in by_directory.values()
        for start in range(0, len(members), group_size)
    ]
    return grouped + [Batch((video,)) for video in images if is_video(video)]


def pending(batches: Sequence[Batch], done: set[BatchKey]) -> list[Batch]:
    """The batches whose key is not among those already captioned."""
    return [batch for batch in batches if batch.key not in done]
