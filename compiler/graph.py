"""Shared graph helpers for passes and the frontend: onnx <-> graphsurgeon, lookups, validation, onnxruntime.

Passes never import each other; whatever two passes need lives here.
"""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from snnc.ir.errors import SnncError
from snnc.ir.ort import ort_error  # noqa: F401  (re-exported for the compiler)
from snnc.ir.ort import ort_session as _ort_session

log = logging.getLogger(__name__)
gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR  # its warnings about intermediate states are noise to users

SNNC_DOMAIN = "snnc"
SNNC_DOMAIN_VERSION = 1
NEURON_OPS = ("IF", "SignedIF")
CONV_OPS = ("Conv", "ConvTranspose")


def import_graph(model: onnx.ModelProto) -> gs.Graph:
    return gs.import_onnx(model)


def export_model(graph: gs.Graph, like: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """gs.Graph -> ModelProto with the snnc domain declared when a neuron op is present."""
    graph.cleanup().toposort()
    model = gs.export_onnx(graph, do_type_check=False)
    if any(n.domain == SNNC_DOMAIN for n in model.graph.node):
        if not any(o.domain == SNNC_DOMAIN for o in model.opset_import):
            model.opset_import.append(onnx.helper.make_opsetid(SNNC_DOMAIN, SNNC_DOMAIN_VERSION))
    # The IR version graphsurgeon writes can be newer than older onnxruntime releases read (Python 3.10 wheels).
    model.ir_version = min(model.ir_version, 10)
    if like is not None:
        model.ir_version = min(like.ir_version, 10)
        for p in like.metadata_props:
            model.metadata_props.add(key=p.key, value=p.value)
    return model


def is_neuron(node: gs.Node) -> bool:
    return node.domain == SNNC_DOMAIN and node.op in NEURON_OPS


def const_value(tensor: gs.Tensor | None) -> np.ndarray | None:
    """The value of a constant tensor (initializer or Constant node output), else None."""
    if tensor is None:
        return None
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        attr = tensor.inputs[0].attrs.get("value")
        if isinstance(attr, gs.Constant):
            return np.asarray(attr.values)
    return None


def const_scalar(tensor: gs.Tensor | None) -> float | None:
    """The value of a one-element constant tensor as a float, else None."""
    v = const_value(tensor)
    return None if v is None or v.size != 1 else float(v.reshape(-1)[0])


def producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if tensor.inputs else None


def is_graph_output(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    return any(t is tensor for t in graph.outputs)


def sole_consumer(graph: gs.Graph, tensor: gs.Tensor) -> gs.Node | None:
    """The only consumer of `tensor`, or None if it has several or is a graph output."""
    if len(tensor.outputs) != 1 or is_graph_output(graph, tensor):
        return None
    return tensor.outputs[0]


def unique_name(graph: gs.Graph, base: str) -> str:
    """A tensor/node name not used in the graph yet (names built from inputs clash when parents are shared)."""
    # Names handed out but not yet attached to the graph count as taken too.
    issued = graph.__dict__.setdefault("_snnc_issued_names", set())
    taken = set(graph.tensors().keys()) | {n.name for n in graph.nodes} | issued
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    issued.add(name)
    return name


def make_const(graph: gs.Graph, base: str, value: np.ndarray) -> gs.Constant:
    return gs.Constant(unique_name(graph, base), np.ascontiguousarray(value))


def make_var(graph: gs.Graph, base: str, dtype=np.float32, shape: Sequence[int] | None = None) -> gs.Variable:
    return gs.Variable(unique_name(graph, base), dtype=dtype, shape=list(shape) if shape is not None else None)


def node_label(node: gs.Node) -> str:
    return f"{node.op} node '{node.name or '<unnamed>'}'"


def tensor_shape(tensor: gs.Tensor) -> list[int]:
    """Static shape of a tensor; SnncError if unknown (run shape inference first)."""
    shape = tensor.shape
    if shape is None or any(not isinstance(d, (int, np.integer)) or d < 0 for d in shape):
        raise SnncError(f"tensor '{tensor.name}' has no static shape ({shape}); fix the input shape with --input-shape")
    return [int(d) for d in shape]


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:  # onnx raises several exception types here
        raise SnncError(f"shape inference failed: {str(exc).splitlines()[0]}") from None


def check_model(model: onnx.ModelProto, what: str = "model") -> None:
    """onnx.checker on the model; custom-domain (snnc) ops are accepted as opaque."""
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # ValidationError, and C++ errors surfacing as other types (e.g. a too-large model)
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), "invalid")
        raise SnncError(f"{what} is not a valid ONNX graph: {first}") from None


def ort_session(model: onnx.ModelProto, optimize: bool = False):
    """An onnxruntime CPU session on the graph as written (snnc.ir.ort.ort_session)."""
    return _ort_session(model, what=f"graph {model.graph.name or 'model'}", optimize=optimize)


def run_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray], outputs: Iterable[str] | None = None,
              optimize: bool = False, what: str = "the model") -> dict[str, np.ndarray]:
    """Run with onnxruntime; a batch larger than the model's fixed batch of 1 runs sample by sample.
    onnxruntime's errors become SnncError naming `what`."""
    try:
        return _run_model(model, feeds, outputs, optimize)
    except SnncError:
        raise
    except MemoryError:
        raise SnncError(f"out of memory running {what} in onnxruntime; use fewer or smaller inputs") from None
    except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidArgument, ...)
        raise SnncError(f"onnxruntime cannot run {what} ({ort_error(exc)})") from None


def _run_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray], outputs: Iterable[str] | None,
               optimize: bool) -> dict[str, np.ndarray]:
    sess = ort_session(model, optimize)
    names = list(outputs) if outputs is not None else [o.name for o in sess.get_outputs()]
    fixed_one = all(i.shape and i.shape[0] == 1 for i in sess.get_inputs())
    batch = {v.shape[0] for v in feeds.values()}
    if fixed_one and len(batch) == 1 and batch != {1}:
        parts = [sess.run(names, {k: v[i:i + 1] for k, v in feeds.items()}) for i in range(batch.pop())]
        return {n: np.concatenate([p[j] for p in parts]) for j, n in enumerate(names)}
    return dict(zip(names, sess.run(names, feeds)))


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of `model` whose graph outputs are `names` (intermediate tensors exposed, e.g. for calibration)."""
    model = infer_shapes(model)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    info = {vi.name: vi for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input)}
    del m.graph.output[:]
    for name in names:
        vi = info.get(name)
        if vi is None:
            vi = onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        m.graph.output.append(vi)
    return m
