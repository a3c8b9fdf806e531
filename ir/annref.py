"""The original ANN in a `.lava` file by reference: its graph embedded, its large weights read from the source ONNX.

A compiled network keeps the ANN it came from (`Network.ann_onnx`) for side-by-side runs (`snnc run --ann`,
`snnc eval`'s fidelity and mAP of the ANN). Embedding it whole doubled a lean graph's file (yolov3-tiny: 66 MB
against a 35.5 MB ONNX), although every large weight is already in the ONNX file the user compiled. So by default
`ann.onnx` is stored with each initializer of `MIN_ELEMENTS` or more values emptied, and `meta["ann_source"]`
records the source file and, per emptied tensor, the SHA-256 of its values. Loading fills them back from the
source: found next to the `.lava` (same file name) or at its recorded path, matched by content, not by file
hash, so a re-saved but equal model still serves. When the source is gone or changed, the network loads without
its ANN and `missing_reason` says what to do (`snnc compile --embed-ann` stores it whole).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

MIN_ELEMENTS = 1024  # smaller tensors (biases, BN statistics, shapes) stay embedded: not worth a lookup


def tensor_digest(arr: np.ndarray) -> str:
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _large_tensors(model: onnx.ModelProto) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (digest, values) of the initializers with MIN_ELEMENTS or more values."""
    out = {}
    for t in model.graph.initializer:
        if int(np.prod(t.dims)) >= MIN_ELEMENTS:
            arr = numpy_helper.to_array(t)
            out[t.name] = (tensor_digest(arr), arr)
    return out


def source_record(prepared: onnx.ModelProto, source_path: str | Path) -> dict[str, Any]:
    """What `strip` may leave out of `prepared` (the ANN as compiled): its large initializers that the source file
    holds with the same values, by name -> digest, and where the source is."""
    have = {d for d, _ in _large_tensors(onnx.load(str(source_path))).values()}
    tensors = {name: d for name, (d, _) in _large_tensors(prepared).items() if d in have}
    p = Path(source_path).resolve()
    return {"path": str(p), "name": p.name, "tensors": tensors}


def strip(ann_onnx: bytes, record: dict[str, Any]) -> bytes:
    """The ANN with the recorded tensors' values removed (dims and type kept, so the graph still reads)."""
    model = onnx.load_from_string(ann_onnx)
    for t in model.graph.initializer:
        if t.name in record["tensors"]:
            for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                t.ClearField(field)
    return model.SerializeToString()


def restore(stripped: bytes, record: dict[str, Any], lava_path: str | Path) -> tuple[bytes | None, str]:
    """(the whole ANN, the source file it was read from), or (None, why not): the source is looked up next to
    the .lava file, then at its recorded path."""
    candidates = [Path(lava_path).resolve().parent / str(record.get("name", "")), Path(str(record.get("path", "")))]
    tried = []
    for path in dict.fromkeys(candidates):
        if not path.is_file():
            continue
        tried.append(str(path))
        try:
            source = onnx.load(str(path))
        except Exception:  # noqa: BLE001 - not an ONNX file any more: try the next candidate
            continue
        by_digest = dict(_large_tensors(source).values())
        if not all(d in by_digest for d in record["tensors"].values()):
            continue
        try:
            model = onnx.load_from_string(stripped)
        except Exception:  # noqa: BLE001 - a damaged ann.onnx: the file loads without its ANN, as with no source
            return None, "its embedded ann.onnx is damaged; recompile the model"
        for i, t in enumerate(model.graph.initializer):
            if t.name in record["tensors"]:
                model.graph.initializer[i].CopyFrom(numpy_helper.from_array(by_digest[record["tensors"][t.name]],
                                                                            t.name))
        return model.SerializeToString(), str(path)
    where = f"{record.get('name')} next to the .lava file or at {record.get('path')}"
    why = f"changed ({', '.join(tried)} lacks its weights)" if tried else f"not found ({where})"
    return None, (f"its original ANN is stored by reference and the source ONNX is {why}; put the model back or "
                  "recompile with --embed-ann")


def describe(ann_onnx: bytes | None, note: str) -> str:
    """One line for `snnc inspect`: where the network's original ANN comes from (note: `Network.ann_note`)."""
    if ann_onnx is not None:
        return f"original ANN: by reference, its weights read from {note}" if note else "original ANN: embedded"
    return f"original ANN: not available ({missing_reason(note)})"


def missing_reason(note: str) -> str:
    """Why a loaded network has no ANN (note: its `Network.ann_note`), for the one-line errors of the commands that
    need it."""
    return note or "compiled with --no-ann; recompile without it"
