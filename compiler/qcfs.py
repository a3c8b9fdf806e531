"""The signed QCFS pattern (a fine-tuned LeakyReLU, `snnc finetune`) and the per-channel QCFS chain that replaces it.

A LeakyReLU(alpha) trained as two QCFS activations, leaky(z) ~ QCFS_lam+(z) - alpha QCFS_lam-(-z), is written to
ONNX as two QCFS chains on the same convolution output z and their difference:

    a = Mul(L/lam+) -> Add(0.5) -> Floor -> Div(L) -> Clip(0, 1) -> Mul(lam+)        on z
    b = Mul(-L/lam-) -> Add(0.5) -> Floor -> Div(L) -> Clip(0, 1) -> Mul(lam-)       on z (the scale's sign: -z)
    y = Sub(a, Mul(b, alpha))

Each lambda is one value, or one per channel as a (1, C, 1, 1) constant (`snnc finetune --lambda-per channel`).
`split_leaky_relu` turns it into exactly what it makes of a LeakyReLU: the convolution doubled into [z; -z]
channel pairs, one QCFS chain with per-channel lambdas (lam+, lam-) on them, and the pointwise recombination
folded into the consumers; `activations_to_neurons` then makes the chain IF neurons with theta = lambda and
V(0) = theta/2, so the trained lambdas of both signs survive the conversion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from snnc.compiler.graph import const_scalar, const_value, make_const, make_var, sole_consumer, unique_name


@dataclass
class SignedQcfs:
    """A matched signed QCFS: z (the convolution output), the nodes to remove, its lambdas, alpha, L, the output."""

    z: gs.Tensor
    nodes: list[gs.Node]
    lam_pos: np.ndarray  # one value (per layer) or one per channel
    lam_neg: np.ndarray
    alpha: float
    levels: int
    out: gs.Tensor


def channel_values(t: gs.Tensor | None) -> np.ndarray | None:
    """A scalar or per-channel (1, C, 1, 1) constant as a flat float64 array (QCFS lambdas per layer or per
    channel), else None."""
    v = const_value(t)
    if v is None or not (v.size == 1 or (v.ndim == 4 and v.size == v.shape[1])):
        return None
    return v.astype(np.float64).reshape(-1)


def _other(node: gs.Node, x: gs.Tensor) -> gs.Tensor | None:
    others = [t for t in node.inputs if t is not x]
    return others[0] if len(others) == 1 else None


def _only(t: gs.Tensor, op: str, graph: gs.Graph | None = None) -> gs.Node | None:
    """The only consumer of t if it is an `op` (and, given the graph, t is not one of its outputs)."""
    node = sole_consumer(graph, t) if graph is not None else (t.outputs[0] if len(t.outputs) == 1 else None)
    return node if node is not None and node.op == op else None


def match_qcfs_chain(mul: gs.Node, graph: gs.Graph | None = None) -> tuple[list[gs.Node], np.ndarray, np.ndarray,
                                                                           int] | None:
    """(nodes, scale, lam, L) of the QCFS chain Mul(+-L/lam) -> Add(0.5) -> Floor -> Div(L) (or Mul(1/L)) ->
    Clip(0, 1) -> Mul(lam) that starts at `mul` (scale and lam one value or one per channel), or None. Given the
    graph, a chain whose inner tensors are graph outputs does not match (it could not be replaced)."""
    x = mul.inputs[0]
    scale = channel_values(_other(mul, x))
    add = _only(mul.outputs[0], "Add", graph)
    if scale is None or add is None or const_scalar(_other(add, mul.outputs[0])) != 0.5:
        return None
    floor = _only(add.outputs[0], "Floor", graph)
    if floor is None:
        return None
    div = _only(floor.outputs[0], "Div", graph) or _only(floor.outputs[0], "Mul", graph)
    d = const_scalar(div.inputs[1]) if div is not None else None
    if not d:
        return None
    levels = d if div.op == "Div" else 1.0 / d
    clip = _only(div.outputs[0], "Clip", graph)
    if clip is None or len(clip.inputs) < 3 or const_scalar(clip.inputs[1]) != 0.0 or const_scalar(clip.inputs[2]) != 1.0:
        return None
    last = _only(clip.outputs[0], "Mul", graph)
    lam = channel_values(_other(last, clip.outputs[0])) if last is not None else None
    if lam is None or lam.shape != scale.shape or np.any(lam <= 0) or \
            np.any(np.abs(np.abs(scale) - levels / lam) > 1e-5 * np.maximum(1.0, np.abs(scale))):
        return None
    return [mul, add, floor, div, clip, last], scale, lam, int(round(levels))


def match_signed_qcfs(z: gs.Tensor) -> SignedQcfs | None:
    """The signed QCFS reading `z` (two chains of opposite scale, then Sub(a, Mul(b, alpha))), or None."""
    if len(z.outputs) != 2 or any(n.op != "Mul" or n.inputs[0] is not z for n in z.outputs):
        return None
    chains = [match_qcfs_chain(n) for n in z.outputs]
    if any(c is None for c in chains):
        return None
    chains.sort(key=lambda c: -c[1][0])
    (pos, s_pos, lam_pos, l_pos), (neg, s_neg, lam_neg, l_neg) = chains
    if not (np.all(s_pos > 0) and np.all(s_neg < 0)) or l_pos != l_neg:
        return None
    scale = _only(neg[-1].outputs[0], "Mul")
    alpha = const_scalar(_other(scale, neg[-1].outputs[0])) if scale is not None else None
    sub = _only(scale.outputs[0], "Sub") if scale is not None else None
    if alpha is None or sub is None or sub.inputs[0] is not pos[-1].outputs[0] or len(pos[-1].outputs[0].outputs) != 1:
        return None
    return SignedQcfs(z, pos + neg + [scale, sub], lam_pos, lam_neg, alpha, l_pos, sub.outputs[0])


def insert_qcfs_chain(graph: gs.Graph, base: str, x: gs.Tensor, y: gs.Tensor, lam: np.ndarray, levels: int) -> None:
    """Append the QCFS chain y = lam clip(floor(x L / lam + 1/2) / L, 0, 1) with per-channel lam (C,) on NCHW x."""
    lam = np.asarray(lam, np.float32).reshape(1, -1, 1, 1)
    steps = [("Mul", make_const(graph, base + "_scale", (levels / lam).astype(np.float32))),
             ("Add", make_const(graph, base + "_half", np.float32(0.5))), ("Floor", None),
             ("Div", make_const(graph, base + "_levels", np.float32(levels))),
             ("Clip", (make_const(graph, base + "_zero", np.float32(0)),
                      make_const(graph, base + "_one", np.float32(1)))),
             ("Mul", make_const(graph, base + "_lam", lam))]
    t = x
    for i, (op, c) in enumerate(steps):
        out = y if i == len(steps) - 1 else make_var(graph, f"{base}_t{i}", shape=x.shape)
        ins = [t] + ([] if c is None else list(c) if isinstance(c, tuple) else [c])
        graph.nodes.append(gs.Node(op, unique_name(graph, f"{base}_{op.lower()}{i}"), inputs=ins, outputs=[out]))
        t = out
