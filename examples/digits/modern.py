"""YOLOv5- and YOLOv8-style digits detectors (small width and depth, ReLU), defined here from the published
architectures, and their ONNX exports.

Blocks (as in ultralytics' YOLOv5 v6.0 / YOLOv8 definitions, with ReLU instead of SiLU):

    Conv        conv k x k (stride s) + BatchNorm + ReLU
    Bottleneck  x + cv2(cv1(x))  (1x1 then 3x3 in v5; 3x3 then 3x3 in v8), the residual Add
    C3 (v5)     cv3(cat(m(cv1(x)), cv2(x)))                         two 1x1 branches, n bottlenecks
    C2f (v8)    cv2(cat(y0, y1, m1(y1), ..., mn(...))), (y0, y1) = split(cv1(x))   channel Split, many-input Concat
    SPPF        cv2(cat(x, p(x), p(p(x)), p(p(p(x))))), p = MaxPool 5x5 stride 1 pad 2 on x = cv1(input)

Network for 64x64 digits canvases (strides 4 and 8, like the yolov3-tiny-style digits model):

    stem Conv 3x3 s2 (32x32) -> Conv 3x3 s2 (16x16) -> C3/C2f = P3 -> Conv 3x3 s2 (8x8) -> C3/C2f -> SPPF = P4
    neck (PAN): Conv 1x1 (v5) on P4 -> nearest x2 -> Concat with P3 -> C3/C2f = N3 (stride 4)
                N3 -> Conv 3x3 s2 -> Concat with the P4 branch -> C3/C2f = N4 (stride 8)
    v5 head: one 1x1 conv per level, 3 anchors x (5 + 10) channels; decoded with YOLOv5's box coding
    v8 head: per level a box branch (3x3, 3x3, 1x1 -> 4 x REG_MAX) and a class branch (3x3, 3x3, 1x1 -> 10),
             anchor-free; decoding: DFL (softmax over REG_MAX bins, then the expectation as a 1x1 conv) gives the
             left/top/right/bottom distances from the cell centre, scores = sigmoid(class logits)

Exports (`export`): "raw" (the head convolutions are the outputs; v5 only: compile with --head yolov5),
"decoded" (outputs boxes (1, N, 4) x1 y1 x2 y2 in input pixels and scores (1, N, 10)) and "nms" (the decoded
graph followed by ONNX NonMaxSuppression: det_boxes, det_scores, det_classes).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_CLASSES = 10
NA = 3
REG_MAX = 8
STRIDES = (8, 4)  # heads in output order: stride 8 (8x8), stride 4 (16x16)


class Conv(nn.Sequential):
    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1):
        super().__init__(nn.Conv2d(c1, c2, k, s, k // 2, bias=False), nn.BatchNorm2d(c2), nn.ReLU())


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool = True, k1: int = 1):
        super().__init__()
        self.cv1, self.cv2 = Conv(c, c, k1), Conv(c, c, 3)
        self.add = shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True):
        super().__init__()
        c_ = c2 // 2
        self.cv1, self.cv2, self.cv3 = Conv(c1, c_), Conv(c1, c_), Conv(2 * c_, c2)
        self.m = nn.Sequential(*(Bottleneck(c_, shortcut, 1) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat([self.m(self.cv1(x)), self.cv2(x)], 1))


class C2f(nn.Module):
    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True):
        super().__init__()
        self.c = c2 // 2
        self.cv1, self.cv2 = Conv(c1, 2 * self.c), Conv((2 + n) * self.c, c2)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut, 3) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__()
        c_ = c1 // 2
        self.cv1, self.cv2 = Conv(c1, c_), Conv(4 * c_, c2)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat([x, y1, y2, self.m(y2)], 1))


def _grid(n: int) -> torch.Tensor:
    gy, gx = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32),
                            indexing="ij")
    return torch.stack([gx, gy], -1)  # (n, n, 2) as (x, y)


class DigitsV5(nn.Module):
    """YOLOv5-style: C3 blocks, SPPF, PAN neck, anchor-based heads (anchors (2, NA, 2) px, head 0 = stride 8)."""

    kind = "v5"

    def __init__(self, anchors, width: int = 16, depth: int = 1):
        super().__init__()
        w, B = width, C3
        self.b0, self.b1, self.b2 = Conv(3, w, 3, 2), Conv(w, 2 * w, 3, 2), B(2 * w, 2 * w, depth)
        self.b3, self.b4, self.sppf = Conv(2 * w, 4 * w, 3, 2), B(4 * w, 4 * w, depth), SPPF(4 * w, 4 * w)
        self.lat = Conv(4 * w, 2 * w, 1)
        self.n3 = B(4 * w, 2 * w, depth, shortcut=False)
        self.down = Conv(2 * w, 2 * w, 3, 2)
        self.n4 = B(4 * w, 4 * w, depth, shortcut=False)
        self.head8 = nn.Conv2d(4 * w, NA * (5 + NUM_CLASSES), 1)
        self.head16 = nn.Conv2d(2 * w, NA * (5 + NUM_CLASSES), 1)
        self.register_buffer("anchors", torch.as_tensor(anchors, dtype=torch.float32).view(2, NA, 2))
        for head in (self.head8, self.head16):
            bias = head.bias.data.view(NA, 5 + NUM_CLASSES)
            bias[:, 4] = -4.6
            bias[:, 5:] = -2.2
        self.mode = "raw"

    def heads(self, x):
        p3 = self.b2(self.b1(self.b0(x)))
        p4 = self.sppf(self.b4(self.b3(p3)))
        lat = self.lat(p4)
        n3 = self.n3(torch.cat([F.interpolate(lat, scale_factor=2, mode="nearest"), p3], 1))
        n4 = self.n4(torch.cat([self.down(n3), lat], 1))
        return [self.head8(n4), self.head16(n3)]

    def decode(self, hs):
        boxes, scores = [], []
        for i, (h, stride) in enumerate(zip(hs, STRIDES)):
            b, n = h.shape[0], h.shape[-1]
            p = h.view(b, NA, 5 + NUM_CLASSES, n * n).transpose(2, 3)  # (b, NA, n*n, 5 + C)
            xy = (p[..., 0:2].sigmoid() * 2 - 0.5 + _grid(n).view(1, 1, n * n, 2)) * stride
            wh = (p[..., 2:4].sigmoid() * 2) ** 2 * self.anchors[i].view(1, NA, 1, 2)
            boxes.append(torch.cat([xy - wh / 2, xy + wh / 2], -1).reshape(b, -1, 4))
            scores.append((p[..., 4:5].sigmoid() * p[..., 5:].sigmoid()).reshape(b, -1, NUM_CLASSES))
        return torch.cat(boxes, 1), torch.cat(scores, 1)

    def forward(self, x):
        hs = self.heads(x)
        return hs if self.mode == "raw" else self.decode(hs)


class DFL(nn.Module):
    """Expectation over REG_MAX distance bins: a fixed 1x1 conv (weights 0..REG_MAX-1) after a softmax."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(REG_MAX, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(REG_MAX, dtype=torch.float32).view(1, REG_MAX, 1, 1)

    def forward(self, x):  # (b, 4 * REG_MAX, a) -> (b, 4, a)
        b, _, a = x.shape
        return self.conv(x.view(b, 4, REG_MAX, a).transpose(2, 1).softmax(1)).view(b, 4, a)


class DigitsV8(nn.Module):
    """YOLOv8-style: C2f blocks, SPPF, PAN neck, anchor-free decoupled heads with DFL."""

    kind = "v8"

    def __init__(self, width: int = 16, depth: int = 1):
        super().__init__()
        w, B = width, C2f
        self.b0, self.b1, self.b2 = Conv(3, w, 3, 2), Conv(w, 2 * w, 3, 2), B(2 * w, 2 * w, depth)
        self.b3, self.b4, self.sppf = Conv(2 * w, 4 * w, 3, 2), B(4 * w, 4 * w, depth), SPPF(4 * w, 4 * w)
        self.n3 = B(6 * w, 2 * w, depth, shortcut=False)
        self.down = Conv(2 * w, 2 * w, 3, 2)
        self.n4 = B(6 * w, 4 * w, depth, shortcut=False)
        # branch widths as ultralytics' Detect: c2 = max(16, ch0 // 4, 4 * reg_max), c3 = max(ch0, min(nc, 100)),
        # ch0 = 2w, the first level's channels (half that, as before, cost 0.1 mAP@0.5 in classification)
        cb, cc = max(16, 2 * w // 4, 4 * REG_MAX), max(2 * w, min(NUM_CLASSES, 100))
        self.box = nn.ModuleList(nn.Sequential(Conv(c, cb, 3), Conv(cb, cb, 3), nn.Conv2d(cb, 4 * REG_MAX, 1))
                                 for c in (4 * w, 2 * w))
        self.cls = nn.ModuleList(nn.Sequential(Conv(c, cc, 3), Conv(cc, cc, 3), nn.Conv2d(cc, NUM_CLASSES, 1))
                                 for c in (4 * w, 2 * w))
        for seq, s in zip(self.cls, STRIDES):  # class prior as in ultralytics' bias_init
            seq[-1].bias.data[:] = -4.0
        self.dfl = DFL()
        self.mode = "raw"

    def heads(self, x):
        p3 = self.b2(self.b1(self.b0(x)))
        p4 = self.sppf(self.b4(self.b3(p3)))
        n3 = self.n3(torch.cat([F.interpolate(p4, scale_factor=2, mode="nearest"), p3], 1))
        n4 = self.n4(torch.cat([self.down(n3), p4], 1))
        return [torch.cat([self.box[i](f), self.cls[i](f)], 1) for i, f in enumerate((n4, n3))]

    def decode(self, hs):
        b = hs[0].shape[0]
        x = torch.cat([h.view(b, 4 * REG_MAX + NUM_CLASSES, -1) for h in hs], 2)  # (b, 4R + C, N)
        dist = self.dfl(x[:, :4 * REG_MAX])  # (b, 4, N): left, top, right, bottom in cells
        points = torch.cat([(_grid(h.shape[-1]).view(-1, 2) + 0.5) for h in hs]).T  # (2, N)
        stride = torch.cat([torch.full((h.shape[-1] ** 2,), float(s)) for h, s in zip(hs, STRIDES)])
        x1y1 = (points - dist[:, :2]) * stride
        x2y2 = (points + dist[:, 2:]) * stride
        boxes = torch.cat([x1y1, x2y2], 1).transpose(1, 2)
        return boxes, x[:, 4 * REG_MAX:].sigmoid().transpose(1, 2)

    def forward(self, x):
        hs = self.heads(x)
        return hs if self.mode == "raw" else self.decode(hs)


def export(model: nn.Module, path: Path, form: str, size: int = 64, opset: int = 17) -> None:
    """Write the ONNX export: form "raw", "decoded" or "nms" (see the module docstring)."""
    import onnx

    from snnc.compiler.heads import append_nms
    from snnc.evaluation.digits import CLASS_NAMES

    model.eval()
    model.mode = "raw" if form == "raw" else "decoded"
    names = ["head8", "head16"] if form == "raw" else ["boxes", "scores"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but still the one for static graphs
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, size, size),), str(path), input_names=["images"],
                          output_names=names, opset_version=opset, dynamo=False, do_constant_folding=True)
    model.mode = "raw"
    m = onnx.load(str(path))
    if form == "nms":
        m = append_nms(m, iou_thr=0.45, score_thr=0.001, max_per_class=100)
    del m.metadata_props[:]
    m.metadata_props.add(key="snnc.class_names", value=json.dumps(CLASS_NAMES))
    m.producer_name = "snnc examples/digits/modern.py"
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
