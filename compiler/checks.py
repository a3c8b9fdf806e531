"""Input checks of the frontend: what onnx.checker accepts but the compiler must still refuse, naming the input.

- external data: every tensor stored outside the .onnx file must be a file inside the model's folder;
- numbers: the network computes in float32 (the input and every float initializer), and every float constant
  and float attribute is finite (a NaN weight or alpha would compile into a network that never fires);
- onnxruntime: the model runs once on a zero input, so a model the checker accepts but onnxruntime rejects
  (a bias of the wrong length, inconsistent dimensions, an opset it does not implement) is refused here, with
  the file's name, instead of failing deep inside calibration.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from snnc.ir.errors import SnncError

FLOAT_TYPES = {TensorProto.FLOAT16: "float16", TensorProto.DOUBLE: "float64", TensorProto.BFLOAT16: "bfloat16"}


def _first_line(exc: BaseException, n: int = 200) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else exc.__class__.__name__)[:n]


def _tensors(graph: onnx.GraphProto):
    """Initializers and tensor attributes (Constant values), including those of subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _tensors(a.g)
            for g in a.graphs:
                yield from _tensors(g)


def load_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Load tensors stored in external files, refusing locations that are missing or outside the model's folder."""
    folder = path.parent.resolve()
    tensors = [t for t in _tensors(model.graph) if onnx.external_data_helper.uses_external_data(t)]
    for t in tensors:
        location = next((e.value for e in t.external_data if e.key == "location"), None)
        if not location:
            raise SnncError(f"{path}: tensor '{t.name}' is stored externally without a location")
        target = (folder / location).resolve()
        if Path(location).is_absolute() or folder not in target.parents:
            raise SnncError(f"{path}: tensor '{t.name}' points outside the model's folder ({location}); "
                            "keep external data files beside the model")
        if not target.is_file():
            raise SnncError(f"{path}: external data file {location} of tensor '{t.name}' is missing; "
                            "copy it beside the model")
    if tensors:
        try:
            onnx.load_external_data_for_model(model, str(folder))
        except (OSError, ValueError, RuntimeError, onnx.checker.ValidationError) as exc:
            raise SnncError(f"{path}: cannot read its external data ({_first_line(exc)})") from None
        for t in tensors:
            if _raw_size(t) is not None and len(t.raw_data) != _raw_size(t):
                raise SnncError(f"{path}: external data of tensor '{t.name}' has {len(t.raw_data)} bytes, "
                                f"its shape needs {_raw_size(t)}")


def _raw_size(t: TensorProto) -> int | None:
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return None
    return int(np.prod(t.dims, dtype=np.int64)) * itemsize if t.raw_data else None


def _tensor_values(t: TensorProto, source: str, what: str) -> np.ndarray:
    try:
        return numpy_helper.to_array(t)
    except (ValueError, TypeError, RuntimeError, MemoryError) as exc:
        raise SnncError(f"{source}: {what} is not a readable tensor ({_first_line(exc)})") from None


def _check_finite(values: np.ndarray, source: str, what: str) -> None:
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise SnncError(f"{source}: {what} holds {bad} NaN or infinite value(s); fix the exported weights")


def check_numbers(model: onnx.ModelProto, source: str) -> None:
    """float32 input and initializers; every float initializer, Constant and float attribute finite."""
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        et = inp.type.tensor_type.elem_type
        if et != TensorProto.FLOAT:
            name = FLOAT_TYPES.get(et) or (TensorProto.DataType.Name(et).lower()
                                           if et in TensorProto.DataType.values() else str(et))
            raise SnncError(f"{source}: input '{inp.name}' is {name}; snnc converts float32 models (export the "
                            "model in float32)")
    for t in model.graph.initializer:
        if t.data_type in FLOAT_TYPES:
            raise SnncError(f"{source}: initializer '{t.name}' is {FLOAT_TYPES[t.data_type]}; snnc converts float32 "
                            "models (export the model in float32)")
        if t.data_type == TensorProto.FLOAT:
            _check_finite(_tensor_values(t, source, f"initializer '{t.name}'"), source, f"initializer '{t.name}'")
    for node in model.graph.node:
        label = f"{node.op_type} node '{node.name or (node.output[0] if node.output else '?')}'"
        for a in node.attribute:
            if a.type == onnx.AttributeProto.FLOAT and not np.isfinite(a.f):
                raise SnncError(f"{source}: {label} has {a.name}={a.f}; expected a finite number")
            if a.type == onnx.AttributeProto.FLOATS and not np.isfinite(np.asarray(a.floats, np.float64)).all():
                raise SnncError(f"{source}: {label} has non-finite values in {a.name}")
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT:
                _check_finite(_tensor_values(a.t, source, f"{label} {a.name}"), source, f"{label} {a.name}")
        if node.op_type == "BatchNormalization":
            eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
            if not eps >= 0.0:
                raise SnncError(f"{source}: {label} has epsilon={eps}; expected a number >= 0")


def check_runs(model: onnx.ModelProto, source: str) -> None:
    """Run the model once on zeros with onnxruntime (optimizations off); SnncError naming `source` if it fails."""
    from snnc.compiler.graph import ort_error, ort_session

    try:
        sess = ort_session(model)
        feeds = {i.name: np.zeros([d if isinstance(d, int) and d > 0 else 1 for d in i.shape], np.float32)
                 for i in sess.get_inputs()}
        sess.run(None, feeds)
    except SnncError as exc:
        raise SnncError(f"{source}: {exc}") from None
    except MemoryError:
        raise SnncError(f"{source}: out of memory running the model once; use a smaller --input-shape") from None
    except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidArgument, ...)
        raise SnncError(f"{source}: onnxruntime cannot run the model ({ort_error(exc)})") from None
