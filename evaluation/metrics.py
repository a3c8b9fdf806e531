"""mAP@0.5 and mAP@0.5:0.95 with a maintained COCO evaluator (faster-coco-eval, else pycocotools).

    evaluate_detections(gt_samples, detections, class_names) -> {"mAP50": ..., "mAP50_95": ..., ...}
    evaluate_fidelity(ann_detections, snn_detections, class_names, score_thr=0.25)

detections[i] are image i's detections, each (cls, score, x1, y1, x2, y2), (cls, score, box) or an object with
.cls, .score, .box (snnc.runtime.host.Detection), boxes in the pixels of the ground truth. The numbers are the
COCO evaluator's own (bbox, area range all, at most `max_dets` detections per image, 101-point interpolated
precision, averaged over the classes that have ground truth): stats[1] is mAP50, stats[0] mAP50_95. A class with
no ground-truth box does not enter the mean; with no ground truth at all the values are NaN. Pass every detection
above a low score threshold (0.001 as YOLO evaluations do) after NMS: thresholding at 0.25 lowers mAP.

Fidelity mode scores a converted network against the original: the ANN's detections at or above `score_thr`
(after NMS) become the ground truth, and the SNN's detections are evaluated against them.
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import Any, Sequence

import numpy as np

from snnc.ir.errors import SnncError
from snnc.evaluation.datasets import Sample, coco_dict

Det = Any  # (cls, score, x1, y1, x2, y2) | (cls, score, box) | object with cls, score, box


def evaluator_name() -> str:
    """The COCO evaluator package in use and its version, e.g. 'faster-coco-eval 1.8.0'."""
    return _evaluator()[2]


def _evaluator():
    try:
        import faster_coco_eval
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster, f"faster-coco-eval {faster_coco_eval.__version__}"
    except ImportError:
        pass
    try:
        from importlib.metadata import version

        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval, f"pycocotools {version('pycocotools')}"
    except ImportError:
        raise SnncError("mAP needs a COCO evaluator: pip install faster-coco-eval (or pycocotools)") from None


def _as_tuple(d: Det) -> tuple[int, float, float, float, float, float]:
    if hasattr(d, "cls") and hasattr(d, "score") and hasattr(d, "box"):
        return (int(d.cls), float(d.score), *(float(v) for v in d.box))
    d = list(d)
    if len(d) == 3:
        return (int(d[0]), float(d[1]), *(float(v) for v in np.asarray(d[2]).reshape(4)))
    if len(d) != 6:
        raise SnncError(f"a detection is (cls, score, x1, y1, x2, y2) or (cls, score, box); got {d!r}")
    return (int(d[0]), float(d[1]), *(float(v) for v in d[2:]))


def _coco(COCO, data: dict):
    coco = COCO()
    coco.dataset = data
    coco.createIndex()
    return coco


def evaluate_detections(gt: Sequence[Sample], detections: Sequence[Sequence[Det]], class_names: Sequence[str],
                        *, max_dets: int = 100) -> dict[str, Any]:
    """COCO bbox evaluation: {"mAP50", "mAP50_95", "AP50_per_class" {name: AP or None}, "images",
    "ground_truth", "detections", "evaluator"}."""
    if len(gt) != len(detections):
        raise SnncError(f"{len(gt)} ground-truth images but detections for {len(detections)}")
    COCO, COCOeval, name = _evaluator()
    k = len(class_names)
    gt_dict = coco_dict(gt, class_names)
    for im in gt_dict["images"]:  # sizes are not used for boxes; keep them valid for the evaluator
        im["width"], im["height"] = max(1, im["width"]), max(1, im["height"])
    results = []
    for i, dets in enumerate(detections):
        for d in dets:
            cls, score, x1, y1, x2, y2 = _as_tuple(d)
            if not 0 <= cls < k:
                raise SnncError(f"image {i}: detection class {cls} outside 0..{k - 1}")
            results.append({"image_id": i + 1, "category_id": cls + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": score})
    n_gt = len(gt_dict["annotations"])
    out: dict[str, Any] = {"images": len(gt), "ground_truth": n_gt, "detections": len(results), "evaluator": name}
    if n_gt == 0:
        return {"mAP50": math.nan, "mAP50_95": math.nan, "AP50_per_class": {str(c): None for c in class_names}, **out}
    present = {a["category_id"] - 1 for a in gt_dict["annotations"]}
    if not results:  # pycocotools cannot load an empty result list; every AP is 0
        per = {str(c): (0.0 if j in present else None) for j, c in enumerate(class_names)}
        return {"mAP50": 0.0, "mAP50_95": 0.0, "AP50_per_class": per, **out}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = _coco(COCO, gt_dict)
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = np.asarray(ev.eval["precision"])  # (iou thresholds, recall points, classes, areas, max dets)
    cat_ids = list(ev.params.catIds)
    per = {}
    for j, c in enumerate(class_names):
        p = precision[0, :, cat_ids.index(j + 1), 0, -1]
        per[str(c)] = float(p[p > -1].mean()) if np.any(p > -1) else None
    return {"mAP50": float(ev.stats[1]), "mAP50_95": float(ev.stats[0]), "AP50_per_class": per, **out}


def reference_samples(reference: Sequence[Sequence[Det]], score_thr: float = 0.25) -> list[Sample]:
    """Detections at or above score_thr as ground-truth samples (no image paths)."""
    samples = []
    for dets in reference:
        kept = [t for t in (_as_tuple(d) for d in dets) if t[1] >= score_thr]
        samples.append(Sample(None, [t[2:] for t in kept], [t[0] for t in kept]))
    return samples


def evaluate_fidelity(reference: Sequence[Sequence[Det]], detections: Sequence[Sequence[Det]],
                      class_names: Sequence[str], score_thr: float = 0.25, *, max_dets: int = 100) -> dict[str, Any]:
    """mAP of `detections` (the SNN's) with the reference's (the ANN's) detections scoring >= score_thr as ground
    truth: 1.0 when the SNN finds exactly the ANN's confident boxes and ranks them above anything else."""
    res = evaluate_detections(reference_samples(reference, score_thr), detections, class_names, max_dets=max_dets)
    res["reference_score_thr"] = score_thr
    return res
