"""Photos to input tensors: YOLO letterboxing (keep aspect, pad with grey) and the inverse box mapping."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from snnc.ir.errors import SnncError
from snnc.ir.limits import MAX_IMAGE_PIXELS, check_image_pixels, limit

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class Letterbox:
    """How a photo of size (orig_h, orig_w) was placed in the (h, w) input: scaled by `scale`, offset (top, left)."""

    orig_h: int
    orig_w: int
    scale: float
    top: int
    left: int

    def boxes_to_image(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Map boxes from input-tensor pixels back to photo pixels, clipped to the photo."""
        b = np.asarray(boxes_xyxy, dtype=np.float64).copy()
        b[..., [0, 2]] = (b[..., [0, 2]] - self.left) / self.scale
        b[..., [1, 3]] = (b[..., [1, 3]] - self.top) / self.scale
        b[..., [0, 2]] = b[..., [0, 2]].clip(0, self.orig_w)
        b[..., [1, 3]] = b[..., [1, 3]].clip(0, self.orig_h)
        return b


def read_image(path: str | Path) -> np.ndarray:
    """An RGB uint8 array (H, W, 3); SnncError naming the file if it is not a readable image.

    The size in the header is checked against SNNC_MAX_IMAGE_PIXELS before decoding (decompression bombs)."""
    try:
        with warnings.catch_warnings():  # PIL warns above 89 M pixels; the limit below decides instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                check_image_pixels(im.width, im.height, str(path))
                rgb = np.asarray(im.convert("RGB"))
    except SnncError:
        raise
    except Image.DecompressionBombError:  # PIL's own guard (179 M pixels) fires while opening, before ours
        raise SnncError(f"{path}: image is larger than the limit of {limit('SNNC_MAX_IMAGE_PIXELS', MAX_IMAGE_PIXELS):,} "
                        "pixels (a decompression bomb?); resize it") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise SnncError(f"{path}: not a readable image ({exc.__class__.__name__}); use a jpg or png") from None
    except Exception as exc:  # PIL's decoders also raise SyntaxError, ValueError, struct.error, zlib.error, ...
        raise SnncError(f"{path}: not a readable image ({exc.__class__.__name__}: {str(exc)[:120]})") from None
    if rgb.ndim != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise SnncError(f"{path}: empty image")
    return rgb


def letterbox(rgb: np.ndarray, size: tuple[int, int], pad_value: float = 0.5) -> tuple[np.ndarray, Letterbox]:
    """(3, h, w) float32 in [0, 1]: the photo scaled to fit, centred, the border filled with `pad_value`."""
    h, w = size
    oh, ow = rgb.shape[:2]
    scale = min(h / oh, w / ow)
    nh, nw = max(1, round(oh * scale)), max(1, round(ow * scale))
    resized = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BILINEAR), dtype=np.float32) / 255.0
    top, left = (h - nh) // 2, (w - nw) // 2
    out = np.full((3, h, w), pad_value, dtype=np.float32)
    out[:, top:top + nh, left:left + nw] = resized.transpose(2, 0, 1)
    return out, Letterbox(oh, ow, scale, top, left)


def list_images(folder: str | Path,
                missing: str = "calibration folder does not exist; pass a folder of jpg/png images",
                empty: str = "no jpg/png images in the calibration folder; add some or use --calib-random N",
                ) -> list[Path]:
    """Image files in a folder, sorted; SnncError "<folder>: <missing>" / "<folder>: <empty>" if the folder is
    missing or holds none (the messages say what the caller's option needs)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SnncError(f"{folder}: {missing}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SnncError(f"{folder}: {empty}")
    return files
