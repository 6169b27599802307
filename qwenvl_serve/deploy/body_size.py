"""How large a request body nginx lets through to a model, from its image limits."""

from __future__ import annotations

import math

from qwenvl_serve.config import InstanceConfig

MIB = 1024 * 1024
# Room for the JSON around the images: messages, text, parameters.
TEXT_MARGIN_BYTES = 1 * MIB
# Base64 turns every 3 bytes into 4 characters.
BASE64_GROWTH = 4 / 3


def derived_body_bytes(instance: InstanceConfig) -> int:
    """Every allowed image and video at its largest, base64-encoded, plus the text margin.

    Never more than the instance's own `images.max_request_bytes`, which it would refuse
    anyway: nginx then answers 413 before the body crosses the network.
    """
    images = instance.max_images_per_request * instance.images.max_bytes
    videos = instance.max_videos_per_request * instance.video.max_bytes
    media = math.ceil((images + videos) * BASE64_GROWTH)
    return min(media + TEXT_MARGIN_BYTES, instance.images.max_request_bytes)


def body_limit_mib(
    instance: InstanceConfig, override_mib: float | None, cap_mib: float | None
) -> int:
    """nginx's `client_max_body_size` in whole MiB (rounded up): the model's override or
    the derived size, never above the deployment's cap."""
    wanted = override_mib * MIB if override_mib is not None else derived_body_bytes(instance)
    if cap_mib is not None:
        wanted = min(wanted, cap_mib * MIB)
    return max(1, math.ceil(wanted / MIB))
