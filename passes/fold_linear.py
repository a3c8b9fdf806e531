"""fold_linear: linear (neuron-free) 1x1 layers between spiking ones -> folded into every consumer. Exact.

`channel_slice`, `residual_add`, `maxpool_to_strided_conv` and `split_leaky_relu` leave a bias-free 1x1
convolution P (a channel selection, the [I I] sum, the max-pool tree's last sum, relu(z) - alpha relu(-z))
that they fold into the next convolution only when that convolution is its sole consumer. In YOLOv5's C3 and
YOLOv8's C2f the result also feeds a Concat, a Pad (the next chained SPPF pool) or several convolutions, so P
stays a linear layer between spiking ones, which fixed point cannot represent (a neuron-free layer's integers
are in its own weight units, not in the units its consumer's weights expect).

This pass pushes P forward until it meets convolutions: with y = P x (per pixel, P of shape (C_y, C_x)),

    Conv(y, W)              = Conv(x, W P)                      (the consumer's weights composed with P)
    Concat(a, y, b)         = Q Concat(a, x, b),  Q = diag(I, P, I)  (then Q is pushed into the Concat's consumers)
    Pad(y) (zeros or edge)  = P Pad(x)                          (P has no bias, so padding commutes)

It folds P only when every path from y ends in a convolution that is not a copy layer (nearest upsampling's
deconvolution stays a pure copy), never in a graph output or another op; otherwise P is left as it is.
Concats then carry the neuron outputs themselves (the same tensor may appear twice), so every remaining
connection layer has a neuron or is an output. Weights are composed in float64 and stored as float32.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from snnc.compiler.graph import const_value, make_const, make_var
from snnc.compiler.linear import (block_diagonal, commutes_with_pointwise, compose_pointwise, is_copy_node,
                                  pointwise_matrix)
from snnc.compiler.registry import Pass, PassContext, register_pass


def _channels(t: gs.Tensor) -> int | None:
    shape = t.shape
    return int(shape[1]) if shape is not None and len(shape) == 4 and isinstance(shape[1], (int, np.integer)) \
        else None


def _absorbs(graph: gs.Graph, t: gs.Tensor, seen: int = 0) -> bool:
    """Every path from tensor t ends in a convolution (through Concats and Pads) and t is not a graph output."""
    if seen > 64 or any(o is t for o in graph.outputs) or not t.outputs or _channels(t) is None:
        return False
    for c in t.outputs:
        if c.op in ("Conv", "ConvTranspose"):
            if c.inputs[0] is not t or const_value(c.inputs[1]) is None or is_copy_node(c):
                return False
        elif c.op == "Concat":
            if int(c.attrs.get("axis", 1)) not in (1, -3) or any(_channels(i) is None for i in c.inputs) \
                    or not _absorbs(graph, c.outputs[0], seen + 1):
                return False
        elif c.op == "Pad":
            if c.inputs[0] is not t or not commutes_with_pointwise(c) or not _absorbs(graph, c.outputs[0], seen + 1):
                return False
        else:
            return False
    return True


def _push(graph: gs.Graph, old: gs.Tensor, new: gs.Tensor, q: np.ndarray) -> None:
    """Rewire every consumer of `old` (= q @ `new` per pixel) to read `new` instead."""
    for c in list(old.outputs):
        if c.op in ("Conv", "ConvTranspose"):
            w, group = compose_pointwise(c, q)
            c.inputs[1] = make_const(graph, c.name + "_W_folded", w)
            c.attrs["group"] = group
            c.inputs[0] = new
            continue
        if c.op == "Concat":
            big = block_diagonal([q if t is old else np.eye(_channels(t)) for t in c.inputs])
            ins = [new if t is old else t for t in c.inputs]
            c.inputs.clear()  # graphsurgeon's lists take no slice assignment
            c.inputs.extend(ins)
        else:  # Pad
            big = q
            c.inputs[0] = new
        y = c.outputs[0]
        shape = list(y.shape)
        y_new = make_var(graph, y.name + "_unfolded", shape=[shape[0], big.shape[1]] + shape[2:])
        c.outputs.clear()
        c.outputs.append(y_new)
        # the old output tensor keeps its consumers until _push moves them; it has no producer now
        _push(graph, y, y_new, big)


@register_pass
class FoldLinear(Pass):
    name = "fold_linear"
    summary = "linear 1x1 layers between spiking ones -> composed into every consumer conv (through Concat/Pad)"
    exact = True

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        count = 0
        changed = True
        while changed:  # a fold can make another 1x1 (e.g. an [I I] sum after a selection) foldable
            changed = False
            for node in list(graph.nodes):
                if not node.outputs or not node.inputs:
                    continue
                p = pointwise_matrix(node)
                if p is None or _channels(node.inputs[0]) is None or not _absorbs(graph, node.outputs[0]):
                    continue
                x, y = node.inputs[0], node.outputs[0]
                node.inputs.clear()
                node.outputs.clear()
                _push(graph, y, x, p)
                count += 1
                changed = True
        ctx.stats.setdefault(self.name, {}).update(folded=count)
        self.rewrites = count
        return graph

    def ensures(self, graph: gs.Graph) -> None:
        left = [n.name for n in graph.nodes if n.outputs and n.inputs and pointwise_matrix(n) is not None
                and _channels(n.inputs[0]) is not None and _absorbs(graph, n.outputs[0])]
        assert not left, f"foldable linear layers left: {left}"

