"""Convert a digits detector to an SNN, simulate it, and report mAP, fidelity to the ANN and energy per T.

    python examples/digits/evaluate_snn.py examples/digits/models/digits_relu.onnx -n 100 -T 16 32 64 128 256

Calibration: `--calib-images` canvases of the train split (written to a temporary folder); evaluation: the first
`-n` images of the test split. Per T: mAP@0.5 and mAP@0.5:0.95 against the labels, fidelity mAP@0.5 against the
ANN's own detections (score >= 0.25), and the SNN/ANN energy ratio (float and int, METHODS.md section 8) from the
spike counts at that T. Simulation: the NumPy reference backend, float mode.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from snnc.backends import get_backend
from snnc.compiler.api import compile_model
from snnc.compiler.evaluation.ann import EVAL_IOU_THR, EVAL_MAX_DET, EVAL_SCORE_THR, ann_detections
from snnc.compiler.evaluation.digits import make_digits
from snnc.compiler.evaluation.energy import energy_report
from snnc.compiler.evaluation.metrics import evaluate_detections, evaluate_fidelity
from snnc.compiler.host import detect


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="digits detector -> SNN: mAP, fidelity and energy per T")
    ap.add_argument("model", type=Path)
    ap.add_argument("-n", type=int, default=100, help="test images (default 100)")
    ap.add_argument("-T", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--calib-images", type=int, default=32)
    ap.add_argument("--norm", choices=("channel", "layer"), default="channel")
    ap.add_argument("--percentile", type=float, default=99.9)
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as calib:
        for i, img in enumerate(make_digits("train", args.calib_images, seed=1).images):
            Image.fromarray(img).save(Path(calib) / f"{i:04d}.png")
        net = compile_model(args.model, calib_dir=calib, norm=args.norm, percentile=args.percentile,
                            progress=False).network
    test = make_digits("test", args.n)
    samples, names = test.samples(), test.class_names
    ann = ann_detections(args.model, list(test.images))
    ann_map = evaluate_detections(samples, ann, names)
    print(f"ANN: mAP50 {ann_map['mAP50']:.4f} mAP50_95 {ann_map['mAP50_95']:.4f} ({args.n} test images)")
    x = test.images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    t0 = time.time()
    sim = get_backend("numpy").simulate(net, x, args.T)
    print(f"simulated T up to {max(args.T)} in {time.time() - t0:.1f}s")
    counts_at = sim.extra.get("spike_counts_at", {})
    rows = []
    for T in sorted(args.T):
        found = detect(net, sim.outputs[T], score_thr=EVAL_SCORE_THR, iou_thr=EVAL_IOU_THR, max_det=EVAL_MAX_DET)
        dets = [[(d.cls, d.score, *d.box) for d in per] for per in found]
        m = evaluate_detections(samples, dets, names)
        f = evaluate_fidelity(ann, dets, names)
        counts = counts_at.get(T, sim.spike_counts if T == max(args.T) else None)
        row = {"T": T, "mAP50": m["mAP50"], "mAP50_95": m["mAP50_95"], "fidelity_mAP50": f["mAP50"]}
        if counts is not None:
            rep = energy_report(net, {k: float(np.mean(v)) for k, v in counts.items()}, T)
            row.update(sops=rep["snn_sops"], analog_macs=rep["snn_macs"], ann_macs=rep["ann_macs"],
                       ratio_float=rep["energy_pj"]["float"]["ratio"], ratio_int=rep["energy_pj"]["int"]["ratio"])
        rows.append(row)
        energy = (f" SOPs {row['sops']:,.0f} energy SNN/ANN float {row['ratio_float']:.2f} int {row['ratio_int']:.2f}"
                  if "sops" in row else "")
        print(f"T={T:5d} mAP50 {row['mAP50']:.4f} mAP50_95 {row['mAP50_95']:.4f} "
              f"fidelity {row['fidelity_mAP50']:.4f}{energy}")
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), "images": args.n, "ann": ann_map, "snn": rows},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
