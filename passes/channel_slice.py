"""channel_slice: Split / Slice along channels -> bias-free 1x1 selection convolutions. Exact.

YOLOv5's C3 and YOLOv8's C2f split a feature map's channels (Split, or Slice on axis 1). Each output part
c[lo:hi:step] becomes

    Conv 1x1, W[o, i] = 1 where i = lo + o * step, else 0, no bias

a linear layer that routes the selected channels (rates) unchanged. When its only consumer is a group-1 Conv
the selection is folded into that Conv's weights (its columns for the other channels are zero), so most slices
cost nothing in the SNN.

Preconditions: 4-D input, constant split sizes / starts, ends and steps, the channel axis only (a Slice that also
cuts H or W is left alone and refused by the lowering, with the node named).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from snnc.compiler.graph import const_value, tensor_shape
from snnc.compiler.linear import insert_pointwise
from snnc.compiler.registry import Pass, PassContext, register_pass


def _channel_parts(node: gs.Node) -> list[list[int]] | None:
    """The input channels each output reads, or None when the node is not a pure channel split/slice."""
    shape = node.inputs[0].shape
    if shape is None or len(shape) != 4 or any(not isinstance(d, (int, np.integer)) for d in shape):
        return None
    c = int(shape[1])
    if node.op == "Split":
        if int(node.attrs.get("axis", 0)) not in (1, -3):
            return None
        sizes = const_value(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1].name else None
        if sizes is None:
            sizes = node.attrs.get("split")
        if sizes is None:
            n = len(node.outputs)
            if c % n:
                return None
            sizes = [c // n] * n
        parts, lo = [], 0
        for s in np.asarray(sizes).reshape(-1).tolist():
            parts.append(list(range(lo, lo + int(s))))
            lo += int(s)
        return parts if lo == c else None
    if node.op == "Slice":
        starts, ends = const_value(node.inputs[1]), const_value(node.inputs[2])
        axes = const_value(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3].name else None
        steps = const_value(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4].name else None
        if starts is None or ends is None or (len(node.inputs) > 3 and node.inputs[3].name and axes is None):
            return None
        axes = np.arange(len(starts)) if axes is None else axes
        steps = np.ones(len(starts), np.int64) if steps is None else steps
        if len(starts) != 1 or int(axes[0]) not in (1, -3):
            return None
        idx = list(range(c))[slice(int(starts[0]), int(ends[0]), int(steps[0]))]
        return [idx] if idx else None
    return None


@register_pass
class ChannelSlice(Pass):
    name = "channel_slice"
    summary = "Split/Slice of channels -> 1x1 selection convs (folded into the next conv when possible)"
    exact = True

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        count = folded = 0
        for node in [n for n in graph.nodes if n.op in ("Split", "Slice")]:
            parts = _channel_parts(node)
            if parts is None:
                continue
            x = node.inputs[0]
            c = tensor_shape(x)[1]
            outs = list(node.outputs)
            node.inputs.clear()
            node.outputs.clear()
            for y, idx in zip(outs, parts):
                if not y.outputs and not any(t is y for t in graph.outputs):
                    continue  # an unused part
                w = np.zeros((len(idx), c, 1, 1), np.float32)
                w[np.arange(len(idx)), idx] = 1.0
                folded += int(insert_pointwise(graph, x, w, y, f"{y.name}_select"))
            count += 1
        ctx.stats.setdefault(self.name, {}).update(converted=count, folded=folded)
        self.rewrites = count
        return graph

    def ensures(self, graph: gs.Graph) -> None:
        left = [n.name for n in graph.nodes if n.op in ("Split", "Slice") and _channel_parts(n) is not None]
        assert not left, f"channel slices left: {left}"
