"""Low latency on the digits detectors: mAP, firing rate and energy at small T for four ways to convert.

    python bench/latency.py                                  # both models, T = 2,4,8,16,32,64 (long on 2 cores)
    python bench/latency.py --models relu -T 2,4,8 -n 100 --epochs 4

Per model and T: `orig` (the default conversion, one simulation for all T), `target` (`--target-T T`),
`qcfs` (`snnc finetune -T T --no-dual-error`, L = T) and `qcfs_de` (`snnc finetune -T T`, dual error model).
More variants by name (not in the default list): `_lab` adds the label loss (`--data`, labelled train canvases,
`--train-labelled`), `_tT` compiles the fine-tuned model with `--target-T T`, e.g. `qcfs_lab`, `qcfs_de_lab_tT`.
Printed per row: the SNN's mAP@0.5 and mAP@0.5:0.95 on the labelled test split, its difference to the original
ANN's, the fine-tuned ANN's own mAP@0.5 (what fine-tuning cost the ANN), the firing rate and the energy estimate
as a ratio to the ANN's (int and float operation costs). Calibration and fine-tuning use train-split canvases,
never test images. Results go to BUILD/latency.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from PIL import Image

from snnc.compiler.api import compile_model
from snnc.evaluation.digits import make_digits, write_digits
from snnc.evaluation.run import EvalConfig, evaluate
from snnc.ir.files import atomic_write_bytes
from snnc.ir.lavafile import save as save_lava

MODELS = Path(__file__).resolve().parents[1] / "examples" / "digits" / "models"
VARIANTS = ("orig", "target", "qcfs", "qcfs_de")


def _photos(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(make_digits("train", n).images):
        Image.fromarray(img).save(folder / f"train_{i:06d}.png")
    return folder


def _eval(lava: Path, test: Path, ts: list[int]) -> dict:
    m = evaluate(lava, EvalConfig(T=ts, data=test, errors=False, examples=0, progress=False))
    rows = {}
    for snn, act in zip(m["accuracy"]["snn"], m["activity"]["T"]):
        rows[snn["T"]] = {"mAP50": snn["mAP50"], "mAP50_95": snn["mAP50_95"], "rate": act["overall_rate"],
                          "energy_int": act["energy_pj"]["int"]["ratio"],
                          "energy_float": act["energy_pj"]["float"]["ratio"]}
    return {"ann": m["accuracy"]["ann"], "rows": rows}


def _compile(model: Path, calib: Path, out: Path, **opts) -> Path:
    res = compile_model(model, calib_dir=calib, progress=False, **opts)
    save_lava(res.network, out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="relu,leaky")
    ap.add_argument("-T", default="2,4,8,16,32,64")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("-n", type=int, default=200, help="test images")
    ap.add_argument("--calib-images", type=int, default=32)
    ap.add_argument("--train-images", type=int, default=256, help="unlabelled train canvases to fine-tune on")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--train-labelled", type=int, default=256, help="labelled train canvases for the _lab variants")
    ap.add_argument("--label-weight", type=float, default=0.01)
    # the digits recipes of docs/results.md were measured at 1e-3 (snnc finetune's default until 2026-12-07)
    ap.add_argument("--lr", type=float, default=1e-3, help="snnc finetune --lr")
    ap.add_argument("--object-weight", type=float, default=0.0, help="snnc finetune --object-weight")
    ap.add_argument("--tandem", type=int, default=0, help="snnc finetune --tandem: the last N epochs on the SNN's "
                    "own values at T")
    ap.add_argument("--lambda-per", choices=("layer", "channel"), default="layer",
                    help="snnc finetune --lambda-per: one QCFS lambda per layer or per channel")
    ap.add_argument("--no-augment", action="store_true", help="fine-tune without flips, zoom and colour jitter")
    ap.add_argument("--build", type=Path, default=Path("build/latency"))
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from snnc.training.finetune import FinetuneOptions, finetune, write_result

    ts = [int(t) for t in args.T.split(",")]
    variants = args.variants.split(",")
    b = args.build
    test = write_digits(b / "test", "test", args.n, layout="coco")
    calib = _photos(b / "calib", args.calib_images)
    train = _photos(b / "train", args.train_images)
    labelled = None
    if any("lab" in v.split("_") for v in variants):  # seed 1: other canvases than the unlabelled ones
        labelled = write_digits(b / "train_lab", "train", args.train_labelled, layout="coco", seed=1)
    results = []
    print(f"{'model':6} {'variant':8} {'T':>3} {'mAP50':>6} {'d50':>7} {'mAP50-95':>8} {'d50-95':>7} "
          f"{'annFT50':>7} {'rate':>6} {'E int':>6} {'E flt':>6} {'s':>5}")
    for name in args.models.split(","):
        model = MODELS / f"digits_{name}.onnx"
        base = None
        for variant in variants:
            for T in ts:
                tic = time.time()
                if variant == "orig":
                    if base is None:
                        base = _eval(_compile(model, calib, b / f"{name}_orig.lava"), test, ts)
                    ev = base
                elif variant == "target":
                    ev = _eval(_compile(model, calib, b / f"{name}_T{T}.lava", target_T=T), test, [T])
                else:
                    flags = set(variant.split("_"))
                    ft = finetune(model, train, FinetuneOptions(T=T, epochs=args.epochs, lr=args.lr,
                                                                dual_error="de" in flags,
                                                                label_weight=args.label_weight,
                                                                object_weight=args.object_weight,
                                                                tandem=args.tandem,
                                                                lambda_per=args.lambda_per,
                                                                augment=not args.no_augment),
                                  data=labelled if "lab" in flags else None, progress=False)
                    onnx_path = write_result(ft, b / f"{name}_{variant}_T{T}.onnx")
                    extra = {"target_T": T} if "tT" in flags else {}
                    ev = _eval(_compile(onnx_path, calib, b / f"{name}_{variant}_T{T}.lava", **extra), test, [T])
                ann0 = base["ann"] if base else None
                r = ev["rows"][T]
                row = {"model": name, "variant": variant, "T": T, **r, "ann_mAP50": ev["ann"]["mAP50"],
                       "ann_mAP50_95": ev["ann"]["mAP50_95"],
                       "orig_ann_mAP50": ann0["mAP50"] if ann0 else None,
                       "orig_ann_mAP50_95": ann0["mAP50_95"] if ann0 else None, "seconds": round(time.time() - tic, 1)}
                results.append(row)
                d50 = r["mAP50"] - row["orig_ann_mAP50"] if ann0 else float("nan")
                d95 = r["mAP50_95"] - row["orig_ann_mAP50_95"] if ann0 else float("nan")
                print(f"{name:6} {variant:8} {T:3d} {r['mAP50']:6.3f} {d50:+7.3f} {r['mAP50_95']:8.3f} {d95:+7.3f} "
                      f"{row['ann_mAP50']:7.3f} {r['rate']:6.3f} {r['energy_int']:6.3f} {r['energy_float']:6.3f} "
                      f"{row['seconds']:5.0f}", flush=True)
    atomic_write_bytes(b / "latency.json", json.dumps(results, indent=1).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
