"""Localisation or classification? mAP of a digits detector's ANN export per class and class-agnostically.

    python examples/digits/class_agnostic.py examples/digits/models/digits_v5.onnx examples/digits/models/digits_v8.onnx

Class-agnostic: every ground truth and detection gets one class, a candidate's score is its best class score, so
the figure counts boxes found whatever digit they were called. A model near 1.0 there but low per class finds the
digits and misnames them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np

from snnc.evaluation.ann import detections_from_outputs, run_onnx
from snnc.evaluation.digits import make_digits
from snnc.evaluation.metrics import evaluate_detections


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="decoded exports (outputs boxes, scores)")
    ap.add_argument("-n", type=int, default=300, help="test canvases")
    args = ap.parse_args(argv)
    ds = make_digits("test", args.n)
    gt = ds.samples()
    one = [dataclasses.replace(s, classes=np.zeros_like(s.classes)) for s in gt]
    for path in args.models:
        boxes, scores, _ = run_onnx(path, ds.images)
        r = evaluate_detections(gt, detections_from_outputs(boxes, scores), ds.class_names)
        a = evaluate_detections(one, detections_from_outputs(boxes, scores.max(-1, keepdims=True)), ["digit"])
        per = " ".join(f"{k}:{v:.2f}" for k, v in r["AP50_per_class"].items() if v is not None)
        print(f"{path}: mAP50 {r['mAP50']:.3f} mAP50_95 {r['mAP50_95']:.3f} | class-agnostic mAP50 "
              f"{a['mAP50']:.3f} mAP50_95 {a['mAP50_95']:.3f} | AP50 per class {per}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
