"""`compile_model`: the Python API behind `snnc compile` (the CLI is a thin layer over it)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx

from . import __version__, lavafile
from .errors import SnncError
from .frontend import file_sha256, prepare
from .graph import export_model, import_graph, run_model
from .images import letterbox, list_images, read_image
from .lower import lower_to_network
from .network import Network
from .pipeline import DEFAULT_OPTIONS, run_passes, select_passes
from .ratelimit import neurons_to_activations
from .registry import PassContext
from .split import split_model

log = logging.getLogger(__name__)
EMIT_KINDS = ("lava", "onnx", "ratelimit", "c")


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
    if random_n:
        log.warning("calibrating on %d random inputs (--calib-random): thresholds will not match real images; "
                    "pass --calib DIR for real calibration", random_n)
        return np.random.default_rng(seed).random((int(random_n), c, h, w), dtype=np.float32)
    return None


def clipping_error(ann: onnx.ModelProto, ratelimit: onnx.ModelProto, x: np.ndarray) -> dict[str, float]:
    """Per head: max |rate-limit ANN - ANN| / max |ANN| on inputs x (the T -> infinity error of the SNN)."""
    feeds = {ann.graph.input[0].name: x.astype(np.float32)}
    ref, got = run_model(ann, feeds), run_model(ratelimit, feeds)
    return {k: float(np.abs(got[k] - ref[k]).max() / max(float(np.abs(ref[k]).max()), 1e-12)) for k in ref}


def _class_names(model: onnx.ModelProto) -> list[str] | None:
    for p in model.metadata_props:
        if p.key == "snnc.class_names":
            try:
                return list(json.loads(p.value))
            except json.JSONDecodeError:
                return None
    return None


def compile_model(model_path: str | Path, *, input_shape: Sequence[int] | None = None,
                  calib_dir: str | Path | None = None, calib_random: int | None = None, percentile: float = DEFAULT_OPTIONS["percentile"],
                  norm: str = "channel", passes: Sequence[str] | None = None, skip: Sequence[str] = (),
                  maxpool: str = "exact", v_init: float = DEFAULT_OPTIONS["v_init"],
                  neuron: str = DEFAULT_OPTIONS["neuron"], progress: bool = True,
                  include_ann: bool = True) -> CompileResult:
    """ONNX detector -> spiking network (all in memory; `write_output` saves it)."""
    if norm not in ("channel", "layer"):
        raise SnncError(f"--norm {norm!r}: expected channel or layer")
    if neuron not in ("memory", "plain"):
        raise SnncError(f"--neuron {neuron!r}: expected memory or plain")
    names = select_passes(passes, skip)
    prepared = prepare(model_path, input_shape)
    parts = split_model(prepared, source=str(model_path))
    in_shape = [d.dim_value for d in parts.spiking.graph.input[0].type.tensor_type.shape.dim][1:]
    calib = load_calibration(calib_dir, calib_random, in_shape)
    if "channel_norm" in names and calib is None:
        raise SnncError("channel_norm needs calibration images: pass --calib DIR (a folder of jpg/png), "
                        "or --calib-random N to calibrate on random inputs")
    ctx = PassContext(options={"percentile": percentile, "norm": norm, "maxpool": maxpool, "v_init": v_init,
                               "neuron": neuron, "progress": progress},
                      calibration=calib)
    graph = run_passes(import_graph(parts.spiking), names, ctx)
    spiking = export_model(graph, like=prepared)
    ratelimit = neurons_to_activations(spiking, clip=True)
    net = lower_to_network(spiking)
    stats = dict(ctx.stats)
    if calib is not None:
        stats["clipping_error"] = clipping_error(parts.spiking, ratelimit, calib)
        log.info("clipping error (rate-limit ANN vs ANN, max abs / max |ANN| on calibration data): %s",
                 {k: round(v, 5) for k, v in stats["clipping_error"].items()})
    net.host_onnx = parts.host.SerializeToString() if parts.host is not None else None
    net.ann_onnx = prepared.SerializeToString() if include_ann else None
    net.input_encoding = {"kind": "direct", "scale": 1.0 / 255.0, "max_value": 1.0}
    net.preprocess = {"color": "RGB", "scale": 1.0 / 255.0, "letterbox": True, "pad_value": 0.5,
                      "input_name": parts.spiking.graph.input[0].name, "shape": [int(d) for d in in_shape]}
    net.meta = {
        "snnc_version": __version__, "source": Path(model_path).name, "source_sha256": file_sha256(model_path),
        "passes": names, "options": {"percentile": percentile, "norm": norm, "maxpool": maxpool, "v_init": v_init,
                                     "neuron": neuron,
                                     "calibration_images": 0 if calib is None else int(len(calib)),
                                     "calibration": "folder" if calib_dir else ("random" if calib_random else None)},
        "stats": stats, "class_names": _class_names(prepared), "host_outputs": [o.name for o in prepared.graph.output],
    }
    return CompileResult(net, spiking, ratelimit, parts.spiking, parts.host, stats)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".snnc-", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_output(result: CompileResult, output: str | Path, emit: str = "lava") -> Path:
    """Save one artifact: the .lava file, the spiking ONNX, the rate-limit ANN, or a C project folder."""
    output = Path(output)
    if emit not in EMIT_KINDS:
        raise SnncError(f"--emit {emit!r}: expected one of {', '.join(EMIT_KINDS)}")
    if emit != "c" and not output.parent.exists():
        raise SnncError(f"{output.parent}: output folder does not exist")
    if emit == "lava":
        lavafile.save(result.network, output)
    elif emit == "onnx":
        _atomic_write_bytes(output, result.spiking.SerializeToString())
    elif emit == "ratelimit":
        _atomic_write_bytes(output, result.ratelimit.SerializeToString())
    else:
        try:
            from snnc.backends.c import generate
        except ImportError as exc:
            raise SnncError(f"the C backend is not available: {exc}") from None
        generate(result.network, output)
    return output
