"""Work limits checked before work starts, so a typo is refused in a second instead of running for hours or
running out of memory. Each limit has a default that every normal use stays far below and an environment
variable to raise it (docs/format.md, "Validation").

    SNNC_MAX_IMAGE_PIXELS  pixels of one photo (width x height) read by compile, run or eval
    SNNC_MAX_INPUT         elements of the network input (C x H x W)
    SNNC_MAX_WORK          synaptic operations of one image's simulation: T x the network's MACs per step
"""

from __future__ import annotations

import os

from snnc.ir.errors import SnncError

MAX_IMAGE_PIXELS = 64_000_000  # a 64-megapixel photo; PIL's own bomb guard is 89 M (warning) / 179 M (error)
MAX_INPUT = 3 * 2048 * 2048  # a 2048 x 2048 RGB input; yolov3-tiny at 416 px is 0.5 M
MAX_WORK = 10 ** 14  # yolov3-tiny as compiled: 14.5 G operations per step, so T up to 6,900 per image
MAX_CALIB_RANDOM = 10_000  # --calib-random N


def limit(name: str, default: int) -> int:
    """The limit `default`, or the value of environment variable `name` when set (a positive integer)."""
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = int(float(text))
    except (ValueError, OverflowError):
        raise SnncError(f"{name}={text!r}: expected a positive integer") from None
    if value < 1:
        raise SnncError(f"{name}={text!r}: expected a positive integer")
    return value


def check_image_pixels(width: int, height: int, what: str) -> None:
    """Refuse a photo larger than SNNC_MAX_IMAGE_PIXELS before decoding it (decompression bombs)."""
    cap = limit("SNNC_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS)
    if width * height > cap:
        raise SnncError(f"{what}: image of {width} x {height} pixels is larger than the limit of {cap:,} pixels; "
                        "resize it, or raise SNNC_MAX_IMAGE_PIXELS")


def check_input_size(shape: tuple[int, ...] | list[int], what: str) -> None:
    """Refuse a network input (C, H, W) with more than SNNC_MAX_INPUT elements."""
    cap = limit("SNNC_MAX_INPUT", MAX_INPUT)
    n = 1
    for d in shape:
        n *= int(d)
    if n > cap:
        raise SnncError(f"{what}: input of shape {list(shape)} has {n:,} elements, more than the limit of {cap:,}; "
                        "use a smaller input, or raise SNNC_MAX_INPUT")


def check_work(macs_per_step: int, T: int, what: str = "simulation") -> None:
    """Refuse a simulation whose T x MACs per step (per image) exceeds SNNC_MAX_WORK."""
    cap = limit("SNNC_MAX_WORK", MAX_WORK)
    work = int(macs_per_step) * int(T)
    if work > cap:
        raise SnncError(f"{what}: T={T} x {macs_per_step:,} MACs per step = {work:.3g} operations per image, more "
                        f"than the budget of {cap:.3g}; use a smaller T, or raise SNNC_MAX_WORK")
