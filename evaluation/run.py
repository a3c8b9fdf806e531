"""The evaluation driver behind `snnc eval`: one pass over the images, batch by batch, measuring everything.

    metrics = evaluate("net.lava", EvalConfig(T=[64, 256, 1024], data="val/", report="report/"))

Per batch (small, so memory stays flat on any set size): read and letterbox the images as the .lava file's
preprocess says; run the ANN embedded in the file (onnxruntime, graph optimizations off) on the same tensor,
reading its boxes, scores and raw head tensors; walk the rate-limit network once (its detections are the
T -> infinity limit; its per-layer values give the clipping error); simulate the SNN once for max(T) steps with
the NumPy reference simulator, which hands each checkpoint's per-neuron state to the error analysis and the
exact SOP count before it moves on; decode the heads at every T through the host graph (NMS per class at IoU
0.45, every detection scoring >= 0.001, at most 100 per image: the usual mAP protocol).

After the pass: mAP@0.5 and mAP@0.5:0.95 (COCO evaluator, metrics.py) of the ANN, the rate limit and the SNN at
every T against the labels; fidelity mAP (the ANN's detections scoring >= 0.25 as ground truth) always; firing
rates, SOPs and energy (activity.py, energy.py); the per-layer error split (errors.py); optionally the
ablations (ablation.py). `write_report` (report.py) puts it all in one folder, atomically.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from snnc.ir import __version__, lavafile
from snnc.ir.annref import missing_reason
from snnc.ir.errors import SnncError
from snnc.runtime.host import Detection, class_name, detect
from snnc.compiler.images import letterbox
from snnc.ir.network import Network
from snnc.ir.limits import check_work
from snnc.ir.options import SimOptions, checkpoints
from snnc.ir.validate import network_macs
from snnc.evaluation.activity import Activity
from snnc.evaluation.ann import EVAL_IOU_THR, EVAL_MAX_DET, EVAL_SCORE_THR, AnnRunner, detections_from_outputs
from snnc.evaluation.errors import ErrorAnalysis
from snnc.evaluation.evalset import EvalSet, class_map, load_labelled, load_photos

log = logging.getLogger(__name__)

FIDELITY_SCORE_THR = 0.25  # ANN detections at or above this score are the reference in fidelity mode
MEMORY_BUDGET = 768 * 1024**2  # per batch: recorded spike counts, membranes, the rate-limit walks
BYTES_PER_VALUE = 40  # per layer value and image, measured peak of simulation + error analysis (about)
MAX_BATCH = 32


@dataclass
class EvalConfig:
    """Everything `snnc eval` takes besides the .lava file; see docs/evaluation.md."""

    T: Sequence[int]
    data: str | Path | None = None
    images: str | Path | None = None
    report: str | Path | None = None
    layout: str | None = None
    split: str | None = None
    max_images: int | None = None
    batch: int | None = None
    mode: str = "float"
    v_init: float | None = None  # override every neuron's V(0) / theta; None: as compiled
    errors: bool = True
    examples: int = 4
    ablation: bool = False
    calib: str | Path | None = None  # ablation recompiles: calibration folder (default: the evaluated images)
    score_thr: float = EVAL_SCORE_THR
    iou_thr: float = EVAL_IOU_THR
    max_det: int = EVAL_MAX_DET
    fidelity_thr: float = FIDELITY_SCORE_THR
    progress: bool | None = None
    threads: int | None = None
    command: str | None = None
    backend: str = "numpy"  # any registered backend; per-layer errors and exact SOPs need numpy's recording
    device: str = "cpu"
    workers: int | None = None  # run the batches as Ray tasks on this many workers (None: in this process)
    ray_address: str | None = None  # an existing Ray cluster (None: start a local one)


@dataclass
class Example:
    rgb: np.ndarray
    truth: list[Detection] | None
    ann: list[Detection]
    snn: dict[int, list[Detection]]


@dataclass
class NetworkRun:
    """What one pass of a network over the set produced."""

    snn: dict[int, list[list[tuple]]]  # T -> per image detections (cls, score, x1, y1, x2, y2), set classes
    rate_limit: list[list[tuple]]
    ann: list[list[tuple]] | None
    activity: Activity
    errors: ErrorAnalysis | None
    examples: list[Example] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


# ---- checks and set-up -------------------------------------------------------------------------------------------

def load_network(path: str | Path) -> Network:
    path = Path(path)
    if not path.is_file():
        raise SnncError(f"{path}: no such .lava file; compile one with `snnc compile MODEL.onnx -o {path.name}`")
    return lavafile.load(path)


def load_set(cfg: EvalConfig) -> EvalSet:
    if (cfg.data is None) == (cfg.images is None):
        raise SnncError("pass one of --data DATASET (labelled: mAP) or --images DIR (photos: fidelity to the ANN)")
    if cfg.max_images is not None and cfg.max_images < 1:
        raise SnncError(f"-n {cfg.max_images}: expected a positive number of images")
    try:
        if cfg.data is not None:
            return load_labelled(cfg.data, cfg.layout, cfg.split, cfg.max_images)
        return load_photos(cfg.images, cfg.max_images)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:  # a malformed annotation file
        raise SnncError(f"{cfg.data or cfg.images}: cannot read the dataset ({exc.__class__.__name__}: "
                        f"{str(exc)[:160]})") from None


def auto_batch(net: Network) -> int:
    """Images per simulator call: as many as fit MEMORY_BUDGET (the error analysis keeps a few copies of
    every layer's values per image), at most MAX_BATCH."""
    values = sum(int(np.prod(l.shape)) for l in net.layers)
    return int(max(1, min(MAX_BATCH, MEMORY_BUDGET // max(1, values * BYTES_PER_VALUE))))


def _input_size(net: Network) -> tuple[int, int, float]:
    shape = net.preprocess.get("shape") or list(net.input_layers[0].shape)
    if len(shape) != 3 or int(shape[0]) != 3:
        raise SnncError(f"the network takes inputs of shape {shape}; snnc eval needs an RGB image input (3, H, W)")
    return int(shape[1]), int(shape[2]), float(net.preprocess.get("pad_value", 0.5))


def _to_set_classes(dets: list[tuple], cmap: np.ndarray) -> list[tuple]:
    out = []
    for d in dets:
        c = int(cmap[d[0]]) if 0 <= d[0] < len(cmap) else -1
        if c >= 0:
            out.append((c, *d[1:]))
    return out


def _in_set_classes(found: list[list[Detection]], cmap: np.ndarray) -> list[list[tuple]]:
    """host.detect's per-image Detections -> per-image (cls, score, x1, y1, x2, y2) in the set's classes."""
    return [_to_set_classes([(d.cls, d.score, *d.box) for d in per], cmap) for per in found]


def _as_detections(dets: list[tuple], names: Sequence[str]) -> list[Detection]:
    return [Detection(int(d[0]), str(names[int(d[0])]), float(d[1]), tuple(float(v) for v in d[2:6])) for d in dets]


# ---- one pass of a network over the set ------------------------------------------------------------------------

def _run_ann(ann: AnnRunner, net: Network, x: np.ndarray, lbs: list, cfg: EvalConfig, cmap: np.ndarray
             ) -> tuple[list[list[tuple]], dict[str, np.ndarray] | None]:
    """The ANN on a batch: detections in the set's classes, and its head tensors by SNN output layer (or None
    when the ANN graph does not name them)."""
    out = ann.run(x)
    dets = [_to_set_classes(d, cmap) for d in detections_from_outputs(
        out["boxes"], out["scores"], cfg.score_thr, cfg.iou_thr, cfg.max_det, lbs)]
    tensors = [net.output_names.get(o, o) for o in net.outputs]
    heads = {o: out[t] for o, t in zip(net.outputs, tensors)} if all(t in out for t in tensors) else None
    return dets, heads


def _examples(evset: EvalSet, idx: list[int], rgbs: list[np.ndarray], ann_dets: list[list[tuple]],
              snn: dict[int, list[list[tuple]]], names: Sequence[str], limit: int) -> list[Example]:
    """The batch's images among the first `limit`, with ground truth, ANN and SNN (smallest and largest T);
    snn[T][k] holds the detections of the batch's k-th image."""
    ts = sorted(snn)
    out = []
    for k, i in enumerate(idx):
        if i >= limit:
            break
        truth = None
        if evset.samples is not None:
            s = evset.samples[i]
            truth = _as_detections([(int(c), 1.0, *b) for b, c in zip(s.boxes_xyxy, s.classes)], names)
        ann = _as_detections(ann_dets[k], names) if ann_dets else []
        out.append(Example(rgbs[k], truth, ann, {T: _as_detections(snn[T][k], names)
                                                 for T in dict.fromkeys([ts[0], ts[-1]])}))
    return out


def spike_counts_at(backend: Any, net: Network, x: np.ndarray, ts: Sequence[int], opts: SimOptions,
                    sim: Any) -> dict[int, dict[str, np.ndarray]]:
    """Spike totals per layer at every checkpoint. A backend that counts only over the whole run (C, Lava) is
    run again for each smaller T: the counts of a shorter run are exactly the first T steps of the longer one."""
    if "spike_counts_at" in sim.extra:
        return sim.extra["spike_counts_at"]
    out = {ts[-1]: sim.spike_counts}
    for T in ts[:-1]:
        out[T] = backend.simulate(net, x, [T], opts).spike_counts
    return out


@dataclass
class BatchResult:
    """What one batch of images produced; `run_network` merges these in image order (in one process or from Ray
    workers: snnc.evaluation.distributed)."""

    images: int
    snn: dict[int, list[list[tuple]]]  # T -> the batch's per image detections
    rate_limit: list[list[tuple]]
    ann: list[list[tuple]] | None
    examples: list[Example]
    seconds: dict[str, float]
    activity: Activity | None = None  # the batch's own counts (Ray workers); None when added to a shared one


def run_batch(net: Network, evset: EvalSet, idx: list[int], ts: list[int], cfg: EvalConfig, cmap: np.ndarray,
              names: Sequence[str], *, backend: Any, ann: AnnRunner | None, activity: Activity,
              errors: ErrorAnalysis | None, record: bool, analysis: bool, v_init: float | None) -> BatchResult:
    """Read, letterbox and run the images idx: ANN, rate limit, simulation at every T, decoding."""
    from snnc.backends.numpy.sim import layer_forward

    secs = {"read": 0.0, "ann": 0.0, "rate_limit": 0.0, "simulation": 0.0, "errors": 0.0, "decode": 0.0, "cpu": 0.0}
    h, w, pad = _input_size(net)
    cpu = time.process_time()  # the process's CPU seconds (all threads): the workers' share of the cores
    tic = time.perf_counter()
    rgbs = [evset.read(i) for i in idx]
    xs, lbs = zip(*(letterbox(rgb, (h, w), pad) for rgb in rgbs))
    x = np.stack(xs).astype(np.float32)
    secs["read"] += time.perf_counter() - tic

    ann_heads = None
    ann_dets: list[list[tuple]] = []
    if ann is not None:
        tic = time.perf_counter()
        ann_dets, ann_heads = _run_ann(ann, net, x, list(lbs), cfg, cmap)
        secs["ann"] += time.perf_counter() - tic

    tic = time.perf_counter()
    z_rl, a_rl = layer_forward(net, x, threads=cfg.threads)
    rl_dets = detect(net, {o: a_rl[o] for o in net.outputs}, list(lbs), cfg.score_thr, cfg.iou_thr,
                     max_det=cfg.max_det)
    if errors is not None:
        errors.add_rate_limit(z_rl, a_rl)
    del z_rl
    secs["rate_limit"] += time.perf_counter() - tic

    err_time = [0.0]

    def on_checkpoint(T: int, state: dict, spent: list = err_time) -> None:
        t0 = time.perf_counter()
        if errors is not None:
            errors.add_checkpoint(T, state)
        activity.add_state(T, state)
        spent[0] += time.perf_counter() - t0

    tic = time.perf_counter()
    opts = SimOptions(mode=cfg.mode, v_init=v_init, progress=cfg.progress, threads=cfg.threads,
                      device=cfg.device)
    recording = {"record_layers": True, "on_checkpoint": on_checkpoint} if record else {}
    sim = backend.simulate(net, x, ts, opts, **recording)
    secs["simulation"] += time.perf_counter() - tic - err_time[0]
    secs["errors"] += err_time[0]
    activity.add_counts(spike_counts_at(backend, net, x, ts, opts, sim))

    tic = time.perf_counter()
    snn: dict[int, list[list[tuple]]] = {}
    for T in ts:
        found = detect(net, sim.outputs[T], list(lbs), cfg.score_thr, cfg.iou_thr, max_det=cfg.max_det)
        snn[T] = _in_set_classes(found, cmap)
        if errors is not None:
            errors.add_heads(T, sim.outputs[T], ann_heads, first=(T == ts[0]))
    secs["decode"] += time.perf_counter() - tic
    examples = _examples(evset, idx, rgbs, ann_dets, snn, names, cfg.examples) if analysis else []
    secs["cpu"] += time.process_time() - cpu
    return BatchResult(len(idx), snn, _in_set_classes(rl_dets, cmap), ann_dets if ann is not None else None,
                       examples, secs)


def run_network(net: Network, evset: EvalSet, ts: Sequence[int], cfg: EvalConfig, cmap: np.ndarray,
                names: Sequence[str], *, ann: AnnRunner | None = None, analysis: bool = True,
                v_init: float | None = None, label: str = "SNN") -> NetworkRun:
    """Simulate net on every image of the set (batches), decode at every T; ANN, errors and examples optional.

    With cfg.workers the batches run as Ray tasks (snnc.evaluation.distributed) and are merged in image order,
    so the detections, the activity figures and therefore every metric equal the single-process run's; the
    per-layer error analysis then stays off (it keeps per-layer state across batches in one process)."""
    from tqdm.auto import tqdm

    from snnc.backends import get_backend

    ts = sorted(ts)
    batch = cfg.batch or auto_batch(net)
    backend = get_backend(cfg.backend)
    record = analysis and "record_layers" in backend.extra_options
    v_init = cfg.v_init if v_init is None else v_init
    activity = Activity(net, ts)
    distributed = cfg.workers is not None
    if distributed and record and cfg.errors:
        log.warning("--workers: the per-layer error analysis runs in a single process only; it is left out")
    errors = ErrorAnalysis(net, ts, v_init=v_init) if (record and cfg.errors and not distributed) else None
    run = NetworkRun({T: [] for T in ts}, [], [] if ann is not None else None, activity, errors)
    secs = {"read": 0.0, "ann": 0.0, "rate_limit": 0.0, "simulation": 0.0, "errors": 0.0, "decode": 0.0, "cpu": 0.0}
    batches = [list(range(start, min(len(evset), start + batch))) for start in range(0, len(evset), batch)]

    def merge(part: BatchResult) -> None:
        for T in ts:
            run.snn[T].extend(part.snn[T])
        run.rate_limit.extend(part.rate_limit)
        if run.ann is not None:
            run.ann.extend(part.ann)
        if part.activity is not None:
            activity.merge(part.activity)
        run.examples.extend(part.examples)
        for k, v in part.seconds.items():
            secs[k] += v

    if distributed:
        from snnc.evaluation.distributed import run_batches

        for part in run_batches(net, evset, batches, ts, cfg, cmap, names, with_ann=ann is not None,
                                analysis=analysis, v_init=v_init, label=label):
            merge(part)
        run.seconds = secs
        return run
    bar = tqdm(total=len(evset), desc=f"{label} T={ts[-1]}", unit="img",
               disable=(None if cfg.progress is None else not cfg.progress))
    try:
        for idx in batches:
            merge(run_batch(net, evset, idx, ts, cfg, cmap, names, backend=backend, ann=ann, activity=activity,
                            errors=errors, record=record, analysis=analysis, v_init=v_init))
            bar.update(len(idx))
    finally:
        bar.close()
    run.seconds = secs
    return run


# ---- scoring ---------------------------------------------------------------------------------------------------

def score(run: NetworkRun, evset: EvalSet, names: Sequence[str], cfg: EvalConfig,
          reference: list[list[tuple]] | None) -> dict[str, Any]:
    """mAP (labelled) and fidelity mAP (against `reference`, the ANN's detections) of the rate limit and every T."""
    from snnc.evaluation.metrics import evaluate_detections, evaluate_fidelity

    def one(dets: list[list[tuple]]) -> dict[str, Any]:
        row: dict[str, Any] = {"detections": sum(len(d) for d in dets)}
        if evset.labelled:
            m = evaluate_detections(evset.samples, dets, names, max_dets=cfg.max_det)
            row.update(mAP50=m["mAP50"], mAP50_95=m["mAP50_95"], AP50_per_class=m["AP50_per_class"])
        if reference is not None:
            f = evaluate_fidelity(reference, dets, names, cfg.fidelity_thr, max_dets=cfg.max_det)
            row.update(fidelity_mAP50=f["mAP50"], fidelity_mAP50_95=f["mAP50_95"])
        return row

    return {"rate_limit": one(run.rate_limit), "snn": [{"T": T, **one(run.snn[T])} for T in sorted(run.snn)]}


# ---- the whole evaluation ----------------------------------------------------------------------------------------

def _kind_name(n: Any) -> str:
    """IF, memory IF, SignedIF (IBT) or signed memory (docs/neurons.md)."""
    if getattr(n, "memory", False):
        return "signed memory" if n.kind == "SignedIF" else "memory IF"
    return n.kind


def evaluate(lava: str | Path, cfg: EvalConfig) -> dict[str, Any]:
    """Run the evaluation of a .lava file; with cfg.report, write the report folder. Returns metrics.json's dict."""
    from snnc.evaluation.metrics import evaluate_detections, evaluator_name, reference_samples
    from snnc.evaluation.report import ReportWriter

    started = time.perf_counter()
    ts = checkpoints(cfg.T)
    if cfg.mode not in ("float", "fixed"):
        raise SnncError(f"--mode {cfg.mode!r}: expected float or fixed")
    writer = ReportWriter(cfg.report) if cfg.report is not None else None  # checks the folder before any work
    net = load_network(lava)
    check_work(network_macs(net), ts[-1], str(lava))  # before the ANN runs on the whole set
    evset = load_set(cfg)
    if net.ann_onnx is None:
        raise SnncError(f"{lava}: snnc eval compares against the original ANN, and this file has none: "
                        f"{missing_reason(net.ann_note)}")
    if cfg.calib is not None and not Path(cfg.calib).is_dir():
        raise SnncError(f"--calib {cfg.calib}: no such folder")
    evaluator = evaluator_name()  # fails early without a COCO evaluator
    ann = AnnRunner(net.ann_onnx, [net.output_names.get(o, o) for o in net.outputs])
    num_classes = ann.num_classes or len(net.meta.get("class_names") or [])
    model_names = net.meta.get("class_names")
    if evset.labelled:
        names = evset.class_names
        cmap = class_map(model_names, num_classes, names)
    else:
        names = [class_name(net, c) for c in range(num_classes)]
        cmap = np.arange(num_classes)
    try:
        log.info("evaluating %s on %d images (%s), T = %s", lava, len(evset), evset.source, ts)
        run = run_network(net, evset, ts, cfg, cmap, names, ann=ann, analysis=True)
        tic = time.perf_counter()
        scores = score(run, evset, names, cfg, run.ann)
        ann_row: dict[str, Any] = {"detections": sum(len(d) for d in run.ann)}
        if evset.labelled:
            m = evaluate_detections(evset.samples, run.ann, names, max_dets=cfg.max_det)
            ann_row.update(mAP50=m["mAP50"], mAP50_95=m["mAP50_95"], AP50_per_class=m["AP50_per_class"])
        ref_boxes = sum(len(s.classes) for s in reference_samples(run.ann, cfg.fidelity_thr))
        ann_row["reference_boxes"] = ref_boxes
        if ref_boxes == 0:
            log.warning("the ANN has no detection scoring >= %g on these images: fidelity mAP is undefined (null); "
                        "lower --fidelity-thr or use other images", cfg.fidelity_thr)
        score_seconds = time.perf_counter() - tic
        from snnc.compiler.energy import onnx_macs

        activity = run.activity.result(onnx_macs(net.ann_onnx))
        metrics: dict[str, Any] = {
            "snnc_version": __version__, "command": cfg.command,
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "model": {"file": str(lava), "source": net.meta.get("source"), "options": net.meta.get("options"),
                      "passes": net.meta.get("passes"), "layers": len(net.layers),
                      "neuron_layers": len(net.neuron_layers), "neurons": activity["total_neurons"],
                      "neuron_kinds": sorted({_kind_name(l.neuron) for l in net.neuron_layers}),
                      "encoding": net.input_encoding.get("kind", "direct"), "input_shape": net.preprocess.get("shape"),
                      "v_init": sorted({float(l.neuron.v_init) for l in net.neuron_layers}),
                      "num_classes": num_classes, "compile_clipping_error": net.meta.get("stats", {}).get(
                          "clipping_error")},
            "data": {"kind": "labelled" if evset.labelled else "photos", "source": evset.source,
                     "layout": evset.layout, "images": len(evset), "class_names": list(names),
                     "ground_truth_boxes": sum(len(s.classes) for s in evset.samples) if evset.labelled else None,
                     "ann_reference_boxes": ref_boxes},
            "settings": {"T": ts, "mode": cfg.mode, "v_init_override": cfg.v_init, "batch": cfg.batch or auto_batch(net),
                         "score_thr": cfg.score_thr, "iou_thr": cfg.iou_thr, "max_det": cfg.max_det,
                         "fidelity_score_thr": cfg.fidelity_thr, "evaluator": evaluator, "simulator": cfg.backend,
                         "device": cfg.device,
                         "workers": cfg.workers,
                         "decode": "membrane"},
            "accuracy": {"ann": ann_row, **scores},
            "activity": activity,
            "errors": run.errors.result() if run.errors is not None else None,
        }
        if cfg.ablation:
            from snnc.evaluation.ablation import run_ablation

            metrics["ablation"] = run_ablation(net, evset, ts, cfg, cmap, names, run, ann_row.get("mAP50"))
        metrics["timing"] = {**{k: round(v, 3) for k, v in run.seconds.items()}, "scoring": round(score_seconds, 3),
                             "simulation_per_image_step": run.seconds["simulation"] / (len(evset) * ts[-1]),
                             "total": round(time.perf_counter() - started, 3)}
        if writer is not None:
            writer.write(metrics, run)
        return metrics
    finally:
        if writer is not None:
            writer.cleanup()
