"""Read and write `.lava` files: one zip archive holding a JSON manifest, .npy arrays and the host ONNX graph.

Readable with the standard library and numpy alone (docs/format.md). Layout:

    manifest.json          {"format": "snnc-lava", "version": 2, "layers": [...], "outputs": [...], ...}
    arrays/<i>.<field>.npy  weights, biases, thresholds, referenced from the manifest
    host.onnx              the host post-processing graph (optional)
    ann.onnx               the original ANN with static shapes, for side-by-side runs (optional; with "ann_ref"
                           its large weights are read from the source ONNX: snnc.ir.annref)

Version 2 stores no more than it must (`encode_array`): an array whose values are all the same is a `fill` in the
manifest (zero biases, the ones of a nearest-upsampling deconvolution), one that a smaller dtype holds exactly is
stored in it (int8 / int16 / float16), one whose rows are a per-row scale times -1 / 0 / 1 (the max-pool trees'
tap pickers) is an int8 pattern and the scales, and slices that are scaled copies of other slices (what
split_leaky_relu and the max-pool trees leave) are one factor and int8 rounding corrections each. Every form
decodes to the exact float32 array that was saved.
Version 1 (every array a float32 .npy member named by a string) is still read.
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

from snnc.ir import annref
from snnc.ir.errors import FormatError, SnncError
from snnc.ir.files import atomic_path
from snnc.ir.network import Layer, Network, Neuron
from snnc.ir.validate import check_manifest, check_network

FORMAT_NAME = "snnc-lava"
FORMAT_VERSION = 2
# What a damaged archive or array can raise while it is read: the zip layer (bad deflate data, truncation, an
# unknown compression method or an "encrypted" flag from a flipped bit), numpy's .npy header parser, memory.
_READ_ERRORS = (KeyError, ValueError, TypeError, IndexError, zipfile.BadZipFile, zlib.error, EOFError, OSError,
                NotImplementedError, RuntimeError, MemoryError, OverflowError, struct.error, UnicodeDecodeError)
READS_VERSIONS = (1, 2)
_SMALL_DTYPES = (np.int8, np.int16, np.float16)


def _bits(a: np.ndarray) -> np.ndarray:
    """The raw bits of a numeric array, so that -0.0 != 0.0 and comparisons are exact."""
    a = np.ascontiguousarray(a)
    return a.view(f"u{a.dtype.itemsize}") if a.dtype.kind == "f" else a


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(_bits(a), _bits(b))


def encode_array(arr: np.ndarray, name: str = "a") -> tuple[Any, dict[str, np.ndarray]]:
    """(manifest reference, {member name: array to store}) of the smallest exact form of `arr` (see the module
    docstring; members are arrays/<name>[.part].npy); decode_array(reference, load) gives back `arr` bit for bit."""
    a = np.ascontiguousarray(arr)
    dtype = str(a.dtype)
    member = f"arrays/{name}.npy"
    if a.dtype.kind != "f" or a.size == 0:
        return {"npy": member, "dtype": dtype}, {member: a}
    flat = _bits(a).reshape(-1)
    if np.all(flat == flat[0]):
        return {"fill": a.reshape(-1)[0].item(), "shape": list(a.shape), "dtype": dtype}, {}
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        head = a.reshape(-1)[:4096]  # a cheap first look: most large arrays fail the small forms there
        for small in _SMALL_DTYPES:
            if np.dtype(small).itemsize >= a.dtype.itemsize:
                continue
            if _same(head.astype(small).astype(a.dtype), head):
                c = a.astype(small)
                if _same(c.astype(a.dtype), a):
                    return {"npy": member, "dtype": dtype}, {member: c}
            if small == np.int16 and a.ndim >= 2:  # before float16: a sign pattern and one scale per row
                scale = np.abs(a).reshape(a.shape[0], -1).max(axis=1)
                safe = np.where(scale > 0, scale, 1).reshape((-1,) + (1,) * (a.ndim - 1))
                pattern = (a / safe).astype(np.int8)
                if _same((pattern.astype(a.dtype) * safe.astype(a.dtype)).astype(a.dtype), a):
                    p, sc = f"arrays/{name}.pattern.npy", f"arrays/{name}.scale.npy"
                    return {"pattern": p, "scale": sc, "dtype": dtype}, {p: pattern, sc: scale}
        if a.dtype == np.float32 and a.ndim >= 2:
            for axis in (0, 1):
                found = _proportional(a, axis, name)
                if found is not None:
                    return found
    return {"npy": member, "dtype": dtype}, {member: a}


# Slices (rows or columns) that are another slice times a factor: the split leaky-ReLU channels and the max-pool
# tree's branches reach their consumers as copies of one weight column scaled by -alpha and the normalization's
# lambda ratios. Rounded to float32 they are proportional up to a few units in the last place, which an int8
# correction per value (mostly 0, and deflate shrinks those) makes exact.
_SIG_TOL = 1e-5  # candidate copies: normalized slices whose random projections agree this closely (then verified)
_MIN_SAVING = 0.25  # use the form when it stores at most 3/4 of the slices as float32


def _proportional(a: np.ndarray, axis: int, name: str) -> tuple[Any, dict[str, np.ndarray]] | None:
    m = np.moveaxis(a, axis, 0)
    n = m.shape[0]
    rows = m.reshape(n, -1)
    if n < 2 or rows.shape[1] == 0:
        return None
    piv = np.abs(rows).argmax(axis=1)
    top = rows[np.arange(n), piv].astype(np.float64)
    # Candidates by sorting a random projection of each slice divided by its largest value: scaled copies land
    # next to each other (rounding moves it by ~1e-7), with no hash bucket boundary to split them.
    probe = np.random.default_rng(0).standard_normal(rows.shape[1]).astype(np.float32)
    sig = np.where(top != 0, (rows @ probe).astype(np.float64) / np.where(top != 0, top, 1), np.nan)
    tol = _SIG_TOL * np.sqrt(rows.shape[1])
    base_of = np.full(n, -1, np.int64)
    order = [i for i in np.argsort(sig, kind="stable") if np.isfinite(sig[i])]
    start = 0
    for k in range(1, len(order) + 1):
        if k == len(order) or sig[order[k]] - sig[order[start]] > tol:
            b = order[start]
            for i in order[start + 1:k]:
                if piv[i] == piv[b]:
                    base_of[i] = b
            start = k
    derived = np.flatnonzero(base_of >= 0)
    if derived.size < _MIN_SAVING * n:
        return None
    src = base_of[derived]
    factor = rows[derived, piv[src]].astype(np.float64) / top[src]
    guess = (rows[src].astype(np.float64) * factor[:, None]).astype(np.float32)
    diff = rows[derived].view(np.int32).astype(np.int64) - guess.view(np.int32).astype(np.int64)
    ok = np.abs(diff).max(axis=1) <= 127
    if ok.sum() < _MIN_SAVING * n:
        return None
    derived, src, factor, diff = derived[ok], src[ok], factor[ok], diff[ok]
    kept = np.setdiff1d(np.arange(n), derived)
    pos = np.searchsorted(kept, src)  # every source is kept: a source is never derived itself
    if not np.array_equal(kept[pos], src):
        return None
    base = np.moveaxis(m[kept], 0, axis)
    base_ref, parts = encode_array(np.ascontiguousarray(base), f"{name}.base")
    names = {k: f"arrays/{name}.{k}.npy" for k in ("kept", "src", "factor", "fix")}
    parts.update({names["kept"]: kept.astype(np.int32), names["src"]: pos.astype(np.int32),
                  names["factor"]: factor, names["fix"]: diff.astype(np.int8)})
    ref = {"copies": {"axis": axis, "n": int(n), "base": base_ref, **names}, "dtype": str(a.dtype)}
    back = decode_array(ref, lambda k: parts[k])
    return (ref, parts) if _same(back, a) else None


def decode_array(ref: Any, load: Any) -> np.ndarray:
    """The array a manifest reference stands for; `load(member)` reads a stored .npy member."""
    if isinstance(ref, str):  # version 1
        return load(ref)
    dtype = np.dtype(ref.get("dtype", "float32"))
    if "fill" in ref:
        return np.full(tuple(ref["shape"]), ref["fill"], dtype=dtype)
    if "pattern" in ref:
        pattern, scale = load(ref["pattern"]), load(ref["scale"])
        safe = np.where(scale > 0, scale, 1).reshape((-1,) + (1,) * (pattern.ndim - 1))
        return (pattern.astype(dtype) * safe.astype(dtype)).astype(dtype)
    if "copies" in ref:
        c = ref["copies"]
        base = np.moveaxis(decode_array(c["base"], load), c["axis"], 0)
        kept, src, factor, fix = (load(c[k]) for k in ("kept", "src", "factor", "fix"))
        out = np.empty((c["n"],) + base.shape[1:], np.float32)
        out[kept] = base
        rest = np.setdiff1d(np.arange(c["n"]), kept)
        flat = base.reshape(base.shape[0], -1)[src].astype(np.float64) * factor[:, None]
        bits = flat.astype(np.float32).view(np.int32).astype(np.int64) + fix.astype(np.int64)
        out[rest] = bits.astype(np.int32).view(np.float32).reshape((-1,) + base.shape[1:])
        return np.moveaxis(out, 0, c["axis"]).astype(dtype, copy=False)
    return load(ref["npy"]).astype(dtype, copy=False)


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


def _store(zf: zipfile.ZipFile, name: str, arr: np.ndarray, version: int) -> Any:
    """Write `arr` under arrays/<name>[.part].npy in its smallest exact form; returns its manifest reference."""
    if version == 1:
        return _array_entry(zf, f"arrays/{name}.npy", arr)
    ref, parts = encode_array(arr, name)
    for member, data in parts.items():
        _array_entry(zf, member, data)
    return ref


def save(net: Network, path: str | os.PathLike, version: int = FORMAT_VERSION, embed_ann: bool = True) -> None:
    """Write atomically: a failure leaves no half-written file behind. version 1 writes the older layout (every
    array a float32 member), for comparisons and older readers. embed_ann=False stores the ANN by reference
    where compile recorded its source (meta["ann_source"], snnc.ir.annref): its graph here, its weights there."""
    if version not in READS_VERSIONS:
        raise ValueError(f"unknown .lava version {version}")
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
                    entry["weight"] = _store(zf, f"{i}.weight", layer.weight, version)
                if layer.bias is not None:
                    entry["bias"] = _store(zf, f"{i}.bias", layer.bias, version)
                if layer.neuron is not None:
                    n = layer.neuron
                    entry["neuron"] = {
                        "kind": n.kind, "alpha": float(n.alpha), "v_init": float(n.v_init), "reset": n.reset,
                        "memory": bool(n.memory),
                        "threshold": _store(zf, f"{i}.threshold", n.threshold, version),
                    }
                    if n.graded:  # additive: files without graded neurons are unchanged
                        entry["neuron"]["graded"] = True
                        entry["neuron"]["threshold_neg"] = _store(zf, f"{i}.threshold_neg", n.threshold_neg, version)
                layers.append(entry)
            if net.host_onnx is not None:
                zf.writestr("host.onnx", net.host_onnx)
            by_ref = (not embed_ann and net.ann_onnx is not None
                      and bool((net.meta.get("ann_source") or {}).get("tensors")))
            if net.ann_onnx is not None:
                zf.writestr("ann.onnx", annref.strip(net.ann_onnx, net.meta["ann_source"]) if by_ref
                            else net.ann_onnx)
            manifest = {
                "format": FORMAT_NAME, "version": version, "layers": layers, "outputs": list(net.outputs),
                "output_names": dict(net.output_names), "input_encoding": _jsonable(net.input_encoding),
                "preprocess": _jsonable(net.preprocess), "host": "host.onnx" if net.host_onnx is not None else None,
                "ann": "ann.onnx" if net.ann_onnx is not None else None,
                **({"ann_ref": True} if by_ref else {}),
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
    if manifest.get("version") not in READS_VERSIONS:
        raise FormatError(f"{path}: .lava format version {manifest.get('version')!r} is not supported by this "
                          f"snnc (reads versions {', '.join(map(str, READS_VERSIONS))}); recompile the model with "
                          "this snnc")
    return manifest


def _numeric(arr: np.ndarray, what: str) -> np.ndarray:
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{what} has dtype {arr.dtype}, expected a number type")
    return arr


def load(path: str | os.PathLike) -> Network:
    """Read a `.lava` file into a Network; FormatError names the file and the problem.

    The manifest is checked against the schema before use and the arrays against the layers after reading
    (snnc.ir.validate); the embedded host.onnx / ann.onnx stay bytes, parsed only by the code that uses them."""
    manifest = read_manifest(path)
    check_manifest(manifest, path)
    try:
        with zipfile.ZipFile(path) as zf:
            def member(name: str) -> np.ndarray:
                return _numeric(np.load(io.BytesIO(zf.read(name)), allow_pickle=False), name)

            def arr(ref: Any) -> np.ndarray:
                return _numeric(decode_array(ref, member), "an array").astype(np.float32, copy=False)

            layers = []
            for e in manifest["layers"]:
                where = f"layer '{e['name']}'"
                neuron = None
                if e.get("neuron") is not None:
                    nd = e["neuron"]
                    neuron = Neuron(nd["kind"], arr(nd["threshold"]), alpha=nd["alpha"],
                                    v_init=nd["v_init"], reset=nd.get("reset", "subtract"),
                                    memory=bool(nd.get("memory", False)), graded=bool(nd.get("graded", False)),
                                    threshold_neg=arr(nd["threshold_neg"]) if nd.get("threshold_neg") else None)
                try:
                    layers.append(Layer(
                        name=e["name"], op=e["op"], inputs=list(e["inputs"]), shape=tuple(e["shape"]),
                        weight=arr(e["weight"]) if e.get("weight") else None,
                        bias=arr(e["bias"]) if e.get("bias") else None, attrs=dict(e.get("attrs", {})),
                        neuron=neuron))
                except KeyError as exc:
                    raise KeyError(f"{where}: archive member {exc} is missing") from None
            host = zf.read(manifest["host"]) if manifest.get("host") else None
            ann = zf.read(manifest["ann"]) if manifest.get("ann") else None
        net = Network(layers=layers, outputs=list(manifest["outputs"]),
                      input_encoding=manifest.get("input_encoding", {}), preprocess=manifest.get("preprocess", {}),
                      output_names=manifest.get("output_names", {}), host_onnx=host, ann_onnx=ann,
                      meta=manifest.get("meta", {}))
        if ann is not None and manifest.get("ann_ref"):
            net.ann_onnx, net.ann_note = annref.restore(ann, net.meta.get("ann_source") or {"tensors": {}}, path)
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
