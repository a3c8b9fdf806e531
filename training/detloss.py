"""The YOLO detection loss for `snnc finetune --data` (labels in a COCO json), on the raw anchor-based heads.

The heads' geometry is read from the model itself, not from the user: the host part snnc split off (the
decoding, plain ONNX) is run on probe inputs. With all raw head values 0 both codings snnc knows give a box of
exactly the anchor's size centred in its cell, so the anchors and strides come out of one run; a probe on one
cell's t_w tells which output box belongs to which (head, anchor), and the centre's shift for t_x = 2 tells the
coding (YOLOv3: sigmoid(t) + grid; YOLOv5: 2 sigmoid(t) - 0.5 + grid). A host part that does not decode to
boxes (1, N, 4) and scores (1, N, C) from A x (5 + C) channel heads (anchor-free heads, NMS in the graph) gets
one SnncError.

The loss is YOLOv3's, as examples/digits/train.py trains the digits detectors: every ground truth goes to the
best-shape anchor (over all heads) at the cell of its centre; BCE of the cell offset, the box size against the
anchor (YOLOv3: MSE of t_wh against log(wh / anchor); YOLOv5: BCE of sigmoid(t_wh) against sqrt(wh / anchor) / 2),
both weighted by 2 - box area / image area; BCE objectness (1 at the assigned anchors, 0 elsewhere except where
the decoded box already overlaps a ground truth by IoU > 0.5, which is ignored); one-hot BCE per class.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from snnc.compiler.graph import run_model
from snnc.compiler.images import letterbox, read_image
from snnc.evaluation.datasets import load_coco
from snnc.ir.errors import SnncError

log = logging.getLogger(__name__)
IGNORE_IOU = 0.5


@dataclass(frozen=True)
class HeadGeom:
    """One raw head: its stride in input pixels, anchors (A, 2) (w, h) px, class count and box coding."""

    stride: float
    anchors: np.ndarray
    classes: int
    kind: str  # "yolo" or "yolov5"


def _shape(vi: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value for d in vi.type.tensor_type.shape.dim]


def probe_heads(host: onnx.ModelProto, head_names: list[str], source: str = "the model",
                why: str = "--data needs") -> list[HeadGeom]:
    """The geometry of each raw head (in `head_names` order) read from the host decoding graph; `why` starts the
    refusal (what needs it)."""
    shapes = {i.name: _shape(i) for i in host.graph.input}
    outs = [o.name for o in host.graph.output]
    unfit = SnncError(f"{source}: {why} anchor-based YOLO heads decoded on the host to boxes (1, N, 4) and "
                      f"scores (1, N, C); this model's host part gives {', '.join(outs) or 'nothing'}")
    if len(outs) != 2 or any(n not in shapes or len(shapes[n]) != 4 for n in head_names):
        raise unfit
    feeds = {n: np.zeros(shapes[n], np.float32) for n in head_names}
    base = run_model(host, feeds, what=f"{source}'s host part")
    by_last = sorted(outs, key=lambda n: base[n].shape[-1] != 4)
    boxes_name, scores_name = by_last
    boxes0, scores0 = base[boxes_name], base[scores_name]
    if boxes0.ndim != 3 or boxes0.shape[-1] != 4 or scores0.ndim != 3 or scores0.shape[1] != boxes0.shape[1]:
        raise unfit
    classes = scores0.shape[-1]
    geoms = []
    for name in head_names:
        c, h, w = shapes[name][1:]
        if c % (5 + classes):
            raise SnncError(f"{source}: head '{name}' has {c} channels, not anchors x (5 + {classes} classes): "
                            f"{why} anchor-based YOLO heads")
        anchors, kinds = [], []
        for a in range(c // (5 + classes)):
            ch = a * (5 + classes)
            idx = _changed(host, feeds, name, ch + 2, 1.0, boxes_name, boxes0)
            if idx is None:
                raise unfit
            x1, y1, x2, y2 = boxes0[0, idx]
            anchors.append((x2 - x1, y2 - y1))
            stride = float(x1 + x2)  # centre of cell (0, 0) = stride / 2 in both codings
            shifted = run_model(host, {**feeds, name: _poke(feeds[name], ch, 2.0)}, [boxes_name])[boxes_name]
            dx = float(shifted[0, idx, 0] + shifted[0, idx, 2]) / 2 - stride / 2
            ratio = dx / stride / (1 / (1 + np.exp(-2.0)) - 0.5)
            kinds.append("yolo" if abs(ratio - 1) < 0.05 else "yolov5" if abs(ratio - 2) < 0.05 else "?")
        if "?" in kinds or len(set(kinds)) != 1 or stride <= 0:
            raise unfit
        geoms.append(HeadGeom(stride, np.asarray(anchors, np.float64), classes, kinds[0]))
    log.info("detection loss: heads %s", [(g.stride, g.anchors.tolist(), g.kind) for g in geoms])
    return geoms


def _poke(x: np.ndarray, channel: int, value: float) -> np.ndarray:
    y = x.copy()
    y[0, channel, 0, 0] = value
    return y


def _changed(host, feeds, name, channel, value, out, ref) -> int | None:
    got = run_model(host, {**feeds, name: _poke(feeds[name], channel, value)}, [out])[out]
    diff = np.flatnonzero(np.abs(got - ref).reshape(ref.shape[1], -1).max(1) > 1e-6)
    return int(diff[0]) if len(diff) == 1 else None


def load_labels(path: str | Path, hw: tuple[int, int]) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """The images of a COCO json letterboxed to hw (N, 3, h, w) and their (boxes xyxy in those pixels, classes)."""
    samples, _ = load_coco(path)
    if not samples:
        raise SnncError(f"{path}: no images in the COCO file")
    images, targets = [], []
    for s in samples:
        img, lb = letterbox(read_image(s.image_path), hw)
        boxes = s.boxes_xyxy * lb.scale + np.array([lb.left, lb.top, lb.left, lb.top])
        images.append(img)
        targets.append((boxes.astype(np.float32), s.classes))
    return np.stack(images), targets


def _decode(p: torch.Tensor, g: HeadGeom) -> torch.Tensor:
    """(B, A, h, w, 5 + C) raw -> boxes (B, A*h*w, 4) x1y1x2y2 px."""
    b, a, h, w, _ = p.shape
    gy, gx = torch.meshgrid(torch.arange(h, dtype=p.dtype), torch.arange(w, dtype=p.dtype), indexing="ij")
    grid = torch.stack([gx, gy], -1).view(1, 1, h, w, 2)
    anchors = torch.as_tensor(g.anchors, dtype=p.dtype).view(1, a, 1, 1, 2)
    s = torch.sigmoid(p[..., 0:4])
    if g.kind == "yolo":
        xy, wh = s[..., 0:2] + grid, torch.exp(p[..., 2:4]) * anchors
    else:
        xy, wh = 2 * s[..., 0:2] - 0.5 + grid, (2 * s[..., 2:4]) ** 2 * anchors
    xy = xy * g.stride
    return torch.cat([xy - wh / 2, xy + wh / 2], -1).reshape(b, -1, 4)


def _assign(targets, geoms: list[HeadGeom], sizes: list[tuple[int, int]], area: float) -> np.ndarray:
    """Rows (head, image, anchor, gy, gx, off_x, off_y, w/anchor_w, h/anchor_h, weight, class) per ground truth."""
    flat = np.concatenate([g.anchors for g in geoms])
    owner = np.concatenate([[(k, a) for a in range(len(g.anchors))] for k, g in enumerate(geoms)])
    rows = []
    for b, (boxes, classes) in enumerate(targets):
        for box, cls in zip(np.asarray(boxes, np.float64), classes):
            wh = np.maximum(box[2:] - box[:2], 1e-3)
            inter = np.minimum(wh[None], flat).prod(1)
            head, a = owner[int(np.argmax(inter / (wh.prod() + flat.prod(1) - inter)))]
            g, (h, w) = geoms[head], sizes[head]
            cx, cy = (box[0] + box[2]) / 2 / g.stride, (box[1] + box[3]) / 2 / g.stride
            gx, gy = min(max(int(cx), 0), w - 1), min(max(int(cy), 0), h - 1)
            rows.append((head, b, a, gy, gx, cx - gx, cy - gy, wh[0] / g.anchors[a, 0], wh[1] / g.anchors[a, 1],
                         2.0 - wh.prod() / area, int(cls)))
    return np.array(rows, dtype=np.float64).reshape(-1, 11)


def yolo_loss(heads: tuple[torch.Tensor, ...], geoms: list[HeadGeom],
              targets: list[tuple[np.ndarray, np.ndarray]], image_hw: tuple[int, int],
              parts: dict[str, float] | None = None) -> torch.Tensor:
    """The YOLO loss of raw heads (B, A*(5+C), h, w) against targets[b] = (boxes xyxy px, classes), per image.
    `parts`, when given, receives the per-image box ("xy", "wh"), class and objectness terms and the positives."""
    bsz = heads[0].shape[0]
    preds = [h.view(bsz, len(g.anchors), 5 + g.classes, h.shape[2], h.shape[3]).permute(0, 1, 3, 4, 2)
             for h, g in zip(heads, geoms)]
    rows = _assign(targets, geoms, [tuple(h.shape[2:]) for h in heads], float(image_hw[0] * image_hw[1]))
    kmax = max(1, max(len(t[0]) for t in targets))
    gt = torch.zeros(bsz, kmax, 4)
    valid = torch.zeros(bsz, kmax, dtype=torch.bool)
    for b, (boxes, _) in enumerate(targets):
        gt[b, :len(boxes)] = torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4))
        valid[b, :len(boxes)] = True
    terms = dict.fromkeys(("xy", "wh", "cls", "obj"), heads[0].new_zeros(()))
    for i, (p, g) in enumerate(zip(preds, geoms)):
        obj_t = torch.zeros(p.shape[:4])
        with torch.no_grad():  # predictions already overlapping a ground truth are not punished as background
            dec = _decode(p, g)
            lt = torch.max(dec[:, :, None, :2], gt[:, None, :, :2])
            rb = torch.min(dec[:, :, None, 2:], gt[:, None, :, 2:])
            inter = (rb - lt).clamp(min=0).prod(3)
            area_d = (dec[..., 2:] - dec[..., :2]).clamp(min=0).prod(2)
            area_g = (gt[..., 2:] - gt[..., :2]).prod(2)
            iou = inter / (area_d[:, :, None] + area_g[:, None, :] - inter + 1e-9)
            ignore = (iou.masked_fill(~valid[:, None, :], 0).max(2).values > IGNORE_IOU).view(p.shape[:4])
        r = rows[rows[:, 0] == i]
        if len(r):
            b, a, gy, gx = (torch.as_tensor(r[:, k], dtype=torch.long) for k in range(1, 5))
            sel = p[b, a, gy, gx]
            off = torch.as_tensor(r[:, 5:7], dtype=torch.float32)
            ratio = torch.as_tensor(r[:, 7:9], dtype=torch.float32)
            scale = torch.as_tensor(r[:, 9:10], dtype=torch.float32)
            if g.kind == "yolo":
                l_xy = F.binary_cross_entropy_with_logits(sel[:, 0:2], off.clamp(0, 1), reduction="none")
                l_wh = 0.5 * (sel[:, 2:4] - torch.log(ratio)) ** 2
            else:
                l_xy = F.binary_cross_entropy_with_logits(sel[:, 0:2], ((off + 0.5) / 2).clamp(0, 1), reduction="none")
                l_wh = F.binary_cross_entropy_with_logits(sel[:, 2:4], (ratio.sqrt() / 2).clamp(0, 0.999),
                                                          reduction="none")
            onehot = F.one_hot(torch.as_tensor(r[:, 10], dtype=torch.long), g.classes).float()
            terms["xy"] = terms["xy"] + (scale * l_xy).sum()
            terms["wh"] = terms["wh"] + (scale * l_wh).sum()
            terms["cls"] = terms["cls"] + F.binary_cross_entropy_with_logits(sel[:, 5:], onehot, reduction="sum")
            obj_t[b, a, gy, gx] = 1.0
        weight = (~ignore | (obj_t > 0)).float()
        terms["obj"] = terms["obj"] + (F.binary_cross_entropy_with_logits(p[..., 4], obj_t, reduction="none")
                                       * weight).sum()
    if parts is not None:
        parts.update({k: float(v.detach()) / bsz for k, v in terms.items()}, pos=len(rows) / bsz)
    return sum(terms.values()) / bsz
