"""`snnc eval --ablation`: the papers' comparisons, on the user's own model, each changing one thing.

    reference            the .lava file's options, recompiled from its embedded ANN on the ablation's calibration
                         images (so every row shares the calibration; the main report shows the file as compiled)
    norm                 channel-wise <-> layer-wise normalization (Spiking-YOLO's channel-norm, Spiking YOLOv3 eq. 15);
                         a file compiled with norm=auto (chosen per layer) is compared against both
    negatives dropped    leaky-ReLU replaced by ReLU at conversion: what a converter without IBT (or the split)
                         does to a leaky model without retraining (only when the ANN has LeakyRelu nodes)
    IBT / split leaky    a leaky-ReLU model's other representation: a split file is compared with one signed IBT
                         neuron, a file with one signed neuron per channel (graded, the default, or signed memory)
                         with split_leaky_relu's two IF neurons (when the ANN has LeakyRelu)
    exact / count        the other max-pool conversion: a tree of strided convolutions and IF neurons <-> a
                         routing layer over running spike counts (when the ANN has MaxPool nodes)
    memory / plain IF    the other IF neuron (docs/neurons.md: the memory IF takes back excess spikes)
    spike-count decoding each linear head gets a signed IF neuron (thresholds +-lambda, lambda = the channel's
                         max |z| over the calibration images in the rate limit, so nothing is clipped there) and is
                         read as spike count x lambda / T: the remainder V(T) is dropped, which is what Spiking-YOLO
                         compared membrane decoding against
    V(0)                 initial potential 0 <-> theta / 2 (simulation override, no recompile)

Recompiles use `compile_model` on a temporary copy of `Network.ann_onnx` with the options stored in
`Network.meta["options"]` (`CompileOptions.from_record`: a file from before an option existed gets the old
behaviour) and the file's pass list; calibration: --calib DIR, else the first images of the
evaluated set (as many as the file was calibrated on, default 32). Each variant runs on the same images and T
as the main evaluation (mAP, or fidelity mAP without labels); no error analysis.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from snnc.ir.network import Network, Neuron
from snnc.evaluation.evalset import EvalSet

log = logging.getLogger(__name__)
DEFAULT_CALIB_IMAGES = 32
SPLIT_PASS = "split_leaky_relu"
CALIB_BATCH = 4  # images per rate-limit walk when measuring the heads' range (it keeps every layer's values)


@dataclass
class Variant:
    name: str
    change: str
    net: Network
    v_init: float | None = None


def _calib_folder(evset: EvalSet, n: int, into: Path) -> Path:
    for i, p in enumerate(evset.paths[:n]):
        shutil.copyfile(p, into / f"{i:05d}{p.suffix.lower()}")
    return into


def relu_instead_of_leaky(model: bytes) -> tuple[bytes, int]:
    """The ANN with every LeakyRelu replaced by Relu, and how many were replaced."""
    import onnx

    m = onnx.load_from_string(model)
    n = 0
    for node in m.graph.node:
        if node.op_type == "LeakyRelu":
            node.op_type = "Relu"
            del node.attribute[:]
            n += 1
    return m.SerializeToString(), n


def spike_count_heads(net: Network, calib: np.ndarray) -> Network:
    """A copy of net whose linear heads are symmetric signed IF neurons (alpha 1), read by spike count."""
    from snnc.backends.numpy.sim import rate_limit_forward

    peak: dict[str, np.ndarray] = {}
    for i in range(0, len(calib), CALIB_BATCH):
        for name, z in rate_limit_forward(net, calib[i:i + CALIB_BATCH]).items():
            m = np.abs(z).reshape(z.shape[0], z.shape[1], -1).max(axis=(0, 2))
            peak[name] = m if name not in peak else np.maximum(peak[name], m)
    v_init = float(net.neuron_layers[0].neuron.v_init) if net.neuron_layers else 0.0
    layers = []
    for layer in net.layers:
        if layer.name in net.outputs and layer.neuron is None:
            lam = np.maximum(peak[layer.name], 1e-6).astype(np.float32)
            layer = dataclasses.replace(layer, neuron=Neuron("SignedIF", lam, alpha=1.0, v_init=v_init))
        layers.append(layer)
    return dataclasses.replace(net, layers=layers)


def _has_maxpool(model: bytes) -> bool:
    import onnx

    return any(n.op_type == "MaxPool" for n in onnx.load_from_string(model).graph.node)


def _recompile(model: bytes, folder: Path, name: str, calib: Path, options: dict, passes, **changes) -> Network:
    from snnc.compiler.api import compile_model
    from snnc.ir.options import CompileOptions

    path = folder / f"{name}.onnx"
    path.write_bytes(model)
    opts = CompileOptions.from_record(options).replace(passes=tuple(passes) if passes else None, **changes)
    if passes is not None and "leaky" not in changes:  # the pass list says which leaky-ReLU form the file used
        unsplit = opts.leaky if opts.leaky != "split" else "ibt"  # one neuron: IBT or signed memory (recorded)
        opts = opts.replace(leaky="split" if SPLIT_PASS in passes else unsplit)
    return compile_model(path, opts, calib_dir=calib, progress=False).network


def build_variants(net: Network, evset: EvalSet, calib_dir: str | Path | None, work: Path
                   ) -> tuple[list[Variant], list[str], dict[str, Any]]:
    """The variants (reference first), the ones skipped with the reason, and how calibration was done."""
    from snnc.compiler.api import load_calibration
    from snnc.ir.options import CompileOptions

    options = dict(net.meta.get("options") or {})
    passes = net.meta.get("passes") or None
    if calib_dir is None:
        n = int(options.get("calibration_images") or DEFAULT_CALIB_IMAGES)
        calib = _calib_folder(evset, min(n, len(evset)), Path(tempfile.mkdtemp(dir=work)))
        calib_info = {"source": "evaluated images", "images": min(n, len(evset))}
    else:
        calib = Path(calib_dir)
        calib_info = {"source": str(calib), "images": None}
    recorded = CompileOptions.from_record(options)
    norm, v0 = recorded.norm, float(recorded.v_init)
    ref = _recompile(net.ann_onnx, work, "reference", calib, options, passes)
    calib_x = load_calibration(calib, None, ref.preprocess["shape"])
    calib_info["images"] = len(calib_x)
    kinds = sorted({l.neuron.kind for l in ref.neuron_layers})
    signed_memory = any(l.neuron.kind == "SignedIF" and l.neuron.memory for l in ref.neuron_layers)
    neuron = recorded.neuron
    split = passes is not None and SPLIT_PASS in passes
    graded = any(l.neuron.graded for l in ref.neuron_layers)
    leaky = ("graded signed (SignedIF)" if graded else "signed memory (SignedIF)" if signed_memory else
             "IBT (SignedIF)" if "SignedIF" in kinds else "split into IF pairs" if split else "none")
    variants = [Variant("reference", f"as the file: norm={norm}, {neuron} IF, leaky-ReLU {leaky}, "
                                     f"max-pool {recorded.maxpool}, membrane decoding, V(0)={v0:g} theta", ref)]
    for other in [o for o in ("channel", "layer") if o != norm]:  # auto (chosen per layer) against both
        variants.append(Variant(f"{other}-norm", f"norm={other}", _recompile(net.ann_onnx, work, f"norm_{other}",
                                                                              calib, options, passes, norm=other)))
    skipped = []
    relu, n = relu_instead_of_leaky(net.ann_onnx)
    if n:
        variants.append(Variant("negatives dropped", f"{n} LeakyRelu -> Relu at conversion, no retraining",
                                _recompile(relu, work, "relu", calib, options, passes)))
        if passes is not None:
            from snnc.compiler.registry import registered_passes

            if split:
                alt, name, change = [p for p in passes if p != SPLIT_PASS], "IBT", "leaky-ReLU as one SignedIF (IBT)"
            elif SPLIT_PASS in registered_passes() and "activations_to_neurons" in passes:
                i = passes.index("activations_to_neurons")
                alt, name, change = passes[:i] + [SPLIT_PASS] + passes[i:], "split leaky", "leaky-ReLU as two IF"
            else:
                alt = None
            if alt is not None:
                leaky_opt = {} if split else {"leaky": "split"}  # split: IBT follows from the pass list
                variants.append(Variant(name, change, _recompile(net.ann_onnx, work, "leaky", calib, options, alt,
                                                                 **leaky_opt)))
    else:
        skipped.append("negatives dropped: the model has no LeakyRelu")
    if _has_maxpool(net.ann_onnx):
        pool = "exact" if recorded.maxpool == "count" else "count"
        what = "a tree of strided convolutions and IF neurons" if pool == "exact" else "running spike-count maxima"
        variants.append(Variant(f"{pool} max-pool", f"maxpool={pool}: {what}",
                                _recompile(net.ann_onnx, work, "maxpool", calib, options, passes, maxpool=pool)))
    if "IF" in kinds:
        flip = "plain" if neuron == "memory" else "memory"
        variants.append(Variant(f"{flip} IF", f"neuron={flip}", _recompile(net.ann_onnx, work, "neuron", calib,
                                                                          options, passes, neuron=flip)))
    variants.append(Variant("spike-count decoding", "heads: signed IF (+-max |z|), spike count x theta / T",
                            spike_count_heads(ref, calib_x)))
    other_v = 0.5 if v0 == 0.0 else 0.0
    variants.append(Variant(f"V(0)={other_v:g} theta", f"v_init={other_v:g}", ref, v_init=other_v))
    return variants, skipped, calib_info


def run_ablation(net: Network, evset: EvalSet, ts: Sequence[int], cfg: Any, cmap: np.ndarray,
                 names: Sequence[str], main_run: Any, ann_map50: float | None = None) -> dict[str, Any]:
    """Every variant on the evaluated set: mAP (or fidelity) per T, the rate limit, firing rate and SOPs.

    ann_map50: the ANN's mAP@0.5 on a labelled set, as the main evaluation measured it."""
    from snnc.evaluation.run import run_network, score

    work = Path(tempfile.mkdtemp(prefix="snnc-ablation-"))
    try:
        variants, skipped, calib_info = build_variants(net, evset, cfg.calib, work)
        key = "mAP50" if evset.labelled else "fidelity_mAP50"
        out = []
        for v in variants:
            log.info("ablation: %s (%s)", v.name, v.change)
            run = run_network(v.net, evset, ts, dataclasses.replace(cfg, errors=False), cmap, names,
                              analysis=False, v_init=v.v_init, label=v.name)
            s = score(run, evset, names, cfg, main_run.ann)
            act = run.activity.result()
            last = act["T"][-1]
            out.append({"name": v.name, "change": v.change, "rate_limit": s["rate_limit"], "snn": s["snn"],
                        "overall_rate": last["overall_rate"], "sops": last.get("sops"),
                        "layer_rates": last["layer_rates"], "seconds": run.seconds})
        note = ("Every variant is recompiled from the embedded ANN with the same calibration "
                f"({calib_info['images']} images from {calib_info['source']}) and changes one thing from the "
                "reference; the main report above uses the .lava file as compiled. SOPs use per-layer spike totals "
                "x mean fan-out.")
        return {"key": key, "ann": ann_map50 if evset.labelled else 1.0, "variants": out, "skipped": skipped,
                "calibration": calib_info, "note": note}
    finally:
        shutil.rmtree(work, ignore_errors=True)
