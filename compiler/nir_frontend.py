"""NIR graph (.nir file) -> Network, so NIR graphs run in snnc's backends, `snnc eval` and the C generator.

Reads graphs snnc wrote (snnc.backends.nir) and simple ones written by other frameworks (conv / affine +
IF stacks; snnTorch writes its leak-free Leaky neuron as a LIF with tau = inf). Mapping (docs/nir.md):

    Input (C, H, W) or (N,)       input layer (a leading batch axis of 1 is dropped)
    Conv2d / Affine / Linear      conv / dense layer (Flatten before a dense layer is implied: snnc's dense flattens)
    IF, or LIF without leak       the IF neuron of the conv or dense layer it follows; snnc simulates reset by
                                  subtraction (NIR's continuous-time IF resets to v_reset = 0 at the threshold,
                                  which is the same there); V(0) and theta from snnc's metadata (snnc writes
                                  v_threshold one float32 step below theta), else V(0) = 0 and theta = v_threshold
    Scale after an IF             snnc's spike value theta (must equal the threshold)
    Output                        a network output (decoded as the mean over steps)

A node with several inputs (NIR sums them) is read only as the parts of a concatenation snnc wrote (one Conv2d
per part feeding an IF node; metadata snnc_concat / snnc_part): snnc rebuilds the concat layer and the conv.

Refused with the node's name: any other node with several inputs, recurrence, v_reset != 0, a leak, an IF that
does not follow a weight node, other primitives. A neuron with threshold theta != 1 that is not followed by
snnc's Scale(theta) spikes with value 1 in NIR: its own weights and bias are divided by theta (threshold 1).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from snnc.ir.errors import FormatError, SnncError
from snnc.ir.network import Layer, Network, Neuron

log = logging.getLogger(__name__)

# Keys of snnc's entries in NIR node metadata (written by snnc.backends.nir, read here).
META = {"name": "snnc_name", "reset": "snnc_reset", "v_init": "snnc_v_init", "fire": "snnc_fire",
        "role": "snnc_role", "tensor": "snnc_output_tensor", "time": "snnc_time",
        "groups": "snnc_groups", "theta": "snnc_theta", "concat": "snnc_concat", "part": "snnc_part"}


def ungroup(w: np.ndarray, groups: int) -> np.ndarray:
    """A grouped convolution's weight (C_out, C_in/g, kh, kw) as the equal ungrouped one (C_out, C_in, kh, kw)."""
    if groups == 1:
        return w
    co, ci = w.shape[0] // groups, w.shape[1]
    full = np.zeros((w.shape[0], ci * groups, *w.shape[2:]), w.dtype)
    for g in range(groups):
        full[g * co:(g + 1) * co, g * ci:(g + 1) * ci] = w[g * co:(g + 1) * co]
    return full


def regroup(w: np.ndarray, groups: int) -> np.ndarray | None:
    """The inverse of `ungroup`, or None when the weight is not block diagonal."""
    co, ci = w.shape[0] // groups, w.shape[1] // groups
    grouped = np.concatenate([w[g * co:(g + 1) * co, g * ci:(g + 1) * ci] for g in range(groups)])
    return grouped if np.array_equal(ungroup(grouped, groups), w) else None


def require_nir():
    """The `nir` module, or one clear error naming the extra to install."""
    try:
        import nir
    except ImportError:
        raise SnncError("NIR support needs the nir package: pip install 'snnc[nir]'") from None
    return nir


def _meta(node: Any, key: str, default: Any = None) -> Any:
    value = (getattr(node, "metadata", None) or {}).get(META[key], default)
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    return value


def _arr(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensors in graphs built in memory by torch frameworks
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _pair(x: Any) -> list[int]:
    a = _arr(x).reshape(-1).astype(int).tolist()
    return a * 2 if len(a) == 1 else a[:2]


def _order(graph) -> list[str]:
    """Node keys in topological order; recurrence is refused."""
    preds = {k: [] for k in graph.nodes}
    for a, b in graph.edges:
        preds[b].append(a)
    order, seen, busy = [], set(), set()

    def visit(k: str) -> None:
        if k in seen:
            return
        if k in busy:
            raise SnncError(f"NIR node {k!r} is part of a recurrent loop: snnc networks are feed-forward")
        busy.add(k)
        for p in preds[k]:
            visit(p)
        busy.discard(k)
        seen.add(k)
        order.append(k)

    for k in graph.nodes:
        visit(k)
    return order


def _neuron_of(key: str, node: Any, nir) -> tuple[np.ndarray, float]:
    """(threshold per neuron, V(0) fraction) of an IF, or of a LIF without leak."""
    if isinstance(node, nir.LIF):
        if not (np.all(np.isinf(_arr(node.tau))) and np.all(_arr(node.v_leak) == 0)):
            raise SnncError(f"NIR node {key!r}: LIF with a leak (finite tau); snnc's neurons do not leak")
        if not np.all(np.isinf(_arr(node.r))):  # snnTorch writes r = tau / dt: input gain r * dt / tau = 1
            raise SnncError(f"NIR node {key!r}: LIF without leak needs r = tau / dt (input gain 1)")
    elif not np.all(_arr(node.r) == 1):
        raise SnncError(f"NIR node {key!r}: IF with r != 1 (snnc's neurons add their input unscaled)")
    v_reset = _arr(getattr(node, "v_reset", None) if getattr(node, "v_reset", None) is not None else 0)
    if np.any(v_reset != 0):
        raise SnncError(f"NIR node {key!r}: v_reset != 0; snnc's IF resets by subtracting the threshold")
    reset = _meta(node, "reset", "subtract")
    if reset != "subtract":
        raise SnncError(f"NIR node {key!r}: reset {reset!r}; snnc implements reset by subtraction only")
    theta = _meta(node, "theta")  # snnc's own theta; its v_threshold is the float32 just below it
    if theta is None:
        return _arr(node.v_threshold).astype(np.float32), float(_meta(node, "v_init", 0.0))
    theta = np.asarray(theta, np.float32).reshape(-1)
    v_thr = _arr(node.v_threshold).astype(np.float32)
    expect = np.nextafter(theta, np.float32(0)).reshape((-1,) + (1,) * (v_thr.ndim - 1))
    if v_thr.ndim == 0 or v_thr.shape[0] != theta.size or np.any(v_thr != expect):
        raise FormatError(f"NIR node {key!r}: v_threshold does not match its snnc_theta metadata")
    return np.broadcast_to(theta.reshape((-1,) + (1,) * (v_thr.ndim - 1)), v_thr.shape).copy(), \
        float(_meta(node, "v_init", 0.0))


def nir_to_network(graph) -> Network:
    """The Network of a nir.NIRGraph (see the module docstring for the mapping)."""
    nir = require_nir()
    preds: dict[str, list[str]] = {k: [] for k in graph.nodes}
    succs: dict[str, list[str]] = {k: [] for k in graph.nodes}
    for a, b in graph.edges:
        if a not in graph.nodes or b not in graph.nodes:
            raise FormatError(f"NIR edge ({a!r}, {b!r}) names a node the graph does not have")
        preds[b].append(a)
        succs[a].append(b)
    layers: dict[str, Layer] = {}
    value: dict[str, str] = {}  # node key -> layer whose out(t) the node's output is
    outputs: list[str] = []
    output_names: dict[str, str] = {}
    used: set[str] = set()

    def name_for(key: str, node: Any) -> str:
        name = str(_meta(node, "name", key))
        if name in used:
            name = key
        used.add(name)
        return name

    def source(key: str) -> Layer:
        if len(preds[key]) != 1:
            raise SnncError(f"NIR node {key!r} has {len(preds[key])} inputs; snnc reads nodes with exactly one "
                            "input (NIR's sum of several inputs is not supported)")
        return layers[value[preds[key][0]]]

    def merge_parts(key: str) -> Layer:
        """The concat + conv that snnc wrote as one Conv2d per concatenated part, all feeding node `key`."""
        parts = [graph.nodes[p] for p in preds[key]]
        concat = {_meta(n, "concat") for n in parts}
        if not all(isinstance(n, nir.Conv2d) for n in parts) or len(concat) != 1 or None in concat:
            raise SnncError(f"NIR node {key!r} has {len(parts)} inputs; snnc reads a sum of inputs only as the "
                            "parts of a concatenation it wrote (metadata snnc_concat)")
        ordered = sorted(zip(preds[key], parts), key=lambda kv: int(_meta(kv[1], "part")))
        convs = [layers.pop(value[k]) for k, _ in ordered]
        attrs = convs[0].attrs
        if any(c.attrs != attrs for c in convs) or attrs["group"] != 1:
            raise SnncError(f"NIR node {key!r}: the parts of a concatenation differ in stride or padding")
        sources = [layers[c.inputs[0]] for c in convs]
        cat_name = str(concat.pop())
        if cat_name not in layers:  # several convolutions may read the same concatenation
            used.add(cat_name)
            layers[cat_name] = Layer(cat_name, "concat", [l.name for l in sources],
                                     (sum(l.shape[0] for l in sources), *sources[0].shape[1:]), attrs={"axis": 0})
        for c in convs:
            used.discard(c.name)
        name = name_for(key, ordered[0][1])
        bias = convs[0].bias + sum(c.bias for c in convs[1:])  # the later parts' biases are zeros
        layer = Layer(name, "conv", [cat_name], convs[0].shape, weight=np.concatenate([c.weight for c in convs], 1),
                      bias=bias.astype(np.float32), attrs=attrs)
        layers[name] = layer
        for k, _ in ordered:
            value[k] = name
        return layer

    for key in _order(graph):
        node = graph.nodes[key]
        if isinstance(node, nir.Input):
            shape = [int(d) for d in _arr(node.input_type["input"]).reshape(-1)]
            if len(shape) in (2, 4) and shape[0] == 1:
                shape = shape[1:]  # a batch axis of 1
            if len(shape) not in (1, 3):
                raise SnncError(f"NIR input {key!r} has shape {shape}; expected (C, H, W) or (N,)")
            layer = Layer(name_for(key, node), "input", [], tuple(shape))
        elif isinstance(node, nir.Conv2d):
            src = source(key)
            if len(src.shape) != 3:
                raise SnncError(f"NIR node {key!r}: Conv2d on a source of shape {src.shape}")
            w = _arr(node.weight).astype(np.float32)
            _, h, wd = src.shape
            stride, dil = _pair(node.stride), _pair(node.dilation)
            if isinstance(node.padding, str):
                if node.padding == "valid":
                    pad = [0, 0]
                else:  # "same" at stride 1: total padding dil * (k - 1), split evenly
                    tot = [dil[i] * (w.shape[2 + i] - 1) for i in range(2)]
                    if any(t % 2 for t in tot) or stride != [1, 1]:
                        raise SnncError(f"NIR node {key!r}: padding 'same' that is not symmetric")
                    pad = [t // 2 for t in tot]
            else:
                pad = _pair(node.padding)
            out_hw = [(n + 2 * p - d * (k - 1) - 1) // s + 1
                      for n, p, d, k, s in zip((h, wd), pad, dil, w.shape[2:], stride)]
            groups = int(_arr(node.groups))
            snnc_groups = int(_meta(node, "groups", 1))
            if groups == 1 and snnc_groups > 1 and regroup(w, snnc_groups) is not None:
                w, groups = regroup(w, snnc_groups), snnc_groups  # written ungrouped by snnc
            layer = Layer(name_for(key, node), "conv", [src.name], (w.shape[0], *out_hw), weight=w,
                          bias=_arr(node.bias).astype(np.float32).reshape(-1),
                          attrs={"strides": stride, "pads": [pad[0], pad[1], pad[0], pad[1]],
                                 "dilations": dil, "group": groups})
        elif isinstance(node, (nir.Affine, nir.Linear)):
            src = source(key)
            w = _arr(node.weight).astype(np.float32)
            if w.ndim != 2 or w.shape[1] != int(np.prod(src.shape)):
                raise SnncError(f"NIR node {key!r}: weight {w.shape} does not fit its input of shape {src.shape}")
            b = _arr(node.bias) if isinstance(node, nir.Affine) else np.zeros(w.shape[0])
            layer = Layer(name_for(key, node), "dense", [src.name], (w.shape[0],), weight=w,
                          bias=b.astype(np.float32).reshape(-1))
        elif isinstance(node, nir.Flatten):
            value[key] = source(key).name  # snnc's dense layer flattens its source itself
            continue
        elif isinstance(node, (nir.IF, nir.LIF)):
            src = merge_parts(key) if len(preds[key]) > 1 else source(key)
            if src.op not in ("conv", "dense") or src.neuron is not None or \
                    any(len(succs[p]) != 1 for p in preds[key]):
                raise SnncError(f"NIR node {key!r}: a neuron must follow a Conv2d or Affine node that feeds "
                                "nothing else")
            theta, v_init = _neuron_of(key, node, nir)
            per_channel = theta.reshape(src.shape[0], -1) if theta.size > 1 else np.full((src.shape[0], 1), theta)
            if np.any(per_channel != per_channel[:, :1]):
                raise SnncError(f"NIR node {key!r}: thresholds differ within a channel; snnc has one per channel")
            theta_c = per_channel[:, 0].copy()
            scaled = [graph.nodes[s] for s in succs[key] if isinstance(graph.nodes[s], nir.Scale)]
            if not (len(succs[key]) == 1 and scaled and np.array_equal(
                    _arr(scaled[0].scale).reshape(src.shape[0], -1)[:, 0], theta_c)) and np.any(theta_c != 1):
                # NIR spikes are 1 here: divide this layer by theta so its spikes are worth 1 in snnc too
                g = theta_c.reshape((-1,) + (1,) * (src.weight.ndim - 1))
                src.weight, src.bias = src.weight / g, src.bias / theta_c
                theta_c = np.ones_like(theta_c)
            src.neuron = Neuron("IF", theta_c, v_init=v_init)
            value[key] = src.name
            continue
        elif isinstance(node, nir.Scale):
            src_key = preds[key][0] if len(preds[key]) == 1 else None
            src = source(key)
            ok = src_key is not None and isinstance(graph.nodes[src_key], (nir.IF, nir.LIF)) and \
                np.array_equal(_arr(node.scale).reshape(src.shape[0], -1)[:, 0], src.neuron.threshold)
            if not ok:
                raise SnncError(f"NIR node {key!r}: only a Scale by the threshold after an IF (snnc's spike value) "
                                "is supported")
            value[key] = src.name
            continue
        elif isinstance(node, nir.Output):
            src = source(key)
            outputs.append(src.name)
            output_names[src.name] = str(_meta(node, "tensor", src.name))
            continue
        else:
            raise SnncError(f"NIR node {key!r} ({type(node).__name__}) has no snnc equivalent; supported: Input, "
                            "Conv2d, Affine, Linear, Flatten, IF, LIF without leak, Scale after IF, Output")
        layers[layer.name] = layer
        value[key] = layer.name
    if not outputs:
        raise SnncError("the NIR graph has no Output node")
    return Network(layers=list(layers.values()), outputs=outputs, output_names=output_names,
                   meta={"source": "nir", "passes": []})


def read_nir(path: str | Path) -> Network:
    """Read a .nir file (nir.read) into a Network."""
    nir = require_nir()
    path = Path(path)
    if not path.is_file():
        raise SnncError(f"{path}: no such file")
    try:
        graph = nir.read(path)
    except (OSError, ValueError, KeyError, AssertionError) as exc:
        raise FormatError(f"{path}: not a readable NIR file ({exc})") from None
    return nir_to_network(graph)
