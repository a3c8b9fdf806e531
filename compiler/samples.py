"""Real photos that ship inside installed packages: demo input and calibration data with nothing to download.

scikit-image's `skimage.data` (astronaut, coffee, chelsea, rocket, the two views of stereo_motorcycle, camera),
scikit-learn's sample images (china, flower) and matplotlib's grace_hopper, where those packages are installed.
`DEMO_PHOTO` is the one the demo detects on; it is left out of the default calibration set so that the demo does
not calibrate on the photo it is judged on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from snnc.ir.errors import SnncError

DEMO_PHOTO = "motorcycle"


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        if name.startswith("motorcycle"):
            return data.stereo_motorcycle()[0 if name == "motorcycle" else 1]
        return getattr(data, name)()

    return load


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")

    return load


def _hopper() -> np.ndarray:
    import matplotlib.cbook as cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        return np.asarray(im.convert("RGB"))


_SOURCES: dict[str, tuple[str, Callable[[], np.ndarray]]] = {
    "astronaut": ("skimage", _skimage("astronaut")),
    "coffee": ("skimage", _skimage("coffee")),
    "chelsea": ("skimage", _skimage("chelsea")),
    "rocket": ("skimage", _skimage("rocket")),
    "motorcycle": ("skimage", _skimage("motorcycle")),
    "motorcycle_right": ("skimage", _skimage("motorcycle_right")),
    "camera": ("skimage", _skimage("camera")),
    "china": ("sklearn", _sklearn("china")),
    "flower": ("sklearn", _sklearn("flower")),
    "grace_hopper": ("matplotlib", _hopper),
}


def as_rgb_uint8(img: np.ndarray) -> np.ndarray:
    """An image as contiguous RGB uint8 (H, W, 3): grey repeated in R, G and B, alpha dropped."""
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def available_photos() -> list[str]:
    """Names of the photos whose package is importable here, in a fixed order."""
    import importlib.util

    return [n for n, (pkg, _) in _SOURCES.items() if importlib.util.find_spec(pkg) is not None]


def sample_photo(name: str) -> np.ndarray:
    """One photo as RGB uint8 (H, W, 3)."""
    if name not in _SOURCES:
        raise SnncError(f"unknown sample photo {name!r}; known: {', '.join(_SOURCES)}")
    pkg, load = _SOURCES[name]
    try:
        return as_rgb_uint8(load())
    except ImportError:
        raise SnncError(f"sample photo {name!r} needs the package {pkg}; pip install it") from None


def write_photos(folder: str | Path, names: Iterable[str]) -> list[Path]:
    """Save photos as PNG files in `folder` (created); returns their paths."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / f"{name}.png"
        if not path.exists():
            Image.fromarray(sample_photo(name)).save(path)
        paths.append(path)
    return paths


def calibration_photos(exclude: Iterable[str] = (DEMO_PHOTO,)) -> list[str]:
    """The default calibration set: every available photo except `exclude`."""
    skip = set(exclude)
    names = [n for n in available_photos() if n not in skip]
    if not names:
        raise SnncError("no sample photos available: pip install scikit-image")
    return names
