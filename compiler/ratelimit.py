"""Spiking ONNX -> standard ONNX by replacing every neuron with an ANN activation.

`clip=True` gives the rate-limit ANN: each neuron replaced by what it computes as T -> infinity,
IF -> min(relu(z), theta) and SignedIF -> clip(leaky_relu(z, alpha), -theta, theta) with per-channel theta
(a graded SignedIF, with threshold_neg: clip(leaky_relu(z, alpha), -alpha * theta_n, theta)).
onnxruntime runs it, so the clipping error (rate-limit ANN vs original ANN) is measured without simulation.
`clip=False` gives the unclipped ANN (IF -> Relu, SignedIF -> LeakyRelu): the network the thresholds are
calibrated on.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from snnc.compiler.graph import SNNC_DOMAIN, export_model, import_graph, is_neuron, make_const, make_var, unique_name


def neuron_thresholds(node: gs.Node) -> np.ndarray:
    return np.asarray(node.attrs.get("threshold", [1.0]), dtype=np.float32)


def _theta_const(graph: gs.Graph, node: gs.Node, scale: float = 1.0) -> gs.Constant:
    theta = neuron_thresholds(node) * np.float32(scale)
    value = theta.reshape(1, -1, 1, 1) if theta.size > 1 else theta.reshape(())
    return make_const(graph, node.name + "_theta", value.astype(np.float32))


def _low_const(graph: gs.Graph, node: gs.Node) -> gs.Constant:
    """A signed neuron's lowest mean output: -theta, or -alpha * theta_n for a graded one."""
    if "threshold_neg" not in node.attrs:
        return _theta_const(graph, node, -1.0)
    low = -np.asarray(node.attrs["threshold_neg"], np.float32) * np.float32(node.attrs["alpha"])
    value = low.reshape(1, -1, 1, 1) if low.size > 1 else low.reshape(())
    return make_const(graph, node.name + "_low", value.astype(np.float32))


def neurons_to_activations(model: onnx.ModelProto, clip: bool = True) -> onnx.ModelProto:
    graph = import_graph(model)
    for node in [n for n in graph.nodes if is_neuron(n)]:
        x, y = node.inputs[0], node.outputs[0]
        calibrated = int(node.attrs.get("calibrated", 1)) == 1 or int(node.attrs.get("normalized", 0)) == 1
        if node.op == "IF":
            act = gs.Node("Relu", unique_name(graph, node.name + "_relu"), inputs=[x],
                          outputs=[make_var(graph, node.name + "_act", shape=y.shape)])
        else:
            act = gs.Node("LeakyRelu", unique_name(graph, node.name + "_leaky"), inputs=[x],
                          outputs=[make_var(graph, node.name + "_act", shape=y.shape)],
                          attrs={"alpha": float(node.attrs["alpha"])})
        new = [act]
        if clip or (node.op == "IF" and calibrated):
            hi = gs.Node("Min", unique_name(graph, node.name + "_min"),
                         inputs=[act.outputs[0], _theta_const(graph, node)],
                         outputs=[make_var(graph, node.name + "_hi", shape=y.shape)])
            new.append(hi)
            if node.op == "SignedIF" and clip:
                new.append(gs.Node("Max", unique_name(graph, node.name + "_max"),
                                   inputs=[hi.outputs[0], _low_const(graph, node)],
                                   outputs=[make_var(graph, node.name + "_lo", shape=y.shape)]))
        new[-1].outputs = [y]
        node.inputs.clear()
        node.outputs.clear()
        graph.nodes.extend(new)
    out = export_model(graph, like=model)
    kept = [o for o in out.opset_import if o.domain != SNNC_DOMAIN]
    del out.opset_import[:]
    out.opset_import.extend(kept)
    return out
