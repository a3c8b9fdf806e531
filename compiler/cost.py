"""What a spiking network costs next to the ANN it came from: parameters, neurons, synapses, dense MACs per step.

    rep = cost_report(net, ann)          # ann: the ANN (ModelProto or bytes); None: net.meta["cost"], net.ann_onnx
    print(format_cost(rep))              # snnc compile / snnc inspect
    print(format_dominant(net))          # snnc inspect --target loihi2: which layers and kinds dominate

Definitions (the same on both sides, so the ratios compare like with like):
- parameters: SNN: every weight and bias stored in the layers (thresholds not counted); ANN: every float
  initializer element of the model (weights, biases, batch-norm statistics).
- neurons: SNN: neurons of the spiking populations (linear heads and copy layers have none); ANN: activations,
  the output elements of its nonlinear activation nodes (ReLU, LeakyReLU, Clip, ...), the units a neuron replaces.
- synapses: nonzero weights times the in-bounds positions that use them (`snnc.compiler.loihi`'s explicit
  synapses: taps in the zero padding are not synapses), for every conv / deconv / dense (Gemm, MatMul) layer.
- dense MACs per step: what one clock-driven step (or one ANN forward pass) multiplies and adds when every input
  is processed, spikes or not: output elements x kernel size per conv, input elements x kernel size per deconv,
  weights per dense layer; copy layers (nearest upsampling) included, as a dense implementation runs them.
- a spike-count max-pool layer (`--maxpool count`) has no neurons or parameters; its window taps count as
  synapses and as MACs (one compare-accumulate each); the ANN's MaxPool is not counted on the ANN side.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from snnc.compiler.inspect import layer_macs, layer_params
from snnc.compiler.loihi import _explicit_synapses
from snnc.ir.fixedpoint import is_copy_layer
from snnc.ir.network import Layer, Network

FIGURES = ("parameters", "neurons", "synapses", "macs")
LABELS = {"parameters": "parameters", "neurons": "neurons", "synapses": "synapses", "macs": "dense MACs / step"}
ANN_ACTIVATIONS = ("Relu", "LeakyRelu", "PRelu", "Clip", "Elu", "Selu", "Sigmoid", "HardSigmoid", "HardSwish",
                   "Tanh", "Softplus", "Mish", "ThresholdedRelu", "Celu", "Gelu")


def layer_kind(layer: Layer, net: Network) -> str:
    """A short structural name for grouping: what the layer is, not what it is called."""
    if layer.op in ("input", "concat", "pad"):
        return layer.op
    if layer.op == "maxpool":
        return "maxpool count (routing)"
    srcs = net.layer(layer.inputs[0])
    c_in = srcs.shape[0]
    if layer.op in ("conv", "deconv") and is_copy_layer(layer, c_in):
        return f"{layer.op} copy (routing)"
    group = int(layer.attrs.get("group", 1))
    k = "x".join(str(d) for d in layer.weight.shape[2:]) if layer.op != "dense" else ""
    what = f"{layer.op} {k}".strip() + (" depthwise" if group > 1 and group == c_in else "")
    n = layer.neuron
    who = "linear" if n is None else n.kind + ("+mem" if n.memory else "")
    return f"{what}, {who}"


def network_rows(net: Network) -> list[dict[str, Any]]:
    """Per connection layer: its four figures and its kind."""
    shapes = {l.name: l.shape for l in net.layers}
    rows = []
    for layer in net.layers:
        if layer.op == "maxpool":  # no neurons or weights; each output reads its window (one synapse per tap)
            taps = int(np.prod(layer.shape)) * int(np.prod(layer.attrs["kernel_shape"]))
            rows.append({"layer": layer.name, "kind": layer_kind(layer, net), "parameters": 0, "neurons": 0,
                         "synapses": taps, "macs": layer_macs(layer, net)})
        if layer.op not in ("conv", "deconv", "dense"):
            continue
        synapses, _ = _explicit_synapses(layer, shapes[layer.inputs[0]])
        rows.append({"layer": layer.name, "kind": layer_kind(layer, net), "parameters": layer_params(layer),
                     "neurons": int(np.prod(layer.shape)) if layer.neuron is not None else 0,
                     "synapses": int(synapses), "macs": layer_macs(layer, net)})
    return rows


def network_cost(net: Network) -> dict[str, int]:
    rows = network_rows(net)
    return {k: int(sum(r[k] for r in rows)) for k in FIGURES}


def ann_cost(model: Any) -> dict[str, int]:
    """The four figures of an ONNX ANN (ModelProto or serialized bytes), shapes from ONNX shape inference."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load_from_string(bytes(model)) if isinstance(model, (bytes, bytearray)) else model
    m = onnx.shape_inference.infer_shapes(m)
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        shapes[vi.name] = tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
    inits = {i.name: i for i in m.graph.initializer}
    params = sum(int(np.prod(i.dims)) for i in m.graph.initializer
                 if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE))
    neurons = synapses = macs = 0
    for node in m.graph.node:
        out = shapes.get(node.output[0])
        if node.op_type in ANN_ACTIVATIONS:
            if not out or not all(out):
                raise ValueError(f"ANN node {node.name or node.op_type}: output shape unknown")
            neurons += int(np.prod(out[1:]))
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        if len(node.input) < 2 or node.input[1] not in inits:
            continue  # a product of two activations has no weights to count
        w = numpy_helper.to_array(inits[node.input[1]])
        src = shapes.get(node.input[0])
        if node.op_type in ("Gemm", "MatMul"):
            if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
                w = w.T
            wl = w.T if w.ndim == 2 else w  # as a dense layer: (out, in)
            layer = Layer(node.name or "dense", "dense", ["x"], (int(wl.shape[0]),), weight=wl)
            in_shape = (int(wl.shape[1]),)
            per_row = int(np.prod(out[1:-1])) if out and len(out) > 2 else 1  # MatMul on (B, N, K)
            s, _ = _explicit_synapses(layer, in_shape)
            synapses += s * per_row
            macs += int(wl.size) * per_row
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        k = w.ndim - 2
        pads = list(attrs.get("pads", [0] * (2 * k)))
        layer = Layer(node.name or node.op_type, "conv" if node.op_type == "Conv" else "deconv", ["x"],
                      tuple(out[1:]), weight=w,
                      attrs={"strides": list(attrs.get("strides", [1] * k)),
                             "pads": [pads[0], pads[1], pads[2], pads[3]] if k == 2 else pads,
                             "dilations": list(attrs.get("dilations", [1] * k)), "group": int(attrs.get("group", 1))})
        if k != 2:
            raise ValueError(f"ANN node {node.name}: only 2-D convolutions are counted")
        s, _ = _explicit_synapses(layer, tuple(src[1:]))
        synapses += s
        macs += int(np.prod(out[1:])) * int(np.prod(w.shape[1:])) if layer.op == "conv" else \
            int(np.prod(src[1:])) * int(np.prod(w.shape[1:]))
    return {"parameters": int(params), "neurons": int(neurons), "synapses": int(synapses), "macs": int(macs)}


def cost_report(net: Network, ann: Any = None) -> dict[str, Any]:
    """{"snn": figures, "ann": figures or None, "ratio": snn / ann per figure}: the ANN from `ann`, else what
    compile stored in net.meta["cost"], else net.ann_onnx (the whole model), else unknown."""
    snn = network_cost(net)
    ann_fig = None
    if ann is not None:
        ann_fig = ann_cost(ann)
    elif isinstance((net.meta or {}).get("cost"), dict) and net.meta["cost"].get("ann"):
        ann_fig = {k: int(net.meta["cost"]["ann"][k]) for k in FIGURES}
    elif net.ann_onnx is not None:  # the whole model: count its spiking part, as compile does
        import onnx

        from snnc.compiler.split import split_model

        ann_fig = ann_cost(split_model(onnx.load_from_string(net.ann_onnx)).spiking)
    ratio = {k: snn[k] / ann_fig[k] for k in FIGURES if ann_fig and ann_fig[k]} if ann_fig else {}
    return {"snn": snn, "ann": ann_fig, "ratio": ratio}


def _big(v: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.3g} {unit}"
    return f"{v:.0f}"


def format_cost(rep: dict[str, Any]) -> str:
    """One line per figure: SNN, ANN, ratio."""
    lines = [f"{'cost':<19}{'SNN':>12}{'ANN':>12}{'SNN / ANN':>11}"]
    for k in FIGURES:
        ann = rep["ann"][k] if rep.get("ann") else None
        r = rep["ratio"].get(k)
        lines.append(f"{LABELS[k]:<19}{_big(rep['snn'][k]):>12}{_big(ann) if ann is not None else '-':>12}"
                     f"{f'{r:.2f}x' if r is not None else '-':>11}")
    if not rep.get("ann"):
        lines.append("(ANN figures unknown: the file carries neither compile's cost record nor the ANN)")
    else:
        lines.append("(ANN neurons: its activation outputs; synapses: in-bounds nonzero connections)")
    return "\n".join(lines)


def dominant(net: Network, top: int = 5) -> dict[str, Any]:
    """Per figure: the share of each layer kind and the `top` layers with the largest share."""
    rows = network_rows(net)
    out: dict[str, Any] = {}
    for k in ("synapses", "neurons", "macs", "parameters"):
        total = sum(r[k] for r in rows) or 1
        kinds: dict[str, int] = defaultdict(int)
        for r in rows:
            kinds[r["kind"]] += r[k]
        out[k] = {"total": total,
                  "kinds": sorted(((n, v / total) for n, v in kinds.items() if v), key=lambda kv: -kv[1])[:top],
                  "layers": sorted(((r["layer"], r["kind"], r[k] / total) for r in rows if r[k]),
                                   key=lambda t: -t[2])[:top]}
    return out


def format_dominant(net: Network, top: int = 5) -> str:
    """What dominates each figure: layer kinds and single layers, as shares of the total."""
    d = dominant(net, top)
    lines = ["what dominates (share of the network's total):"]
    for k in ("synapses", "neurons", "macs", "parameters"):
        e = d[k]
        lines.append(f"  {LABELS[k]} ({_big(e['total'])}): by kind " +
                     ", ".join(f"{n} {s:.0%}" for n, s in e["kinds"]))
        lines.append("    largest layers: " + ", ".join(f"{n} ({kind}) {s:.0%}" for n, kind, s in e["layers"]))
    return "\n".join(lines)
