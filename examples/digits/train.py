"""Train a small YOLO-style digits detector on CPU and export it to ONNX with the box decoding on the host side.

    python examples/digits/train.py --act relu  -o examples/digits/models/digits_relu.onnx
    python examples/digits/train.py --act leaky -o examples/digits/models/digits_leaky.onnx

The data is the digits set of `snnc.evaluation.digits` (64x64, 1-4 handwritten digits, 10 classes), made
on the fly: `--train-images` canvases of the train split (new ones every `--refresh` epochs), early model choice
on the val split, the final mAP on the test split (source digits disjoint from train's).

Network (yolov3-tiny in miniature, every conv 3x3 or 1x1 + BatchNorm + ReLU or LeakyReLU(0.1), max-pool 2x2):

    images 3x64x64 -> c1 16 -> pool -> c2 32 -> pool -> c3 64 (16x16) -> pool -> c4 128 (8x8) -> c5 1x1 64
      -> head8: 1x1 conv, 3 anchors x (5 + 10) = 45 channels at 8x8 (stride 8)
    c5 -> c6 1x1 32 -> nearest upsample x2 -> concat with c3 -> c7 3x3 64 -> head16: 45 channels at 16x16 (stride 4)

Anchors: 6 k-means (1 - IoU) clusters of the train boxes' (w, h); the 3 small ones go to the stride-4 head.
Loss (YOLOv3): each ground truth box is assigned to the best-IoU anchor (by shape) at the cell of its centre;
BCE on sigmoid(tx, ty) cell offsets, MSE on log(w / anchor) and log(h / anchor), both weighted by
2 - w h / 64^2; BCE objectness (1 at assigned anchors, 0 elsewhere except predictions whose decoded box already
overlaps a ground truth by IoU > 0.5, which are ignored); BCE per class (one-hot) at assigned anchors.
Adam (weight decay 5e-4), one-cycle lr up to 2e-3 (10% warm-up, cosine decay), batch 32, 16 epochs of 4000 canvases
(new every 2 epochs); the weights of the best val mAP@0.5 epoch (from the second half) are kept.

Export (TorchScript exporter, `dynamo=False`, opset 13, static 1x3x64x64 input `images` = RGB / 255): the two
head convolutions, then the decoding in plain ONNX ops (Reshape, Transpose, Slice, Sigmoid, Exp, Add, Mul,
Concat): `boxes` (1, 960, 4) x1 y1 x2 y2 in input pixels, `scores` (1, 960, 10) = sigmoid(obj) * sigmoid(cls).
snnc's split puts the convolutions in the spiking part and the decoding on the host. Class names are in the
metadata key `snnc.class_names`. mAP (ANN, test split) goes to models/metrics.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from snnc.evaluation.digits import CLASS_NAMES, SIZE, make_digits
from snnc.training import detloss
from snnc.training.detloss import HeadGeom

NUM_CLASSES = len(CLASS_NAMES)
NA = 3  # anchors per head
STRIDES = (8, 4)  # head8, head16


# ---- model ------------------------------------------------------------------------------------------------------

def _act(kind: str) -> nn.Module:
    return nn.ReLU() if kind == "relu" else nn.LeakyReLU(0.1)


class ConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int, act: str):
        super().__init__(nn.Conv2d(c_in, c_out, k, 1, k // 2, bias=False), nn.BatchNorm2d(c_out), _act(act))


class DigitsYolo(nn.Module):
    def __init__(self, act: str, anchors: np.ndarray, width: int = 16):
        super().__init__()
        w = width
        self.c1 = ConvBN(3, w, 3, act)
        self.c2 = ConvBN(w, 2 * w, 3, act)
        self.c3 = ConvBN(2 * w, 4 * w, 3, act)
        self.c4 = ConvBN(4 * w, 8 * w, 3, act)
        self.c5 = ConvBN(8 * w, 4 * w, 1, act)
        self.head8 = nn.Conv2d(4 * w, NA * (5 + NUM_CLASSES), 1)
        self.c6 = ConvBN(4 * w, 2 * w, 1, act)
        self.c7 = ConvBN(6 * w, 4 * w, 3, act)
        self.head16 = nn.Conv2d(4 * w, NA * (5 + NUM_CLASSES), 1)
        self.pool = nn.MaxPool2d(2, 2)
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(2, NA, 2))  # per head, px
        self.decode = False  # export mode: boxes and scores
        for head in (self.head8, self.head16):  # start from "no object, no class" (prior 1%, 10%)
            bias = head.bias.data.view(NA, 5 + NUM_CLASSES)
            bias[:, 4] = -4.6
            bias[:, 5:] = -2.2

    def heads(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.pool(self.c1(x))
        x = self.pool(self.c2(x))
        r = self.c3(x)
        x = self.c5(self.c4(self.pool(r)))
        h8 = self.head8(x)
        u = F.interpolate(self.c6(x), scale_factor=2, mode="nearest")
        h16 = self.head16(self.c7(torch.cat([u, r], 1)))
        return [h8, h16]

    def forward(self, x: torch.Tensor):
        hs = self.heads(x)
        if not self.decode:
            return hs
        boxes, scores = [], []
        for i, (h, stride) in enumerate(zip(hs, STRIDES)):
            b, s = decode_head(h, self.anchors[i], stride)
            boxes.append(b)
            scores.append(s)
        return torch.cat(boxes, 1), torch.cat(scores, 1)


def _grid(n: int, device=None) -> torch.Tensor:
    gy, gx = torch.meshgrid(torch.arange(n, dtype=torch.float32, device=device),
                            torch.arange(n, dtype=torch.float32, device=device), indexing="ij")
    return torch.stack([gx, gy], -1).view(1, 1, n, n, 2)


def decode_head(h: torch.Tensor, anchors: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw head (B, A*(5+C), n, n) -> boxes (B, A*n*n, 4) x1y1x2y2 in pixels, scores (B, A*n*n, C)."""
    b, n = h.shape[0], h.shape[-1]
    p = h.view(b, NA, 5 + NUM_CLASSES, n, n).permute(0, 1, 3, 4, 2)
    xy = (torch.sigmoid(p[..., 0:2]) + _grid(n, h.device)) * stride
    wh = torch.exp(p[..., 2:4]) * anchors.view(1, NA, 1, 1, 2)
    scores = torch.sigmoid(p[..., 4:5]) * torch.sigmoid(p[..., 5:])
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], -1)
    return boxes.reshape(b, NA * n * n, 4), scores.reshape(b, NA * n * n, NUM_CLASSES)


# ---- anchors and loss -------------------------------------------------------------------------------------------

def kmeans_anchors(wh: np.ndarray, k: int = 6, iters: int = 50) -> np.ndarray:
    """k (w, h) clusters under the 1 - IoU distance (shapes centred), sorted by area; deterministic."""
    wh = wh.astype(np.float64)
    order = np.argsort(wh.prod(1))
    centers = wh[order[np.linspace(0, len(wh) - 1, k).astype(int)]].copy()
    for _ in range(iters):
        inter = np.minimum(wh[:, None, 0], centers[None, :, 0]) * np.minimum(wh[:, None, 1], centers[None, :, 1])
        iou = inter / (wh.prod(1)[:, None] + centers.prod(1)[None, :] - inter)
        assign = iou.argmax(1)
        new = np.array([np.median(wh[assign == j], 0) if np.any(assign == j) else centers[j] for j in range(k)])
        if np.allclose(new, centers):
            break
        centers = new
    return np.round(centers[np.argsort(centers.prod(1))], 1)


def build_targets(targets: list[tuple[np.ndarray, np.ndarray]], anchors: np.ndarray, sizes: list[int]):
    """Assign every ground truth to (head, anchor, cell): numpy arrays of the batch's positives."""
    rows = []
    flat = anchors.reshape(-1, 2)
    for b, (boxes, classes) in enumerate(targets):
        for box, cls in zip(np.asarray(boxes, np.float64), classes):
            wh = box[2:] - box[:2]
            inter = np.minimum(wh[None], flat).prod(1)
            head, a = divmod(int(np.argmax(inter / (wh.prod() + flat.prod(1) - inter))), NA)
            cx, cy = (box[0] + box[2]) / 2 / STRIDES[head], (box[1] + box[3]) / 2 / STRIDES[head]
            gx, gy = min(int(cx), sizes[head] - 1), min(int(cy), sizes[head] - 1)
            rows.append((head, b, a, gy, gx, cx - gx, cy - gy, np.log(wh[0] / anchors[head, a, 0]),
                         np.log(wh[1] / anchors[head, a, 1]), 2.0 - wh.prod() / (SIZE * SIZE), int(cls)))
    return np.array(rows, dtype=np.float64).reshape(-1, 11)


def yolo_loss(heads: list[torch.Tensor], anchors: torch.Tensor, targets: list[tuple[np.ndarray, np.ndarray]]):
    """targets[b] = (boxes (k, 4) pixels, classes (k,)). anchors (2, NA, 2) px, head 0 = stride 8.
    The loss of `snnc finetune --data` (snnc.training.detloss), with this network's geometry; (loss, parts)."""
    geoms = [HeadGeom(STRIDES[i], anchors[i].numpy(), NUM_CLASSES, "yolo") for i in range(len(heads))]
    parts: dict[str, float] = {}
    return detloss.yolo_loss(tuple(heads), geoms, targets, (SIZE, SIZE), parts=parts), parts


# ---- evaluation and export --------------------------------------------------------------------------------------

def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)


def torch_map(model: DigitsYolo, ds) -> dict:
    """mAP of the torch model (decoded in torch, NMS and COCO evaluation as for the ONNX model)."""
    from snnc.evaluation.ann import detections_from_outputs
    from snnc.evaluation.metrics import evaluate_detections

    model.eval()
    model.decode = True
    with torch.no_grad():
        boxes, scores = [], []
        for i in range(0, len(ds), 100):
            b, s = model(to_tensor(ds.images[i:i + 100]))
            boxes.append(b.numpy())
            scores.append(s.numpy())
    model.decode = False
    dets = detections_from_outputs(np.concatenate(boxes), np.concatenate(scores))
    return evaluate_detections(ds.samples(), dets, ds.class_names)


def export_onnx(model: DigitsYolo, path: Path, opset: int = 13) -> None:
    import onnx

    model.eval()
    model.decode = True
    x = torch.zeros(1, 3, SIZE, SIZE)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but still the one for static graphs
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (x,), str(path), input_names=["images"], output_names=["boxes", "scores"],
                          opset_version=opset, dynamo=False, do_constant_folding=True)
    model.decode = False
    m = onnx.load(str(path))
    del m.metadata_props[:]
    m.metadata_props.add(key="snnc.class_names", value=json.dumps(CLASS_NAMES))
    m.producer_name = "snnc examples/digits/train.py"
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


# ---- main -------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--act", choices=("relu", "leaky"), required=True)
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--train-images", type=int, default=4000)
    ap.add_argument("--refresh", type=int, default=2, help="new train canvases every N epochs")
    ap.add_argument("--val-images", type=int, default=300)
    ap.add_argument("--test-images", type=int, default=500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--anchor-images", type=int, default=2000, help="train canvases for the anchor k-means")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (2 collapse on a shared 2-core machine)")
    ap.add_argument("--metrics", type=Path, default=None, help="JSON to update (default: metrics.json beside -o)")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    val = make_digits("val", args.val_images, seed=args.seed)
    sample_boxes = np.concatenate(make_digits("train", args.anchor_images, seed=args.seed).boxes)
    anchors = kmeans_anchors(sample_boxes[:, 2:] - sample_boxes[:, :2])
    print(f"anchors (w, h) px: {anchors.tolist()}", flush=True)
    anchors_by_head = np.stack([anchors[3:], anchors[:3]])  # head8 (stride 8) gets the 3 large ones
    model = DigitsYolo(args.act, anchors_by_head, args.width)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=5e-4)
    steps_per_epoch = math.ceil(args.train_images / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch,
                                                pct_start=0.1)
    rng = np.random.default_rng(args.seed)
    best, best_state = -1.0, None
    train = None
    for epoch in range(args.epochs):
        if epoch % args.refresh == 0:
            train = make_digits("train", args.train_images, seed=args.seed, start=epoch * args.train_images)
            x_all = to_tensor(train.images)
        model.train()
        order = rng.permutation(len(train))
        logs = []
        for i in range(0, len(order), args.batch):
            idx = order[i:i + args.batch]
            heads = model(x_all[idx])
            loss, parts = yolo_loss(heads, model.anchors, [(train.boxes[k], train.classes[k]) for k in idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            logs.append([float(loss.detach()), parts["xy"], parts["wh"], parts["obj"], parts["cls"]])
        m = np.mean(logs, 0)
        line = (f"epoch {epoch + 1}/{args.epochs} loss {m[0]:.3f} (xy {m[1]:.3f} wh {m[2]:.3f} obj {m[3]:.3f} "
                f"cls {m[4]:.3f}) {time.time() - t0:.0f}s")
        if epoch >= args.epochs // 2 or epoch == args.epochs - 1:
            v = torch_map(model, val)
            line += f" val mAP50 {v['mAP50']:.4f} mAP50_95 {v['mAP50_95']:.4f}"
            if v["mAP50"] > best:
                best = v["mAP50"]
                best_state = {k: t.clone() for k, t in model.state_dict().items()}
        print(line, flush=True)
    model.load_state_dict(best_state)
    train_seconds = time.time() - t0
    export_onnx(model, args.output)

    from snnc.evaluation.ann import evaluate_onnx

    test = make_digits("test", args.test_images, seed=args.seed)
    res = evaluate_onnx(args.output, test)
    print(f"{args.output}: test mAP50 {res['mAP50']:.4f} mAP50_95 {res['mAP50_95']:.4f} "
          f"({len(test)} images, {train_seconds:.0f}s training)", flush=True)
    metrics_path = args.metrics or args.output.parent / "metrics.json"
    data = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    data[args.output.name] = {
        "act": args.act, "mAP50": round(res["mAP50"], 4), "mAP50_95": round(res["mAP50_95"], 4),
        "split": "test", "images": len(test), "seed": args.seed, "val_mAP50": round(best, 4),
        "score_thr": res["score_thr"], "iou_thr": res["iou_thr"], "max_det": res["max_det"],
        "train_seconds": round(train_seconds), "epochs": args.epochs, "train_images_per_epoch": args.train_images,
        "anchors": anchors_by_head.tolist(), "torch": torch.__version__,
        "command": "python examples/digits/train.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    metrics_path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
