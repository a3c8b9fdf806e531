"""Fidelity of the compiled yolov3-tiny to its ANN on real photos, per T, for the conversion choices that matter.

    python bench/fidelity.py                                  # 416 px, T = 32..2048, all configurations
    python bench/fidelity.py --size 256 --T 32,64,128,256,512 --configs split-channel-half,ibt-channel-half

The ANN's detections (onnxruntime) with score >= --ref-thr are the ground truth; the SNN's detections (score >=
0.001, NMS as the ANN's) at every T of ONE simulation run are scored against them with the COCO evaluator:
fidelity mAP@0.5 (1.0: the SNN finds the ANN's boxes, same class, IoU >= 0.5, and ranks them first). The column
"inf" is the rate-limit ANN (T -> infinity): what clipping alone costs.

Photos: every real photo shipped with scikit-image / scikit-learn / matplotlib (`snnc.compiler.samples`). They
are split in two halves; each half is run through a network calibrated on the OTHER half (two-fold), so no photo
is judged by a network calibrated on it. Configurations: leaky-ReLU as IBT neurons (Spiking-YOLO) or split into two
IF neurons (`split_leaky_relu`, snnc's default) x channel- or layer-wise normalization x V(0) = 0 or theta/2.
Writes fidelity.json and fidelity.png (mAP vs T per configuration) into --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from snnc.backends import get_backend
from snnc.backends.numpy import rate_limit_forward
from snnc.compiler.api import compile_model
from snnc.compiler.darknet import darknet_to_onnx
from snnc.evaluation.metrics import evaluate_fidelity
from snnc.runtime.host import detect
from snnc.compiler.pipeline import DEFAULT_PIPELINE
from snnc.runtime.run import preprocess
from snnc.compiler.samples import available_photos, sample_photo, write_photos
from snnc.compiler.zoo import fetch_yolov3_tiny

EVAL_SCORE = 0.001
CONFIGS = {  # name: (leaky handling, norm, v_init)
    "split-channel-half": ("split", "channel", 0.5),
    "split-channel-zero": ("split", "channel", 0.0),
    "split-layer-half": ("split", "layer", 0.5),
    "ibt-channel-half": ("ibt", "channel", 0.5),
    "ibt-channel-zero": ("ibt", "channel", 0.0),
    "ibt-layer-half": ("ibt", "layer", 0.5),
}


def _passes(leaky: str) -> list[str]:
    return [p for p in DEFAULT_PIPELINE if leaky == "split" or p != "split_leaky_relu"]


def _dets(batch) -> list[list[tuple]]:
    return [[(d.cls, d.score, *d.box) for d in dets] for dets in batch]


def run_config(name: str, onnx_path: Path, folds: list[tuple[Path, list[np.ndarray]]], ts: list[int],
               percentile: float, ref_thr: float, class_names: list[str]) -> dict:
    leaky, norm, v_init = CONFIGS[name]
    ann_all, snn_all, rl_all = [], {t: [] for t in ts}, []
    spikes, neurons, seconds = 0.0, 0, 0.0
    clip = []
    for calib_dir, photos in folds:
        res = compile_model(onnx_path, calib_dir=calib_dir, percentile=percentile, norm=norm, v_init=v_init,
                            passes=_passes(leaky), progress=False)
        net = res.network
        clip.append(res.stats.get("clipping_error", {}))
        x, lbs = preprocess(net, photos)
        from snnc.runtime.run import ann_detections

        ann_all += _dets(ann_detections(net, x, lbs, score_thr=EVAL_SCORE))
        rl_all += _dets(detect(net, rate_limit_forward(net, x), lbs, score_thr=EVAL_SCORE))
        tic = time.perf_counter()
        sim = get_backend("numpy").simulate(net, x, ts, progress=True)
        seconds += time.perf_counter() - tic
        for t in ts:
            snn_all[t] += _dets(detect(net, sim.outputs[t], lbs, score_thr=EVAL_SCORE))
        spikes += sum(float(v.sum()) for v in sim.spike_counts.values())
        neurons += sum(sim.neurons.values()) * len(photos)

    def fid(dets):
        return evaluate_fidelity(ann_all, dets, class_names, score_thr=ref_thr)

    rl = fid(rl_all)
    out = {"config": name, "leaky": leaky, "norm": norm, "v_init": v_init, "reference_boxes": rl["ground_truth"],
           "mAP50": {str(t): fid(snn_all[t])["mAP50"] for t in ts}, "mAP50_rate_limit": rl["mAP50"],
           "firing_rate": spikes / (neurons * ts[-1]), "sim_seconds": seconds, "clipping_error": clip}
    return out


def plot(results: list[dict], ts: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        line, = ax.plot(ts, [r["mAP50"][str(t)] for t in ts], marker="o", label=r["config"])
        ax.axhline(r["mAP50_rate_limit"], color=line.get_color(), ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("time steps T")
    ax.set_ylabel("fidelity mAP@0.5 (ANN detections as ground truth)")
    ax.set_ylim(0, 1.05)
    ax.set_title("yolov3-tiny SNN vs ANN on real photos (dotted: rate limit, T -> inf)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=416, help="input size (multiple of 32)")
    ap.add_argument("--T", default="32,64,128,256,512,1024,2048", help="checkpoints, one simulation run")
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated: {', '.join(CONFIGS)}")
    ap.add_argument("--photos", help="comma-separated photo names (default: every available one)")
    ap.add_argument("--percentile", type=float, default=99.99)
    ap.add_argument("--ref-thr", type=float, default=0.1, help="ANN score that makes a detection ground truth")
    ap.add_argument("--out", type=Path, default=Path("build/bench"))
    args = ap.parse_args(argv)
    ts = sorted({int(t) for t in args.T.split(",")})
    names = args.photos.split(",") if args.photos else available_photos()
    configs = args.configs.split(",")
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        print(f"fidelity: error: unknown configuration(s) {unknown}; known: {', '.join(CONFIGS)}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    cfg, weights = fetch_yolov3_tiny()
    with tempfile.TemporaryDirectory(prefix="snnc-fidelity-") as tmp:
        tmp = Path(tmp)
        import onnx

        model = darknet_to_onnx(cfg, weights, input_size=args.size)
        onnx_path = tmp / "yolov3-tiny.onnx"
        onnx.save(model, str(onnx_path))
        class_names = next(json.loads(p.value) for p in model.metadata_props if p.key == "snnc.class_names")
        halves = [names[0::2], names[1::2]]
        folds = []
        for k, half in enumerate(halves):
            other = halves[1 - k]
            folds.append((write_photos(tmp / f"calib{k}", other)[0].parent, [sample_photo(n) for n in half]))
        print(f"yolov3-tiny {args.size}x{args.size}; photos {halves[0]} | {halves[1]} (each half calibrated on "
              f"the other); T {ts}; reference: ANN detections with score >= {args.ref_thr}")
        results = []
        for name in configs:
            r = run_config(name, onnx_path, folds, ts, args.percentile, args.ref_thr, class_names)
            results.append(r)
            row = " ".join(f"{r['mAP50'][str(t)]:.3f}" for t in ts)
            print(f"{name:<20} T {' '.join(str(t) for t in ts)} inf\n{'':<20}   {row} {r['mAP50_rate_limit']:.3f}   "
                  f"({r['reference_boxes']} reference boxes, firing rate {r['firing_rate']:.4f}, "
                  f"simulation {r['sim_seconds']:.0f} s)", flush=True)
    report = {"size": args.size, "T": ts, "photos": names, "percentile": args.percentile, "ref_thr": args.ref_thr,
              "results": results}
    (args.out / "fidelity.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(results, ts, args.out / "fidelity.png")
    print(f"wrote {args.out / 'fidelity.json'} and {args.out / 'fidelity.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
