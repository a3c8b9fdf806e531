"""Low latency on yolov3-tiny (416 px, real photos): head error, fidelity, firing rate and energy at small T.

    python bench/latency_yolo.py                                     # the documented run (docs/results.md)
    python bench/latency_yolo.py --variants orig,qcfs -T 8 --epochs 1   # a quick first table

Photos: every real photo that ships with the installed packages (`snnc.compiler.samples` and a few more
scikit-image colour photos), split by name into a fine-tune / calibration set (TRAIN) and a held-out test set
(TEST); no test photo is used to fine-tune or calibrate. `--extra-photos` adds the other real images of
scikit-image and matplotlib (EXTRA_FINETUNE: textures, grey scenes) to the fine-tuning photos only. The
reference is the ORIGINAL ANN (onnxruntime) on the test photos at 416 px: its detections scoring >= --ref-thr
are the ground truth of the fidelity mAP@0.5, and its raw head tensors the reference of the head error
(sum |SNN - ANN| / sum |ANN| per head, mean over the two heads).

Variants (each compiled with --calib TRAIN, simulated once for all T with the torch backend, float):
`orig` the default conversion; `target` `--target-T T` (one compile per T); `qcfs` `snnc finetune -T L
--no-dual-error`; `qcfs_de` `snnc finetune -T L` (dual error model, default noise); the suffix `_tT` (`qcfs_tT`)
compiles the fine-tuned model with `--target-T L`; `--reuse` takes the fine-tuned ONNX an earlier run left in
--build. L = --levels (default 8: the recipe fine-tunes once for the target T and the table shows that model at
every T). For the fine-tuned variants
the row "ann" is the fine-tuned ANN's own fidelity and head error against the original ANN (what fine-tuning
cost); with --train-error also on the fine-tuning photos (what it fits, against what generalises). Energy: the
estimate of `snnc eval` as a ratio to the ANN's (int and float operation costs).
Results go to BUILD/latency_yolo_VARIANTS.json. Every row's figures come from one run; runs with the same --build
share the original network (BUILD/orig.lava) and so the same reference and calibration.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from snnc.compiler.samples import as_rgb_uint8, available_photos, sample_photo

TRAIN = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry", "hubble_deep_field")
# motorcycle and motorcycle_right are one scene: both held out
TEST = ("motorcycle", "motorcycle_right", "cat", "china", "flower", "grace_hopper")
EXTRA_SKIMAGE = ("cat", "immunohistochemistry", "hubble_deep_field")  # colour photos not in compiler/samples.py
VARIANTS = ("orig", "target", "qcfs", "qcfs_de")
# --extra-photos: the other real images of scikit-image (textures, grey scenes; no COCO objects to speak of) and
# matplotlib, added to the fine-tuning photos only (never calibration, never test)
EXTRA_FINETUNE = ("brick", "grass", "gravel", "coins", "clock", "retina", "moon", "page", "text", "cell",
                  "colorwheel", "Minduka_Present_Blue_Pack")


def photo(name: str) -> np.ndarray:
    if name == "Minduka_Present_Blue_Pack":
        import matplotlib.cbook
        from PIL import Image

        with matplotlib.cbook.get_sample_data(f"{name}.png") as f:
            return np.asarray(Image.open(f).convert("RGB"))
    if name in EXTRA_SKIMAGE or name in EXTRA_FINETUNE:
        from skimage import data

        return as_rgb_uint8(getattr(data, name)())
    return sample_photo(name)


def split_photos() -> tuple[list[str], list[str]]:
    have = set(available_photos())
    try:
        from skimage import data

        have |= {n for n in EXTRA_SKIMAGE if hasattr(data, n)}
    except ImportError:
        pass
    return [n for n in TRAIN if n in have], [n for n in TEST if n in have]


def write_train(folder: Path, names: list[str]) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        if not (folder / f"{n}.png").exists():
            Image.fromarray(photo(n)).save(folder / f"{n}.png")
    return folder


class Reference:
    """The original ANN's detections and raw heads on the test photos (the letterboxed 416 px tensors)."""

    def __init__(self, net, photos: list[np.ndarray], score_thr: float):
        from snnc.runtime.run import preprocess

        self.x, self.lbs = preprocess(net, photos)
        self.x = self.x.astype(np.float32)
        self.score_thr = score_thr
        self.dets, self.heads = self.ann(net.ann_onnx, net)
        self.names = [str(n) for n in net.meta.get("class_names")]

    def ann(self, model: bytes, net) -> tuple[list[list[tuple]], list[np.ndarray]]:
        from snnc.evaluation.ann import AnnRunner, detections_from_outputs

        tensors = [net.output_names.get(o, o) for o in net.outputs]
        out = AnnRunner(model, tensors).run(self.x)
        dets = detections_from_outputs(out["boxes"], out["scores"], letterboxes=self.lbs)
        return dets, [out[t] for t in tensors]

    def fidelity(self, dets: list[list[tuple]]) -> float:
        from snnc.evaluation.metrics import evaluate_fidelity

        return float(evaluate_fidelity(self.dets, dets, self.names, self.score_thr)["mAP50"])

    def head_error(self, heads: list[np.ndarray]) -> float:
        errs = [np.abs(np.asarray(h, np.float64).reshape(r.shape) - r).sum() / np.abs(r).sum()
                for h, r in zip(heads, self.heads)]
        return float(np.mean(errs))


def measure(net, ref: Reference, ts: list[int], threads: int) -> dict[int, dict]:
    """Simulate once for max(T) (torch, float); per T: fidelity, head error, firing rate, energy ratios."""
    from snnc.backends import get_backend
    from snnc.compiler.energy import onnx_macs
    from snnc.evaluation.activity import Activity
    from snnc.ir.options import SimOptions
    from snnc.runtime.host import detect

    sim = get_backend("torch").simulate(net, ref.x, ts, SimOptions(threads=threads, progress=True))
    act = Activity(net, ts)
    act.add_counts(sim.extra["spike_counts_at"])
    activity = {r["T"]: r for r in act.result(onnx_macs(net.ann_onnx))["T"]}
    rows = {}
    for T in ts:
        found = detect(net, sim.outputs[T], ref.lbs, 0.001, 0.45, max_det=100)
        dets = [[(d.cls, d.score, *d.box) for d in per] for per in found]
        a = activity[T]
        rows[T] = {"fidelity50": ref.fidelity(dets), "head_error": ref.head_error([sim.outputs[T][o] for o in net.outputs]),
                   "rate": a["overall_rate"], "energy_int": a["energy_pj"]["int"]["ratio"],
                   "energy_float": a["energy_pj"]["float"]["ratio"]}
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-T", default="4,8,16", help="time steps measured (one simulation per network)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--levels", type=int, default=8, help="QCFS levels L = the T fine-tuned for")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--size", type=int, default=192, help="fine-tuning input size (the model is fully convolutional)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-4, help="snnc finetune --lr (the runs before 2026-12-07: 1e-3)")
    ap.add_argument("--crop", action="store_true", help="fine-tune on random --size crops of the 416 px photos")
    ap.add_argument("--object-weight", type=float, default=0.0,
                    help="distillation weight of the teacher's object cells (snnc finetune --object-weight)")
    ap.add_argument("--tandem", type=int, default=0, help="snnc finetune --tandem: the last N epochs on the SNN's "
                    "own values at --levels steps")
    ap.add_argument("--extra-photos", action="store_true", help="fine-tune on EXTRA_FINETUNE too (textures and "
                    "grey scenes of scikit-image and matplotlib; calibration and test photos unchanged)")
    ap.add_argument("--lambda-per", choices=("layer", "channel"), default="layer",
                    help="snnc finetune --lambda-per: one QCFS lambda per layer or per channel")
    ap.add_argument("--percentile", type=float, default=99.9, help="snnc finetune's lambda initialisation")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ref-thr", type=float, default=0.1, help="original ANN score that makes a reference box")
    ap.add_argument("--ann-only", action="store_true", help="fine-tuned variants: measure the fine-tuned ANN only "
                    "(a quick recipe search; its SNN at T = L tracks it)")
    ap.add_argument("--train-error", action="store_true", help="fine-tuned variants: also the fine-tuned ANN's head "
                    "error and fidelity on the fine-tuning photos (at 416 px): what it fits against what generalises")
    ap.add_argument("--reuse", action="store_true", help="use the fine-tuned ONNX an earlier run left in --build")
    ap.add_argument("--noise-from", type=Path, help="an snnc eval metrics.json for the dual error model's noise")
    ap.add_argument("--build", type=Path, default=Path("build/latency_yolo"))
    args = ap.parse_args(argv)
    import onnx
    import torch
    from tqdm import tqdm

    from snnc.compiler.api import compile_model
    from snnc.compiler.darknet import darknet_to_onnx
    from snnc.compiler.zoo import fetch_yolov3_tiny
    from snnc.ir.lavafile import load as load_lava
    from snnc.ir.lavafile import save as save_lava
    from snnc.training.finetune import FinetuneOptions, finetune, write_result

    torch.set_num_threads(args.threads)
    ts = sorted(int(t) for t in args.T.split(","))
    variants = args.variants.split(",")
    b = args.build
    b.mkdir(parents=True, exist_ok=True)
    model = b / "yolov3-tiny.onnx"
    if not model.exists():
        onnx.save(darknet_to_onnx(*fetch_yolov3_tiny(), input_size=416), str(model))
    train_names, test_names = split_photos()
    train = write_train(b / "train", train_names)
    finetune_photos = train
    if args.extra_photos:  # its own folder: calibration stays on `train`
        finetune_photos = write_train(b / "train_extra", train_names + list(EXTRA_FINETUNE))
    print(f"fine-tune / calibration photos: {', '.join(train_names)}; held-out test photos: {', '.join(test_names)}")

    def compile_(onnx_path: Path, **opts):
        return compile_model(onnx_path, calib_dir=train, progress=False, **opts).network

    tic = time.time()
    base_path = b / "orig.lava"  # shared by runs with other variants in the same --build
    if base_path.exists():
        base = load_lava(base_path)
    else:
        base = compile_(model)
        save_lava(base, base_path)
    ref = Reference(base, [photo(n) for n in test_names], args.ref_thr)
    ref_train = Reference(base, [photo(n) for n in train_names], args.ref_thr) if args.train_error else None
    n_ref = sum(sum(1 for d in per if d[1] >= args.ref_thr) for per in ref.dets)
    print(f"original ANN: {n_ref} reference boxes (score >= {args.ref_thr}) on {len(test_names)} test photos; "
          f"compile {time.time() - tic:.0f} s")
    jobs = [(v, T) for v in variants for T in (ts if v == "target" else [None])]
    results = []
    print(f"{'variant':10} {'T':>3} {'fid50':>6} {'headerr':>7} {'rate':>6} {'E int':>6} {'E flt':>6}", flush=True)

    def show(variant: str, T, r: dict) -> None:
        results.append({"variant": variant, "T": T, **r})
        t = "ann" if T is None else f"{T:3d}"
        rate = "" if "rate" not in r else f" {r['rate']:6.3f} {r['energy_int']:6.3f} {r['energy_float']:6.3f}"
        if "train_head_error" in r:
            rate += f"   on the fine-tuning photos: {r['train_fidelity50']:.3f} {r['train_head_error']:.3f}"
        tqdm.write(f"{variant:10} {t:>3} {r['fidelity50']:6.3f} {r['head_error']:7.3f}{rate}")

    for variant, T in tqdm(jobs, desc="variants", unit="net"):
        tic = time.time()
        extra: dict = {"seconds_compile": 0.0}
        if variant == "orig":
            net = base
        elif variant == "target":
            net = compile_(model, target_T=T)
        else:
            flags = set(variant.split("_"))
            kind = "qcfs_de" if "de" in flags else "qcfs"
            path = b / f"{kind}_L{args.levels}.onnx"
            if args.reuse and path.exists():  # a model fine-tuned by an earlier run in this --build
                ft_log = json.loads(path.with_suffix(".json").read_text())
            else:
                opts = FinetuneOptions(T=args.levels, epochs=args.epochs, lr=args.lr, batch=args.batch,
                                       size=args.size, dual_error=kind == "qcfs_de", crop=args.crop,
                                       object_weight=args.object_weight, tandem=args.tandem,
                                       lambda_per=args.lambda_per, percentile=args.percentile)
                noise = args.noise_from if kind == "qcfs_de" else None
                ft = finetune(model, finetune_photos, opts, noise_from=noise, progress=True)
                write_result(ft, path)
                ft_log = ft.log
            extra["seconds_finetune"] = ft_log["seconds"]
            extra["final_eval_loss"] = ft_log["history"][-1]["eval_loss_qcfs"]
            tuned = path.read_bytes()
            dets, heads = ref.ann(tuned, base)  # the head tensors keep their names through finetune
            if ref_train is not None:
                dets_t, heads_t = ref_train.ann(tuned, base)
                extra.update(train_fidelity50=ref_train.fidelity(dets_t),
                             train_head_error=ref_train.head_error(heads_t))
            show(variant, None, {"fidelity50": ref.fidelity(dets), "head_error": ref.head_error(heads), **extra})
            if args.ann_only:
                continue
            t0 = time.time()
            net = compile_(path, **({"target_T": args.levels} if "tT" in flags else {}))
            extra["seconds_compile"] = round(time.time() - t0, 1)
        rows = measure(net, ref, [T] if T else ts, args.threads)
        for t, r in rows.items():
            show(variant, t, {**r, "seconds": round(time.time() - tic, 1)})
    out = {"train": train_names, "test": test_names, "reference_boxes": n_ref, "args": {
        k: str(v) for k, v in vars(args).items()}, "rows": results}
    out_path = b / f"latency_yolo_{'_'.join(variants)}.json"
    out_path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
