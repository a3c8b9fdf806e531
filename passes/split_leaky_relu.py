"""split_leaky_relu: LeakyRelu(alpha) -> two ReLU channels, relu(z) and relu(-z), recombined in the consumers. Exact.

    leaky(z) = relu(z) - alpha * relu(-z)

The convolution that computes z gets its output channels doubled and interleaved, [W_c; -W_c] and [b_c; -b_c]
for channel c, a ReLU follows, and the pointwise map P (P[c, 2c] = 1, P[c, 2c + 1] = -alpha) is pushed down to
the next convolutions and folded into their weights (W'[.., i'] = sum_i W[.., i] P[i, i']): through Concat
(P grows block-diagonally, identity for the other inputs), Pad (zero or edge: per channel, so it commutes with
a bias-free P) and copy deconvolutions (nearest upsampling: applied to both channels of a pair). The rewritten
ANN computes the same function; afterwards both channels are ordinary ReLUs, so `activations_to_neurons` makes
them IF neurons and `channel_norm` gives each its own threshold from data.

Why (docs/methods.md sections 2 and 10): the signed IBT neuron shares one membrane between both signs. A negative
output needs 1/alpha times more charge per spike, so the negative side is quantized 1/alpha times more coarsely,
and after a -1 spike the membrane sits near 0, within theta of the positive threshold, where input fluctuations
trigger +1 spikes worth theta that a later -1 spike repays only by alpha*theta. Two IF neurons keep two
membranes: relu(-z)'s membrane stays far below threshold while z > 0 and vice versa, and each side is quantized in
its own units. Costs: twice the neurons on leaky layers and twice the fan-in of their consumers (synapses); all
spikes are binary and unsigned.

Preconditions: the LeakyRelu reads a Conv/ConvTranspose output that nothing else reads, and everything its output
reaches through Concat / Pad / copy deconvolutions is a Conv or ConvTranspose with constant weights. A LeakyRelu
that does not qualify is left alone (it becomes a signed memory neuron), and the pass's statistics say so.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs

from snnc.compiler.graph import (CONV_OPS, const_value, is_graph_output, make_const, make_var, node_label, producer,
                                 unique_name)
from snnc.compiler.linear import (block_diagonal, commutes_with_pointwise, compose_pointwise, is_copy_node,
                                  pointwise_matrix)
from snnc.compiler.qcfs import insert_qcfs_chain, match_signed_qcfs
from snnc.ir.errors import UnsupportedOpError
from snnc.compiler.registry import Pass, PassContext, register_pass

log = logging.getLogger(__name__)


def _routes(node: gs.Node) -> bool:
    if node.op == "Pad":
        return commutes_with_pointwise(node)
    if node.op == "Concat":
        rank = len(node.outputs[0].shape or [])
        return int(node.attrs.get("axis", 0)) in (1, 1 - rank)
    return is_copy_node(node)


def _splittable(graph: gs.Graph, tensor: gs.Tensor, seen: set[str] | None = None) -> bool:
    """Everything `tensor` reaches through routing ops is a convolution with constant weights."""
    seen = set() if seen is None else seen
    if is_graph_output(graph, tensor) or not tensor.outputs:
        return False
    for node in tensor.outputs:
        if node.name in seen:
            continue
        seen.add(node.name)
        if _routes(node):
            if not _splittable(graph, node.outputs[0], seen):
                return False
        elif node.op not in CONV_OPS or const_value(node.inputs[1]) is None or node.inputs[0] is not tensor:
            return False
    return True


def _double_producer(graph: gs.Graph, conv: gs.Node) -> gs.Tensor:
    """Interleave [W_c; -W_c] (and biases) on the output channels of `conv`; returns its new 2C output."""
    w = const_value(conv.inputs[1]).astype(np.float64)
    axis = 1 if conv.op == "ConvTranspose" else 0
    group = int(conv.attrs.get("group", 1))
    c_out = w.shape[0] if axis == 0 else w.shape[1] * group
    w2 = np.repeat(w, 2, axis=axis)
    sl = [slice(None)] * w.ndim
    sl[axis] = slice(1, None, 2)
    w2[tuple(sl)] *= -1.0
    b = const_value(conv.inputs[2]) if len(conv.inputs) > 2 else np.zeros(c_out)
    b2 = np.repeat(np.asarray(b, dtype=np.float64), 2)
    b2[1::2] *= -1.0
    dtype = const_value(conv.inputs[1]).dtype
    y = conv.outputs[0]
    shape = list(y.shape)
    shape[1] *= 2
    y2 = make_var(graph, y.name + "_pm", shape=shape)
    conv.inputs[1] = make_const(graph, conv.name + "_W_pm", w2.astype(dtype))
    bias = make_const(graph, conv.name + "_B_pm", b2.astype(dtype))
    if len(conv.inputs) > 2:
        conv.inputs[2] = bias
    else:
        conv.inputs.append(bias)
    conv.outputs = [y2]
    return y2


def _pointwise(graph: gs.Graph, base: str, x: gs.Tensor, p: np.ndarray, out: gs.Tensor) -> gs.Node:
    """A bias-free 1x1 Conv computing out = P x (P dense, (C_out, C_in))."""
    node = gs.Node("Conv", unique_name(graph, base), attrs={"kernel_shape": [1, 1]},
                   inputs=[x, make_const(graph, base + "_P", p.reshape(p.shape + (1, 1)).astype(np.float32))],
                   outputs=[out])
    graph.nodes.append(node)
    return node


def _detach(node: gs.Node) -> None:
    node.inputs.clear()
    node.outputs.clear()


@register_pass
class SplitLeakyRelu(Pass):
    name = "split_leaky_relu"
    summary = ("LeakyRelu -> relu(z) - alpha*relu(-z), two IF channels folded into consumers (--leaky split; the "
               "default graded keeps one neuron)")
    exact = True

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        pending: list[gs.Node] = []
        kept: list[str] = []
        split = 0
        for node in [n for n in graph.nodes if n.op == "LeakyRelu"]:
            conv = producer(node.inputs[0])
            if (conv is None or conv.op not in CONV_OPS or const_value(conv.inputs[1]) is None
                    or len(node.inputs[0].outputs) != 1 or is_graph_output(graph, node.inputs[0])
                    or not _splittable(graph, node.outputs[0])):
                kept.append(node.name)
                log.info("%s stays one signed (memory) neuron: its input or consumers do not allow the split",
                         node_label(node))
                continue
            alpha = float(node.attrs.get("alpha", 0.01))
            y2 = _double_producer(graph, conv)
            r = make_var(graph, y2.name + "_relu", shape=y2.shape)
            graph.nodes.append(gs.Node("Relu", unique_name(graph, node.name + "_pm_relu"), inputs=[y2], outputs=[r]))
            c = y2.shape[1] // 2
            p = np.zeros((c, 2 * c))
            p[np.arange(c), 2 * np.arange(c)] = 1.0
            p[np.arange(c), 2 * np.arange(c) + 1] = -alpha
            out = node.outputs[0]
            _detach(node)
            pending.append(_pointwise(graph, node.name + "_pm_combine", r, p, out))
            split += 1
        split += self._split_signed_qcfs(graph, pending)
        while pending:
            self._sink(graph, pending.pop(), pending)
        ctx.stats.setdefault(self.name, {}).update(split=split, kept_signed=kept)
        self.rewrites = split
        return graph

    def _split_signed_qcfs(self, graph: gs.Graph, pending: list[gs.Node]) -> int:
        """A fine-tuned LeakyReLU (signed QCFS, compiler/qcfs.py): the same split, with the trained lambdas kept as
        a per-channel QCFS chain on the [z; -z] pairs instead of a ReLU."""
        found = [m for m in map(match_signed_qcfs, list(graph.tensors().values())) if m is not None]
        for m in found:
            conv = producer(m.z)
            if (conv is None or conv.op not in CONV_OPS or const_value(conv.inputs[1]) is None
                    or is_graph_output(graph, m.z) or not _splittable(graph, m.out)):
                raise UnsupportedOpError(f"the signed QCFS activation on '{m.z.name}' (a fine-tuned LeakyReLU) needs "
                                         "a convolution before it and convolutions after it to split into two IF "
                                         "neurons (a count max-pool is not one: add --maxpool exact, or use the "
                                         "default --leaky graded)")
            y2 = _double_producer(graph, conv)
            for n in m.nodes:
                _detach(n)
            c = y2.shape[1] // 2
            r = make_var(graph, y2.name + "_qcfs", shape=y2.shape)
            pairs = np.stack([np.broadcast_to(m.lam_pos, (c,)), np.broadcast_to(m.lam_neg, (c,))], axis=1)
            insert_qcfs_chain(graph, conv.name + "_pm_qcfs", y2, r, pairs.reshape(-1), m.levels)
            p = np.zeros((c, 2 * c))
            p[np.arange(c), 2 * np.arange(c)] = 1.0
            p[np.arange(c), 2 * np.arange(c) + 1] = -m.alpha
            pending.append(_pointwise(graph, conv.name + "_pm_combine", r, p, m.out))
        return len(found)

    def _sink(self, graph: gs.Graph, k: gs.Node, pending: list[gs.Node]) -> None:
        """Move the pointwise map `k` past routing ops and fold it into the convolutions it reaches."""
        out = k.outputs[0]
        users = list(out.outputs)
        for extra in users[1:]:  # one copy per consumer, each sunk on its own
            t = make_var(graph, out.name + "_copy", shape=out.shape)
            extra.inputs = [t if i is out else i for i in extra.inputs]
            pending.append(_pointwise(graph, k.name + "_copy", k.inputs[0], pointwise_matrix(k), t))
        node = users[0]
        p = pointwise_matrix(k)
        src = k.inputs[0]
        if node.op == "Concat":
            parts, blocks = [], []
            for t in node.inputs:
                q = producer(t)
                if q is not None and (q is k or any(q is n for n in pending)):
                    parts.append(q.inputs[0])
                    blocks.append(pointwise_matrix(q))
                    if len(t.outputs) == 1 and not is_graph_output(graph, t):  # else it stays for its others
                        if q is not k:
                            del pending[next(i for i, n in enumerate(pending) if n is q)]
                        _detach(q)
                else:
                    parts.append(t)
                    blocks.append(np.eye(t.shape[1]))
            big = block_diagonal(blocks)
            joined = make_var(graph, node.outputs[0].name + "_pm", shape=[node.outputs[0].shape[0], big.shape[1]]
                              + list(node.outputs[0].shape[2:]))
            y = node.outputs[0]
            node.inputs = parts
            node.outputs = [joined]
            pending.append(_pointwise(graph, node.name + "_pm_combine", joined, big, y))
            return
        if _routes(node):  # Pad or copy deconvolution: per channel, so apply it to src and P after it
            y = node.outputs[0]
            shape = list(y.shape)
            shape[1] = p.shape[1]
            moved = make_var(graph, y.name + "_pm", shape=shape)
            if node.op in CONV_OPS:
                w = const_value(node.inputs[1])
                src_of = np.argmax(np.abs(p) > 0, axis=0)  # the channel each column of P belongs to
                node.inputs[1] = make_const(graph, node.name + "_W_pm", w[src_of])
                node.attrs["group"] = p.shape[1]
            node.inputs[0] = src
            node.outputs = [moved]
            _detach(k)
            pending.append(_pointwise(graph, node.name + "_pm_combine", moved, p, y))
            return
        w, group = compose_pointwise(node, p)
        node.inputs[1] = make_const(graph, node.name + "_W_pm", w)
        node.attrs["group"] = group
        node.inputs[0] = src
        _detach(k)
