"""`compile_model`: the Python API behind `snnc compile` (the CLI is a thin layer over it)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx

from snnc.ir import __version__, annref
from snnc.ir.errors import SnncError
from snnc.ir.limits import MAX_CALIB_RANDOM, MAX_INPUT, limit
from snnc.compiler.cost import cost_report
from snnc.compiler.frontend import file_sha256, prepare
from snnc.compiler.heads import HeadSpec, attach_head, describe, single_output_kind
from snnc.compiler.graph import export_model, import_graph, run_model
from snnc.compiler.images import letterbox, list_images, read_image
from snnc.compiler.lower import lower_to_network
from snnc.ir.network import Network
from snnc.ir.validate import check_network
from snnc.ir.options import CompileOptions, compile_options
from snnc.compiler.pipeline import run_passes, select_passes
from snnc.compiler.ratelimit import neurons_to_activations
from snnc.compiler.registry import PassContext
from snnc.compiler.split import split_model

log = logging.getLogger(__name__)


@dataclass
class CompileResult:
    network: Network
    spiking: onnx.ModelProto  # the spiking network in ONNX (snnc domain neurons)
    ratelimit: onnx.ModelProto  # the same with each neuron replaced by its rate limit: standard ONNX
    ann: onnx.ModelProto  # the spiking part of the original ANN (before any pass)
    host: onnx.ModelProto | None
    stats: dict[str, Any] = field(default_factory=dict)


def load_calibration(folder: str | Path | None, random_n: int | None, shape: Sequence[int],
                     seed: int = 0) -> np.ndarray | None:
    """(N, C, H, W) calibration inputs: letterboxed photos from a folder, or uniform noise when asked for."""
    c, h, w = shape
    if folder is not None:
        files = list_images(folder)
        if c != 3:
            raise SnncError(f"the model takes {c} input channels; folder calibration needs RGB (3) models")
        return np.stack([letterbox(read_image(f), (h, w))[0] for f in files])
    if random_n is not None:
        check_calib_random(random_n, shape)
        log.warning("calibrating on %d random inputs (--calib-random): thresholds will not match real images; "
                    "pass --calib DIR for real calibration", random_n)
        return np.random.default_rng(seed).random((int(random_n), c, h, w), dtype=np.float32)
    return None


def check_calib_random(n: Any, shape: Sequence[int]) -> None:
    """--calib-random N: 1 <= N <= 10000, and N inputs of `shape` within SNNC_MAX_INPUT x 64 elements."""
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or not 1 <= n <= MAX_CALIB_RANDOM:
        raise SnncError(f"--calib-random {n!r}: expected a number of inputs from 1 to {MAX_CALIB_RANDOM}")
    elements = int(n) * int(np.prod(shape))
    cap = limit("SNNC_MAX_INPUT", MAX_INPUT) * 64
    if elements > cap:
        raise SnncError(f"--calib-random {n}: {n} inputs of shape {list(shape)} are {elements:,} values, more than "
                        f"{cap:,} (64 x SNNC_MAX_INPUT); use fewer")


def clipping_error(ann: onnx.ModelProto, ratelimit: onnx.ModelProto, x: np.ndarray) -> dict[str, float]:
    """Per head: max |rate-limit ANN - ANN| / max |ANN| on inputs x (the T -> infinity error of the SNN)."""
    feeds = {ann.graph.input[0].name: x.astype(np.float32)}
    ref, got = run_model(ann, feeds, what="the ANN"), run_model(ratelimit, feeds, what="the rate-limit ANN")
    return {k: float(np.abs(got[k] - ref[k]).max() / max(float(np.abs(ref[k]).max()), 1e-12)) for k in ref}


def _class_names(model: onnx.ModelProto) -> list[str] | None:
    for p in model.metadata_props:
        if p.key == "snnc.class_names":
            try:
                return list(json.loads(p.value))
            except json.JSONDecodeError:
                return None
    return None


def compile_model(model_path: str | Path, options: CompileOptions | None = None, *,
                  input_shape: Sequence[int] | None = None, calib_dir: str | Path | None = None,
                  calib_random: int | None = None, progress: bool = True, include_ann: bool = True,
                  head: HeadSpec | None = None, **overrides: Any) -> CompileResult:
    """ONNX detector -> spiking network, all in memory (`snnc.apps.outputs.write_output` saves it).

    `options` holds the conversion choices (default `CompileOptions()`); keyword `overrides` change single
    fields, e.g. `compile_model("m.onnx", calib_dir="photos/", norm="layer", leaky="ibt")`.
    `head` (snnc.compiler.heads.HeadSpec) attaches YOLO box decoding to a model that ends at its raw heads;
    it describes the model's outputs, not how to convert it, so it is an argument here, not a CompileOptions field.
    """
    opts = compile_options(options, **overrides)
    names = select_passes(opts)
    if calib_random is not None:
        check_calib_random(calib_random, [1])  # the range now; the size once the input shape is known
    prepared = prepare(model_path, input_shape)
    if head is None and single_output_kind(prepared) is not None:  # ultralytics' one-tensor export, recognised
        head = HeadSpec(single_output_kind(prepared))
        log.info("%s: output0 read as the %s layout (--head names another)", model_path, head.kind)
    if head is not None:
        prepared = attach_head(prepared, head, source=str(model_path))
    parts = split_model(prepared, source=str(model_path))
    in_shape = [d.dim_value for d in parts.spiking.graph.input[0].type.tensor_type.shape.dim][1:]
    calib = load_calibration(calib_dir, calib_random, in_shape)
    ctx = PassContext(options=opts, calibration=calib, progress=progress)
    graph = run_passes(import_graph(parts.spiking), names, ctx)
    spiking = export_model(graph, like=prepared)
    ratelimit = neurons_to_activations(spiking, clip=True)
    net = lower_to_network(spiking)
    check_network(net, f"{model_path}: the compiled network")
    stats = dict(ctx.stats)
    if calib is not None:
        stats["clipping_error"] = clipping_error(parts.spiking, ratelimit, calib)
        log.info("clipping error (rate-limit ANN vs ANN, max abs / max |ANN| on calibration data): %s",
                 {k: round(v, 5) for k, v in stats["clipping_error"].items()})
    net.host_onnx = parts.host.SerializeToString() if parts.host is not None else None
    net.ann_onnx = prepared.SerializeToString() if include_ann else None
    ann_source = annref.source_record(prepared, model_path) if include_ann else None
    net.input_encoding = {"kind": "direct", "scale": 1.0 / 255.0, "max_value": 1.0}
    net.preprocess = {"color": "RGB", "scale": 1.0 / 255.0, "letterbox": True, "pad_value": 0.5,
                      "input_name": parts.spiking.graph.input[0].name, "shape": [int(d) for d in in_shape]}
    net.meta = {
        "snnc_version": __version__, "source": Path(model_path).name, "source_sha256": file_sha256(model_path),
        "passes": names, "options": {**opts.record(),
                                     "calibration_images": 0 if calib is None else int(len(calib)),
                                     "calibration": "folder" if calib_dir else ("random" if calib_random else None)},
        "stats": stats, "class_names": _class_names(prepared),
        **({"head": describe(head)} if head is not None else {}),
        **({"ann_source": ann_source} if ann_source else {}),  # what lets a .lava keep the ANN by reference
        "host_outputs": [o.name for o in prepared.graph.output],
    }
    # the graph's cost next to the ANN's, kept in the provenance so files compiled --no-ann still have it
    net.meta["cost"] = cost_report(net, parts.spiking)
    return CompileResult(net, spiking, ratelimit, parts.spiking, parts.host, stats)
