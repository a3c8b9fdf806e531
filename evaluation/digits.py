"""A small real labelled detection set: scikit-learn's handwritten digits placed on 64x64 canvases.

Source: `sklearn.datasets.load_digits()` (1797 real 8x8 scans of handwritten digits, UCI optdigits test part,
ink 0..16). The 1797 source digits are split once, by a fixed permutation independent of `seed`, into
train (1077), val (360) and test (360) pools: a digit drawn in one split never appears in another.

One image (everything drawn from numpy's default_rng seeded by (seed, split, index), so image i of a split is the
same whatever n is, and sets are made in any order):
  - background: a colour with every channel in [0, 0.45], a linear gradient of up to +-0.1 and Gaussian noise
    (sigma 0.02-0.05); one image in four is inverted afterwards (dark ink on a light background);
  - 1-4 digits of the split's pool, each scaled (bilinear) to a height of 12-28 px and a width of 0.8-1.2 times
    that, in a colour with every channel 0.55 above the background (clipped to 1), alpha-blended with its ink;
  - placement: uniform inside the canvas; a digit whose box would overlap an earlier one by IoU > 0.1 or cover
    more than 25% of the smaller box is placed again (up to 50 tries, then left out), so there is always >= 1;
  - box: the tight box of the digit's ink (upscaled ink >= 0.25 of full), integers, x2/y2 exclusive; class = the
    digit, names "0".."9".

`make_digits(split, n, seed)` returns arrays; `write_digits(out_dir, split, n, seed, layout)` writes them as COCO,
VOC or YOLO (datasets.write_dataset); `digits_samples(split, n, seed)` gives in-memory `Sample`s for metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from snnc.evaluation.datasets import Sample, write_dataset

CLASS_NAMES = [str(i) for i in range(10)]
SPLITS = ("train", "val", "test")
SIZE = 64
SPLIT_SEED = 20240531  # fixes which source digits belong to which split; not a user option
_SPLIT_FRACTIONS = (0.6, 0.2, 0.2)


@dataclass
class DigitsSet:
    images: np.ndarray  # (n, 64, 64, 3) uint8 RGB
    boxes: list[np.ndarray]  # per image (k, 4) float32, x1 y1 x2 y2 in pixels
    classes: list[np.ndarray]  # per image (k,) int64
    class_names: list[str]
    split: str
    seed: int

    def __len__(self) -> int:
        return len(self.boxes)

    def samples(self) -> list[Sample]:
        """In-memory samples (image_path None), for evaluate_detections."""
        return [Sample(None, b, c, SIZE, SIZE, {"index": i}) for i, (b, c) in enumerate(zip(self.boxes, self.classes))]


@lru_cache(maxsize=1)
def _source() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError("the digits set needs scikit-learn: pip install scikit-learn") from exc
    d = load_digits()
    return (d.images.astype(np.float32) / 16.0), d.target.astype(np.int64)


def split_indices(split: str) -> np.ndarray:
    """Indices into load_digits() of the source digits of a split (disjoint across splits)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    n = len(_source()[1])
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    a = int(round(n * _SPLIT_FRACTIONS[0]))
    b = a + int(round(n * _SPLIT_FRACTIONS[1]))
    return np.sort({"train": perm[:a], "val": perm[a:b], "test": perm[b:]}[split])


def _iou(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """IoU and intersection / smaller area of two boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    aa = (a[2] - a[0]) * (a[3] - a[1])
    ab = (b[2] - b[0]) * (b[3] - b[1])
    return inter / (aa + ab - inter), inter / min(aa, ab)


def _resize(digit: np.ndarray, w: int, h: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(digit, dtype=np.float32)).resize((w, h), Image.BILINEAR), dtype=np.float32)


def make_image(rng: np.random.Generator, pool: np.ndarray, images: np.ndarray, labels: np.ndarray,
               size: int = SIZE, scale: tuple[int, int] = (12, 28), max_digits: int = 4
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One canvas: (size, size, 3) uint8, boxes (k, 4) float32, classes (k,) int64."""
    bg = rng.uniform(0.0, 0.45, 3).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1) - 0.5
    gx, gy = rng.uniform(-0.1, 0.1, 2)
    canvas = np.clip(bg[None, None, :] + (gx * xx + gy * yy)[..., None], 0, 1)
    want = int(rng.integers(1, max_digits + 1))
    boxes, classes = [], []
    for _ in range(want):
        src = int(pool[rng.integers(len(pool))])
        h = int(rng.integers(scale[0], scale[1] + 1))
        w = max(6, int(round(h * rng.uniform(0.8, 1.2))))
        alpha = np.clip(_resize(images[src], w, h), 0, 1)
        ink = np.nonzero(alpha >= 0.25)
        if ink[0].size == 0:
            continue
        ty1, ty2, tx1, tx2 = ink[0].min(), ink[0].max() + 1, ink[1].min(), ink[1].max() + 1
        placed = None
        for _try in range(50):
            x0 = int(rng.integers(0, size - w + 1))
            y0 = int(rng.integers(0, size - h + 1))
            box = np.array([x0 + tx1, y0 + ty1, x0 + tx2, y0 + ty2], dtype=np.float32)
            if all(iou <= 0.1 and cover <= 0.25 for iou, cover in (_iou(box, b) for b in boxes)):
                placed = (x0, y0, box)
                break
        if placed is None:
            continue
        x0, y0, box = placed
        color = np.clip(bg + 0.55 + rng.uniform(0.0, 0.45, 3), 0, 1).astype(np.float32)
        region = canvas[y0:y0 + h, x0:x0 + w]
        a = alpha[..., None]
        canvas[y0:y0 + h, x0:x0 + w] = region * (1 - a) + color * a
        boxes.append(box)
        classes.append(int(labels[src]))
    canvas = canvas + rng.normal(0.0, rng.uniform(0.02, 0.05), canvas.shape).astype(np.float32)
    if rng.random() < 0.25:
        canvas = 1.0 - canvas
    img = (np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8)
    return img, np.array(boxes, dtype=np.float32).reshape(-1, 4), np.array(classes, dtype=np.int64)


def make_digits(split: str = "test", n: int = 500, seed: int = 0, start: int = 0) -> DigitsSet:
    """Images start..start+n-1 of a split (deterministic in (seed, split, index))."""
    images, labels = _source()
    pool = split_indices(split)
    code = SPLITS.index(split)
    out = np.empty((n, SIZE, SIZE, 3), np.uint8)
    boxes, classes = [], []
    for k in range(n):
        rng = np.random.default_rng([int(seed), code, start + k])
        img, b, c = make_image(rng, pool, images, labels)
        while len(c) == 0:  # every try failed (cannot happen with one digit, kept as a guard)
            img, b, c = make_image(rng, pool, images, labels)
        out[k] = img
        boxes.append(b)
        classes.append(c)
    return DigitsSet(out, boxes, classes, list(CLASS_NAMES), split, int(seed))


def digits_samples(split: str = "test", n: int = 500, seed: int = 0) -> list[Sample]:
    return make_digits(split, n, seed).samples()


def write_digits(out_dir: str | Path, split: str = "test", n: int = 500, seed: int = 0, layout: str = "coco") -> Path:
    """Write a split as a labelled set in `layout` (coco, voc, yolo); returns the path load_dataset reads."""
    ds = make_digits(split, n, seed)
    return write_dataset(out_dir, list(ds.images), ds.boxes, ds.classes, ds.class_names, layout=layout, split=split)
