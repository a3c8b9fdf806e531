"""Train the YOLOv5- or YOLOv8-style digits detector (examples/digits/modern.py) on CPU and export it to ONNX.

    python examples/digits/train_modern.py --arch v5 -o examples/digits/models/digits_v5
    python examples/digits/train_modern.py --arch v8 -o examples/digits/models/digits_v8

writes <o>_raw.onnx (v5 only: the raw heads, for `snnc compile --head yolov5`), <o>.onnx (decoded: boxes and
scores), <o>_nms.onnx (NMS in the graph) and <o>_ultralytics.onnx (ultralytics' one output tensor, see
to_ultralytics.py), and adds the test mAP of the decoded export to models/metrics.json.

Data and schedule as examples/digits/train.py (its data pipeline and anchor k-means are reused): canvases of the
train split made on the fly (new ones every `--refresh` epochs), the best val mAP@0.5 epoch of the second half
kept, Adam with a one-cycle lr, batch 32, one torch thread.

Losses (simplified from the published ones, enough for this set):
- v5: each ground truth at the best-shape anchor of the cell of its centre (as train.py); YOLOv5 box coding
  xy = 2 sigmoid - 0.5 (MSE to the offset in the cell), wh = (2 sigmoid)^2 * anchor (MSE of the log ratio),
  BCE objectness (predictions already overlapping a ground truth by IoU > 0.5 ignored), BCE classes.
- v8: anchor-free; a ground truth is assigned to the stride-4 level when its longer side is <= 20 px, else to
  stride 8, at the cells whose centre lies inside the box and within 1.5 cells of the box centre (the smaller box
  wins a shared cell); DFL loss on the left/top/right/bottom distances plus 1 - GIoU of the decoded box; BCE
  classes over all cells, normalised by the number of positives.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from modern import NA, NUM_CLASSES, REG_MAX, STRIDES, DigitsV5, DigitsV8, _grid, export  # noqa: E402
from to_ultralytics import convert  # noqa: E402
from train import build_targets, kmeans_anchors, to_tensor  # noqa: E402

from snnc.evaluation.digits import SIZE, make_digits  # noqa: E402


def _iou_xyxy(a: torch.Tensor, b: torch.Tensor, giou: bool = False) -> torch.Tensor:
    lt, rb = torch.max(a[..., :2], b[..., :2]), torch.min(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = (a[..., 2:] - a[..., :2]).prod(-1) + (b[..., 2:] - b[..., :2]).prod(-1) - inter + 1e-9
    iou = inter / union
    if not giou:
        return iou
    hull = (torch.max(a[..., 2:], b[..., 2:]) - torch.min(a[..., :2], b[..., :2])).prod(-1) + 1e-9
    return iou - (hull - union) / hull


def _gt_tensor(targets):
    kmax = max(1, max(len(t[0]) for t in targets))
    gt = torch.zeros(len(targets), kmax, 4)
    valid = torch.zeros(len(targets), kmax, dtype=torch.bool)
    for b, (boxes, _) in enumerate(targets):
        gt[b, :len(boxes)] = torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4))
        valid[b, :len(boxes)] = True
    return gt, valid


def loss_v5(model: DigitsV5, heads, targets):
    bsz = heads[0].shape[0]
    rows = build_targets(targets, model.anchors.numpy(), [h.shape[-1] for h in heads])
    gt, valid = _gt_tensor(targets)
    l_xy = l_wh = l_cls = l_obj = torch.zeros(())
    for i, h in enumerate(heads):
        n = h.shape[-1]
        p = h.view(bsz, NA, 5 + NUM_CLASSES, n, n).permute(0, 1, 3, 4, 2)
        obj_t = torch.zeros(p.shape[:4])
        with torch.no_grad():
            dec = _decode_v5_level(model, h, i)
            ignore = (_iou_xyxy(dec[:, :, None], gt[:, None]).masked_fill(~valid[:, None], 0).max(2).values > 0.5)
            ignore = ignore.view(p.shape[:4])
        r = rows[rows[:, 0] == i]
        if len(r):
            b, a, gy, gx = (torch.as_tensor(r[:, k], dtype=torch.long) for k in range(1, 5))
            sel = p[b, a, gy, gx]
            t = torch.as_tensor(r[:, 5:10], dtype=torch.float32)
            l_xy = l_xy + (t[:, 4:5] * (sel[:, 0:2].sigmoid() * 2 - 0.5 - t[:, 0:2]) ** 2).sum()
            log_wh = 2 * torch.log(2 * sel[:, 2:4].sigmoid() + 1e-9)
            l_wh = l_wh + (t[:, 4:5] * (log_wh - t[:, 2:4]) ** 2).sum()
            onehot = F.one_hot(torch.as_tensor(r[:, 10], dtype=torch.long), NUM_CLASSES).float()
            l_cls = l_cls + F.binary_cross_entropy_with_logits(sel[:, 5:], onehot, reduction="sum")
            obj_t[b, a, gy, gx] = 1.0
        weight = (~ignore | (obj_t > 0)).float()
        l_obj = l_obj + (F.binary_cross_entropy_with_logits(p[..., 4], obj_t, reduction="none") * weight).sum()
    return (4 * l_xy + l_wh + l_cls + l_obj) / bsz


def _decode_v5_level(model: DigitsV5, h: torch.Tensor, i: int) -> torch.Tensor:
    b, n = h.shape[0], h.shape[-1]
    p = h.view(b, NA, 5 + NUM_CLASSES, n * n).transpose(2, 3)
    xy = (p[..., 0:2].sigmoid() * 2 - 0.5 + _grid(n).view(1, 1, n * n, 2)) * STRIDES[i]
    wh = (p[..., 2:4].sigmoid() * 2) ** 2 * model.anchors[i].view(1, NA, 1, 2)
    return torch.cat([xy - wh / 2, xy + wh / 2], -1).reshape(b, -1, 4)


def loss_v8(model: DigitsV8, heads, targets):
    bsz = heads[0].shape[0]
    l_box = l_dfl = l_cls = torch.zeros(())
    npos = 0
    for i, h in enumerate(heads):
        n, s = h.shape[-1], STRIDES[i]
        box = h[:, :4 * REG_MAX].view(bsz, 4, REG_MAX, n, n)
        cls = h[:, 4 * REG_MAX:]
        cls_t = torch.zeros_like(cls)
        pos_b, pos_y, pos_x, pos_t = [], [], [], []
        for b, (boxes, classes) in enumerate(targets):
            owner = {}
            order = np.argsort(-np.prod(np.asarray(boxes)[:, 2:] - np.asarray(boxes)[:, :2], 1)) if len(boxes) else []
            for k in order:  # large first: smaller boxes overwrite shared cells
                x1, y1, x2, y2 = (float(v) for v in boxes[k])
                level = 1 if max(x2 - x1, y2 - y1) <= 20 else 0
                if level != i:
                    continue
                cx, cy = (x1 + x2) / 2 / s, (y1 + y2) / 2 / s
                for gy in range(max(0, int(cy - 2)), min(n, int(cy + 2) + 1)):
                    for gx in range(max(0, int(cx - 2)), min(n, int(cx + 2) + 1)):
                        px, py = gx + 0.5, gy + 0.5
                        inside = x1 / s < px < x2 / s and y1 / s < py < y2 / s
                        near = abs(px - cx) <= 1.5 and abs(py - cy) <= 1.5
                        if (inside and near) or (gx == min(int(cx), n - 1) and gy == min(int(cy), n - 1)):
                            owner[(gy, gx)] = k
            for (gy, gx), k in owner.items():
                pos_b.append(b)
                pos_y.append(gy)
                pos_x.append(gx)
                pos_t.append(list(boxes[k]))
                cls_t[b, int(classes[k]), gy, gx] = 1.0
        l_cls = l_cls + F.binary_cross_entropy_with_logits(cls, cls_t, reduction="sum")
        if not pos_b:
            continue
        b_, y_, x_ = (torch.as_tensor(v) for v in (pos_b, pos_y, pos_x))
        t = torch.as_tensor(np.asarray(pos_t, np.float32))  # (P, 4) px
        px, py = (x_.float() + 0.5), (y_.float() + 0.5)
        ltrb = torch.stack([px - t[:, 0] / s, py - t[:, 1] / s, t[:, 2] / s - px, t[:, 3] / s - py], 1)
        ltrb = ltrb.clamp(0, REG_MAX - 1.01)
        logits = box[b_, :, :, y_, x_]  # (P, 4, R)
        prob = logits.softmax(-1)
        dist = (prob * torch.arange(REG_MAX, dtype=torch.float32)).sum(-1)
        lo = ltrb.floor().long()
        wl = (lo + 1).float() - ltrb
        l_dfl = l_dfl + (F.cross_entropy(logits.reshape(-1, REG_MAX), lo.view(-1), reduction="none") * wl.view(-1)
                         + F.cross_entropy(logits.reshape(-1, REG_MAX), (lo + 1).view(-1), reduction="none")
                         * (1 - wl).view(-1)).sum() / 4
        pred = torch.stack([px - dist[:, 0], py - dist[:, 1], px + dist[:, 2], py + dist[:, 3]], 1) * s
        l_box = l_box + (1 - _iou_xyxy(pred, t, giou=True)).sum()
        npos += len(pos_b)
    npos = max(npos, 1)
    return (l_cls + 7.5 * l_box + 1.5 * l_dfl) / npos


def test_map(model, ds) -> dict:
    from snnc.evaluation.ann import detections_from_outputs
    from snnc.evaluation.metrics import evaluate_detections

    model.eval()
    model.mode = "decoded"
    with torch.no_grad():
        outs = [model(to_tensor(ds.images[i:i + 100])) for i in range(0, len(ds), 100)]
    model.mode = "raw"
    boxes = np.concatenate([o[0].numpy() for o in outs])
    scores = np.concatenate([o[1].numpy() for o in outs])
    return evaluate_detections(ds.samples(), detections_from_outputs(boxes, scores), ds.class_names)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", choices=("v5", "v8"), required=True)
    ap.add_argument("-o", "--output", type=Path, required=True, help="path stem: writes STEM.onnx, STEM_nms.onnx")
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--train-images", type=int, default=4000)
    ap.add_argument("--refresh", type=int, default=2)
    ap.add_argument("--val-images", type=int, default=300)
    ap.add_argument("--test-images", type=int, default=500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    val = make_digits("val", args.val_images, seed=args.seed)
    if args.arch == "v5":
        sample = np.concatenate(make_digits("train", 2000, seed=args.seed).boxes)
        anchors = kmeans_anchors(sample[:, 2:] - sample[:, :2])
        model = DigitsV5(np.stack([anchors[3:], anchors[:3]]), args.width)
        loss_fn = loss_v5
    else:
        anchors = None
        model = DigitsV8(args.width)
        loss_fn = loss_v8
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=args.lr, weight_decay=5e-4)
    steps = math.ceil(args.train_images / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps, pct_start=0.1)
    rng = np.random.default_rng(args.seed)
    best, best_state = -1.0, None
    for epoch in range(args.epochs):
        if epoch % args.refresh == 0:
            train = make_digits("train", args.train_images, seed=args.seed, start=epoch * args.train_images)
            x_all = to_tensor(train.images)
        model.train()
        order = rng.permutation(len(train))
        losses = []
        for i in range(0, len(order), args.batch):
            idx = order[i:i + args.batch]
            loss = loss_fn(model, model(x_all[idx]), [(train.boxes[k], train.classes[k]) for k in idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        line = f"epoch {epoch + 1}/{args.epochs} loss {np.mean(losses):.3f} {time.time() - t0:.0f}s"
        if epoch >= args.epochs // 2:
            v = test_map(model, val)
            line += f" val mAP50 {v['mAP50']:.4f}"
            if v["mAP50"] > best:
                best, best_state = v["mAP50"], {k: t.clone() for k, t in model.state_dict().items()}
        print(line, flush=True)
    model.load_state_dict(best_state)
    seconds = time.time() - t0
    stem = args.output
    paths = {"decoded": stem.with_name(stem.name + ".onnx"), "nms": stem.with_name(stem.name + "_nms.onnx")}
    if args.arch == "v5":
        paths["raw"] = stem.with_name(stem.name + "_raw.onnx")
    for form, path in paths.items():
        export(model, path, form, SIZE)
    # ultralytics' single-tensor layout of the same weights (v8: (1, 4 + C, N); v5: (1, N, 5 + C))
    paths["ultralytics"] = stem.with_name(stem.name + "_ultralytics.onnx")
    if args.arch == "v5":
        flat = np.concatenate([anchors[:3], anchors[3:]]).ravel().tolist()  # smallest stride first
        convert(paths["raw"], paths["ultralytics"], flat)
    else:
        convert(paths["decoded"], paths["ultralytics"])

    from snnc.evaluation.ann import evaluate_onnx

    test = make_digits("test", args.test_images, seed=args.seed)
    res = evaluate_onnx(paths["decoded"], test)
    print(f"{paths['decoded']}: test mAP50 {res['mAP50']:.4f} mAP50_95 {res['mAP50_95']:.4f} ({seconds:.0f}s)")
    metrics = stem.parent / "metrics.json"
    data = json.loads(metrics.read_text()) if metrics.is_file() else {}
    data[paths["decoded"].name] = {
        "arch": args.arch, "act": "relu", "mAP50": round(res["mAP50"], 4), "mAP50_95": round(res["mAP50_95"], 4),
        "split": "test", "images": len(test), "seed": args.seed, "val_mAP50": round(best, 4),
        "train_seconds": round(seconds), "epochs": args.epochs, "train_images_per_epoch": args.train_images,
        "width": args.width, "anchors": None if anchors is None else np.stack([anchors[3:], anchors[:3]]).tolist(),
        "exports": sorted(p.name for p in paths.values()), "torch": torch.__version__,
        "command": "python examples/digits/train_modern.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    metrics.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
