"""The digits detector end to end through the CLI: labelled set, calibration, `snnc compile`, `snnc eval`.

    python examples/digits/evaluate_snn.py --build build/digits            # what `make demo` runs
    python examples/digits/evaluate_snn.py --model examples/digits/models/digits_leaky.onnx -n 200 -T 8,64,256

1. the first `-n` images of the digits test split as a COCO set -> BUILD/test/ (real handwritten digits from
   scikit-learn on 64x64 canvases; labels included)
2. `--calib-images` canvases of the train split (disjoint source digits) -> BUILD/calib/
3. `snnc compile MODEL --calib BUILD/calib -o BUILD/MODEL.lava` (the default pipeline)
4. `snnc eval BUILD/MODEL.lava --data BUILD/test -T ... --report BUILD/report`: mAP@0.5 and mAP@0.5:0.95 of the
   ANN and of the SNN at every T from one simulation, firing rates, SOPs, energy, the per-layer error split;
   open BUILD/report/report.html.

Each snnc step is the CLI itself, printed before it runs, so the commands can be copied.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from PIL import Image

from snnc.apps.cli import main as snnc
from snnc.evaluation.digits import make_digits, write_digits

MODELS = Path(__file__).resolve().parent / "models"


def _step(argv: list[str]) -> None:
    print("\n$ snnc " + " ".join(shlex.quote(a) for a in argv), flush=True)
    rc = snnc(argv)
    if rc:
        raise SystemExit(rc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", type=Path, default=Path("build/digits"), help="output folder")
    ap.add_argument("--model", type=Path, default=MODELS / "digits_relu.onnx", help="the ONNX detector")
    ap.add_argument("-n", type=int, default=100, help="test images (default 100)")
    ap.add_argument("-T", default="8,16,32,64,128,256", help="time steps, comma-separated (one simulation)")
    ap.add_argument("--calib-images", type=int, default=32, help="train canvases to calibrate on (default 32)")
    args = ap.parse_args(argv)

    build = args.build
    test = write_digits(build / "test", "test", args.n, layout="coco")
    print(f"labelled set: {args.n} digits test images (COCO) -> {test}")
    calib = build / "calib"
    calib.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(make_digits("train", args.calib_images).images):
        Image.fromarray(img).save(calib / f"train_{i:06d}.png")
    print(f"calibration: {args.calib_images} train canvases -> {calib}")

    lava = build / f"{args.model.stem}.lava"
    _step(["compile", str(args.model), "--calib", str(calib), "-o", str(lava), "-q"])
    _step(["eval", str(lava), "--data", str(test), "-T", args.T, "--report", str(build / "report")])
    print(f"\nopen {build / 'report' / 'report.html'}: mAP vs T, firing rates, energy, errors per layer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
