"""`snnc eval`: accuracy over T, firing rates, SOPs, energy, per-layer errors and plots, in one report folder.

A thin layer over `snnc.evaluation.run.evaluate` (docs/evaluation.md); registered by cli.py.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from snnc.ir.errors import SnncError


def _summary(m: dict) -> str:
    acc, labelled = m["accuracy"], m["data"]["kind"] == "labelled"
    key = "mAP50" if labelled else "fidelity_mAP50"
    lines = []
    if labelled:
        lines.append(f"ANN: mAP@0.5 {acc['ann']['mAP50']:.4f}, mAP@0.5:0.95 {acc['ann']['mAP50_95']:.4f}")
    rl = acc["rate_limit"].get(key)
    lines.append(f"rate limit (T -> inf): {'mAP' if labelled else 'fidelity mAP'}@0.5 "
                 f"{rl:.4f}" if rl is not None else "rate limit: -")
    rows = {r["T"]: r for r in m["activity"]["T"]}
    for r in acc["snn"]:
        a = rows[r["T"]]
        v = r.get(key)
        energy = (f", SOPs {a['sops']:.3g}, energy SNN/ANN {a['energy_pj']['float']['ratio']:.3f} (float) "
                  f"{a['energy_pj']['int']['ratio']:.3f} (int)" if "sops" in a else "")
        extra = f", fidelity {r['fidelity_mAP50']:.4f}" if labelled and r.get("fidelity_mAP50") is not None else ""
        lines.append(f"SNN T={r['T']}: {'mAP' if labelled else 'fidelity mAP'}@0.5 "
                     f"{'-' if v is None else f'{v:.4f}'}{extra}, firing rate {100 * a['overall_rate']:.2f}%{energy}")
    return "\n".join(lines)


def cmd_eval(args: argparse.Namespace) -> int:
    from snnc.apps.run_cli import check_fraction
    from snnc.evaluation.run import EvalConfig, evaluate
    from snnc.ir.options import V_INIT, checkpoints

    if args.T is None:
        raise SnncError("-T is required, e.g. -T 32,64,128,256")
    v_init = None if args.v_init is None else V_INIT[args.v_init]
    if args.batch is not None and args.batch < 1:
        raise SnncError(f"--batch {args.batch}: expected a positive number of images")
    if args.examples < 0:
        raise SnncError(f"--examples {args.examples}: expected 0 or more")
    check_fraction("--fidelity-thr", args.fidelity_thr)
    if args.report is not None and not args.report.strip():
        raise SnncError("--report '': expected a folder")
    if args.workers is not None or args.ray_address is not None:
        from snnc.evaluation.distributed import check_workers, require_ray

        check_workers(args.workers)
        if args.workers is None:
            raise SnncError("--ray-address needs --workers N (the number of Ray tasks to run at a time)")
        require_ray()
    cfg = EvalConfig(T=checkpoints(args.T), backend=args.backend, device=args.device,
                     workers=args.workers, ray_address=args.ray_address, data=args.data, images=args.images, report=args.report, layout=args.layout,
                     split=args.split, max_images=args.max_images, batch=args.batch, mode=args.mode, v_init=v_init,
                     errors=not args.no_errors, examples=args.examples, ablation=args.ablation, calib=args.calib,
                     fidelity_thr=args.fidelity_thr, progress=False if args.quiet else None,
                     command="snnc " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else None)
    if len(args.file) > 1:
        from snnc.evaluation.compare import compare, print_table

        print(print_table(compare(args.file, cfg)))
        if args.report:
            print(f"wrote {args.report}/compare.html, accuracy_vs_T.png, accuracy_vs_energy.png, compare.json and "
                  "one report per network")
        return 0
    metrics = evaluate(args.file[0], cfg)
    print(_summary(metrics))
    if args.report:
        print(f"wrote {args.report}/report.html and metrics.json ({len(metrics.get('files', []))} files)")
    return 0


def register(sub) -> None:
    """Add `snnc eval` to the CLI's subparsers."""
    e = sub.add_parser("eval", help="evaluate a .lava network: mAP over T, firing rates, SOPs, energy, errors",
                       description="Simulate the network on a labelled set (--data: mAP) or on photos (--images: "
                                   "fidelity to the embedded ANN) at every T from one run, and write a report.")
    e.add_argument("file", nargs="+", help="the .lava network (with its embedded ANN); several: a comparison "
                   "(one line per network in the accuracy vs T and accuracy vs energy plots)")
    src = e.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="PATH", help="labelled set: COCO json (or its folder), VOC or YOLO folder")
    src.add_argument("--images", metavar="DIR", help="folder of photos without labels: fidelity mAP vs the ANN")
    e.add_argument("-T", metavar="LIST", help="time steps, comma-separated, e.g. 32,64,128,256 (one run)")
    e.add_argument("--report", metavar="DIR", help="write report.html, plots and metrics.json here")
    e.add_argument("--layout", choices=["coco", "voc", "yolo"], help="dataset layout (default: detected)")
    e.add_argument("--split", help="VOC: ImageSets/Main/SPLIT.txt to read")
    e.add_argument("-n", "--max-images", type=int, metavar="N", help="evaluate the first N images only")
    e.add_argument("--batch", type=int, metavar="B", help="images per simulator call (default: by memory)")
    e.add_argument("--mode", choices=["float", "fixed"], default="float", help="simulate float32 or fixed point")
    e.add_argument("--backend", default="numpy",
                   help="simulator (numpy, the reference, with per-layer errors; c; lava; torch; any registered backend)")
    e.add_argument("--device", default="cpu", help="cpu, or cuda[:N] for backends that run on a GPU")
    e.add_argument("--workers", type=int, metavar="N",
                   help="run the image batches in parallel as Ray tasks on N workers (needs snnc[ray]; the "
                        "per-layer error analysis is then left out)")
    e.add_argument("--ray-address", metavar="ADDR",
                   help="with --workers: an existing Ray cluster (e.g. ray://head:10001 or auto; default: local)")
    e.add_argument("--v-init", choices=["zero", "half"], help="override V(0) of every neuron (default: as compiled)")
    e.add_argument("--no-errors", action="store_true", help="skip the per-layer error analysis")
    e.add_argument("--examples", type=int, default=4, metavar="K", help="example images drawn (default 4)")
    e.add_argument("--ablation", action="store_true",
                   help="also run channel/layer norm, IBT vs ReLU, spike-count decoding and V(0) variants")
    e.add_argument("--calib", metavar="DIR", help="--ablation: calibration images (default: the evaluated ones)")
    e.add_argument("--fidelity-thr", type=float, default=0.25, metavar="S",
                   help="ANN detections scoring >= S are the fidelity reference (default 0.25)")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=cmd_eval)
