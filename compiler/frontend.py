"""Frontend: load an ONNX file, check it, fix the input shape, bring it to one opset, fold constants, drop no-ops."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Sequence

import onnx
import onnx_graphsurgeon as gs

from snnc.ir.errors import SnncError
from snnc.compiler.checks import check_numbers, check_runs, load_external_data
from snnc.compiler.graph import check_model, export_model, import_graph, infer_shapes
from snnc.ir.limits import check_input_size

log = logging.getLogger(__name__)

# Passes are written against this opset's operator signatures (Resize inputs, Clip inputs, Pad inputs).
TARGET_OPSET = 17
NOOP_OPS = ("Identity", "Dropout")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_model(path: str | Path) -> onnx.ModelProto:
    """Read and check an ONNX file; SnncError naming the file for anything that is not a valid model."""
    path = Path(path)
    if not path.is_file():
        raise SnncError(f"{path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError, onnx's ValueError/RuntimeError, OSError, ...
        raise SnncError(f"{path}: not a readable ONNX file ({exc.__class__.__name__}); "
                        "export the model to ONNX first") from None
    # Protobuf parses many byte strings "successfully": an ONNX model has a version and at least one node.
    if model.ir_version <= 0 or not model.graph.node or not model.opset_import:
        raise SnncError(f"{path}: not an ONNX model (no graph found); export the model to ONNX first")
    load_external_data(model, path)
    check_model(model, what=str(path))
    check_numbers(model, str(path))
    return model


def parse_shape(text: str) -> list[int]:
    try:
        dims = [int(d) for d in text.replace("x", ",").split(",") if d.strip()]
    except (ValueError, OverflowError):
        raise SnncError(f"--input-shape {text!r}: expected comma-separated integers like 1,3,416,416") from None
    if not dims or any(d <= 0 for d in dims):
        raise SnncError(f"--input-shape {text!r}: expected positive integers like 1,3,416,416")
    return dims


def fix_input_shape(model: onnx.ModelProto, shape: Sequence[int] | None, source: str = "model") -> onnx.ModelProto:
    """Give the (single) image input a static shape; a dynamic batch alone becomes 1."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise SnncError(f"{source}: expected one image input, found {len(inputs)} "
                        f"({', '.join(i.name for i in inputs)}); snnc converts single-input detectors")
    inp = inputs[0]
    dims = inp.type.tensor_type.shape.dim
    current = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
    if shape is not None:
        if len(shape) != len(current):
            raise SnncError(f"--input-shape has {len(shape)} dimensions but input '{inp.name}' has {len(current)}")
        for known, want in zip(current, shape):
            if known is not None and known != want:
                raise SnncError(f"--input-shape {list(shape)} conflicts with the static shape of input "
                                f"'{inp.name}' ({current})")
        new = list(shape)
    else:
        if any(d is None for d in current[1:]):
            shown = [d if d is not None else "?" for d in current]
            raise SnncError(f"{source}: input '{inp.name}' has a dynamic shape {shown}; "
                            f"pass --input-shape, e.g. --input-shape 1,3,416,416")
        new = [1 if current[0] is None else current[0]] + current[1:]
    if len(new) != 4:
        raise SnncError(f"{source}: input '{inp.name}' must be an image batch (N, C, H, W), got shape {new}")
    check_input_size(new, f"{source}: input '{inp.name}'")
    for d, v in zip(dims, new):
        d.Clear()
        d.dim_value = int(v)
    return model


def to_target_opset(model: onnx.ModelProto, source: str = "model") -> onnx.ModelProto:
    """Bring older opsets up to TARGET_OPSET (Upsample, attribute-style Clip/Pad disappear). A newer opset is
    converted down when onnx can; otherwise it is kept, as the passes read the operator forms they need."""
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if version is None or version == TARGET_OPSET:
        return model
    try:
        converted = onnx.version_converter.convert_version(model, TARGET_OPSET)
    except Exception as exc:  # the converter raises RuntimeError / ValueError / onnx-internal types
        reason = str(exc).splitlines()[0][:160]
        if version > TARGET_OPSET:
            log.info("kept opset %d (no conversion to %d: %s)", version, TARGET_OPSET, reason)
            return model
        raise SnncError(f"{source}: cannot convert opset {version} to {TARGET_OPSET} ({reason}); "
                        f"re-export the model with opset {TARGET_OPSET}") from None
    log.info("converted opset %d -> %d", version, TARGET_OPSET)
    return converted


def drop_noops(graph: gs.Graph) -> int:
    """Remove Identity / inference-mode Dropout by rewiring their consumers; returns how many were removed."""
    removed = 0
    for node in list(graph.nodes):
        if node.op not in NOOP_OPS or not node.inputs or not node.outputs:
            continue
        src, dst = node.inputs[0], node.outputs[0]
        if node.op == "Dropout" and len(node.outputs) > 1 and node.outputs[1].outputs:
            continue  # the mask is used: not a no-op
        if any(t is dst for t in graph.outputs):
            if any(t is src for t in graph.inputs):
                continue
            # Keep the output's name: the producer of src now writes it.
            for prod in src.inputs:
                prod.outputs = [dst if t is src else t for t in prod.outputs]
            for cons in list(src.outputs):
                if cons is not node:
                    cons.inputs = [dst if t is src else t for t in cons.inputs]
        else:
            for cons in list(dst.outputs):
                cons.inputs = [src if t is dst else t for t in cons.inputs]
        node.outputs.clear()
        node.inputs.clear()
        removed += 1
    graph.cleanup()
    return removed


def fold_shape_nodes(graph: gs.Graph) -> int:
    """Replace Shape nodes of statically shaped tensors by constants, so the shape arithmetic that exporters
    emit (Shape -> Slice -> Concat -> Resize sizes) folds away with the other constants."""
    import numpy as np

    folded = 0
    for node in [n for n in graph.nodes if n.op == "Shape"]:
        shape = node.inputs[0].shape
        if shape is None or any(not isinstance(d, (int, np.integer)) or d < 0 for d in shape):
            continue
        start, end = node.attrs.get("start", 0), node.attrs.get("end", None)
        value = np.array(shape, dtype=np.int64)[slice(start, end)]
        out = node.outputs[0]
        const = gs.Constant(out.name + "_value", value)
        for consumer in list(out.outputs):
            consumer.inputs = [const if t is out else t for t in consumer.inputs]
        node.outputs.clear()
        node.inputs.clear()
        folded += 1
    return folded


def name_nodes(graph: gs.Graph) -> None:
    """Give every node a unique name: errors and the split refer to nodes by name."""
    seen: set[str] = set()
    for i, node in enumerate(graph.nodes):
        if not node.name or node.name in seen:
            node.name = f"{node.name or node.op}_{i}"
        seen.add(node.name)


def prepare(path: str | Path, input_shape: Sequence[int] | None = None) -> onnx.ModelProto:
    """The frontend: a checked, static-shape, single-opset, constant-folded ONNX model."""
    model = load_model(path)
    model = fix_input_shape(model, input_shape, source=str(path))
    # Exporters store intermediate shapes with symbolic dims; drop them so inference recomputes static ones.
    del model.graph.value_info[:]
    for out in model.graph.output:
        out.type.tensor_type.ClearField("shape")
    model = infer_shapes(model)
    graph = import_graph(model)
    n0 = len(graph.nodes)
    # Folding and shape inference feed each other (a Pad whose pads are computed has no static output shape
    # until the computation is folded), so alternate until nothing changes.
    for _ in range(8):
        before = len(graph.nodes)
        try:
            fold_shape_nodes(graph)
            graph.fold_constants(fold_shapes=True, error_ok=False).cleanup()
        except Exception as exc:  # graphsurgeon surfaces onnxruntime and numpy errors unchanged
            raise SnncError(f"{path}: constant folding failed ({str(exc).splitlines()[0][:160]})") from None
        folded = export_model(graph, like=model)
        del folded.graph.value_info[:]
        graph = import_graph(infer_shapes(folded))
        if len(graph.nodes) == before:
            break
    removed = drop_noops(graph)
    name_nodes(graph)
    # Convert after folding: shape arithmetic (Shape, ConstantOfShape, ...) that exporters emit is gone by then,
    # and it is what the version converter most often has no adapter for.
    out = infer_shapes(to_target_opset(export_model(graph, like=model), source=str(path)))
    log.info("frontend: %d nodes -> %d (folded constants, %d no-ops dropped)", n0, len(out.graph.node), removed)
    check_model(out, what=str(path))
    check_runs(out, str(path))
    return out
