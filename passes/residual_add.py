"""residual_add: Add (Sum) of spiking branches -> Concat + a bias-free 1x1 convolution [I I]. Exact.

YOLOv5/v8 bottlenecks add a block's input to its output, y = a + b, both (N, C, H, W). A spiking layer has one
input, so the sum becomes

    Concat(a, b) on channels -> Conv 1x1, W[o, i] = 1 for i = o and i = o + C, no bias

a linear layer (no neuron): in the SNN it passes a(t) + b(t) on every step, which is the sum of the two rates.
When that Conv's only consumer is a group-1 Conv, the [I I] matrix is folded into the consumer's weights
(W'[o, i, ...] = W[o, i mod C, ...]), leaving just the Concat. A ReLU after the Add (ResNet style) then sits on
a convolution's output, as `activations_to_neurons` requires.

Preconditions: every input is a non-constant tensor of the output's shape (no broadcasting); Adds with a
constant (bias-like) input are left alone and refused later by the lowering, with the node named.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from snnc.compiler.graph import const_value, make_var, tensor_shape, unique_name
from snnc.compiler.linear import insert_pointwise
from snnc.compiler.registry import Pass, PassContext, register_pass


def _convertible(node: gs.Node) -> bool:
    if node.op not in ("Add", "Sum") or len(node.inputs) < 2:
        return False
    if any(const_value(t) is not None or t.shape is None for t in node.inputs):
        return False
    shape = node.outputs[0].shape
    return shape is not None and len(shape) == 4 and all(list(t.shape) == list(shape) for t in node.inputs)


@register_pass
class ResidualAdd(Pass):
    name = "residual_add"
    summary = "Add of same-shape branches -> Concat + 1x1 conv [I I] (folded into the next conv when possible)"
    exact = True

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        count = folded = 0
        for node in [n for n in graph.nodes if _convertible(n)]:
            y = node.outputs[0]
            shape = tensor_shape(y)
            c, k = shape[1], len(node.inputs)
            cat = make_var(graph, node.name + "_cat", shape=[shape[0], c * k] + shape[2:])
            graph.nodes.append(gs.Node("Concat", unique_name(graph, node.name + "_cat"), attrs={"axis": 1},
                                       inputs=list(node.inputs), outputs=[cat]))
            w = np.tile(np.eye(c, dtype=np.float32), (1, k)).reshape(c, c * k, 1, 1)
            node.inputs.clear()
            node.outputs.clear()
            folded += int(insert_pointwise(graph, cat, w, y, node.name + "_sum"))
            count += 1
        ctx.stats.setdefault(self.name, {}).update(converted=count, folded=folded)
        self.rewrites = count
        return graph

    def ensures(self, graph: gs.Graph) -> None:
        left = [n.name for n in graph.nodes if _convertible(n)]
        assert not left, f"residual adds left: {left}"
