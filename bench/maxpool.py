"""The max-pool conversions side by side on yolov3-tiny: cost next to the ANN, Loihi 2 chips, head error, fidelity.

    python bench/maxpool.py                                   # 416 px, T = 16, 64, exact / count / approximate
    python bench/maxpool.py --size 160 --T 16,64 --maxpool exact,count --photos motorcycle,astronaut
    python bench/maxpool.py --maxpool exact,count --leaky split,signed       # every pair of the two choices
    python bench/maxpool.py --maxpool count --leaky signed,graded --T 16,64 --photos motorcycle,china
    python bench/maxpool.py --maxpool count --leaky graded --norm auto --target-T 16 --calib camera,rocket,coffee

Per `--maxpool` choice (and `--leaky` and `--norm` choice, each combination): the compiled network's parameters, neurons, synapses and dense MACs per step as ratios
to the ANN's (`snnc.compiler.cost`), the Loihi 2 chip estimate (`snnc.compiler.loihi`, 8-bit weights), and, on
real photos that the calibration did not see, at every T of one simulation (torch backend, float): the head
error, sum |SNN head - ANN head| / sum |ANN head| over both raw heads, and fidelity mAP@0.5 (the ANN's
detections with score >= --ref-thr as ground truth), and both for the rate-limit ANN (T -> infinity: what the
normalization's clipping alone costs). All figures are measured in this one run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx

from snnc.backends import get_backend
from snnc.compiler.api import compile_model
from snnc.compiler.cost import FIGURES, cost_report
from snnc.compiler.darknet import darknet_to_onnx
from snnc.compiler.loihi import fit
from snnc.ir.errors import SnncError
from snnc.compiler.samples import sample_photo, write_photos
from snnc.compiler.split import split_model
from snnc.compiler.zoo import fetch_yolov3_tiny
from snnc.evaluation.metrics import evaluate_fidelity
from snnc.ir.ort import ort_session
from snnc.runtime.host import detect
from snnc.runtime.run import ann_detections, preprocess

CALIB = ("astronaut", "coffee", "chelsea", "rocket", "camera")
PHOTOS = ("motorcycle", "china", "grace_hopper")


def _dets(batch) -> list[list[tuple]]:
    return [[(d.cls, d.score, *d.box) for d in dets] for dets in batch]


def ann_heads(net, x: np.ndarray, model: onnx.ModelProto | None = None) -> dict[str, np.ndarray]:
    """The raw heads of the ANN's spiking part (or of `model`, e.g. the rate-limit ANN, which has the same
    outputs), onnxruntime, keyed by the network's output layer names."""
    spiking = model if model is not None else split_model(onnx.load_from_string(net.ann_onnx)).spiking
    sess = ort_session(spiking.SerializeToString(), what="the ANN's spiking part")
    name = sess.get_inputs()[0].name
    want = [net.output_names[o] for o in net.outputs]
    outs = [sess.run(want, {name: x[b:b + 1]}) for b in range(len(x))]
    return {o: np.concatenate([r[i] for r in outs]) for i, o in enumerate(net.outputs)}


def run(choice: str, onnx_path: Path, calib: Path, photos: list[np.ndarray], ts: list[int], ref_thr: float,
        names: list[str], leaky: str = "split", norm: str = "channel", **options) -> dict:
    res = compile_model(onnx_path, calib_dir=calib, maxpool=choice, leaky=leaky, norm=norm, progress=False,
                        **options)
    net = res.network
    rep = cost_report(net)
    f = fit(net)
    x, lbs = preprocess(net, photos)
    ref = ann_heads(net, x)
    ann = _dets(ann_detections(net, x, lbs, score_thr=0.001))
    sim = get_backend("torch").simulate(net, x, ts, progress=False)
    err, fid = {}, {}
    outputs = {**sim.outputs, "rate limit": ann_heads(net, x, res.ratelimit)}  # T -> infinity: the clipping alone
    for t in [*ts, "rate limit"]:
        out = outputs[t]
        err[t] = float(sum(np.abs(out[k] - ref[k]).sum() for k in ref) / sum(np.abs(ref[k]).sum() for k in ref))
        dets = _dets(detect(net, out, lbs, score_thr=0.001))
        fid[t] = evaluate_fidelity(ann, dets, names, score_thr=ref_thr)["mAP50"]
    return {"maxpool": choice, "leaky": leaky, "norm": norm, **options, "snn": rep["snn"], "ann": rep["ann"], "ratio": rep["ratio"], "chips": f.chips,
            "cores": f.cores, "loihi_neurons": f.neurons, "head_error": err, "fidelity_mAP50": fid}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=416)
    ap.add_argument("--T", default="16,64")
    ap.add_argument("--maxpool", default="exact,count,approximate", help="comma-separated --maxpool choices")
    ap.add_argument("--leaky", default="split", help="comma-separated --leaky choices (default split)")
    ap.add_argument("--norm", default="channel", help="comma-separated --norm choices (default channel)")
    ap.add_argument("--target-T", default="0", help="comma-separated --target-T choices (0: none, the default)")
    ap.add_argument("--percentile", default="", help="comma-separated --percentile choices (default: compile's)")
    ap.add_argument("--photos", default=",".join(PHOTOS), help="photos to measure (not used for calibration)")
    ap.add_argument("--calib", default=",".join(CALIB), help="calibration photos (those in --photos are left out)")
    ap.add_argument("--ref-thr", type=float, default=0.1)
    ap.add_argument("--out", type=Path, default=Path("build/bench"))
    args = ap.parse_args(argv)
    ts = sorted({int(t) for t in args.T.split(",")})
    photos = args.photos.split(",")
    cfg, weights = fetch_yolov3_tiny()
    model = darknet_to_onnx(cfg, weights, input_size=args.size)
    names = next(json.loads(p.value) for p in model.metadata_props if p.key == "snnc.class_names")
    results = []
    with tempfile.TemporaryDirectory(prefix="snnc-maxpool-") as tmp:
        onnx_path = Path(tmp) / "yolov3-tiny.onnx"
        onnx.save(model, str(onnx_path))
        calib_names = [c for c in args.calib.split(",") if c not in photos]
        calib = write_photos(Path(tmp) / "calib", calib_names)[0].parent
        imgs = [sample_photo(n) for n in photos]
        print(f"yolov3-tiny {args.size} px; calibration {calib_names}; photos {photos}; "
              f"T {ts}; torch backend")
        for choice, leaky, norm, target_t, pct in itertools.product(
                args.maxpool.split(","), args.leaky.split(","), args.norm.split(","),
                [int(t) for t in args.target_T.split(",")], args.percentile.split(",")):
            options = {"target_T": target_t or None, **({"percentile": float(pct)} if pct else {})}
            r = run(choice, onnx_path, calib, imgs, ts, args.ref_thr, names, leaky, norm, **options)
            results.append(r)
            ratios = "  ".join(f"{k} {r['ratio'][k]:.2f}x" for k in FIGURES)
            per_t = "  ".join(f"T={t}: head err {r['head_error'][t]:.3f} fid {r['fidelity_mAP50'][t]:.3f}"
                              for t in [*ts, "rate limit"])
            label = f"{choice}/{leaky}/{norm}" + (f"/T{target_t}" if target_t else "") + (f"/p{pct}" if pct else "")
            print(f"{label:<24}{ratios}  chips {r['chips']} ({r['cores']} cores)\n{'':<24}{per_t}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"maxpool_{args.size}.json"
    path.write_text(json.dumps({"size": args.size, "T": ts, "photos": photos, "results": results}, indent=1,
                               default=str) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except SnncError as exc:  # a bad --photos name, a missing download: one line
        raise SystemExit(f"maxpool.py: error: {exc}") from None
