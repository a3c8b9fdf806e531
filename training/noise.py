"""The dual error model's noise level per layer from a measured SNN: `snnc finetune --noise-from metrics.json`.

`snnc eval` splits each neuron layer's error at every T into clipping, quantization and unevenness
(evaluation/errors.py) and writes the split to metrics.json: E_u = sum |e_unevenness| / sum |a_RL| over the
layer's neurons, and the layer's mean |a_RL| per neuron. In snnc's normalized networks theta = 1, so the layer's
mean order error per neuron, in spikes, is

    e = E_u * mean |a_RL| * T

The dual error model adds u lambda / T, u uniform in [-s, s], to active neurons only (0 < y < lambda), so with
the fraction a of them active in a batch, s = 2 e / a (at most 1) gives the noise the measured mean over the
whole layer (training/qcfs.py). The layer's name in the network is the name of the convolution its neurons sit
on, which is how the activations of the ONNX model are matched (through a BatchNormalization between them);
layers the file does not name (and the max-pool trees, which have no activation in the ONNX model) keep the
global --unevenness.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import onnx

from snnc.ir.errors import SnncError

log = logging.getLogger(__name__)


def unevenness_from_metrics(path: str | Path, T: int) -> dict[str, float]:
    """Layer (convolution) name -> mean order error per neuron in spikes, from the error split at the T closest to
    `T` (a measured T above `T` first on a tie)."""
    path = Path(path)
    try:
        metrics = json.loads(path.read_text())
    except FileNotFoundError:
        raise SnncError(f"--noise-from {path}: no such file (snnc eval writes metrics.json in its report)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnncError(f"--noise-from {path}: not a JSON file ({exc.__class__.__name__})") from None
    errors = metrics.get("errors") if isinstance(metrics, dict) else None
    layers = errors.get("layers") if isinstance(errors, dict) else None
    if not layers:
        raise SnncError(f"--noise-from {path}: no per-layer error split in it; run snnc eval without --no-errors")
    out = {}
    try:
        for layer in layers:
            row = min(layer["T"], key=lambda r: (abs(r["T"] - T), -r["T"]))
            out[str(layer["layer"])] = float(layer["mean_abs_rate_limit"]) * float(row["unevenness"]) * row["T"]
    except (KeyError, TypeError, ValueError) as exc:
        raise SnncError(f"--noise-from {path}: per-layer errors in an unexpected form ({exc.__class__.__name__}: "
                        f"{exc})") from None
    used = sorted({min(layer["T"], key=lambda r: (abs(r["T"] - T), -r["T"]))["T"] for layer in layers})
    if used != [T]:
        log.warning("--noise-from %s: no error split at T = %d; using T = %s", path, T, used)
    return out


def layer_of(model: onnx.ModelProto, activation: onnx.NodeProto) -> str | None:
    """The name of the convolution an activation reads (through a BatchNormalization): its network layer name."""
    made_by = {o: n for n in model.graph.node for o in n.output}
    node = made_by.get(activation.input[0])
    if node is not None and node.op_type == "BatchNormalization":
        node = made_by.get(node.input[0])
    return node.name if node is not None and node.op_type in ("Conv", "ConvTranspose") else None
