"""fold_batchnorm: Conv (or ConvTranspose) followed by BatchNormalization -> one Conv. Exact.

Math (Spiking YOLOv3 eq. 13-14, docs/methods.md section 4), per output channel o, sigma = sqrt(var + epsilon) with the node's own epsilon:

    W~[o] = W[o] * gamma[o] / sigma[o]        b~[o] = (b[o] - mean[o]) * gamma[o] / sigma[o] + beta[o]

ConvTranspose weights are (C_in, C_out/group, kh, kw): output channel o = g * (C_out/group) + j lives at
W[g*C_in/group:(g+1)*C_in/group, j]. A BatchNormalization with no convolution before it (or whose convolution
output has other consumers) becomes a depthwise 1x1 Conv with the same per-channel affine map.

Preconditions: inference-mode BatchNormalization (training_mode = 0), constant weights and statistics.
Postcondition: no BatchNormalization left.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from snnc.ir.errors import UnsupportedOpError
from snnc.compiler.graph import const_value, make_const, node_label, producer, sole_consumer, unique_name
from snnc.compiler.registry import Pass, PassContext, register_pass


def _bn_affine(bn: gs.Node) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) with BN(x) = scale * x + shift per channel, in float64."""
    if int(bn.attrs.get("training_mode", 0)) != 0:
        raise UnsupportedOpError(f"{node_label(bn)} is in training mode; export the model in eval mode")
    values = [const_value(t) for t in bn.inputs[1:5]]
    if any(v is None for v in values):
        raise UnsupportedOpError(f"{node_label(bn)} has non-constant parameters; export with constant statistics")
    gamma, beta, mean, var = (v.astype(np.float64) for v in values)
    eps = float(bn.attrs.get("epsilon", 1e-5))
    if not (np.isfinite(var).all() and (var >= 0).all() and (var + eps > 0).all()):
        raise UnsupportedOpError(f"{node_label(bn)}: variance + epsilon must be > 0 (min variance "
                                 f"{float(np.min(var))!r}, epsilon {eps!r}); fix the exported statistics")
    scale = gamma / np.sqrt(var + eps)
    shift = beta - mean * scale
    if not (np.isfinite(scale).all() and np.isfinite(shift).all()):
        raise UnsupportedOpError(f"{node_label(bn)}: folding gives non-finite weights (variance + epsilon "
                                 f"{float(np.min(var + eps))!r} is too small)")
    return scale, shift


def _fold_into(conv: gs.Node, scale: np.ndarray, shift: np.ndarray, graph: gs.Graph) -> bool:
    w = const_value(conv.inputs[1])
    b = const_value(conv.inputs[2]) if len(conv.inputs) > 2 else None
    if w is None or (len(conv.inputs) > 2 and b is None):
        return False
    dtype = w.dtype
    w = w.astype(np.float64)
    c_out = scale.shape[0]
    if conv.op == "Conv":
        w = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
    else:
        group = int(conv.attrs.get("group", 1))
        c_in_g, c_out_g = w.shape[0] // group, w.shape[1]
        for g in range(group):
            w[g * c_in_g:(g + 1) * c_in_g] *= scale[g * c_out_g:(g + 1) * c_out_g].reshape(1, -1, *([1] * (w.ndim - 2)))
    bias = np.zeros(c_out) if b is None else b.astype(np.float64)
    conv.inputs[1] = make_const(graph, conv.name + "_W_bnfold", w.astype(dtype))
    new_b = make_const(graph, conv.name + "_B_bnfold", (bias * scale + shift).astype(dtype))
    if len(conv.inputs) > 2:
        conv.inputs[2] = new_b
    else:
        conv.inputs.append(new_b)
    return True


@register_pass
class FoldBatchNorm(Pass):
    name = "fold_batchnorm"
    summary = "Conv/ConvTranspose + BatchNormalization -> Conv (lone BN -> depthwise 1x1 Conv)"
    exact = True

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        folded = 0
        for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
            scale, shift = _bn_affine(bn)
            x, y = bn.inputs[0], bn.outputs[0]
            conv = producer(x)
            if conv is not None and conv.op in ("Conv", "ConvTranspose") and sole_consumer(graph, x) is bn \
                    and _fold_into(conv, scale, shift, graph):
                conv.outputs = [y]
            else:
                c = scale.shape[0]
                dtype = const_value(bn.inputs[1]).dtype
                w = make_const(graph, bn.name + "_W", scale.reshape(c, 1, 1, 1).astype(dtype))
                b = make_const(graph, bn.name + "_B", shift.astype(dtype))
                graph.nodes.append(gs.Node("Conv", unique_name(graph, bn.name + "_conv"),
                                           attrs={"group": c, "kernel_shape": [1, 1]},
                                           inputs=[x, w, b], outputs=[y]))
            bn.inputs.clear()
            bn.outputs.clear()
            folded += 1
        ctx.stats.setdefault("fold_batchnorm", {})["folded"] = folded
        self.rewrites = folded
        return graph

    def ensures(self, graph: gs.Graph) -> None:
        assert not any(n.op == "BatchNormalization" for n in graph.nodes), "BatchNormalization left"
