"""One neuron per leaky-ReLU channel: split (two IF neurons) vs IBT vs the signed memory neuron, in one run each
(the figures of docs/results.md, "A signed neuron without doubling").

    python bench/signed.py digits -n 200 -T 8,16,32,64,256          # digits_leaky: mAP and cost per --leaky
    python bench/signed.py yolo --size 416 -T 16,64 --backend torch  # yolov3-tiny: cost and head error vs the ANN

digits: examples/digits/models/digits_leaky.onnx, calibrated on 32 train canvases, evaluated with `snnc eval` on
the first -n test canvases (labels: snnc.evaluation.digits): mAP@0.5 and mAP@0.5:0.95 per T, and the cost ratios
to the ANN (neurons, synapses, parameters; SOPs and energy at the largest T). Variants: split, ibt, signed, graded
(`--leaky graded`), and
`ibt+pos-memory` (a candidate measured here only: the IBT neuron with the memory IF's take-back on the positive side
alone, i.e. -1 spikes are never taken back; simulated by swapping the NumPy scan, so numpy backend only).

yolo: yolov3-tiny at --size px from the darknet weights, calibrated on 5 photos of snnc.compiler.samples and
evaluated on --photos others: cost ratios (parameters, dense MACs per step, neurons, synapses), Loihi 2 chips at
8-bit weights, and per head the relative error against the ANN (sum |SNN - ANN| / sum |ANN|) and fidelity mAP@0.5
(the ANN's detections scoring >= 0.1 as ground truth) at each T.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("split", "ibt", "signed", "graded", "ibt+pos-memory")


# ---- the extra candidate: IBT + positive-side memory -------------------------------------------------------------

def _scan_pos_memory(V, z, z_const, spikes, theta, theta_neg, pool=None, tile_values=0, count=None):
    """The IBT neuron plus the memory IF's rule on the positive side only: +1 at V >= theta; a -1 that takes back
    a +1 where V < 0 and the +1s not yet taken back (count) are > 0, V += theta; else a new -1 at V <= -theta/alpha
    (V += theta/alpha), which is never taken back. Layers without both thresholds and a count: the real scan."""
    from snnc.backends.numpy import scan as real
    if theta_neg is None or count is None:
        return real.scan(V, z, z_const, spikes, theta, theta_neg, pool, count=count)
    for t in range(spikes.shape[0]):
        V += z if z_const else z[t]
        up = V >= theta
        V -= np.where(up, theta, 0).astype(V.dtype)
        back = (V < 0) & (count > 0)
        V += np.where(back, theta, 0).astype(V.dtype)
        dn = ~back & (V <= -theta_neg)
        V += np.where(dn, theta_neg, 0).astype(V.dtype)
        count += up.astype(np.int32) - back
        spikes[t] = up.astype(np.int8) - back - dn


@contextlib.contextmanager
def _variant_scan(variant: str):
    import snnc.backends.numpy.sim as sim
    keep = sim.scan
    if variant == "ibt+pos-memory":
        sim.scan = _scan_pos_memory
    try:
        yield
    finally:
        sim.scan = keep


# ---- digits -----------------------------------------------------------------------------------------------------

def _cli(argv: list[str]) -> None:
    from snnc.apps.cli import main as snnc
    print("$ snnc " + " ".join(argv), file=sys.stderr, flush=True)
    rc = snnc(argv)
    if rc:
        raise SystemExit(rc)


def digits(args, work: Path) -> dict:
    from PIL import Image

    from snnc.evaluation.digits import make_digits, write_digits
    from snnc.ir import lavafile
    test = write_digits(work / "test", "test", args.n, layout="coco")
    calib = work / "calib"
    calib.mkdir()
    for i, img in enumerate(make_digits("train", 32).images):
        Image.fromarray(img).save(calib / f"train_{i:06d}.png")
    model = ROOT / "examples" / "digits" / "models" / "digits_leaky.onnx"
    out = {}
    for variant in args.variants:
        leaky = "signed" if variant == "ibt+pos-memory" else variant
        lava = work / f"{variant}.lava"
        _cli(["compile", str(model), "--calib", str(calib), "-o", str(lava), "-q", "--leaky", leaky])
        report = work / f"report-{variant}"
        with _variant_scan(variant):
            _cli(["eval", str(lava), "--data", str(test), "-T", args.T, "--report", str(report), "-q",
                  "--no-errors", "--examples", "0"])
        out[variant] = json.loads((report / "metrics.json").read_text())
        out[variant]["cost"] = lavafile.load(lava).meta.get("cost")
    return out


def _digits_table(res: dict) -> str:
    ts = [int(r["T"]) for r in next(iter(res.values()))["accuracy"]["snn"]]
    ann = next(iter(res.values()))["accuracy"]["ann"]
    lines = [f"ANN: mAP@0.5 {ann['mAP50']:.4f}, mAP@0.5:0.95 {ann['mAP50_95']:.4f}",
             "| variant | " + " | ".join(f"T={t}" for t in ts) + " | rate limit |", "|---" * (len(ts) + 2) + "|"]
    for v, m in res.items():
        acc = m["accuracy"]
        cells = [f"{r['mAP50']:.4f} / {r['mAP50_95']:.4f}" for r in acc["snn"]]
        rl = acc["rate_limit"]
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {rl['mAP50']:.4f} / {rl['mAP50_95']:.4f} |")
    return "\n".join(lines)


# ---- yolov3-tiny ------------------------------------------------------------------------------------------------

CALIB_PHOTOS = ["motorcycle_right", "camera", "china", "flower", "grace_hopper"]  # as docs/results.md
EVAL_PHOTOS = ["astronaut", "coffee", "chelsea", "motorcycle", "rocket"]


def yolo(args, work: Path) -> dict:
    import onnx

    from snnc.backends import get_backend
    from snnc.compiler.api import compile_model
    from snnc.compiler.darknet import darknet_to_onnx
    from snnc.compiler.loihi import fit
    from snnc.compiler.samples import sample_photo, write_photos
    from snnc.compiler.zoo import fetch_yolov3_tiny
    from snnc.evaluation.ann import AnnRunner
    from snnc.evaluation.metrics import evaluate_fidelity
    from snnc.runtime.host import detect
    from snnc.runtime.run import preprocess

    model = work / f"yolov3-tiny-{args.size}.onnx"
    onnx.save(darknet_to_onnx(*fetch_yolov3_tiny(), input_size=args.size), model)
    calib = work / "calib"
    write_photos(calib, CALIB_PHOTOS)
    photos = [sample_photo(n) for n in EVAL_PHOTOS[:args.photos]]
    ts = [int(t) for t in args.T.split(",")]
    out = {}
    for variant in [v for v in args.variants if v != "ibt+pos-memory"]:
        net = compile_model(model, calib_dir=calib, progress=False, leaky=variant).network
        x, lbs = preprocess(net, photos)
        heads = [net.output_names.get(o, o) for o in net.outputs]
        runner = AnnRunner(net.ann_onnx, heads)
        ann = runner.run(x)
        ann_dets = [[(d.cls, d.score, *d.box) for d in ds] for ds in detect(net, {o: ann[h] for o, h in
                                                                              zip(net.outputs, heads)}, lbs,
                                                                              score_thr=0.001)]
        sim = get_backend(args.backend).simulate(net, x, ts, mode="float", progress=sys.stderr.isatty())
        row = {"cost": net.meta["cost"], "loihi2_chips": fit(net, weight_bits=8).chips, "head_error": {},
               "fidelity_mAP50": {}, "spikes_per_image": {}}
        for t in ts:
            row["head_error"][t] = {o: float(np.abs(sim.outputs[t][o] - ann[h].reshape(sim.outputs[t][o].shape)).sum()
                                             / np.abs(ann[h]).sum()) for o, h in zip(net.outputs, heads)}
            dets = [[(d.cls, d.score, *d.box) for d in ds] for ds in detect(net, sim.outputs[t], lbs, score_thr=0.001)]
            row["fidelity_mAP50"][t] = evaluate_fidelity(ann_dets, dets, [str(c) for c in range(80)],
                                                         score_thr=0.1)["mAP50"]
        row["spikes_per_image"] = {k: float(np.mean(v)) for k, v in sim.spike_counts.items()}
        out[variant] = row
        print(variant, json.dumps({k: v for k, v in row.items() if k != "spikes_per_image"}, default=str),
              file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["digits", "yolo"])
    ap.add_argument("-n", type=int, default=200, help="digits: test canvases (default 200)")
    ap.add_argument("-T", default="8,16,32,64", help="time steps, comma-separated (one simulation)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated: {', '.join(VARIANTS)}")
    ap.add_argument("--size", type=int, default=416, help="yolo: input size")
    ap.add_argument("--photos", type=int, default=3, help="yolo: photos evaluated")
    ap.add_argument("--backend", default="numpy", help="simulator for yolo (torch is faster)")
    ap.add_argument("--json", type=Path, help="write every figure here")
    args = ap.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    with tempfile.TemporaryDirectory(prefix="snnc-signed-") as tmp:
        res = digits(args, Path(tmp)) if args.what == "digits" else yolo(args, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str) + "\n")
    print(_digits_table(res) if args.what == "digits" else json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
