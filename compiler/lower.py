"""Lower the spiking ONNX graph to a Network (the layer list backends consume and `.lava` stores).

Conv / ConvTranspose followed by its neuron op become one layer with a population; a convolution without a
neuron is linear (a head). Concat on channels and Pad (constant 0 or edge, spatial only) are routing layers; a
pad-free 2-D MaxPool (left by `--maxpool count`) is a `maxpool` routing layer over running spike counts.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from snnc.ir.errors import UnsupportedOpError
from snnc.compiler.graph import const_value, import_graph, is_neuron, node_label, sole_consumer, tensor_shape
from snnc.ir.network import Layer, Network, Neuron


def _conv_attrs(node: gs.Node, x_shape: list[int]) -> dict:
    auto = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    if auto not in ("NOTSET", "VALID"):
        raise UnsupportedOpError(f"{node_label(node)}: auto_pad={auto} is not supported; re-export with pads")
    if node.op == "ConvTranspose" and node.attrs.get("output_shape") is not None:
        raise UnsupportedOpError(f"{node_label(node)}: output_shape is not supported; re-export with pads")
    pads = list(node.attrs.get("pads", [0, 0, 0, 0]))
    attrs = {"strides": list(node.attrs.get("strides", [1, 1])), "pads": pads,
             "dilations": list(node.attrs.get("dilations", [1, 1])), "group": int(node.attrs.get("group", 1))}
    if node.op == "ConvTranspose":
        attrs["output_padding"] = list(node.attrs.get("output_padding", [0, 0]))
    return attrs


def lower_to_network(model: onnx.ModelProto) -> Network:
    graph = import_graph(model)
    graph.toposort()
    layers: list[Layer] = []
    layer_of: dict[str, str] = {}  # tensor name -> layer name producing it
    for inp in graph.inputs:
        shape = tensor_shape(inp)
        layers.append(Layer(inp.name, "input", [], tuple(shape[1:])))
        layer_of[inp.name] = inp.name
    for node in graph.nodes:
        if is_neuron(node):
            continue  # merged into its convolution below
        if node.op in ("Conv", "ConvTranspose"):
            x = node.inputs[0]
            w, b = const_value(node.inputs[1]), const_value(node.inputs[2]) if len(node.inputs) > 2 else None
            if w is None or (len(node.inputs) > 2 and b is None) or w.ndim != 4:
                raise UnsupportedOpError(f"{node_label(node)}: needs constant 2-D weights")
            y = node.outputs[0]
            neuron = None
            nxt = sole_consumer(graph, y)
            if nxt is not None and is_neuron(nxt):
                a = nxt.attrs
                neuron = Neuron(nxt.op, np.asarray(a.get("threshold", [1.0])) * np.ones(tensor_shape(y)[1]),
                                alpha=float(a.get("alpha", 0.0)), v_init=float(a.get("v_init", 0.0)),
                                reset=str(a.get("reset", "subtract")), memory=bool(int(a.get("memory", 0))),
                                graded=bool(int(a.get("graded", 0))),
                                threshold_neg=None if "threshold_neg" not in a else
                                np.asarray(a["threshold_neg"]) * np.ones(tensor_shape(y)[1]))
                y = nxt.outputs[0]
            elif any(is_neuron(c) for c in y.outputs):
                raise UnsupportedOpError(f"{node_label(node)}: its output feeds a neuron and other nodes")
            op = "conv" if node.op == "Conv" else "deconv"
            layer = Layer(node.name, op, [layer_of[x.name]], tuple(tensor_shape(node.outputs[0])[1:]),
                          weight=w.astype(np.float32), bias=None if b is None else b.astype(np.float32),
                          attrs=_conv_attrs(node, tensor_shape(x)), neuron=neuron)
        elif node.op == "Concat":
            if int(node.attrs.get("axis", 1)) not in (1, -3):
                raise UnsupportedOpError(f"{node_label(node)}: only channel concatenation is supported")
            layer = Layer(node.name, "concat", [layer_of[t.name] for t in node.inputs],
                          tuple(tensor_shape(node.outputs[0])[1:]), attrs={"axis": 0})
            y = node.outputs[0]
        elif node.op == "Pad":
            pads = const_value(node.inputs[1])
            mode = node.attrs.get("mode", "constant")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            value = const_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
            if pads is None or len(pads) != 8 or any(pads[[0, 1, 4, 5]]) or np.any(pads < 0):
                raise UnsupportedOpError(f"{node_label(node)}: only constant, non-negative spatial pads convert")
            if mode not in ("constant", "edge") or (mode == "constant" and value is not None and float(value) != 0):
                raise UnsupportedOpError(f"{node_label(node)}: only zero or edge padding converts (mode {mode})")
            layer = Layer(node.name, "pad", [layer_of[node.inputs[0].name]], tuple(tensor_shape(node.outputs[0])[1:]),
                          attrs={"pads": [int(pads[2]), int(pads[3]), int(pads[6]), int(pads[7])], "mode": mode})
            y = node.outputs[0]
        elif node.op == "MaxPool":
            a = node.attrs
            auto = a.get("auto_pad", "NOTSET")
            auto = auto.decode() if isinstance(auto, bytes) else auto
            if (len(tensor_shape(node.inputs[0])) != 4 or any(a.get("pads", [0, 0, 0, 0]))
                    or auto not in ("NOTSET", "VALID") or int(a.get("ceil_mode", 0))
                    or any(d != 1 for d in a.get("dilations", [1, 1])) or (len(node.outputs) > 1 and node.outputs[1].outputs)):
                raise UnsupportedOpError(f"{node_label(node)}: only a pad-free 2-D MaxPool lowers (run the "
                                         "maxpool_to_strided_conv pass with --maxpool count first)")
            layer = Layer(node.name, "maxpool", [layer_of[node.inputs[0].name]],
                          tuple(tensor_shape(node.outputs[0])[1:]),
                          attrs={"kernel_shape": [int(k) for k in a["kernel_shape"]],
                                 "strides": [int(s) for s in a.get("strides", [1, 1])]})
            y = node.outputs[0]
        else:
            raise UnsupportedOpError(f"{node_label(node)} has no spiking lowering; supported: Conv, ConvTranspose, "
                                     "Concat, Pad, MaxPool and the snnc neurons (run the default passes first)")
        layers.append(layer)
        layer_of[y.name] = layer.name
    outputs = [layer_of[t.name] for t in graph.outputs]
    return Network(layers=layers, outputs=outputs, output_names={layer_of[t.name]: t.name for t in graph.outputs})
