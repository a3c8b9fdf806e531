"""Split a detector into the part that becomes spiking and the host part (box decoding, sigmoid/exp, NMS).

Rule: the spiking part is every convolution (Conv, ConvTranspose, Gemm) and all of its ancestors; everything
downstream of the last convolutions is host work. A convolution that reads the result of host-only
post-processing (Softmax, NonMaxSuppression, TopK, ...) is host work too: an anchor-free (DFL) head's expectation
over the box distribution is a 1x1 Conv after a Softmax, and it belongs to the decoding, not to the network (a
warning names any other convolution moved to the host that way, e.g. after an attention Softmax). The tensors
crossing the cut (the raw head outputs) become the spiking graph's outputs and the host graph's inputs, under the
same names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import onnx
import onnx_graphsurgeon as gs

from snnc.ir.errors import SnncError
from snnc.compiler.graph import export_model, import_graph, infer_shapes

log = logging.getLogger(__name__)
CUT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Ops that only decoding / NMS use: a convolution below one of them stays on the host.
HOST_ONLY_OPS = ("Softmax", "LogSoftmax", "NonMaxSuppression", "TopK", "ArgMax", "ArgMin", "GatherElements",
                 "GatherND", "NonZero")


@dataclass
class SplitModel:
    spiking: onnx.ModelProto  # image input -> raw head tensors
    host: onnx.ModelProto | None  # raw head tensors -> the model's outputs; None when the heads are the outputs
    heads: list[str]  # names of the cut tensors, in the order of the spiking graph's outputs


def _reach(nodes: list[gs.Node], forward: bool) -> set[int]:
    """ids of `nodes` and every node below them (forward) or above them (not forward)."""
    seen: set[int] = set()
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for t in (node.outputs if forward else node.inputs):
            stack.extend(t.outputs if forward else t.inputs)
    return seen


def _dfl_like(node: gs.Node) -> bool:
    """A DFL expectation: a 1x1 Conv with one output channel (the weighted sum over the distance bins)."""
    w = node.inputs[1] if len(node.inputs) > 1 else None
    shape = getattr(w, "shape", None)
    return node.op == "Conv" and shape is not None and len(shape) == 4 and shape[0] == 1 and tuple(shape[2:]) == (1, 1)


def split_model(model: onnx.ModelProto, source: str = "model") -> SplitModel:
    graph = import_graph(model)
    below_host = _reach([n for n in graph.nodes if n.op in HOST_ONLY_OPS], forward=True)
    convs = [n for n in graph.nodes if n.op in CUT_OPS and id(n) not in below_host]
    moved = [n.name for n in graph.nodes if n.op in CUT_OPS and id(n) in below_host and not _dfl_like(n)]
    if moved:
        log.warning("%s: %d convolution(s) follow a Softmax/NMS/TopK and run on the host, not as spikes: %s",
                    source, len(moved), ", ".join(moved[:5]))
    if not convs:
        raise SnncError(f"{source}: no convolution found; snnc converts convolutional detectors")
    spiking_ids = _reach(convs, forward=False)
    spiking_nodes = [n for n in graph.nodes if id(n) in spiking_ids]
    host_nodes = [n for n in graph.nodes if id(n) not in spiking_ids]
    graph_outputs = {t.name for t in graph.outputs}

    heads: list[gs.Tensor] = []
    for node in spiking_nodes:
        for t in node.outputs:
            used_by_host = any(id(c) not in spiking_ids for c in t.outputs)
            if (used_by_host or t.name in graph_outputs) and t not in heads:
                heads.append(t)
    for node in host_nodes:  # a host node may read the image itself (e.g. to scale boxes): keep that input
        for t in node.inputs:
            if isinstance(t, gs.Variable) and not t.inputs and t not in graph.inputs:
                raise SnncError(f"{source}: host node '{node.name}' reads '{t.name}', which has no producer")

    spiking_graph = gs.Graph(nodes=spiking_nodes, inputs=list(graph.inputs), outputs=heads,
                             opset=graph.opset, name=(graph.name or "model") + "_spiking")
    spiking = infer_shapes(export_model(spiking_graph.copy(), like=model))

    host = None
    if host_nodes:
        host_inputs = [gs.Variable(t.name, dtype=t.dtype, shape=t.shape) for t in heads]
        by_name = {t.name: t for t in host_inputs}
        host_graph = graph.copy()
        tensors = host_graph.tensors()
        keep = {n.name for n in host_nodes}
        host_graph.nodes = [n for n in host_graph.nodes if n.name in keep]
        for node in host_graph.nodes:
            node.inputs = [by_name.get(t.name, t) if t.name in by_name else t for t in node.inputs]
        uses_image = any(t is i for n in host_graph.nodes for t in n.inputs for i in host_graph.inputs)
        host_graph.inputs = host_inputs + ([i for i in host_graph.inputs] if uses_image else [])
        host_graph.outputs = [by_name.get(t.name, tensors[t.name]) for t in graph.outputs]
        host_graph.name = (graph.name or "model") + "_host"
        host = infer_shapes(export_model(host_graph, like=model))
    log.info("split: %d spiking nodes, %d host nodes, heads %s", len(spiking_nodes), len(host_nodes),
             [t.name for t in heads])
    return SplitModel(spiking=spiking, host=host, heads=[t.name for t in heads])
