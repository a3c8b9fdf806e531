"""The README's first command (`make demo`): the real yolov3-tiny, compiled to a spiking network, detecting on a photo.

    python examples/yolov3_tiny/demo.py --build build -T 256

1. fetch the original Darknet yolov3-tiny (COCO; cached, md5-checked) and convert it with snnc's own reader
   -> build/yolov3-tiny.onnx
2. write the calibration photos (real photos shipped with scikit-image / scikit-learn / matplotlib, the demo
   photo held out) -> build/calib/
3. `snnc compile build/yolov3-tiny.onnx --calib build/calib -o build/yolov3-tiny.lava` (default pipeline)
4. `snnc run build/yolov3-tiny.lava --image build/photo.png -T 256 --ann --out build/detections_snn.png
   --json build/detections.json`: the SNN's detections beside the ANN's

Each snnc step is the CLI itself, printed before it runs, so the commands can be copied.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import onnx

from snnc.apps.cli import main as snnc
from snnc.compiler.darknet import darknet_to_onnx
from snnc.ir.errors import SnncError
from snnc.compiler.samples import DEMO_PHOTO, calibration_photos, write_photos
from snnc.compiler.zoo import fetch_yolov3_tiny


def _step(argv: list[str]) -> None:
    print("\n$ snnc " + " ".join(shlex.quote(a) for a in argv), flush=True)
    rc = snnc(argv)
    if rc:
        raise SystemExit(rc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", type=Path, default=Path("build"), help="output folder")
    ap.add_argument("-T", default="256", help="time steps of the SNN run (a list like 64,256 records each)")
    ap.add_argument("--size", type=int, default=416, help="input size (multiple of 32)")
    ap.add_argument("--backend", default="numpy", help="backend for the run: numpy, c or lava")
    ap.add_argument("--photo", type=Path, help="your own photo instead of the bundled one")
    args = ap.parse_args(argv)

    build = args.build
    build.mkdir(parents=True, exist_ok=True)
    onnx_path = build / "yolov3-tiny.onnx" if args.size == 416 else build / f"yolov3-tiny-{args.size}.onnx"
    lava_path = onnx_path.with_suffix(".lava")
    try:
        cfg, weights = fetch_yolov3_tiny()
        print(f"Darknet yolov3-tiny: {cfg}, {weights}")
        onnx.save(darknet_to_onnx(cfg, weights, input_size=args.size), str(onnx_path))
        print(f"wrote {onnx_path} (snnc's Darknet reader)")
        calib = write_photos(build / "calib", calibration_photos())
        print(f"calibration photos: {', '.join(p.stem for p in calib)} -> {build / 'calib'}")
        photo = args.photo or write_photos(build, [DEMO_PHOTO])[0]
    except SnncError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2

    _step(["compile", str(onnx_path), "--calib", str(build / "calib"), "-o", str(lava_path)])
    _step(["inspect", str(lava_path)])
    _step(["run", str(lava_path), "--image", str(photo), "-T", args.T, "--backend", args.backend, "--ann",
           "--out", str(build / "detections_snn.png"), "--json", str(build / "detections.json")])
    print(f"\nopen {build / 'detections_snn.png'}: the ANN's detections (left) and the SNN's (right)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
