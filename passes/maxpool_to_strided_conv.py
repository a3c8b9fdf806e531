"""maxpool_to_strided_conv: MaxPool -> strided convolutions and ReLUs (`--maxpool exact`), or a routing layer over
spike counts (`--maxpool count`, the default: no neurons; docs/results.md has the measurements).

A spike train has no max, but max(a, b) = b + relu(a - b) = relu(a - b) + relu(b) - relu(-b), so a k x k
max-pool is a tree of pairwise maxima over its K = k*k taps (docs/methods.md section 4):

    level 1: a strided k x k conv (group = C) picks the taps and forms, per pair (a, b), the channels
             a - b, b, -b (an unpaired tap c gives c, -c), followed by ReLU;
    level n: a 1x1 conv (group = C) forms the same three channels from the previous level's maxima, ReLU;
    last:    a bias-free 1x1 conv sums relu(a-b) + relu(b) - relu(-b) into the max. It is folded into the
             following Conv when that Conv is its only consumer (exact: no bias, so padding commutes).

ceil(log2 K) ReLU levels; when the input is non-negative (it comes from a ReLU) the -b / -c channels are
dropped. The ReLUs become IF neurons in `activations_to_neurons`, so the SNN computes the pool's max rate.

Padding: MaxPool pads with -infinity. When every window holds at least one real pixel (ONNX requires
pads < kernel), edge replication gives the same maxima: a padded value repeats an edge pixel that is in the same
window. The pass inserts Pad(mode="edge") for those pads (auto_pad and ceil_mode resolved to explicit pads).
An explicit zero Pad before a MaxPool (PyTorch's ZeroPad2d) is a separate node and keeps its zero semantics.

Mode `approximate` (`--maxpool approximate`): one depthwise strided conv with weights 1/K (the mean of the
window) for networks retrained with strided convolutions; |mean - max| <= max - min of the window.

Mode `count` (`--maxpool count`): the MaxPool stays, pad-free after the edge Pad above, and is lowered to a
`maxpool` routing layer that passes the increments of the running maximum of its window's spike counts:
out(t) = M(t) - M(t-1), M(t) = max over the window of the inputs' summed outputs up to t. No neurons; the
decoded output (M(T) / T) is exactly the max-pool of the decoded inputs at every T, since all taps of a
window are one channel and share one threshold. With inputs of at most one spike per step, M changes by at
most one per step, so the output is itself a spike train. In the spirit of Rueckauer et al. (2017)'s
spike-count gated max-pool, which forwards the spikes of the input with the largest count so far (whose
output can lag the maximum count); passing the count maximum itself removes that error.

Preconditions: 2-D pooling, dilations 1, the Indices output unused, a static input shape.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from snnc.ir.errors import UnsupportedOpError
from snnc.compiler.graph import const_value, make_const, make_var, node_label, producer, tensor_shape, unique_name
from snnc.compiler.linear import fuse_pointwise_into_consumer
from snnc.compiler.registry import Pass, PassContext, register_pass


def _explicit_pads(node: gs.Node, x_shape: list[int], y_shape: list[int]) -> list[int]:
    """[top, left, bottom, right] that make a padding-free pool produce y_shape; refuses empty windows."""
    k = list(node.attrs["kernel_shape"])
    s = list(node.attrs.get("strides", [1, 1]))
    auto = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    pads = list(node.attrs.get("pads", [0, 0, 0, 0]))
    out = []
    for axis in range(2):
        n_in, n_out = x_shape[2 + axis], y_shape[2 + axis]
        total = max((n_out - 1) * s[axis] + k[axis] - n_in, 0)
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
        elif auto == "VALID":
            lo = 0
        else:
            lo = pads[axis]
        hi = max(total - lo, 0)
        last_start = (n_out - 1) * s[axis] - lo
        if lo >= k[axis] or last_start > n_in - 1:
            raise UnsupportedOpError(f"{node_label(node)}: a pooling window lies entirely in padding; "
                                     "reduce the pads")
        out.append((lo, hi))
    return [out[0][0], out[1][0], out[0][1], out[1][1]]


def _tree_levels(taps: int, nonneg: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per level (channel forms over the previous basis, value forms over this level's channels).

    Level 0's basis is the K taps. Each returned pair is (A, V): A (M, prev_dim) maps the previous basis to this
    level's ReLU inputs; V (n_values, M) maps this level's ReLU outputs to the values (maxima) it produces.
    """
    values = np.eye(taps)  # each value as a form over the current basis
    levels = []
    while values.shape[0] > 1:
        rows, vals = [], []
        for i in range(0, values.shape[0], 2):
            if i + 1 < values.shape[0]:
                a, b = values[i], values[i + 1]
                base = len(rows)
                if nonneg:
                    rows += [a - b, b]
                    vals.append((base, [1.0, 1.0]))
                else:
                    rows += [a - b, b, -b]
                    vals.append((base, [1.0, 1.0, -1.0]))
            else:
                c = values[i]
                base = len(rows)
                rows += [c] if nonneg else [c, -c]
                vals.append((base, [1.0] if nonneg else [1.0, -1.0]))
        A = np.stack(rows)
        V = np.zeros((len(vals), len(rows)))
        for j, (base, coef) in enumerate(vals):
            V[j, base:base + len(coef)] = coef
        levels.append((A, V))
        values = np.eye(len(vals))  # next level's values are this level's maxima
    return levels


def _is_nonneg(x: gs.Tensor) -> bool:
    p = producer(x)
    if p is None:
        return False
    if p.op == "Relu":
        return True
    if p.op == "Clip" and len(p.inputs) > 1:
        lo = const_value(p.inputs[1])
        return lo is not None and float(lo) >= 0
    return False


def _conv(graph: gs.Graph, base: str, x: gs.Tensor, w: np.ndarray, attrs: dict, shape: list[int],
          relu: bool) -> gs.Tensor:
    y = make_var(graph, base, shape=shape)
    graph.nodes.append(gs.Node("Conv", unique_name(graph, base), attrs=attrs,
                               inputs=[x, make_const(graph, base + "_W", w.astype(np.float32))], outputs=[y]))
    if not relu:
        return y
    r = make_var(graph, base + "_relu", shape=shape)
    graph.nodes.append(gs.Node("Relu", unique_name(graph, base + "_relu"), inputs=[y], outputs=[r]))
    return r


@register_pass
class MaxPoolToStridedConv(Pass):
    name = "maxpool_to_strided_conv"
    summary = ("MaxPool -> a spike-count max-pool routing layer (maxpool=count, default), or strided convs + ReLUs "
               "computing the exact max (exact), or a mean conv (approximate)")
    exact = True

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        mode = ctx.options.maxpool
        count = 0
        for node in [n for n in graph.nodes if n.op == "MaxPool"]:
            count += self._convert(graph, node, mode)
        ctx.stats.setdefault(self.name, {}).update(converted=count, mode=mode)
        self.rewrites = count
        return graph

    def _convert(self, graph: gs.Graph, node: gs.Node, mode: str) -> bool:
        """Rewrite one MaxPool; False when it is already in its final form (a pad-free pool under `count`)."""
        x, y = node.inputs[0], node.outputs[0]
        x_shape, y_shape = tensor_shape(x), tensor_shape(y)
        if len(x_shape) != 4:
            raise UnsupportedOpError(f"{node_label(node)}: only 2-D max-pooling converts")
        if any(d != 1 for d in node.attrs.get("dilations", [1, 1])):
            raise UnsupportedOpError(f"{node_label(node)}: dilated max-pooling is not supported")
        if len(node.outputs) > 1 and node.outputs[1].outputs:
            raise UnsupportedOpError(f"{node_label(node)}: its Indices output is used; that has no spiking form")
        kh, kw = node.attrs["kernel_shape"]
        strides = list(node.attrs.get("strides", [1, 1]))
        c = x_shape[1]
        pads = _explicit_pads(node, x_shape, y_shape)
        plain = {k: v for k, v in node.attrs.items() if k not in ("kernel_shape", "strides")}
        if mode == "count" and not any(pads) and not plain and len(node.outputs) == 1:
            return False
        if any(pads):
            padded = make_var(graph, node.name + "_edgepad",
                              shape=[x_shape[0], c, x_shape[2] + pads[0] + pads[2], x_shape[3] + pads[1] + pads[3]])
            onnx_pads = make_const(graph, node.name + "_pads",
                                   np.array([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]], dtype=np.int64))
            graph.nodes.append(gs.Node("Pad", unique_name(graph, node.name + "_edgepad"), attrs={"mode": "edge"},
                                       inputs=[x, onnx_pads], outputs=[padded]))
            src = padded
        else:
            src = x
        if mode == "count":
            # Kept as a pad-free MaxPool: ONNX tools (calibration, the rate-limit ANN) read it as the rate limit.
            graph.nodes.append(gs.Node("MaxPool", unique_name(graph, node.name + "_count"),
                                       attrs={"kernel_shape": [kh, kw], "strides": strides},
                                       inputs=[src], outputs=[y]))
            node.inputs.clear()
            node.outputs.clear()
            return True
        out_hw = y_shape[2:]
        first = {"group": c, "kernel_shape": [kh, kw], "strides": strides}
        taps = kh * kw
        if mode == "approximate" or taps == 1:
            w = np.full((c, 1, kh, kw), 1.0 / taps)
            out = _conv(graph, node.name + "_meanconv", src, w, first, y_shape, relu=False)
        else:
            levels = _tree_levels(taps, _is_nonneg(x))
            cur, prev_v = src, None
            for depth, (A, V) in enumerate(levels):
                m = A.shape[0]
                if depth == 0:
                    w = np.tile(A.reshape(m, 1, kh, kw), (c, 1, 1, 1))
                    attrs = first
                else:
                    # This level's ReLU inputs as forms over the previous level's ReLU outputs: A @ prev_v.
                    comb = A @ prev_v
                    w = np.tile(comb.reshape(m, comb.shape[1], 1, 1), (c, 1, 1, 1))
                    attrs = {"group": c, "kernel_shape": [1, 1]}
                cur = _conv(graph, f"{node.name}_max{depth}", cur, w, attrs, [y_shape[0], c * m] + out_hw, relu=True)
                prev_v = V
            w = np.tile(prev_v.reshape(1, prev_v.shape[1], 1, 1), (c, 1, 1, 1))
            out = _conv(graph, node.name + "_maxsum", cur, w, {"group": c, "kernel_shape": [1, 1]}, y_shape,
                        relu=False)
        last = producer(out)
        last.outputs = [y]
        node.inputs.clear()
        node.outputs.clear()
        if mode == "exact" and taps > 1:
            fuse_pointwise_into_consumer(graph, last)
        return True
