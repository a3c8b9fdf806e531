"""`run_network`: photos -> detections of a compiled spiking detector (the Python API behind `snnc run`).

The photos are letterboxed as the network's `preprocess` says, simulated on the chosen backend for max(T) steps
(every checkpoint in T from the same run), the decoded heads go through the host graph (box decoding + NMS,
`snnc.runtime.host.detect`) and the boxes are mapped back to photo pixels. With `ann=True` the original ANN
embedded in the .lava file runs on the same tensors through onnxruntime, so both sets of detections can be put
side by side.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from snnc.ir.annref import missing_reason
from snnc.ir.errors import SnncError
from snnc.ir.ort import ort_session
from snnc.runtime.host import IOU_THR, SCORE_THR, Detection, detect, detections_from
from snnc.compiler.images import IMAGE_SUFFIXES, Letterbox, letterbox, read_image
from snnc.ir.network import Network
from snnc.ir.options import SimOptions, sim_options
from snnc.backends import checkpoints, get_backend

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """Detections per checkpoint T and image, the ANN's (if asked for) and the run's activity figures."""

    images: list[str]
    photos: list[np.ndarray]  # RGB uint8, as read
    detections: dict[int, list[list[Detection]]]  # T -> per image
    ann_detections: list[list[Detection]] | None
    figures: dict[str, Any]
    heads: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  # T -> decoded head tensors (B, ...)

    @property
    def T(self) -> int:
        return max(self.detections)


def collect_images(paths: Sequence[str | Path]) -> list[Path]:
    """Image files from a list of files and folders (a folder contributes its jpg/png files, sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise SnncError(f"{p}: no jpg/png images in this folder")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise SnncError(f"{p}: no such image file or folder")
    if not out:
        raise SnncError("no images given: pass --image photo.jpg (or a folder)")
    return out


def preprocess(net: Network, photos: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]:
    """(B, C, H, W) input tensors and the letterbox of each photo, as the network's preprocess record says."""
    pre = net.preprocess or {}
    shape = pre.get("shape") or list(net.input_layers[0].shape)
    if len(shape) != 3 or shape[0] != 3:
        raise SnncError(f"the network takes input of shape {shape}; photos need a 3-channel (RGB) input")
    xs, lbs = [], []
    for rgb in photos:
        x, lb = letterbox(rgb, (int(shape[1]), int(shape[2])), float(pre.get("pad_value", 0.5)))
        xs.append(x)
        lbs.append(lb)
    return np.stack(xs), lbs


def ann_detections(net: Network, x: np.ndarray, letterboxes: Sequence[Letterbox], score_thr: float = SCORE_THR,
                   iou_thr: float = IOU_THR) -> list[list[Detection]]:
    """The original ANN (net.ann_onnx) on the same input tensors, through onnxruntime with optimizations off."""
    if net.ann_onnx is None:
        raise SnncError(f"this .lava file has no ANN: {missing_reason(net.ann_note)}")
    from snnc.runtime.host import class_name

    sess = ort_session(net.ann_onnx, what="the .lava file's embedded ANN (ann.onnx; recompile the model)")
    name = sess.get_inputs()[0].name
    outs = [o.name for o in sess.get_outputs()]
    if "boxes" not in outs or "scores" not in outs:
        raise SnncError(f"the embedded ANN outputs {outs}; detections need 'boxes' and 'scores'")
    result = []
    for b in range(x.shape[0]):
        try:
            boxes, scores = sess.run(["boxes", "scores"], {name: x[b:b + 1]})
        except Exception as exc:  # onnxruntime: the embedded ANN does not fit the network's input
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), exc.__class__.__name__)
            raise SnncError(f"the embedded ANN (ann.onnx) cannot run on this network's input ({first[:160]})") from None
        dets = []
        for cls, score, box in detections_from(boxes[0], scores[0], score_thr, iou_thr):
            box = letterboxes[b].boxes_to_image(box)
            dets.append(Detection(cls, class_name(net, cls), score, tuple(float(v) for v in box)))
        result.append(dets)
    return result


def activity_figures(net: Network, sim: Any, T: int) -> dict[str, Any]:
    """Spikes per layer and image, firing rates, SOPs and the energy estimate at T (docs/methods.md section 8)."""
    from snnc.compiler.energy import energy_report

    counts = sim.extra.get("spike_counts_at", {}).get(T, sim.spike_counts)
    per_image = {k: float(np.mean(v)) for k, v in counts.items()}
    neurons = sim.neurons
    rates = {k: per_image[k] / (neurons[k] * T) for k in per_image}
    total_neurons = sum(neurons.values())
    figures: dict[str, Any] = {
        "T": int(T), "spikes_per_layer": per_image, "firing_rates": rates,
        "overall_firing_rate": sum(per_image.values()) / (total_neurons * T) if total_neurons else 0.0,
        "neurons": int(total_neurons)}
    try:
        rep = energy_report(net, per_image, T)
        figures["energy"] = {"snn_sops": rep["snn_sops"], "snn_analog_macs": rep["snn_macs"],
                             "ann_macs": rep["ann_macs"], "energy_pj": rep["energy_pj"]}
    except SnncError as exc:  # e.g. rate-encoded input without input spike counts from this backend
        log.warning("no energy estimate: %s", exc)
    return figures


RUN_BATCH = 8  # photos per simulator call: a folder of many photos must not become one huge batch


def _simulate_in_batches(be: Any, net: Network, x: np.ndarray, ts: list[int], options: SimOptions) -> Any:
    """backend.simulate on RUN_BATCH photos at a time, the results joined along the batch axis."""
    from snnc.backends import SimResult

    parts = [be.simulate(net, x[a:a + RUN_BATCH], ts, options) for a in range(0, x.shape[0], RUN_BATCH)]
    if len(parts) == 1:
        return parts[0]
    join = np.concatenate
    outputs = {t: {k: join([p.outputs[t][k] for p in parts]) for k in parts[0].outputs[t]} for t in ts}
    counts = {k: join([p.spike_counts[k] for p in parts]) for k in parts[0].spike_counts}
    extra: dict[str, Any] = {}
    if all("spike_counts_at" in p.extra for p in parts):
        extra["spike_counts_at"] = {t: {k: join([p.extra["spike_counts_at"][t][k] for p in parts])
                                        for k in parts[0].extra["spike_counts_at"][t]} for t in ts}
    return SimResult(outputs, counts, parts[0].neurons, parts[0].steps, extra)


def run_network(net: Network, images: Sequence[str | Path], T: int | Sequence[int], *, backend: str = "numpy",
                options: SimOptions | None = None, score_thr: float = SCORE_THR, iou_thr: float = IOU_THR,
                ann: bool = False, **sim_fields: Any) -> RunResult:
    """Simulate the compiled detector on photos; detections at every checkpoint of T (one simulation run).

    `options` / `sim_fields`: how to simulate (SimOptions fields, e.g. mode="fixed", device="cuda")."""
    options = sim_options(options, **sim_fields)
    mode = options.mode
    ts = checkpoints(T)
    paths = collect_images(images)
    photos = [read_image(p) for p in paths]
    x, lbs = preprocess(net, photos)
    tic = time.perf_counter()
    sim = _simulate_in_batches(get_backend(backend), net, x, ts, options)
    seconds = time.perf_counter() - tic
    detections = {t: list(detect(net, sim.outputs[t], lbs, score_thr, iou_thr)) for t in ts}
    figures = activity_figures(net, sim, ts[-1])
    figures.update({"backend": backend, "mode": mode, "seconds": seconds, "images": len(paths),
                    "steps": int(ts[-1])})
    return RunResult([str(p) for p in paths], photos, detections,
                     ann_detections(net, x, lbs, score_thr, iou_thr) if ann else None, figures, sim.outputs)
