"""The three export forms of the real yolov3-tiny through `snnc compile` + `snnc run`, detections compared.

    python examples/yolov3_tiny/export_forms.py --build build/forms --size 160 -T 64

1. raw heads: snnc's Darknet reader without decoding (`head_0`, `head_1`); compiled with
   `--head yolo --darknet-cfg yolov3-tiny.cfg --names coco.names`
2. decoded: snnc's Darknet reader with decoding (`boxes`, `scores`)
3. NMS inside: the decoded graph + ONNX NonMaxSuppression (`snnc.compiler.heads.append_nms`)
4. (reported, not compared) the PyTorch port's raw-head export (examples/yolov3_tiny/torch_export.py, edge
   max-pool padding, which gives Darknet's maxima): the same network exported by another tool, whose float
   rounding differs in the last bits, so its spikes and scores differ slightly at finite T

All are calibrated on the same photos (skimage / scikit-learn samples, the demo photo left out) and run on the
demo photo; the script prints each form's detections and whether forms 1-3 agree (same classes, boxes within
0.5 px, scores within 1e-3).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import onnx

from snnc.apps.cli import main as snnc
from snnc.compiler.darknet import COCO_CLASSES, darknet_to_onnx
from snnc.compiler.heads import append_nms
from snnc.compiler.samples import DEMO_PHOTO, calibration_photos, write_photos
from snnc.compiler.zoo import fetch_yolov3_tiny

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_export import export  # noqa: E402


def _same(a: list, b: list) -> bool:
    if len(a) != len(b):
        return False
    key = lambda d: (d["class"], round(d["box"][0]), round(d["box"][1]))  # noqa: E731
    return all(x["class"] == y["class"] and abs(x["score"] - y["score"]) < 1e-3
               and max(abs(p - q) for p, q in zip(x["box"], y["box"])) < 0.5
               for x, y in zip(sorted(a, key=key), sorted(b, key=key)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", type=Path, default=Path("build/forms"))
    ap.add_argument("--size", type=int, default=160, help="input size (multiple of 32)")
    ap.add_argument("-T", default="64")
    ap.add_argument("--calib-photos", type=int, default=4)
    args = ap.parse_args(argv)
    b = args.build
    b.mkdir(parents=True, exist_ok=True)
    cfg, weights = fetch_yolov3_tiny()
    calib, photo = b / "calib", b / "photo"
    write_photos(calib, calibration_photos()[:args.calib_photos])
    write_photos(photo, [DEMO_PHOTO])
    export(b / "torch.onnx", opset=13, pad="replicate", size=args.size)
    onnx.save(darknet_to_onnx(cfg, weights, input_size=args.size, decode=False), b / "raw.onnx")
    decoded = darknet_to_onnx(cfg, weights, input_size=args.size, decode=True)
    onnx.save(decoded, b / "decoded.onnx")
    onnx.save(append_nms(decoded, iou_thr=0.45, score_thr=0.25, max_per_class=300), b / "nms.onnx")
    (b / "coco.names").write_text("\n".join(COCO_CLASSES) + "\n")
    head = ["--head", "yolo", "--darknet-cfg", str(cfg), "--names", str(b / "coco.names")]
    flags = {"raw": head, "decoded": [], "nms": [], "torch": head}
    dets = {}
    for form, extra in flags.items():
        lava, out = b / f"{form}.lava", b / f"{form}.json"
        for argv_ in (["compile", str(b / f"{form}.onnx"), "--calib", str(calib), "-q", "-o", str(lava), *extra],
                      ["run", str(lava), "--image", str(photo), "-T", args.T, "-q", "--json", str(out)]):
            print("$ snnc " + " ".join(argv_), flush=True)
            if snnc(argv_):
                return 1
        dets[form] = json.loads(out.read_text())["images"][0]["detections"]
    for form, d in dets.items():
        print(f"{form}: {len(d)} detections: " + ", ".join(f"{x['name']} {x['score']:.3f}" for x in d))
    ok = _same(dets["raw"], dets["decoded"]) and _same(dets["nms"], dets["decoded"])
    print("the three forms agree" if ok else "the forms DISAGREE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
