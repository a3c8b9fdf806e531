"""Synaptic operations (SOPs) and the energy estimate of docs/methods.md section 8.

    report = energy_report(net, spikes, T)        # spikes: {layer: spikes per image over the T steps}
    report["snn_sops"], report["ann_macs"], report["energy_pj"]["float"]["ratio"]

An ANN operation is a multiply-accumulate (MAC); an SNN operation happens on a spike and is an accumulate (AC,
one SOP per synapse the spike reaches). Per operation (Horowitz, ISSCC 2014): 32-bit float MAC 4.6 pJ, AC 0.9 pJ;
32-bit int MAC 3.2 pJ, AC 0.1 pJ.

SOPs = sum over spiking layers l of sum over l's neurons n of spikes(n) x fanout(n), where fanout(n) is the number
of synapses n drives in all the layers that consume it:
  - conv consumer: (C_out / group) x the number of (output position, kernel tap) pairs that read n's position;
    taps that fall in the zero padding are not synapses, so border neurons drive fewer (exact, not the interior
    C_out/group x kh x kw: a 3x3 stride-2 conv gives an interior neuron 9/4 x C_out positions on average, not 9);
  - deconv consumer: (C_out / group) x the in-bounds output positions of n's kernel footprint;
  - dense consumer: C_out;
  - routing layers pass spikes on and add no SOPs of their own: concat (the consumers of n's channel slice), pad
    (zero pad: the same position; edge pad: the border neuron also drives the consumers of every padded copy of
    it) and copy layers (a depthwise, bias-free conv/deconv without neurons whose weights are 0/1, such as
    nearest upsampling: n drives the consumers of every position it is copied to);
  - count max-pool consumer (`--maxpool count`): per window holding n, one count update plus the window's own
    fan-out, as if every input spike passed through: an upper bound, since the pool sends only the increments of
    its window's largest count.
  Spike counts per layer may be totals (per image; then fanout is the mean over the layer's neurons, which is exact
  when the spikes are spread evenly) or arrays of the layer's shape (per neuron; exact). Both signs of a SignedIF
  count (|s|). `SimResult.spike_counts` holds (batch,) totals over max(T) steps: pass their mean per layer.

Analog inputs are MACs, not SOPs (`snn_macs`). Under direct encoding the image is the same at every step, and so
is every value computed from it without a neuron (padding, copies, a linear layer of the image): a layer reading
such constant channels computes their weighted sum once and injects it as a constant current every step (every
backend does; docs/backends.md), so those MACs count once per image, not T times (`constant_input=False` gives
the older T x count, for comparison). Analog values that change with t (explicit input; a linear layer of spikes)
cost their MACs at every step. Under rate encoding the input layer emits spikes: its count must be in `spikes`
under the input layer's name and counts as SOPs.

ANN MACs: the original ANN's convolutions (Conv, ConvTranspose, Gemm, MatMul of `net.ann_onnx`, shapes from ONNX
shape inference) when the network carries it, else the network's own layers without copy layers
(`snnc.compiler.inspect.layer_macs`); the latter also counts the convolutions the exact max-pool rewrite adds.
A file compiled with --no-ann carries the ANN's MACs in its cost record (net.meta["cost"]), used before that.
Energy: ANN = MACs x E_MAC; SNN = SOPs x E_AC + snn_macs x E_MAC; ratio = SNN / ANN.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from snnc.ir.errors import SnncError
from snnc.ir.fixedpoint import is_copy_layer
from snnc.compiler.inspect import layer_macs
from snnc.ir.network import Layer, Network

ENERGY_PJ = {"float": {"mac": 4.6, "ac": 0.9}, "int": {"mac": 3.2, "ac": 0.1}}  # 32-bit, Horowitz ISSCC 2014
ROUTING_OPS = ("concat", "pad", "maxpool")


def _consumers(net: Network) -> dict[str, list[Layer]]:
    out: dict[str, list[Layer]] = {l.name: [] for l in net.layers}
    for layer in net.layers:
        for src in dict.fromkeys(layer.inputs):  # a source listed twice (concat of x with x) is visited once
            out[src].append(layer)
    return out


def _channels(net: Network, name: str) -> int:
    return net.layer(name).shape[0]


def _is_copy(net: Network, layer: Layer) -> bool:
    return layer.op in ("conv", "deconv") and is_copy_layer(layer, _channels(net, layer.inputs[0]))


def _taps_conv(n_in: int, n_out: int, k: int, s: int, p: int, d: int) -> np.ndarray:
    """Per input index: how many (output index, tap) pairs of a conv read it (input = o s - p + i d)."""
    cnt = np.zeros(n_in)
    o = np.arange(n_out)
    for i in range(k):
        y = o * s - p + i * d
        np.add.at(cnt, y[(y >= 0) & (y < n_in)], 1)
    return cnt


def _taps_deconv(n_in: int, n_out: int, k: int, s: int, p: int, d: int) -> np.ndarray:
    """Per input index: how many taps of a transposed conv land inside the output (output = y s - p + i d)."""
    y = np.arange(n_in)
    return sum((((y * s - p + i * d) >= 0) & ((y * s - p + i * d) < n_out)).astype(np.float64) for i in range(k))


def _spatial(layer: Layer):
    a = layer.attrs
    (sh, sw), (dh, dw) = a.get("strides", [1, 1]), a.get("dilations", [1, 1])
    pt, pl = a.get("pads", [0, 0, 0, 0])[:2]
    return int(sh), int(sw), int(dh), int(dw), int(pt), int(pl)


def _copy_back(net: Network, layer: Layer, fan_out: np.ndarray) -> np.ndarray:
    """Fan-out seen by the source of a copy layer: the sum of fan_out over the positions each input is copied to."""
    src_shape = net.layer(layer.inputs[0]).shape
    c, h_in, w_in = src_shape
    _, h_out, w_out = layer.shape
    sh, sw, dh, dw, pt, pl = _spatial(layer)
    w = layer.weight[:, 0]  # (C, kh, kw): conv (C_out=C, 1, kh, kw); deconv (C_in=C, 1, kh, kw)
    back = np.zeros(src_shape)
    for i in range(w.shape[1]):
        for j in range(w.shape[2]):
            on = w[:, i, j] != 0
            if not on.any():
                continue
            if layer.op == "deconv":  # input (y, x) -> output (y sh - pt + i dh, x sw - pl + j dw)
                oy, ox = np.arange(h_in) * sh - pt + i * dh, np.arange(w_in) * sw - pl + j * dw
                vy, vx = (oy >= 0) & (oy < h_out), (ox >= 0) & (ox < w_out)
                back[np.ix_(on, np.nonzero(vy)[0], np.nonzero(vx)[0])] += \
                    fan_out[np.ix_(on, oy[vy], ox[vx])]
            else:  # output (oy, ox) reads input (oy sh - pt + i dh, ox sw - pl + j dw)
                iy, ix = np.arange(h_out) * sh - pt + i * dh, np.arange(w_out) * sw - pl + j * dw
                vy, vx = (iy >= 0) & (iy < h_in), (ix >= 0) & (ix < w_in)
                for cc in np.nonzero(on)[0]:
                    np.add.at(back[cc], np.ix_(iy[vy], ix[vx]), fan_out[cc][np.ix_(np.nonzero(vy)[0], np.nonzero(vx)[0])])
    return back


def fanout_maps(net: Network) -> dict[str, np.ndarray]:
    """Per layer, an array of its output shape: synapses driven by one spike of that neuron (through routing)."""
    consumers = _consumers(net)
    maps: dict[str, np.ndarray] = {}
    for layer in reversed(net.layers):
        shape = layer.shape
        total = np.zeros(shape)
        for c in consumers[layer.name]:
            if c.op == "dense":
                total += c.weight.shape[0]
            elif c.op == "concat":
                off = 0
                for src in c.inputs:
                    n = _channels(net, src)
                    if src == layer.name:
                        total += maps[c.name][off:off + n]
                    off += n
            elif c.op == "pad":
                pt, pl, _, _ = c.attrs["pads"]
                f = maps[c.name]
                if c.attrs.get("mode", "constant") == "edge":
                    ys = np.clip(np.arange(f.shape[1]) - pt, 0, shape[1] - 1)
                    xs = np.clip(np.arange(f.shape[2]) - pl, 0, shape[2] - 1)
                    for k in range(shape[0]):
                        np.add.at(total[k], np.ix_(ys, xs), f[k])
                else:
                    total += f[:, pt:pt + shape[1], pl:pl + shape[2]]
            elif c.op == "maxpool":
                # Upper bound: each input spike costs one count update per window holding it and is passed on to
                # that window's consumers (the pool sends max-count increments: at most the inputs' spikes).
                (kh, kw), (sh, sw) = c.attrs["kernel_shape"], c.attrs["strides"]
                f = maps[c.name] + 1.0
                ho, wo = f.shape[1:]
                for i in range(kh):
                    for j in range(kw):
                        total[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] += f
            elif _is_copy(net, c):
                total += _copy_back(net, c, maps[c.name])
            elif c.op in ("conv", "deconv"):
                kh, kw = c.weight.shape[2:]
                sh, sw, dh, dw, pt, pl = _spatial(c)
                per_ch = (c.shape[0] // int(c.attrs.get("group", 1)))
                taps = _taps_conv if c.op == "conv" else _taps_deconv
                ty = taps(shape[1], c.shape[1], kh, sh, pt, dh)
                tx = taps(shape[2], c.shape[2], kw, sw, pl, dw)
                total += per_ch * np.outer(ty, tx)[None]
            else:
                raise SnncError(f"layer {c.name}: op {c.op!r} has no fan-out rule")
        maps[layer.name] = total
    return maps


def _analog_channels(net: Network, encoding: str) -> dict[str, np.ndarray]:
    """Per layer, which output channels carry analog values (not spikes) at every step."""
    out: dict[str, np.ndarray] = {}
    for layer in net.layers:
        c = layer.shape[0]
        if layer.op == "input":
            out[layer.name] = np.full(c, encoding != "rate")
        elif layer.op == "concat":
            out[layer.name] = np.concatenate([out[s] for s in layer.inputs])
        elif layer.op in ("pad", "maxpool") or _is_copy(net, layer):
            out[layer.name] = out[layer.inputs[0]].copy()
        else:
            out[layer.name] = np.full(c, layer.neuron is None)
    return out


def constant_channels(net: Network, encoding: str = "direct") -> dict[str, np.ndarray]:
    """Per layer, which output channels hold the same value at every step (the image under direct encoding and
    what neuron-free layers compute from it alone)."""
    out: dict[str, np.ndarray] = {}
    for layer in net.layers:
        c = layer.shape[0]
        if layer.op == "input":
            out[layer.name] = np.full(c, encoding == "direct")
        elif layer.op == "concat":
            out[layer.name] = np.concatenate([out[s] for s in layer.inputs])
        elif layer.op in ("pad", "maxpool") or _is_copy(net, layer):
            out[layer.name] = out[layer.inputs[0]].copy()
        else:
            out[layer.name] = np.full(c, layer.neuron is None and bool(np.all(out[layer.inputs[0]])))
    return out


def onnx_macs(model) -> int:
    """MACs of one forward pass of an ONNX model (bytes or ModelProto): Conv, ConvTranspose, Gemm, MatMul."""
    import onnx

    try:
        m = onnx.load_from_string(model) if isinstance(model, (bytes, bytearray)) else model
        m = onnx.shape_inference.infer_shapes(m)
    except Exception as exc:  # protobuf's DecodeError, onnx's inference errors: a damaged embedded ann.onnx
        raise SnncError(f"the ANN (ann.onnx) is not a readable ONNX model ({exc.__class__.__name__}); "
                        "recompile the model") from None
    shapes = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    for init in m.graph.initializer:
        shapes[init.name] = list(init.dims)
    total = 0
    for node in m.graph.node:
        try:
            if node.op_type == "Conv":
                w, y = shapes[node.input[1]], shapes[node.output[0]]
                total += int(np.prod(y[1:])) * int(np.prod(w[1:]))
            elif node.op_type == "ConvTranspose":
                w, x = shapes[node.input[1]], shapes[node.input[0]]
                total += int(np.prod(x[1:])) * int(np.prod(w[1:]))
            elif node.op_type in ("Gemm", "MatMul"):
                a, y = shapes[node.input[0]], shapes[node.output[0]]
                total += int(np.prod(y[1:])) * int(a[-1])
        except KeyError:
            raise SnncError(f"ANN node {node.name or node.op_type}: shapes unknown, cannot count its MACs") from None
    return total


def energy_report(net: Network, spikes: Mapping[str, Any], T: int, ann_macs: int | None = None, *,
                  layer_sops: Mapping[str, float] | None = None,
                  maps: Mapping[str, np.ndarray] | None = None, constant_input: bool = True) -> dict[str, Any]:
    """SOPs, MACs and energy of one image over T steps; see the module docstring for every rule.

    constant_input: analog channels that are the same at every step (direct encoding) cost their MACs once per
    image (a constant current); False counts them T times, as a per-step computation does.

    layer_sops: SOPs per image already counted exactly for some layers (per-neuron spike counts times
    fanout_maps, summed); they replace spikes x mean fan-out for those layers, so a caller that streams
    per-neuron counts over many batches need not keep them. maps: fanout_maps(net), when the caller has it.
    """
    encoding = str(net.input_encoding.get("kind", "direct"))
    maps = fanout_maps(net) if maps is None else maps
    analog = _analog_channels(net, encoding)
    const = constant_channels(net, encoding) if constant_input else {k: np.zeros_like(v) for k, v in analog.items()}
    rows, sops_total, snn_macs_total = [], 0.0, 0.0
    network_macs = 0
    unknown = [k for k in spikes if k not in maps]
    if unknown:
        raise SnncError(f"spike counts for unknown layer(s) {unknown}")
    for layer in net.layers:
        macs = 0 if _is_copy(net, layer) else layer_macs(layer, net)
        network_macs += macs
        row: dict[str, Any] = {"layer": layer.name, "op": layer.op, "macs": macs, "spikes": None, "fanout": None,
                               "sops": 0.0, "analog_macs": 0.0}
        if layer.op not in ROUTING_OPS and layer.op != "input" and not _is_copy(net, layer) and layer.inputs:
            a, k = analog[layer.inputs[0]], const[layer.inputs[0]]
            once, every = float(np.mean(a & k)), float(np.mean(a & ~k))  # fractions of the input channels
            row["analog_macs"] = macs * (once + float(T) * every)
        spiking = layer.neuron is not None or (layer.op == "input" and encoding == "rate")
        if spiking:
            if layer.name not in spikes:
                what = "input spikes (rate encoding)" if layer.op == "input" else "spikes"
                raise SnncError(f"no spike count for layer {layer.name!r} ({what}); pass one per spiking layer")
            s = np.asarray(spikes[layer.name], dtype=np.float64)
            f = maps[layer.name]
            if s.shape == f.shape:
                row["spikes"], row["sops"] = float(s.sum()), float((s * f).sum())
            elif s.size == 1 or s.ndim == 1:
                total = float(s.mean()) if s.ndim == 1 else float(s)  # (batch,) totals -> per image
                row["spikes"], row["sops"] = total, total * float(f.mean())
            else:
                raise SnncError(f"layer {layer.name}: spike counts of shape {s.shape}; expected a total or "
                                f"{f.shape}")
            row["fanout"] = float(f.mean())
            if layer_sops is not None and layer.name in layer_sops:
                row["sops"] = float(layer_sops[layer.name])
        sops_total += row["sops"]
        snn_macs_total += row["analog_macs"]
        rows.append(row)
    source = "given"
    if ann_macs is None:
        recorded = ((net.meta or {}).get("cost") or {}).get("ann") or {}
        if net.ann_onnx is not None:
            ann_macs, source = onnx_macs(net.ann_onnx), "net.ann_onnx"
        elif recorded.get("macs"):  # compiled --no-ann: the ANN's MACs that compile recorded
            ann_macs, source = int(recorded["macs"]), "compile's cost record"
        else:
            ann_macs, source = network_macs, "network layers"
    energy = {}
    for kind, e in ENERGY_PJ.items():
        ann = ann_macs * e["mac"]
        snn = sops_total * e["ac"] + snn_macs_total * e["mac"]
        energy[kind] = {"ann": ann, "snn": snn, "ratio": snn / ann if ann else float("nan"),
                        "mac_pj": e["mac"], "ac_pj": e["ac"]}
    return {"T": int(T), "encoding": encoding, "layers": rows, "ann_macs": int(ann_macs), "ann_macs_from": source,
            "network_macs": int(network_macs), "snn_sops": sops_total, "snn_macs": snn_macs_total,
            "energy_pj": energy}
