"""Network -> NIR graph (nir.NIRGraph) and .nir file. The mapping and what it loses: docs/nir.md.

    input                 Input (C, H, W)
    conv                  Conv2d (symmetric padding; a zero `pad` layer before it is folded into it); a grouped
                          convolution is written with its full block-diagonal weight and groups=1, because NIR's
                          type inference and the torch importers read weight.shape[1] as the input channels
                          (exact: the added weights are zeros); metadata snnc_groups lets snnc regroup it
    dense                 Affine (after Flatten(start_dim=0) for a (C, H, W) source: NIR's types have no batch)
    IF neuron             IF(r=1, v_threshold=the float32 just below theta per neuron, v_reset=0), so NIR's
                          v > v_threshold is snnc's V >= theta exactly; metadata reset="subtract", v_init, theta
                          (per channel); then Scale(theta) when some theta != 1, because a NIR spike is 1
                          and snnc's out(t) is s * theta (channel_norm makes theta 1, so usually no Scale)
    concat -> conv + IF   one Conv2d per concatenated part (the weight's input-channel slice), all feeding the IF
                          node, which sums its inputs (metadata snnc_concat, snnc_part let snnc rebuild the concat)
    output layer          Output (per step: z(t) of a linear head, spikes of a neuron layer)

Refused, each with the layer's name and what to change: the memory IF (-1 spikes and a spike count: NIR's IF
emits 0/1 only), SignedIF (signed spikes), deconv (no transposed convolution or upsampling in NIR), a concat
that feeds anything but ungrouped convolutions with neurons, edge padding and asymmetric padding. `outputs` exports only the part of the network its outputs need.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from snnc.compiler.nir_frontend import META, require_nir, ungroup
from snnc.ir import __version__
from snnc.ir.errors import SnncError, UnsupportedOpError
from snnc.ir.files import atomic_path
from snnc.ir.network import Layer, Network

log = logging.getLogger(__name__)


def _key(name: str, used: set[str]) -> str:
    """A NIR node key: h5py groups and torch module names do not accept '/' or '.'."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "node"
    if base[0].isdigit():
        base = "n" + base
    key, i = base, 1
    while key in used:
        key, i = f"{base}_{i}", i + 1
    used.add(key)
    return key


def _needed(net: Network, outputs: Sequence[str]) -> list[Layer]:
    """The layers the chosen outputs depend on, in the network's order."""
    keep: set[str] = set()
    stack = list(outputs)
    while stack:
        name = stack.pop()
        if name not in keep:
            keep.add(name)
            stack += net.layer(name).inputs
    return [layer for layer in net.layers if layer.name in keep]


def _why_not(layer: Layer, net: Network) -> str | None:
    """Why NIR cannot express this layer (and what to change), or None."""
    n = layer.neuron
    if n is not None and n.graded:
        return ("graded signed neuron (--leaky graded: spikes with integer payloads, two thresholds; NIR has "
                "none): compile with --leaky split")
    if n is not None and n.kind == "SignedIF" and n.memory:
        return ("signed memory neuron (--leaky signed: signed spikes that take back earlier spikes, two "
                "thresholds; NIR has none): compile with --leaky split")
    if n is not None and n.memory:
        return ("memory IF neuron (-1 spikes that take back earlier spikes; NIR's IF emits 0/1 spikes only): "
                "compile with --neuron plain")
    if n is not None and n.kind == "SignedIF":
        return "SignedIF neuron (signed spikes, two thresholds; NIR has none): compile with --leaky split"
    before = "write a .lava and export the outputs before it (snnc export net.lava --to nir --outputs LAYER)"
    if layer.op == "maxpool":
        return ("count max-pool (a running maximum of spike counts; NIR has no such primitive): compile with "
                "--maxpool exact")
    if layer.op == "deconv":
        return ("transposed convolution (snnc's nearest upsampling): NIR has no transposed convolution or "
                f"upsampling primitive; {before}")
    if layer.op == "concat" and any(net.layer(src).op == "concat" for src in layer.inputs):
        return f"concatenation of a concatenation: not written as split convolutions; {before}"
    if layer.op == "pad" and layer.attrs.get("mode") != "constant":
        return (f"{layer.attrs.get('mode')} padding (how snnc replaces a padded max-pool's -inf padding): NIR only "
                "pads with zeros, inside Conv2d; export the outputs before it (snnc export --outputs)")
    return None


def _conv_pads(layer: Layer, net: Network) -> tuple[str, list[int]]:
    """The conv's source past any zero `pad` layers, and the pads [top, left, bottom, right] including theirs
    (an edge pad is not folded: it is refused on its own)."""
    pads = list(layer.attrs["pads"])
    src = layer.inputs[0]
    while net.layer(src).op == "pad" and net.layer(src).attrs.get("mode") == "constant":
        p = net.layer(src).attrs["pads"]
        pads = [a + b for a, b in zip(pads, p)]
        src = net.layer(src).inputs[0]
    return src, pads


def to_nir(net: Network, outputs: Sequence[str] | None = None):
    """The Network (or the part that `outputs` need) as a nir.NIRGraph; UnsupportedOpError lists every layer
    NIR cannot express, with what to change."""
    nir = require_nir()
    outputs = list(outputs or net.outputs)
    for name in outputs:
        if name not in {layer.name for layer in net.layers}:
            raise SnncError(f"--outputs {name!r} is not a layer; layers: {', '.join(l.name for l in net.layers)}")
    layers = _needed(net, outputs)
    consumers: dict[str, list[Layer]] = {}
    for layer in layers:
        for src in layer.inputs:
            consumers.setdefault(src, []).append(layer)
    problems: dict[str, list[str]] = {}  # reason -> layers, so a reason shared by many layers is said once
    for layer in layers:
        why = _why_not(layer, net)
        if why is None and layer.op == "pad" and (layer.name in outputs or
                                                   any(c.op != "conv" for c in consumers.get(layer.name, []))):
            why = "zero padding that does not feed a convolution: NIR only pads inside Conv2d"
        if why is None and layer.op == "concat" and (layer.name in outputs or any(
                c.op != "conv" or c.neuron is None or c.attrs["group"] != 1 for c in consumers.get(layer.name, []))):
            why = ("channel concatenation that does not feed only ungrouped convolutions with neurons: NIR has no "
                   "concatenation primitive (snnc writes conv(concat(a, b)) as conv_a(a) + conv_b(b) summed at the "
                   "neuron); write a .lava and export the outputs before it (snnc export net.lava --to nir --outputs "
                   "LAYER)")
        if why is None and layer.op == "conv":
            pads = _conv_pads(layer, net)[1]
            if pads[0] != pads[2] or pads[1] != pads[3]:
                why = ("asymmetric padding (top, left, bottom, right differ): NIR's Conv2d pads both sides alike; "
                       "use a model with symmetric padding or export the outputs before it (snnc export --outputs)")
        if why:
            problems.setdefault(why, []).append(f"{layer.name!r} ({layer.op})")
    if problems:
        raise UnsupportedOpError("NIR cannot express " + "; ".join(
            f"layer{'s' if len(names) > 1 else ''} {', '.join(names)}: {why}" for why, names in problems.items()))

    used: set[str] = set()
    nodes: dict = {}
    edges: list[tuple[str, str]] = []
    out_key: dict[str, str] = {}  # layer name -> node key whose output is the layer's out(t)
    for layer in layers:
        meta = {META["name"]: layer.name}
        if layer.op == "input":
            key = _key(layer.name, used)
            nodes[key] = nir.Input(input_type={"input": np.array(layer.shape)}, metadata=meta)
            out_key[layer.name] = key
            continue
        if layer.op in ("pad", "concat"):
            continue  # folded into the convolutions they feed
        key = _key(layer.name, used)
        bias = layer.bias if layer.bias is not None else np.zeros(layer.weight.shape[0], np.float32)
        if layer.op == "conv":
            src, pads = _conv_pads(layer, net)
            a = layer.attrs
            groups = int(a["group"])
            if groups > 1:  # NIR readers take weight.shape[1] as the input channels: write the full weight
                meta[META["groups"]] = groups
            common = dict(input_shape=tuple(net.layer(src).shape[1:]), stride=tuple(a["strides"]),
                          padding=(pads[0], pads[1]), dilation=tuple(a["dilations"]), groups=1)
            if net.layer(src).op == "concat":
                # conv(concat(a, b), W) = conv(a, W[:, :Ca]) + conv(b, W[:, Ca:]): one Conv2d per part, summed
                # where NIR sums a node's inputs, at the neuron; the bias goes with the first part
                parts, off = [], 0
                for j, part_src in enumerate(net.layer(src).inputs):
                    c = net.layer(part_src).shape[0]
                    pkey = _key(f"{layer.name}_part{j}", used)
                    nodes[pkey] = nir.Conv2d(weight=layer.weight[:, off:off + c], bias=bias if j == 0 else
                                             np.zeros_like(bias), metadata={**meta, META["concat"]: src,
                                                                            META["part"]: j}, **common)
                    edges.append((out_key[part_src], pkey))
                    parts.append(pkey)
                    off += c
            else:
                nodes[key] = nir.Conv2d(weight=ungroup(layer.weight, groups), bias=bias, metadata=meta, **common)
        else:  # dense: snnc flattens a (C, H, W) source itself, NIR needs a Flatten (its types have no batch axis)
            src = layer.inputs[0]
            src_shape = net.layer(src).shape
            if len(src_shape) > 1:
                fkey = _key(layer.name + "_flatten", used)
                nodes[fkey] = nir.Flatten(input_type={"input": np.array(src_shape)}, start_dim=0, end_dim=-1,
                                          metadata=meta)
                edges.append((out_key[src], fkey))
                src_key = fkey
            else:
                src_key = out_key[src]
            nodes[key] = nir.Affine(weight=layer.weight, bias=bias, metadata=meta)
        if layer.op == "conv" and net.layer(src).op == "concat":
            key = None  # its parts feed the neuron
        else:
            edges.append((out_key[src] if layer.op == "conv" else src_key, key))
        out_key[layer.name] = key
        n = layer.neuron
        if n is not None:
            shape = layer.shape
            theta = np.broadcast_to(n.threshold.reshape((-1,) + (1,) * (len(shape) - 1)), shape).astype(np.float32)
            nkey = _key(layer.name + "_if", used)
            # NIR fires on v > v_threshold, snnc on V >= theta: in float32 the two agree exactly when v_threshold
            # is the float just below theta (ties are common: max-pool trees have weights of +-1)
            v_thr = np.nextafter(theta, np.float32(0)).astype(np.float32)
            nodes[nkey] = nir.IF(r=np.ones(shape, np.float32), v_threshold=v_thr,
                                 v_reset=np.zeros(shape, np.float32),
                                 metadata={**meta, META["reset"]: "subtract", META["v_init"]: float(n.v_init),
                                           META["theta"]: n.threshold.astype(np.float32),
                                           META["fire"]: "v > v_threshold (v_threshold: the float32 below theta)"})
            edges += [(k, nkey) for k in (parts if key is None else [key])]
            out_key[layer.name] = nkey
            if np.any(n.threshold != 1):
                skey = _key(layer.name + "_out", used)
                nodes[skey] = nir.Scale(scale=theta.copy(), metadata={**meta, META["role"]: "spike value"})
                edges.append((nkey, skey))
                out_key[layer.name] = skey
            if n.v_init != 0:
                log.warning("%s: V(0) = %g theta is kept in NIR metadata only; other frameworks start at V = 0 "
                            "(compile with --v-init zero for the same dynamics there)", layer.name, n.v_init)
    for name in outputs:
        key = _key("output_" + name, used)
        layer = net.layer(name)
        nodes[key] = nir.Output(output_type={"output": np.array(layer.shape)},
                                metadata={META["name"]: name, META["tensor"]: net.output_names.get(name, name)})
        edges.append((out_key[name], key))
    graph_meta = {"producer": f"snnc {__version__}", META["time"]: "discrete steps; every node updated in "
                  "topological order within a step (no synaptic delay); outputs decoded as the mean over steps"}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=graph_meta)


def write_nir(net: Network, path: str | Path, outputs: Sequence[str] | None = None) -> Path:
    """Write the NIR graph of `net` to `path` (HDF5, nir.write); nothing is left behind on failure."""
    nir = require_nir()
    graph = to_nir(net, outputs)
    path = Path(path)
    if not path.parent.exists():
        raise SnncError(f"{path.parent}: output folder does not exist")
    with atomic_path(path) as tmp:
        nir.write(tmp, graph)
    return path
