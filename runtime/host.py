"""The host side of a compiled detector: decoded SNN heads -> boxes, scores, NMS, detections on the photo.

The spiking part ends at the raw head tensors (the linear 1x1 convolutions). What follows in the original model
(sigmoid, exp, anchors, grid offsets) is kept as an ONNX graph, `Network.host_onnx`, whose inputs are the head
tensors under the names `Network.output_names[layer]` gives and whose outputs are `boxes` (B, N, 4) as
x1, y1, x2, y2 in input-tensor pixels and `scores` (B, N, C). `detect` runs it with onnxruntime on the decoded
heads of a simulation (`SimResult.outputs[T]`), keeps (box, class) pairs scoring at least `score_thr`, runs
greedy NMS per class (IoU above `iou_thr` suppresses), keeps the `max_det` best and maps the boxes back to the
photo with the letterbox. Graphs with NMS inside may instead output the kept detections: `det_boxes` /
`boxes` (B, K, 4) with `det_scores` / `scores` (B, K) and `det_classes` / `classes` / `labels` (B, K), or one
(B, K, 6) tensor x1, y1, x2, y2, score, class named `detections` (or `dets`, `det`, `nms`); each kept
(box, class) becomes a one-hot score row, so the thresholds and NMS above leave them as they are
(docs/frontends.md). Host graphs with other outputs (one raw
(B, N, 5 + C) tensor, say) raise SnncError; `run_host` still runs them and returns whatever they output.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from snnc.ir.errors import SnncError
from snnc.ir.ort import ort_session
from snnc.compiler.images import Letterbox
from snnc.ir.network import Network

log = logging.getLogger(__name__)

SCORE_THR = 0.25
IOU_THR = 0.45
MAX_DET = 300
MAX_CANDIDATES = 30000  # (box, class) pairs entering NMS, the highest scoring


@dataclass(frozen=True)
class Detection:
    cls: int
    name: str
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in photo pixels (input pixels without a letterbox)

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.cls, "name": self.name, "score": round(self.score, 6),
                "box": [round(float(v), 2) for v in self.box]}


class DetectionBatch(list):
    """list[list[Detection]], one list per sample, plus `raw` (the host graph's outputs, or the decoded heads
    when there is no host graph) and `message` (why there are no detections, or None)."""

    def __init__(self, items: Iterable[list[Detection]] = (), raw: dict[str, np.ndarray] | None = None,
                 message: str | None = None):
        super().__init__(items)
        self.raw = raw or {}
        self.message = message


# ---- geometry ---------------------------------------------------------------------------------------------------

def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes a (N, 4) and b (M, 4), x1 y1 x2 y2: an (N, M) array (a 1-D box gives a 1-D row)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    single = a.ndim == 1
    a2, b2 = a.reshape(-1, 4), b.reshape(-1, 4)
    lt = np.maximum(a2[:, None, :2], b2[None, :, :2])
    rb = np.minimum(a2[:, None, 2:], b2[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a2[:, 2:] - a2[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b2[:, 2:] - b2[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    out = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return out[0] if single else out


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float = IOU_THR, classes: np.ndarray | None = None,
        top_k: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes, best score first.

    A box is suppressed by a better one of the same class (all one class when `classes` is None) whose IoU
    with it exceeds iou_thr. Ties in score keep the lower index first. top_k limits the kept boxes.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if boxes.shape[0] != scores.shape[0]:
        raise SnncError(f"nms: {boxes.shape[0]} boxes but {scores.shape[0]} scores")
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    if classes is not None:
        # per-class NMS in one pass: move each class's boxes to its own region of the plane
        span = float(np.abs(boxes).max()) * 2 + 1
        boxes = boxes + (np.asarray(classes, dtype=np.float64).reshape(-1, 1) * span)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if top_k is not None and len(keep) >= top_k:
            break
        rest = order[1:]
        order = rest[iou(boxes[i], boxes[rest]) <= iou_thr]
    return np.asarray(keep, dtype=np.int64)


def boxes_to_input(letterbox: Letterbox, boxes_xyxy: np.ndarray) -> np.ndarray:
    """Photo pixels -> input-tensor pixels (the inverse of Letterbox.boxes_to_image, without clipping)."""
    b = np.asarray(boxes_xyxy, dtype=np.float64).copy()
    b[..., [0, 2]] = b[..., [0, 2]] * letterbox.scale + letterbox.left
    b[..., [1, 3]] = b[..., [1, 3]] * letterbox.scale + letterbox.top
    return b


# ---- the host graph ---------------------------------------------------------------------------------------------

_SESSIONS: dict[str, Any] = {}


def _session(host_onnx: bytes):
    key = hashlib.sha1(host_onnx).hexdigest()
    sess = _SESSIONS.get(key)
    if sess is None:
        sess = ort_session(host_onnx, what="the .lava file's host graph (recompile the model)")
        if len(_SESSIONS) > 8:
            _SESSIONS.clear()
        _SESSIONS[key] = sess
    return sess


def _feeds(net: Network, head_outputs: Mapping[str, np.ndarray], extra_inputs: Mapping[str, np.ndarray] | None,
           input_names: Sequence[str]) -> dict[str, np.ndarray]:
    by_tensor: dict[str, np.ndarray] = {}
    for key, value in head_outputs.items():
        by_tensor[net.output_names.get(key, key)] = np.asarray(value, dtype=np.float32)
    for key, value in (extra_inputs or {}).items():
        by_tensor[key] = np.asarray(value, dtype=np.float32)
    missing = [n for n in input_names if n not in by_tensor]
    if missing:
        have = sorted(by_tensor)
        raise SnncError(f"the host graph needs input(s) {missing}; given {have} (head outputs are keyed by layer "
                        f"name {list(net.outputs)} or tensor name {[net.output_names.get(o, o) for o in net.outputs]})")
    return {n: by_tensor[n] for n in input_names}


def run_host(net: Network, head_outputs: Mapping[str, np.ndarray],
             extra_inputs: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Run the host graph on decoded heads (B, ...) and return its outputs by name.

    Without a host graph the heads themselves come back, keyed by tensor name, with a log message.
    A host graph with a fixed batch of 1 runs sample by sample.
    """
    if net.host_onnx is None:
        log.warning("this network has no host graph: returning the decoded head tensors, no boxes")
        return {net.output_names.get(k, k): np.asarray(v) for k, v in head_outputs.items()}
    sess = _session(net.host_onnx)
    inputs = sess.get_inputs()
    names = [o.name for o in sess.get_outputs()]
    feeds = _feeds(net, head_outputs, extra_inputs, [i.name for i in inputs])
    batches = {v.shape[0] for v in feeds.values()}
    if len(batches) != 1:
        raise SnncError(f"host graph inputs have different batch sizes {sorted(batches)}")
    batch = batches.pop()
    fixed_one = all(i.shape and i.shape[0] == 1 for i in inputs)
    try:
        if fixed_one and batch != 1:
            parts = [sess.run(names, {k: v[b:b + 1] for k, v in feeds.items()}) for b in range(batch)]
            return {n: stack_samples([p[j] for p in parts]) for j, n in enumerate(names)}
        return dict(zip(names, sess.run(names, feeds)))
    except Exception as exc:  # onnxruntime's own exception types (shape mismatches)
        shapes = {k: tuple(v.shape) for k, v in feeds.items()}
        raise SnncError(f"the host graph failed on heads of shapes {shapes}: {exc}") from None


def stack_samples(parts: list[np.ndarray]) -> np.ndarray:
    """Per-sample outputs (1, ...) -> (B, ...); NMS outputs differ in their kept count K (axis 1), so shorter ones
    are padded with zeros (score 0: below every threshold)."""
    if len({p.shape for p in parts}) == 1 or any(p.ndim < 2 for p in parts):
        return np.concatenate(parts)
    k = max(p.shape[1] for p in parts)
    return np.concatenate([np.pad(p, [(0, 0), (0, k - p.shape[1])] + [(0, 0)] * (p.ndim - 2)) for p in parts])


_NMS_CLASSES = ("det_classes", "classes", "labels", "class_ids", "det_labels")
_NMS_SINGLE = ("detections", "dets", "det", "nms")


def _one_hot(scores: np.ndarray, classes: np.ndarray, n_classes: int | None) -> np.ndarray:
    """Kept detections (B, K) scores and class indices -> (B, K, C) scores, one class per row."""
    cls = np.asarray(classes).astype(np.int64)
    c = max(int(n_classes or 0), int(cls.max()) + 1 if cls.size else 1)
    out = np.zeros(cls.shape + (c,), dtype=np.float32)
    np.put_along_axis(out, np.clip(cls, 0, c - 1)[..., None], np.asarray(scores, np.float32)[..., None], axis=-1)
    return out


def nms_outputs(outputs: Mapping[str, np.ndarray], n_classes: int | None = None
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """boxes (B, K, 4) and one-hot scores (B, K, C) from the NMS-in-graph output forms (module docstring), or None
    when `outputs` is not one of them."""
    lower = {k.lower(): k for k in outputs}
    cls_key = next((lower[k] for k in _NMS_CLASSES if k in lower), None)
    box_key = next((lower[k] for k in ("det_boxes", "boxes") if k in lower), None)
    score_key = next((lower[k] for k in ("det_scores", "scores") if k in lower), None)
    if cls_key and box_key and score_key and outputs[score_key].ndim == 2:
        return outputs[box_key], _one_hot(outputs[score_key], outputs[cls_key], n_classes)
    if len(outputs) == 1 and next(iter(lower)) in _NMS_SINGLE:  # named: a raw (B, N, 5 + 1) tensor is 6 wide too
        (v,) = outputs.values()
        if v.ndim == 3 and v.shape[2] == 6:
            return v[..., :4], _one_hot(v[..., 4], v[..., 5], n_classes)
    return None


def _boxes_and_scores(outputs: dict[str, np.ndarray], n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    lower = {k.lower(): k for k in outputs}
    nms_form = nms_outputs(outputs, n_classes)
    if nms_form is not None:
        boxes, scores = nms_form
    elif "boxes" in lower and "scores" in lower:
        boxes, scores = outputs[lower["boxes"]], outputs[lower["scores"]]
    else:
        rank3 = {k: v for k, v in outputs.items() if v.ndim == 3}
        box_keys = [k for k, v in rank3.items() if v.shape[2] == 4]
        score_keys = [k for k, v in rank3.items() if k not in box_keys]
        if len(box_keys) != 1 or len(score_keys) != 1:
            shapes = {k: tuple(v.shape) for k, v in outputs.items()}
            raise SnncError(
                f"the host graph outputs {shapes}; detect() needs 'boxes' (B, N, 4) as x1, y1, x2, y2 in input "
                "pixels and 'scores' (B, N, classes). This host graph outputs raw decoded tensors in another layout: "
                "re-export the model with box decoding to boxes/scores, or decode snnc.runtime.host.run_host()'s "
                "outputs yourself")
        boxes, scores = outputs[box_keys[0]], outputs[score_keys[0]]
    if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.ndim != 3 or scores.shape[:2] != boxes.shape[:2]:
        raise SnncError(f"host graph outputs boxes {tuple(boxes.shape)} and scores {tuple(scores.shape)}; expected "
                        "(B, N, 4) and (B, N, classes) with the same B and N")
    return boxes, scores


def class_name(net: Network, cls: int) -> str:
    names = net.meta.get("class_names") if net.meta else None
    if isinstance(names, Mapping):
        return str(names.get(cls, names.get(str(cls), cls)))
    if isinstance(names, Sequence) and not isinstance(names, str) and 0 <= cls < len(names):
        return str(names[cls])
    return str(cls)


def detections_from(boxes: np.ndarray, scores: np.ndarray, score_thr: float = SCORE_THR, iou_thr: float = IOU_THR,
                    max_det: int = MAX_DET, class_agnostic: bool = False) -> list[tuple[int, float, np.ndarray]]:
    """One sample: boxes (N, 4), scores (N, C) -> [(class, score, box)] after thresholding and NMS, best first.

    Every (box, class) pair with score >= score_thr is a candidate (a box may carry several classes).
    """
    scores = np.asarray(scores, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64)
    idx, cls = np.nonzero(scores >= score_thr)
    if idx.size == 0:
        return []
    cand = scores[idx, cls]
    if cand.size > MAX_CANDIDATES:
        top = np.argsort(-cand, kind="stable")[:MAX_CANDIDATES]
        idx, cls, cand = idx[top], cls[top], cand[top]
    keep = nms(boxes[idx], cand, iou_thr, classes=None if class_agnostic else cls, top_k=max_det)
    return [(int(cls[k]), float(cand[k]), boxes[idx[k]]) for k in keep]


def detect(net: Network, head_outputs: Mapping[str, np.ndarray], letterboxes: Sequence[Letterbox | None] | None = None,
           score_thr: float = SCORE_THR, iou_thr: float = IOU_THR, *, max_det: int = MAX_DET,
           class_agnostic: bool = False, extra_inputs: Mapping[str, np.ndarray] | None = None) -> DetectionBatch:
    """Detections per sample from decoded heads {layer or tensor name: (B, ...)}, e.g. SimResult.outputs[T].

    letterboxes[b] maps sample b's boxes back to its photo (None: keep input-tensor pixels). Without a host graph
    the result holds no detections, `message` says why and `raw` holds the heads.
    """
    if not head_outputs:
        raise SnncError("detect() got no head outputs")
    batch = next(iter(head_outputs.values())).shape[0]
    if net.host_onnx is None:
        msg = ("this network has no host graph (box decoding and NMS were not part of the ONNX model), so there "
               "are no detections; the decoded head tensors are in .raw")
        log.warning(msg)
        return DetectionBatch([[] for _ in range(batch)], raw=run_host(net, head_outputs), message=msg)
    outputs = run_host(net, head_outputs, extra_inputs)
    names = net.meta.get("class_names") if net.meta else None
    boxes, scores = _boxes_and_scores(outputs, len(names) if isinstance(names, Sequence) else None)
    if letterboxes is not None and len(letterboxes) != boxes.shape[0]:
        raise SnncError(f"{len(letterboxes)} letterboxes for a batch of {boxes.shape[0]}")
    result = []
    for b in range(boxes.shape[0]):
        found = detections_from(boxes[b], scores[b], score_thr, iou_thr, max_det, class_agnostic)
        lb = letterboxes[b] if letterboxes is not None else None
        dets = []
        for cls, score, box in found:
            if lb is not None:
                box = lb.boxes_to_image(box)
            dets.append(Detection(cls, class_name(net, cls), score, tuple(float(v) for v in box)))
        result.append(dets)
    return DetectionBatch(result, raw=outputs)


# ---- output -----------------------------------------------------------------------------------------------------

_PALETTE = [(255, 56, 56), (255, 157, 151), (255, 112, 31), (255, 178, 29), (207, 210, 49), (72, 249, 10),
            (146, 204, 23), (61, 219, 134), (26, 147, 52), (0, 212, 187), (44, 153, 168), (0, 194, 255),
            (52, 69, 147), (100, 115, 255), (0, 24, 236), (132, 56, 255), (82, 0, 133), (203, 56, 255),
            (255, 149, 200), (255, 55, 199)]


def draw_detections(rgb: np.ndarray, detections: Sequence[Detection], path: str | Path | None = None):
    """Boxes and 'name score' labels drawn on a copy of the photo (H, W, 3) uint8; saved as PNG when path is given.

    Returns the PIL image.
    """
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.asarray(rgb, dtype=np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(img)
    width = max(1, round(max(img.size) / 300))
    for d in detections:
        color = _PALETTE[d.cls % len(_PALETTE)]
        if not all(np.isfinite(d.box)):
            continue
        # A host graph may emit corners in either order; PIL draws only (min, max) corners.
        (x1, x2), (y1, y2) = sorted(d.box[0::2]), sorted(d.box[1::2])
        draw.rectangle([x1, y1, x2, y2], outline=color, width=width)
        label = f"{d.name} {d.score:.2f}"
        tx, ty = x1, max(0.0, y1 - 11)
        try:
            left, top, right, bottom = draw.textbbox((tx, ty), label)
            draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=color)
        except AttributeError:  # Pillow < 8
            pass
        draw.text((tx, ty), label, fill=(255, 255, 255))
    if path is not None:
        img.save(Path(path), format="PNG")
    return img


def draw_comparison(rgb: np.ndarray, left: Sequence[Detection], right: Sequence[Detection],
                    titles: tuple[str, str] = ("ANN", "SNN"), path: str | Path | None = None):
    """Two copies of the photo side by side, `left` detections drawn on the first and `right` on the second,
    each under its title; saved as PNG when path is given. Returns the PIL image."""
    import dataclasses

    from PIL import Image, ImageDraw

    rgb = np.asarray(rgb, dtype=np.uint8)
    k = max(1, int(np.ceil(320 / max(rgb.shape[:2]))))  # small inputs (digits, 64 px) scaled up to be legible
    if k > 1:
        rgb = rgb.repeat(k, 0).repeat(k, 1)
        left, right = ([dataclasses.replace(d, box=tuple(v * k for v in d.box)) for d in dets] for dets in (left, right))
    a, b = draw_detections(rgb, left), draw_detections(rgb, right)
    bar = 16
    out = Image.new("RGB", (a.width + b.width + 8, a.height + bar), (255, 255, 255))
    out.paste(a, (0, bar))
    out.paste(b, (a.width + 8, bar))
    draw = ImageDraw.Draw(out)
    draw.text((4, 2), titles[0], fill=(0, 0, 0))
    draw.text((a.width + 12, 2), titles[1], fill=(0, 0, 0))
    if path is not None:
        out.save(Path(path), format="PNG")
    return out


def detections_to_json(detections: Sequence[Detection] | Sequence[Sequence[Detection]],
                       images: Sequence[str] | None = None, path: str | Path | None = None) -> Any:
    """JSON-ready form: a list of {class, name, score, box} for one image, or for a batch a list of
    {"image": name or index, "detections": [...]}. Written (indented) to `path` when given."""
    batch = len(detections) > 0 and not isinstance(detections[0], Detection)
    if batch or (images is not None and len(detections) == 0):
        out: Any = [{"image": images[i] if images is not None else i, "detections": [d.to_dict() for d in dets]}
                    for i, dets in enumerate(detections)]
    else:
        out = [d.to_dict() for d in detections]
    if path is not None:
        Path(path).write_text(json.dumps(out, indent=1) + "\n")
    return out
