"""Write the digits detection set (scikit-learn's handwritten digits on 64x64 canvases) to disk.

    python examples/digits/make_dataset.py build/digits_test --split test -n 500 --layout coco
    python examples/digits/make_dataset.py build/digits_calib --split train -n 32 --images-only

Layouts: coco (annotations.json + images/), voc (Annotations/ + JPEGImages/ + ImageSets/Main/SPLIT.txt), yolo
(images/ + labels/ + classes.txt). `--images-only` writes just the PNGs (a calibration folder for
`snnc compile --calib DIR`). The set is deterministic in (seed, split, image index); the train, val and test splits
draw on disjoint source digits. See snnc.evaluation.digits for how an image is made.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from snnc.evaluation.digits import SPLITS, make_digits, write_digits


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="write the digits detection set")
    ap.add_argument("out", type=Path, help="output folder")
    ap.add_argument("--split", choices=SPLITS, default="test")
    ap.add_argument("-n", type=int, default=500, help="number of images (default 500)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layout", choices=("coco", "voc", "yolo"), default="coco")
    ap.add_argument("--images-only", action="store_true", help="only the PNG images, no labels")
    args = ap.parse_args(argv)
    if args.images_only:
        from PIL import Image

        ds = make_digits(args.split, args.n, args.seed)
        args.out.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(ds.images):
            Image.fromarray(img).save(args.out / f"{args.split}_{i:06d}.png")
        print(f"wrote {args.n} images to {args.out}")
        return 0
    path = write_digits(args.out, args.split, args.n, args.seed, args.layout)
    print(f"wrote {args.n} {args.split} images ({args.layout}) to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
