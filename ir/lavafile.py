"""Read and write `.lava` files: one zip archive holding a JSON manifest, .npy arrays and the host ONNX graph.

Readable with the standard library and numpy alone (docs/format.md). Layout:

    manifest.json          {"format": "snnc-lava", "version": 1, "layers": [...], "outputs": [...], ...}
    arrays/<i>.<field>.npy  weights, biases, thresholds, referenced from the manifest by file name
    host.onnx              the host post-processing graph (optional)
    ann.onnx               the original ANN with static shapes, for side-by-side runs (optional)
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from snnc.ir.errors import FormatError, SnncError
from snnc.ir.files import atomic_path
from snnc.ir.network import Layer, Network, Neuron
from snnc.ir.validate import check_manifest, check_network

FORMAT_NAME = "snnc-lava"
FORMAT_VERSION = 1
# What a damaged archive or array can raise while it is read: the zip layer (bad deflate data, truncation, an
# unknown compression method or an "encrypted" flag from a flipped bit), numpy's .npy header parser, memory.
_READ_ERRORS = (KeyError, ValueError, TypeError, IndexError, zipfile.BadZipFile, zlib.error, EOFError, OSError,
                NotImplementedError, RuntimeError, MemoryError, OverflowError, struct.error, UnicodeDecodeError)


def _array_entry(zf: zipfile.ZipFile, name: str, arr: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    zf.writestr(name, buf.getvalue())
    return name


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def save(net: Network, path: str | os.PathLike) -> None:
    """Write atomically: a failure leaves no half-written file behind."""
    path = Path(path)
    layers = []
    with atomic_path(path, suffix=".lava.tmp") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for i, layer in enumerate(net.layers):
                entry: dict[str, Any] = {
                    "name": layer.name, "op": layer.op, "inputs": list(layer.inputs),
                    "shape": list(layer.shape), "attrs": _jsonable(layer.attrs),
                }
                if layer.weight is not None:
                    entry["weight"] = _array_entry(zf, f"arrays/{i}.weight.npy", layer.weight)
                if layer.bias is not None:
                    entry["bias"] = _array_entry(zf, f"arrays/{i}.bias.npy", layer.bias)
                if layer.neuron is not None:
                    n = layer.neuron
                    entry["neuron"] = {
                        "kind": n.kind, "alpha": float(n.alpha), "v_init": float(n.v_init), "reset": n.reset,
                        "memory": bool(n.memory),
                        "threshold": _array_entry(zf, f"arrays/{i}.threshold.npy", n.threshold),
                    }
                layers.append(entry)
            if net.host_onnx is not None:
                zf.writestr("host.onnx", net.host_onnx)
            if net.ann_onnx is not None:
                zf.writestr("ann.onnx", net.ann_onnx)
            manifest = {
                "format": FORMAT_NAME, "version": FORMAT_VERSION, "layers": layers, "outputs": list(net.outputs),
                "output_names": dict(net.output_names), "input_encoding": _jsonable(net.input_encoding),
                "preprocess": _jsonable(net.preprocess), "host": "host.onnx" if net.host_onnx is not None else None,
                "ann": "ann.onnx" if net.ann_onnx is not None else None,
                "meta": _jsonable(net.meta),
            }
            # The manifest goes first so `unzip -p net.lava manifest.json` and format sniffing stay cheap.
            zf.writestr("manifest.json", json.dumps(manifest, indent=1))


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a `.lava` file, checked for format name and version (FormatError otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as zf:
            manifest = json.loads(zf.read("manifest.json"))
    except (*_READ_ERRORS, json.JSONDecodeError, RecursionError) as exc:
        raise FormatError(f"{path}: not a snnc .lava file or it is corrupt ({exc.__class__.__name__}); "
                          "recompile it with `snnc compile`") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise FormatError(f"{path}: not a snnc .lava file (format is {manifest.get('format')!r}, "
                          f"expected {FORMAT_NAME!r})" if isinstance(manifest, dict) else
                          f"{path}: not a snnc .lava file")
    if manifest.get("version") != FORMAT_VERSION:
        raise FormatError(f"{path}: .lava format version {manifest.get('version')!r} is not supported by this "
                          f"snnc (reads version {FORMAT_VERSION}); recompile the model with this snnc")
    return manifest


def _read_array(zf: zipfile.ZipFile, name: str) -> np.ndarray:
    arr = np.load(io.BytesIO(zf.read(name)), allow_pickle=False)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} has dtype {arr.dtype}, expected float32")
    return arr.astype(np.float32, copy=False)


def load(path: str | os.PathLike) -> Network:
    """Read a `.lava` file into a Network; FormatError names the file and the problem.

    The manifest is checked against the schema before use and the arrays against the layers after reading
    (snnc.ir.validate); the embedded host.onnx / ann.onnx stay bytes, parsed only by the code that uses them."""
    manifest = read_manifest(path)
    check_manifest(manifest, path)
    try:
        with zipfile.ZipFile(path) as zf:
            layers = []
            for e in manifest["layers"]:
                where = f"layer '{e['name']}'"
                neuron = None
                if e.get("neuron") is not None:
                    nd = e["neuron"]
                    neuron = Neuron(nd["kind"], _read_array(zf, nd["threshold"]), alpha=nd["alpha"],
                                    v_init=nd["v_init"], reset=nd.get("reset", "subtract"),
                                    memory=bool(nd.get("memory", False)))
                try:
                    layers.append(Layer(
                        name=e["name"], op=e["op"], inputs=list(e["inputs"]), shape=tuple(e["shape"]),
                        weight=_read_array(zf, e["weight"]) if e.get("weight") else None,
                        bias=_read_array(zf, e["bias"]) if e.get("bias") else None, attrs=dict(e.get("attrs", {})),
                        neuron=neuron))
                except KeyError as exc:
                    raise KeyError(f"{where}: archive member {exc} is missing") from None
            host = zf.read(manifest["host"]) if manifest.get("host") else None
            ann = zf.read(manifest["ann"]) if manifest.get("ann") else None
        net = Network(layers=layers, outputs=list(manifest["outputs"]),
                      input_encoding=manifest.get("input_encoding", {}), preprocess=manifest.get("preprocess", {}),
                      output_names=manifest.get("output_names", {}), host_onnx=host, ann_onnx=ann,
                      meta=manifest.get("meta", {}))
    except FormatError:
        raise
    except _READ_ERRORS as exc:
        raise FormatError(f"{path}: corrupt .lava file ({exc.__class__.__name__}: {str(exc)[:200]}); "
                          "recompile it") from None
    try:
        check_network(net, f"{path}: corrupt .lava file")
    except SnncError as exc:
        raise FormatError(f"{exc}; recompile it") from None
    return net
