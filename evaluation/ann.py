"""Run an ONNX detector (the ANN) whose outputs are `boxes` (B, N, 4) x1 y1 x2 y2 in input pixels and `scores`
(B, N, C), and turn its outputs into detections for `metrics.evaluate_detections`.

Images go in as snnc prepares them (`snnc.compiler.images.letterbox`: RGB / 255, scaled to fit the input, grey
border), the boxes come back in photo pixels; NMS is `snnc.runtime.host.detections_from` (per class, greedy).
onnxruntime runs with graph optimizations off, as every snnc reference run does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from snnc.ir.errors import SnncError
from snnc.ir.ort import ort_session
from snnc.compiler.images import letterbox

# mAP is measured over every detection above a low score (YOLO practice), after NMS
EVAL_SCORE_THR = 0.001
EVAL_IOU_THR = 0.45
EVAL_MAX_DET = 100


def detections_from_outputs(boxes: np.ndarray, scores: np.ndarray, score_thr: float = EVAL_SCORE_THR,
                            iou_thr: float = EVAL_IOU_THR, max_det: int = EVAL_MAX_DET, letterboxes=None
                            ) -> list[list[tuple]]:
    """boxes (B, N, 4), scores (B, N, C) -> per sample [(cls, score, x1, y1, x2, y2)], best first, after NMS."""
    from snnc.runtime.host import detections_from

    out = []
    for b in range(boxes.shape[0]):
        dets = []
        for cls, score, box in detections_from(boxes[b], scores[b], score_thr, iou_thr, max_det):
            if letterboxes is not None and letterboxes[b] is not None:
                box = letterboxes[b].boxes_to_image(box)
            dets.append((cls, score, *(float(v) for v in box)))
        out.append(dets)
    return out


def _session(model: str | Path | bytes):
    return ort_session(model, what=str(model) if not isinstance(model, bytes) else "the embedded ANN (ann.onnx)")


def run_onnx(model: str | Path | bytes, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, list]:
    """Run the detector on RGB uint8 images (H, W, 3): boxes (n, N, 4), scores (n, N, C) in input pixels, and the
    letterbox of each image."""
    sess = _session(model)
    inp = sess.get_inputs()[0]
    outs = [o.name for o in sess.get_outputs()]
    if "boxes" not in outs or "scores" not in outs:
        raise SnncError(f"{model if not isinstance(model, bytes) else 'model'}: outputs {outs}; expected 'boxes' "
                        "(B, N, 4) and 'scores' (B, N, C)")
    h, w = int(inp.shape[2]), int(inp.shape[3])
    fixed_one = isinstance(inp.shape[0], int) and inp.shape[0] == 1
    batch = 1 if fixed_one else 32
    boxes, scores, letterboxes = [], [], []
    for i in range(0, len(images), batch):
        xs, lbs = zip(*(letterbox(np.asarray(im), (h, w)) for im in images[i:i + batch]))
        b, s = sess.run(["boxes", "scores"], {inp.name: np.stack(xs).astype(np.float32)})
        boxes.append(b)
        scores.append(s)
        letterboxes.extend(lbs)
    return np.concatenate(boxes), np.concatenate(scores), letterboxes


def ann_detections(model: str | Path | bytes, images: Sequence[np.ndarray], score_thr: float = EVAL_SCORE_THR,
                   iou_thr: float = EVAL_IOU_THR, max_det: int = EVAL_MAX_DET) -> list[list[tuple]]:
    """Detections (cls, score, x1, y1, x2, y2) in photo pixels per image."""
    boxes, scores, lbs = run_onnx(model, images)
    return detections_from_outputs(boxes, scores, score_thr, iou_thr, max_det, lbs)


def evaluate_onnx(model: str | Path | bytes, dataset: Any, score_thr: float = EVAL_SCORE_THR,
                  iou_thr: float = EVAL_IOU_THR, max_det: int = EVAL_MAX_DET) -> dict[str, Any]:
    """mAP of the ONNX detector on a set: a `digits.DigitsSet`, or (samples, class_names) from load_dataset."""
    from snnc.evaluation.metrics import evaluate_detections

    if hasattr(dataset, "images") and hasattr(dataset, "samples"):
        images, samples, names = list(dataset.images), dataset.samples(), dataset.class_names
    else:
        samples, names = dataset
        from snnc.compiler.images import read_image

        images = [read_image(s.image_path) for s in samples]
    dets = ann_detections(model, images, score_thr, iou_thr, max_det)
    res = evaluate_detections(samples, dets, names, max_dets=max_det)
    res.update(score_thr=score_thr, iou_thr=iou_thr, max_det=max_det)
    return res


class AnnRunner:
    """The ANN of a .lava file (`Network.ann_onnx`) on preprocessed batches, also returning inner tensors.

    Why: the evaluation feeds the ANN exactly the letterboxed tensor the SNN gets (one preprocessing, no second
    resize) and reads the raw head tensors next to boxes / scores, to measure the SNN's heads against the ANN's.
    `extra` names inner tensors (e.g. Network.output_names values) added as graph outputs; names that are not
    in the graph are left out (`self.extra` says which were kept). A model with a fixed batch of 1 runs image
    by image.
    """

    def __init__(self, model: bytes, extra: Sequence[str] = ()):
        import onnx

        try:
            m = onnx.load_from_string(model)
        except Exception as exc:  # protobuf's DecodeError: a damaged embedded ann.onnx
            raise SnncError(f"the embedded ANN (ann.onnx) is not a readable ONNX model ({exc.__class__.__name__}); "
                            "recompile the model") from None
        produced = {o for n in m.graph.node for o in n.output}
        have = {o.name for o in m.graph.output}
        self.extra = [t for t in dict.fromkeys(extra) if t in produced and t not in have]
        for t in self.extra:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
        self.session = _session(m.SerializeToString())
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.batch_one = isinstance(inp.shape[0], int) and inp.shape[0] == 1
        self.nms_form = "boxes" not in self.outputs or "scores" not in self.outputs
        if self.nms_form:  # NMS inside the graph: its kept detections become boxes / one-hot scores in run()
            from snnc.runtime.host import nms_outputs

            probe = self._run(np.zeros([1] + [int(d) for d in inp.shape[1:]], np.float32))
            if nms_outputs({k: v for k, v in probe.items() if k not in self.extra}) is None:
                raise SnncError(f"the embedded ANN outputs {[o.name for o in m.graph.output]}; the evaluation needs "
                                "'boxes' (B, N, 4) and 'scores' (B, N, C), or the kept detections of NMS in the "
                                "graph (docs/frontends.md)")
            names = next((json.loads(p.value) for p in m.metadata_props if p.key == "snnc.class_names"), None)
            self.num_classes = len(names) if isinstance(names, list) else None
            return
        scores = next(o for o in m.graph.output if o.name == "scores")
        dims = [d.dim_value for d in scores.type.tensor_type.shape.dim]
        self.num_classes = int(dims[-1]) if dims and dims[-1] > 0 else None

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """x (B, C, H, W) float32 -> {output name: (B, ...)} for boxes, scores and the extra tensors."""
        out = self._run(x)
        if self.nms_form:
            from snnc.runtime.host import nms_outputs

            out["boxes"], out["scores"] = nms_outputs({k: v for k, v in out.items() if k not in self.extra},
                                                      self.num_classes)
        return out

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        from snnc.runtime.host import stack_samples

        x = np.ascontiguousarray(x, dtype=np.float32)
        if not self.batch_one:
            return dict(zip(self.outputs, self.session.run(self.outputs, {self.input_name: x})))
        parts = [self.session.run(self.outputs, {self.input_name: x[i:i + 1]}) for i in range(x.shape[0])]
        return {n: stack_samples([p[j] for p in parts]) for j, n in enumerate(self.outputs)}
