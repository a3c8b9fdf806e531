"""What `snnc eval` runs on: a labelled set (--data, COCO / VOC / YOLO) or a folder of photos (--images).

Images are read lazily, batch by batch (`EvalSet.read`), so a 5000-image COCO split never sits in memory.
Checked before anything runs, so a mistake costs no simulation and leaves no report: the path exists, the set
has images, every image file is there, a labelled set has at least one box. `class_map` matches the model's
classes to the set's by name (the COCO json's category order need not be the model's), or by index when the
names say nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from snnc.ir.errors import SnncError
from snnc.compiler.images import IMAGE_SUFFIXES, read_image
from snnc.evaluation.datasets import Sample, detect_layout, load_dataset

log = logging.getLogger(__name__)


@dataclass
class EvalSet:
    paths: list[Path]
    samples: list[Sample] | None  # ground truth; None for a folder of unlabelled photos (fidelity mode)
    class_names: list[str] | None  # the set's classes (None without labels)
    source: str
    layout: str | None  # coco / voc / yolo, or None for photos

    @property
    def labelled(self) -> bool:
        return self.samples is not None

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> np.ndarray:
        return read_image(self.paths[i])


def load_labelled(path: str | Path, layout: str | None = None, split: str | None = None,
                  max_images: int | None = None) -> EvalSet:
    """A labelled set in any of the three layouts; SnncError naming what is missing."""
    path = Path(path)
    if not path.exists():
        raise SnncError(f"--data {path}: no such dataset file or folder")
    layout = layout or detect_layout(path)
    samples, names = load_dataset(path, layout, split)
    if max_images is not None:
        samples = samples[:max_images]
    if not samples:
        raise SnncError(f"--data {path}: the {layout} set lists no images")
    missing = [s.image_path for s in samples if s.image_path is None or not s.image_path.is_file()]
    if missing:
        raise SnncError(f"--data {path}: image file {missing[0]} is missing ({len(missing)} of {len(samples)})")
    if sum(len(s.classes) for s in samples) == 0:
        raise SnncError(f"--data {path}: no labelled boxes in the {len(samples)} images; for photos without labels "
                        "use --images DIR (fidelity to the ANN)")
    return EvalSet([s.image_path for s in samples], samples, list(names), str(path), layout)


def load_photos(folder: str | Path, max_images: int | None = None) -> EvalSet:
    """The jpg / png / bmp files of a folder, sorted (not recursive)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SnncError(f"--images {folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if max_images is not None:
        files = files[:max_images]
    if not files:
        raise SnncError(f"--images {folder}: no {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} images in the folder")
    return EvalSet(files, None, None, str(folder), None)


def class_map(model_names: Sequence[str] | None, num_classes: int, data_names: Sequence[str]) -> np.ndarray:
    """model class index -> set class index (-1: the set has no such class, its detections are dropped)."""
    data_names = [str(n) for n in data_names]
    if model_names is not None and len(model_names) == num_classes:
        model_names = [str(n) for n in model_names]
        if model_names == data_names:
            return np.arange(num_classes)
        index = {n: i for i, n in enumerate(data_names)}
        if set(data_names) <= set(model_names):
            return np.array([index.get(n, -1) for n in model_names])
        unknown = sorted(set(data_names) - set(model_names))
        if len(data_names) != num_classes:
            raise SnncError(f"the set's classes {unknown[:5]} are not among the model's {num_classes} classes "
                            f"({', '.join(model_names[:5])}, ...)")
        log.warning("class names differ between the model and the set (%s ...); matching them by index", unknown[:3])
    if len(data_names) != num_classes:
        raise SnncError(f"the set has {len(data_names)} classes, the model {num_classes}, and the model carries no "
                        "class names to match them by")
    return np.arange(num_classes)
