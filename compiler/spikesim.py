"""A small NumPy simulation of a spiking ONNX graph, node by node over all T steps, for passes that need the SNN's
output inside the compiler (`calibrate_to_T`). The backends are the reference simulators; this helper exists
because the compiler may not import them (imports point down), and it follows the same neuron definition
(docs/neurons.md): float32, direct input encoding, no synaptic delay.

Because a layer sees its sources' out(t) of the same step, a feed-forward graph can be simulated one node at a
time over all steps: a convolution runs on the (T * N) stacked spike trains of its source, a neuron scans its
T inputs. A tensor that is the same at every step (the image, and linear layers of it) is kept with a time axis
of length 1. Convolutions run in onnxruntime, one small session per node, built once.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from snnc.compiler.graph import const_value, is_neuron, node_label, ort_session
from snnc.ir.countpool import count_maxpool, window_max
from snnc.ir.errors import UnsupportedOpError


def neuron_scan(z: np.ndarray, T: int, *, kind: str, theta: np.ndarray, v0: np.ndarray, alpha: float = 0.0,
                memory: bool = False, theta_neg: np.ndarray | None = None,
                neg_level: np.ndarray | None = None) -> np.ndarray:
    """out(t) = s(t) * theta for t = 1..T (docs/neurons.md); a graded neuron (memory SignedIF with its own
    negative threshold theta_neg per channel) sends alpha theta_neg on its negative side instead and counts that
    side from the level neg_level (C,) (default 0; Neuron.neg_level). z: (T or 1, N, C, ...) weighted input with
    the bias; theta, v0: per channel (C,). Returns (T, N, C, ...) float32."""
    shape = (1, 1, -1) + (1,) * (z.ndim - 3)
    th = np.asarray(theta, np.float32).reshape(shape)[0]
    v = np.broadcast_to(np.asarray(v0, np.float32).reshape(shape)[0], z.shape[1:]).copy()
    count = np.zeros(z.shape[1:], np.int32) if memory else None
    th_neg = th / np.float32(alpha) if kind == "SignedIF" else None
    pay_neg = th  # what a negative-side spike sends
    if theta_neg is not None:
        if kind != "SignedIF" or not memory:
            raise ValueError("theta_neg is for graded neurons: memory SignedIF")
        th_neg = np.asarray(theta_neg, np.float32).reshape(shape)[0]
        pay_neg = np.float32(alpha) * th_neg
    level = np.zeros((), np.float32) if neg_level is None else np.asarray(neg_level, np.float32).reshape(shape)[0]
    out = np.empty((T,) + z.shape[1:], np.float32)
    for t in range(T):
        v += z[t if z.shape[0] > 1 else 0]
        if th_neg is not None and count is not None:  # signed memory neuron (docs/neurons.md)
            # on the integrated V the four exclude each other (dn's level r - theta_n < theta): at most one fires
            up = (v >= th) & (count >= 0)
            back_dn = (v > level) & (count < 0)
            dn = (v <= level - th_neg) & (count <= 0) & ~up  # (r - theta_n = theta only at v_init 1: up wins)
            back_up = (v < 0) & (count > 0)
            v -= up * th + back_dn * th_neg - back_up * th - dn * th_neg
            s = (up | back_dn).astype(np.float32) - (back_up | dn)
            count += s.astype(np.int32)
            out[t] = (up.astype(np.float32) - back_up) * th + (back_dn.astype(np.float32) - dn) * pay_neg
            continue
        s = (v >= th).astype(np.float32)
        v -= s * th
        if th_neg is not None:
            neg = v <= -th_neg
            v += neg * th_neg
            s -= neg
        elif count is not None:
            neg = (v < 0) & (count > 0)
            v += neg * th
            s -= neg
            count += s.astype(np.int32)
        out[t] = s * th
    return out


def _conv_fn(node: gs.Node) -> Callable[[np.ndarray], np.ndarray]:
    """A batched Conv / ConvTranspose with the node's constant weights and attributes, in onnxruntime."""
    w = const_value(node.inputs[1])
    if w is None:
        raise UnsupportedOpError(f"{node_label(node)}: weights are not constant")
    inits = [onnx.numpy_helper.from_array(w.astype(np.float32), "w")]
    names = ["x", "w"]
    if len(node.inputs) > 2 and node.inputs[2].name:
        inits.append(onnx.numpy_helper.from_array(const_value(node.inputs[2]).astype(np.float32), "b"))
        names.append("b")
    attrs = {k: v for k, v in node.attrs.items() if v is not None}
    one = onnx.helper.make_node(node.op, names, ["y"], **attrs)
    g = onnx.helper.make_graph([one], "conv", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)],
                               [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], inits)
    model = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = ort_session(model)
    return lambda x: sess.run(["y"], {"x": np.ascontiguousarray(x, np.float32)})[0]


def _stacked(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, max_batch: int = 64) -> np.ndarray:
    """fn over the (T, N) leading axes of x, in pieces of at most max_batch samples."""
    flat = x.reshape((-1,) + x.shape[2:])
    parts = [fn(flat[i:i + max_batch]) for i in range(0, len(flat), max_batch)]
    y = np.concatenate(parts)
    return y.reshape(x.shape[:2] + y.shape[1:])


class GraphSim:
    """Simulates a spiking ONNX graph at T steps one node at a time.

    `step(node)` computes the node's output from the values already held and stores it; `values` maps tensor
    names to arrays (T or 1, N, C, H, W). Neurons read theta, alpha, memory, v_init and (graded) threshold_neg
    from their attributes.
    """

    def __init__(self, graph: gs.Graph, x: np.ndarray, T: int) -> None:
        self.graph, self.T = graph, int(T)
        self.values: dict[str, np.ndarray] = {graph.inputs[0].name: x[None].astype(np.float32)}
        self.uses: dict[str, int] = {}
        for n in graph.nodes:
            for t in n.inputs:
                self.uses[t.name] = self.uses.get(t.name, 0) + 1

    def conv_input(self, node: gs.Node) -> np.ndarray:
        return self.values[node.inputs[0].name]

    def conv(self, node: gs.Node, x: np.ndarray | None = None) -> np.ndarray:
        return _stacked(_conv_fn(node), self.conv_input(node) if x is None else x)

    def neuron(self, node: gs.Node, z: np.ndarray) -> np.ndarray:
        a = node.attrs
        c = z.shape[2]
        theta = np.broadcast_to(np.asarray(a.get("threshold", [1.0]), np.float32), (c,))
        v0 = np.asarray(a.get("v_init", 0.0), np.float32) * theta
        theta_neg = level = None
        if int(a.get("graded", 0)):
            theta_neg = np.broadcast_to(np.asarray(a["threshold_neg"], np.float32), (c,))
            level = (float(a.get("v_init", 0.0)) * (theta.astype(np.float64) + theta_neg)).astype(np.float32)
        return neuron_scan(z, self.T, kind=node.op, theta=theta, v0=v0, alpha=float(a.get("alpha", 0.0)),
                           memory=bool(int(a.get("memory", 0))), theta_neg=theta_neg, neg_level=level)

    def step(self, node: gs.Node, value: np.ndarray | None = None) -> np.ndarray:
        """Compute (or store the given) output of `node`; frees inputs no later node reads."""
        if value is None:
            ins = [self.values[t.name] for t in node.inputs if t.name in self.values]
            if node.op in ("Conv", "ConvTranspose"):
                value = self.conv(node)
            elif is_neuron(node):
                value = self.neuron(node, ins[0])
            elif node.op == "Concat":
                steps = max(v.shape[0] for v in ins)
                value = np.concatenate([np.broadcast_to(v, (steps,) + v.shape[1:]) for v in ins], axis=2)
            elif node.op == "Pad":
                pads = const_value(node.inputs[1]).astype(int)
                mode = node.attrs.get("mode", "constant")
                mode = mode.decode() if isinstance(mode, bytes) else mode
                r = len(pads) // 2
                width = [(0, 0)] + [(int(pads[i]), int(pads[i + r])) for i in range(r)]
                value = np.pad(ins[0], width, mode="edge" if mode == "edge" else "constant")
            elif node.op == "MaxPool":  # left by --maxpool count: the spike-count max-pool (snnc.ir.countpool)
                k, st = node.attrs["kernel_shape"], node.attrs.get("strides", [1, 1])
                x = ins[0]
                value = window_max(x, k, st) if x.shape[0] == 1 else count_maxpool(x, k, st)[0]
            else:
                raise UnsupportedOpError(f"{node_label(node)} cannot be simulated; run the default passes first")
        self.values[node.outputs[0].name] = value
        for t in node.inputs:
            if t.name in self.uses:
                self.uses[t.name] -= 1
                if self.uses[t.name] == 0 and not any(o is t for o in self.graph.outputs):
                    self.values.pop(t.name, None)
        return value
