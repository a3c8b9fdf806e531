"""What the compiled network costs next to its ANN, and how large its .lava file is, for yolov3-tiny and the
digits detectors: the figures of docs/results.md ("A lean spiking graph").

    python bench/lean.py                                   # yolov3-tiny 416 px (3 photos) + both digits models
    python bench/lean.py --models yolo --size 416 --photos 3
    python bench/lean.py --models digits_relu,digits_leaky --json lean.json

Per model, in one run: the cost table (parameters, neurons, synapses, dense MACs per step; SNN, ANN, ratio) and
the .lava file size in the version-1 layout (every array float32) and the current one, with the ANN embedded whole,
by reference to the source ONNX (the default) and left out, each as a ratio to the ONNX file. The compile uses
snnc's default options (others with --options, e.g. --options leaky=split,maxpool=exact,norm=channel).
Calibration: yolov3-tiny on `--photos` of the real photos of `snnc.compiler.samples`, letterboxed; the digits
detectors on 16 train canvases (`snnc.evaluation.digits`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from snnc.compiler.api import compile_model
from snnc.compiler.cost import format_cost, format_dominant
from snnc.ir import lavafile

ROOT = Path(__file__).resolve().parent.parent


def _yolo(work: Path, size: int, photos: int) -> tuple[Path, Path]:
    import onnx

    from snnc.compiler.darknet import darknet_to_onnx
    from snnc.compiler.samples import calibration_photos, write_photos
    from snnc.compiler.zoo import fetch_yolov3_tiny

    cfg, weights = fetch_yolov3_tiny()
    model = work / f"yolov3-tiny-{size}.onnx"
    onnx.save(darknet_to_onnx(cfg, weights, input_size=size), model)
    calib = work / "photos"
    write_photos(calib, calibration_photos()[:photos])
    return model, calib


def _digits(work: Path, name: str) -> tuple[Path, Path]:
    from PIL import Image

    from snnc.evaluation.digits import make_digits

    calib = work / "digits_calib"
    if not calib.is_dir():
        calib.mkdir()
        for i, img in enumerate(make_digits("train", 16).images):
            Image.fromarray(img).save(calib / f"train_{i:03d}.png")
    return ROOT / "examples" / "digits" / "models" / f"{name}.onnx", calib


def measure(model: Path, calib: Path, work: Path, options: dict | None = None) -> dict:
    res = compile_model(model, calib_dir=calib, progress=sys.stderr.isatty(), **(options or {}))
    net = res.network
    sizes = {}
    for version in (1, lavafile.FORMAT_VERSION):
        # the ANN embedded whole, by reference to the source ONNX (snnc compile's default), left out
        for ann in ("embedded", "by_ref", "no_ann") if version > 1 else ("embedded", "no_ann"):
            path = work / f"{model.stem}.v{version}.{ann}.lava"
            keep = net.ann_onnx
            net.ann_onnx = None if ann == "no_ann" else keep
            lavafile.save(net, path, version=version, embed_ann=ann != "by_ref")
            net.ann_onnx = keep
            sizes[f"v{version}_{ann}"] = path.stat().st_size
            path.unlink()
    onnx_bytes = model.stat().st_size
    return {"model": model.name, "onnx_bytes": onnx_bytes, "cost": net.meta["cost"], "lava_bytes": sizes,
            "lava_ratio": {k: v / onnx_bytes for k, v in sizes.items()}, "dominant": format_dominant(net)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="yolo,digits_relu,digits_leaky")
    ap.add_argument("--size", type=int, default=416, help="yolov3-tiny input size (default 416)")
    ap.add_argument("--photos", type=int, default=3, help="yolov3-tiny calibration photos (default 3)")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--options", default="", help="compile options as name=value,... (default: snnc's defaults)")
    args = ap.parse_args(argv)
    options = dict(kv.split("=", 1) for kv in args.options.split(",") if kv)
    out = {}
    with tempfile.TemporaryDirectory(prefix="snnc-lean-") as tmp:
        work = Path(tmp)
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            model, calib = _yolo(work, args.size, args.photos) if name == "yolo" else _digits(work, name)
            r = measure(model, calib, work, options)
            out[name] = r
            print(f"== {name}: {model.name}, ONNX {r['onnx_bytes'] / 1e6:.1f} MB")
            print(format_cost(r["cost"]))
            print(r["dominant"])
            print(".lava size (ratio to the ONNX file): " + ", ".join(
                f"{k} {v / 1e6:.1f} MB ({r['lava_ratio'][k]:.2f}x)" for k, v in r["lava_bytes"].items()))
            print()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
