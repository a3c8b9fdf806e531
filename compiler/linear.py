"""Algebra on linear layers shared by passes: merging a bias-free 1x1 convolution into the convolution after it."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from snnc.compiler.graph import const_value, make_const, sole_consumer, unique_name


def pointwise_matrix(node: gs.Node) -> np.ndarray | None:
    """The dense (C_out, C_in) matrix of a bias-free, stride-1, unpadded 1x1 Conv, or None if it is not one."""
    if node.op != "Conv" or len(node.inputs) > 2:
        return None
    w = const_value(node.inputs[1])
    if w is None or w.ndim != 4 or w.shape[2:] != (1, 1):
        return None
    if any(s != 1 for s in node.attrs.get("strides", [1, 1])) or any(p for p in node.attrs.get("pads", [0] * 4)):
        return None
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return None
    group = int(node.attrs.get("group", 1))
    c_out, c_in_g = w.shape[:2]
    dense = np.zeros((c_out, c_in_g * group), dtype=np.float64)
    per = c_out // group
    for o in range(c_out):
        g = o // per
        dense[o, g * c_in_g:(g + 1) * c_in_g] = w[o, :, 0, 0]
    return dense


def fuse_pointwise_into_consumer(graph: gs.Graph, node: gs.Node) -> bool:
    """If `node` is a bias-free 1x1 Conv whose only consumer is a group-1 Conv, fold it into that Conv.

    W'[o, i] = sum_c W[o, c] * P[c, i]. Exact: P has no bias, so the consumer's zero padding of P x equals
    P applied to zero padding of x.
    """
    p = pointwise_matrix(node)
    if p is None:
        return False
    nxt = sole_consumer(graph, node.outputs[0])
    if nxt is None or nxt.op != "Conv" or int(nxt.attrs.get("group", 1)) != 1 or nxt.inputs[0] is not node.outputs[0]:
        return False
    w = const_value(nxt.inputs[1])
    if w is None:
        return False
    fused = np.einsum("ocyx,ci->oiyx", w.astype(np.float64), p).astype(w.dtype)
    nxt.inputs[1] = make_const(graph, nxt.name + "_W_fused", fused)
    nxt.inputs[0] = node.inputs[0]
    node.inputs.clear()
    node.outputs.clear()
    return True


def insert_pointwise(graph: gs.Graph, x: gs.Tensor, w: np.ndarray, y: gs.Tensor, name: str) -> bool:
    """Append y = Conv1x1(x, w) (bias-free, weight constant `name`_W) and fold it into its consumer when
    `fuse_pointwise_into_consumer` can; True when it was folded."""
    conv = gs.Node("Conv", unique_name(graph, name), attrs={"kernel_shape": [1, 1]},
                   inputs=[x, make_const(graph, name + "_W", w)], outputs=[y])
    graph.nodes.append(conv)
    return fuse_pointwise_into_consumer(graph, conv)


def is_copy_node(node: gs.Node) -> bool:
    """A depthwise, bias-free Conv/ConvTranspose with constant 0/1 weights: it only routes values per channel
    (nearest upsampling as a deconvolution, the max-pool tree's window taps)."""
    if node.op not in ("Conv", "ConvTranspose"):
        return False
    w = const_value(node.inputs[1])
    b = const_value(node.inputs[2]) if len(node.inputs) > 2 else None
    if w is None or (b is not None and np.any(b != 0)) or (len(node.inputs) > 2 and b is None):
        return False
    c_in = node.inputs[0].shape[1] if node.inputs[0].shape else None
    return int(node.attrs.get("group", 1)) == c_in and w.shape[1] == 1 and bool(np.all((w == 0) | (w == 1)))


def is_copy_conv(graph: gs.Graph, node: gs.Node) -> bool:
    """`is_copy_node` with no neuron after it: normalization passes scales through it unchanged."""
    from snnc.compiler.graph import is_neuron

    if not is_copy_node(node):
        return False
    nxt = sole_consumer(graph, node.outputs[0])
    return not (nxt is not None and is_neuron(nxt))


def dense_weight(w: np.ndarray, group: int, transposed: bool) -> np.ndarray:
    """Grouped conv weights -> the dense form with every input channel: Conv (C_out, C_in, kh, kw), ConvTranspose
    (C_in, C_out, kh, kw); the entries across groups are zero."""
    a, b = w.shape[:2]  # Conv: (C_out, C_in/g); ConvTranspose: (C_in, C_out/g)
    per = a // group
    dense = np.zeros((a, b * group) + w.shape[2:], dtype=np.float64)
    for g in range(group):
        dense[g * per:(g + 1) * per, g * b:(g + 1) * b] = w[g * per:(g + 1) * per]
    return dense


def grouped_weight(dense: np.ndarray, group: int) -> np.ndarray | None:
    """The inverse of dense_weight for `group`, or None where an entry crosses the group blocks."""
    a, n = dense.shape[:2]
    if a % group or n % group:
        return None
    per, b = a // group, n // group
    w = np.zeros((a, b) + dense.shape[2:], dtype=np.float64)
    for g in range(group):
        rows = dense[g * per:(g + 1) * per]
        inside = rows[:, g * b:(g + 1) * b]
        if np.count_nonzero(rows) != np.count_nonzero(inside):
            return None
        w[g * per:(g + 1) * per] = inside
    return w


def compose_pointwise(node: gs.Node, p: np.ndarray) -> tuple[np.ndarray, int]:
    """Weights and group of Conv/ConvTranspose `node` applied to P x instead of x, for a dense (C_in, C_new)
    pointwise map P: W'[.., i'] = sum_i W[.., i] P[i, i']. The node's own group is kept where the product allows
    (a block-diagonal P under a depthwise conv stays depthwise), else group 1."""
    w = const_value(node.inputs[1])
    group = int(node.attrs.get("group", 1))
    transposed = node.op == "ConvTranspose"
    d = dense_weight(w.astype(np.float64), group, transposed)
    # optimize=True: a BLAS contraction instead of einsum's loop (34 s -> 2 s on yolov3-tiny's consumers)
    d = (np.einsum("ic...,in->nc...", d, p, optimize=True) if transposed
         else np.einsum("oi...,in->on...", d, p, optimize=True))
    out = grouped_weight(d, group)
    if out is not None:
        return out.astype(w.dtype), group
    return grouped_weight(d, 1).astype(w.dtype), 1


def block_diagonal(blocks: list[np.ndarray]) -> np.ndarray:
    """diag(B_1, ..., B_k): the map of a channel Concat whose inputs each went through their own B_i."""
    out = np.zeros((sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)))
    r = c = 0
    for b in blocks:
        out[r:r + b.shape[0], c:c + b.shape[1]] = b
        r, c = r + b.shape[0], c + b.shape[1]
    return out


def commutes_with_pointwise(pad: gs.Node) -> bool:
    """A Pad of the spatial axes only, with zeros or edge replication: Pad(P x) = P Pad(x) for a bias-free
    per-pixel channel map P (a constant pad value other than 0 or a padded channel axis would not commute)."""
    mode = pad.attrs.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = const_value(pad.inputs[1]) if len(pad.inputs) > 1 else None
    if pad.op != "Pad" or mode not in ("constant", "edge") or pads is None or pads.size != 8:
        return False
    if len(pad.inputs) > 3 and pad.inputs[3].name:  # an axes input: keep the simple, common form only
        return False
    value = const_value(pad.inputs[2]) if len(pad.inputs) > 2 and pad.inputs[2].name else np.zeros(1)
    if value is None or (mode == "constant" and np.any(value != 0)):
        return False
    pads = pads.reshape(-1)
    return not any(int(pads[i]) for i in (0, 1, 4, 5))
