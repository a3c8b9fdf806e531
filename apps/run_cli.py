"""`snnc run`: a compiled detector on photos, through any backend; boxes drawn, detections and figures as JSON."""

from __future__ import annotations

import argparse
import io
import math
import json
from pathlib import Path
from typing import Any

from snnc.ir.errors import SnncError
from snnc.ir.options import V_INIT, checkpoints
from snnc.runtime.host import IOU_THR, SCORE_THR, Detection, draw_comparison, draw_detections


def _fmt(d: Detection | None) -> str:
    if d is None:
        return ""
    x1, y1, x2, y2 = d.box
    return f"{d.name} {d.score:.2f} [{x1:.0f},{y1:.0f},{x2:.0f},{y2:.0f}]"


def pair_detections(ann: list[Detection], snn: list[Detection]) -> list[tuple[Detection | None, Detection | None]]:
    """Rows for a side-by-side table: each ANN detection beside the unused SNN detection of its class that
    overlaps it most (IoU > 0), best ANN score first; SNN detections left over come last."""
    import numpy as np

    from snnc.runtime.host import iou

    free = list(range(len(snn)))
    rows: list[tuple[Detection | None, Detection | None]] = []
    for a in ann:
        cands = [j for j in free if snn[j].cls == a.cls]
        best = None
        if cands:
            ious = iou(np.array([a.box]), np.array([snn[j].box for j in cands]))[0]
            if ious.max() > 0:
                best = cands[int(ious.argmax())]
                free.remove(best)
        rows.append((a, snn[best] if best is not None else None))
    rows += [(None, snn[j]) for j in free]
    return rows


def format_detections(result: Any, T: int) -> str:
    """Per image: the SNN's detections at T, and the ANN's beside them when they were computed."""
    lines = []
    for i, name in enumerate(result.images):
        snn = result.detections[T][i]
        ann = result.ann_detections[i] if result.ann_detections is not None else None
        lines.append(f"{name}: {len(snn)} detection(s) by the SNN at T={T}"
                     + (f", {len(ann)} by the ANN" if ann is not None else ""))
        if ann is None:
            lines += [f"  {_fmt(d)}" for d in snn]
            continue
        width = max([len(_fmt(d)) for d in ann] + [3])
        lines.append(f"  {'ANN':<{width}}  SNN (T={T})")
        for a, s in pair_detections(ann, snn):
            lines.append(f"  {_fmt(a):<{width}}  {_fmt(s)}")
    return "\n".join(lines)


def result_json(result: Any, args: argparse.Namespace) -> dict[str, Any]:
    images = []
    for i, name in enumerate(result.images):
        entry: dict[str, Any] = {"image": name,
                                 "detections": [d.to_dict() for d in result.detections[result.T][i]]}
        if len(result.detections) > 1:
            entry["detections_at"] = {str(t): [d.to_dict() for d in dets[i]] for t, dets in result.detections.items()}
        if result.ann_detections is not None:
            entry["ann_detections"] = [d.to_dict() for d in result.ann_detections[i]]
        images.append(entry)
    return {"model": str(args.file), "T": sorted(result.detections), "backend": args.backend, "mode": args.mode,
            "encoding": args.encoding or "network default", "decode": args.decode, "v_init": args.v_init,
            "score_threshold": args.score_thr, "iou_threshold": args.iou_thr, "images": images,
            "figures": result.figures}


def check_fraction(flag: str, value: float) -> None:
    """A score or IoU threshold: a finite number in [0, 1]."""
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise SnncError(f"{flag} {value!r}: expected a number from 0 to 1")


def _write_atomic(path: Path, data: bytes) -> None:
    from snnc.ir.files import atomic_write_bytes

    atomic_write_bytes(path, data)


def _png_targets(out: Path, images: list[str]) -> list[Path]:
    if len(images) == 1 and out.suffix.lower() == ".png":
        return [out]
    if out.suffix:
        raise SnncError(f"--out {out}: with {len(images)} images give a folder (one PNG per image), not a file")
    return [out / f"{Path(name).stem}.png" for name in images]


def cmd_run(args: argparse.Namespace) -> int:
    from snnc.ir import lavafile
    from snnc.runtime.run import collect_images, run_network

    ts = checkpoints(args.T)
    check_fraction("--score-thr", args.score_thr)
    check_fraction("--iou-thr", args.iou_thr)
    images = collect_images(args.image)
    targets = []
    if args.out is not None:
        if not args.out.strip():
            raise SnncError("--out '': expected a .png file or a folder")
        out = Path(args.out)
        if not out.resolve().parent.is_dir():
            raise SnncError(f"--out {out}: folder {out.parent} does not exist")
        targets = _png_targets(out, [str(p) for p in images])
        if targets != [out] and out.exists() and not out.is_dir():
            raise SnncError(f"--out {out}: exists and is not a folder")
        for target in targets:
            if target.is_dir():
                raise SnncError(f"--out {target}: is a folder; give a .png file name")
    if args.json is not None:
        if not args.json.strip() or Path(args.json).is_dir():
            raise SnncError(f"--json {args.json!r}: expected a file name, e.g. detections.json")
        if not Path(args.json).resolve().parent.is_dir():
            raise SnncError(f"--json {args.json}: folder {Path(args.json).parent} does not exist")
    net = lavafile.load(args.file)
    v_init = None if args.v_init is None else V_INIT[args.v_init]
    result = run_network(net, images, ts, backend=args.backend, mode=args.mode, v_init=v_init,
                         encoding=args.encoding, decode=args.decode, seed=args.seed, device=args.device,
                         score_thr=args.score_thr, iou_thr=args.iou_thr, ann=args.ann, progress=not args.quiet)
    T = result.T
    print(format_detections(result, T))
    fig = result.figures
    line = (f"{args.backend} {args.mode}, T={T}: {fig['seconds']:.1f} s for {len(result.images)} image(s); "
            f"firing rate {fig['overall_firing_rate']:.4f} spikes/neuron/step")
    if "energy" in fig:
        e = fig["energy"]
        line += (f"; {e['snn_sops']:.3g} SOPs/image vs {e['ann_macs']:.3g} ANN MACs, energy ratio (SNN/ANN) "
                 f"{e['energy_pj']['float']['ratio']:.3f} float32, {e['energy_pj']['int']['ratio']:.3f} int32 "
                 "(estimate, docs/evaluation.md)")
    print(line)
    if targets:
        if targets != [out]:  # a folder of PNGs, one per image
            out.mkdir(exist_ok=True)
        for i, target in enumerate(targets):
            buf = io.BytesIO()
            if result.ann_detections is not None:
                img = draw_comparison(result.photos[i], result.ann_detections[i], result.detections[T][i],
                                      ("ANN (onnxruntime)", f"SNN ({args.backend}, T={T})"))
            else:
                img = draw_detections(result.photos[i], result.detections[T][i])
            img.save(buf, format="PNG")
            _write_atomic(target, buf.getvalue())
            print(f"wrote {target}")
    if args.json is not None:
        _write_atomic(Path(args.json), (json.dumps(result_json(result, args), indent=1) + "\n").encode())
        print(f"wrote {args.json}")
    return 0


def register(sub: Any) -> None:
    r = sub.add_parser("run", help="run a compiled detector (.lava) on photos: detections, boxes drawn, figures")
    r.add_argument("file", help=".lava file from snnc compile")
    r.add_argument("--image", action="append", required=True, metavar="PATH",
                   help="photo (jpg/png) or folder of photos; repeat for several")
    r.add_argument("-T", default="256", help="time steps, or a comma-separated list of checkpoints (one run)")
    r.add_argument("--backend", default="numpy", help="numpy (reference), c (generated C), lava (lava-nc) or torch (CPU or --device cuda)")
    r.add_argument("--device", default="cpu", help="cpu, or cuda[:N] for backends that run on a GPU (torch)")
    r.add_argument("--mode", choices=["float", "fixed"], default="float", help="float32 or integer fixed point")
    r.add_argument("--v-init", choices=list(V_INIT), default=None,
                   help="initial membrane potential (default: as compiled)")
    r.add_argument("--encoding", choices=["direct", "rate"], default=None,
                   help="input encoding (default: as compiled, direct)")
    r.add_argument("--decode", choices=["membrane", "spikes"], default="membrane", help="output decoding")
    r.add_argument("--seed", type=int, default=0, help="seed of the rate encoding")
    r.add_argument("--score-thr", type=float, default=SCORE_THR, help="detection score threshold")
    r.add_argument("--iou-thr", type=float, default=IOU_THR, help="NMS IoU threshold")
    r.add_argument("--ann", action="store_true", help="also run the original ANN and print both side by side")
    r.add_argument("--out", metavar="PNG", help="draw the detections (at the largest T; with --ann beside the ANN's): a .png, or a folder")
    r.add_argument("--json", metavar="FILE", help="write detections and figures (spikes, rates, SOPs) as JSON")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_run)
