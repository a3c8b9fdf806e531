"""Validation of a `.lava` manifest and of a Network, so a corrupt or hand-edited file is refused with one line.

Two steps (docs/format.md, "Validation"):
- `check_manifest`: the manifest's JSON against the schema of format version 1 (types, required keys, allowed
  values, attribute ranges) before anything reads it. Hand-written rather than `jsonschema`: the schema is small,
  the messages name the layer and key, and the reader keeps to the standard library and numpy.
- `check_network`: the arrays against the layers (dtypes, weight shapes against the inputs and the group, output
  shapes against the convolution arithmetic, thresholds > 0 and finite, weights finite, 0 <= v_init <= 1,
  0 < alpha <= 1 for signed neurons) and the input size limit. The compiler runs it on every network it lowers,
  the reader on every file it loads, so the simulators only ever see a consistent network.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from snnc.ir.errors import FormatError, SnncError
from snnc.ir.limits import check_input_size
from snnc.ir.network import LAYER_OPS, NEURON_KINDS, Layer, Network

ENCODING_KINDS = ("direct", "rate", "explicit")
PAD_MODES = ("constant", "edge")


class _Bad(Exception):
    """A schema violation: where (a JSON path) and what was expected."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _need(ok: bool, where: str, expected: str, value: Any) -> None:
    if not ok:
        shown = repr(value)
        raise _Bad(f"{where} is {shown[:60]}{'...' if len(shown) > 60 else ''}; expected {expected}")


def _ints(where: str, value: Any, n: int, lo: int) -> None:
    _need(isinstance(value, list) and len(value) == n and all(_is_int(v) and v >= lo for v in value), where,
          f"a list of {n} integers >= {lo}", value)


def _str_list(where: str, value: Any) -> None:
    _need(isinstance(value, list) and all(isinstance(v, str) for v in value), where, "a list of strings", value)


def _optional(d: dict, key: str, where: str, check: Callable[[str, Any], None]) -> None:
    if d.get(key) is not None:
        check(f"{where}.{key}", d[key])


def _member(where: str, value: Any) -> None:
    """An array reference: a member name (version 1) or one of version 2's forms (docs/format.md)."""
    if isinstance(value, dict):
        forms = [k for k in ("npy", "fill", "pattern", "copies") if k in value]
        _need(len(forms) == 1, where, "one of npy, fill, pattern, copies", sorted(value))
        _need(isinstance(value.get("dtype", "float32"), str), f"{where}.dtype", "a dtype name", value.get("dtype"))
        if forms[0] == "fill":
            _need(_is_num(value["fill"]), f"{where}.fill", "a finite number", value["fill"])
            shape = value.get("shape")
            _need(isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape), f"{where}.shape",
                  "a list of sizes", shape)
        elif forms[0] == "npy":
            _member(f"{where}.npy", value["npy"])
        elif forms[0] == "pattern":
            _member(f"{where}.pattern", value["pattern"])
            _member(f"{where}.scale", value.get("scale"))
        else:
            c = value["copies"]
            _need(isinstance(c, dict), f"{where}.copies", "an object", c)
            for key in ("kept", "src", "factor", "fix"):
                _member(f"{where}.copies.{key}", c.get(key))
            _need(c.get("axis") in (0, 1) and _is_int(c.get("n")) and c["n"] > 0, f"{where}.copies",
                  "axis 0 or 1 and n > 0", {k: c.get(k) for k in ("axis", "n")})
            _member(f"{where}.copies.base", c.get("base"))
        return
    _need(isinstance(value, str) and value != "", where, "an archive member name", value)


def _attrs(where: str, op: str, a: Any) -> None:
    _need(isinstance(a, dict), where, "an object", a)
    if op in ("conv", "deconv"):
        for key in ("strides", "pads", "dilations", "group"):
            _need(key in a, f"{where}.{key}", "present", None)
        _ints(f"{where}.strides", a["strides"], 2, 1)
        _ints(f"{where}.pads", a["pads"], 4, 0)
        _ints(f"{where}.dilations", a["dilations"], 2, 1)
        _need(_is_int(a["group"]) and a["group"] >= 1, f"{where}.group", "an integer >= 1", a["group"])
        if op == "deconv":
            _ints(f"{where}.output_padding", a.get("output_padding", [0, 0]), 2, 0)
    elif op == "pad":
        _need("pads" in a and "mode" in a, where, "pads and mode", a)
        _ints(f"{where}.pads", a["pads"], 4, 0)
        _need(a["mode"] in PAD_MODES, f"{where}.mode", " or ".join(PAD_MODES), a["mode"])
    elif op == "maxpool":
        _need("kernel_shape" in a and "strides" in a, where, "kernel_shape and strides", a)
        _ints(f"{where}.kernel_shape", a["kernel_shape"], 2, 1)
        _ints(f"{where}.strides", a["strides"], 2, 1)
    elif op == "concat":
        _need(a.get("axis", 0) == 0, f"{where}.axis", "0 (the channel axis)", a.get("axis"))


def _neuron(where: str, n: Any) -> None:
    _need(isinstance(n, dict), where, "an object or null", n)
    _need(n.get("kind") in NEURON_KINDS, f"{where}.kind", " or ".join(NEURON_KINDS), n.get("kind"))
    _member(f"{where}.threshold", n.get("threshold"))
    for key in ("alpha", "v_init"):
        _need(_is_num(n.get(key)), f"{where}.{key}", "a finite number", n.get(key))
    _need(0.0 <= n["v_init"] <= 1.0, f"{where}.v_init", "a fraction of the threshold in [0, 1]", n["v_init"])
    if n["kind"] == "SignedIF":
        _need(0.0 < n["alpha"] <= 1.0, f"{where}.alpha", "a number in (0, 1] for SignedIF", n["alpha"])
    _need(n.get("reset", "subtract") == "subtract", f"{where}.reset", "'subtract'", n.get("reset"))
    _need(isinstance(n.get("memory", False), bool), f"{where}.memory", "true or false", n.get("memory"))
    _need(isinstance(n.get("graded", False), bool), f"{where}.graded", "true or false", n.get("graded"))
    if n.get("graded", False):
        _need(n["kind"] == "SignedIF" and n.get("memory", False) is True, f"{where}.graded",
              "only on a SignedIF with memory", n.get("graded"))
        _member(f"{where}.threshold_neg", n.get("threshold_neg"))
    else:
        _need(n.get("threshold_neg") is None, f"{where}.threshold_neg", "absent unless graded", n.get("threshold_neg"))


def _layer(where: str, e: Any) -> None:
    _need(isinstance(e, dict), where, "an object", e)
    _need(isinstance(e.get("name"), str) and e["name"] != "", f"{where}.name", "a non-empty string", e.get("name"))
    where = f"layer '{e['name'][:40]}'"
    _need(e.get("op") in LAYER_OPS, f"{where}.op", "one of " + ", ".join(LAYER_OPS), e.get("op"))
    _str_list(f"{where}.inputs", e.get("inputs"))
    shape = e.get("shape")
    _need(isinstance(shape, list) and len(shape) in (1, 3) and all(_is_int(d) and d >= 1 for d in shape),
          f"{where}.shape", "[C] or [C, H, W] of positive integers", shape)
    _attrs(f"{where}.attrs", e["op"], e.get("attrs", {}))
    for key in ("weight", "bias"):
        _optional(e, key, where, _member)
    if e["op"] in ("conv", "deconv", "dense"):
        _need(e.get("weight") is not None, f"{where}.weight", "an archive member name", None)
    elif e.get("weight") is not None or e.get("bias") is not None or e.get("neuron") is not None:
        raise _Bad(f"{where}: a {e['op']} layer has no weight, bias or neuron")
    _optional(e, "neuron", where, _neuron)


def check_manifest(m: dict[str, Any], path: Any) -> None:
    """FormatError naming the file and the first key that does not match the schema (versions 1 and 2)."""
    try:
        layers = m.get("layers")
        _need(isinstance(layers, list) and len(layers) > 0, "layers", "a non-empty list", layers)
        for i, e in enumerate(layers):
            _layer(f"layers[{i}]", e)
        _str_list("outputs", m.get("outputs"))
        _need(bool(m["outputs"]), "outputs", "at least one output layer", m["outputs"])
        names = m.get("output_names", {})
        _need(isinstance(names, dict) and all(isinstance(v, str) for v in names.values()), "output_names",
              "an object of strings", names)
        enc = m.get("input_encoding", {})
        _need(isinstance(enc, dict), "input_encoding", "an object", enc)
        _need(enc.get("kind", "direct") in ENCODING_KINDS, "input_encoding.kind", " or ".join(ENCODING_KINDS),
              enc.get("kind"))
        for key in ("scale", "max_value"):
            if key in enc:
                _need(_is_num(enc[key]) and enc[key] > 0, f"input_encoding.{key}", "a finite number > 0", enc[key])
        pre = m.get("preprocess", {})
        _need(isinstance(pre, dict), "preprocess", "an object", pre)
        if pre.get("shape") is not None:
            _ints("preprocess.shape", pre["shape"], 3, 1)
        for key in ("scale", "pad_value"):
            if key in pre:
                _need(_is_num(pre[key]), f"preprocess.{key}", "a finite number", pre[key])
        _optional(m, "host", "manifest", _member)
        _optional(m, "ann", "manifest", _member)
        _need(isinstance(m.get("ann_ref", False), bool), "ann_ref", "true or false", m.get("ann_ref"))
        meta = m.get("meta", {})
        _need(isinstance(meta, dict), "meta", "an object", meta)
        src = meta.get("ann_source")
        _need(not m.get("ann_ref") or isinstance(src, dict) and isinstance(src.get("tensors"), dict)
              and all(isinstance(v, str) for v in src["tensors"].values()),
              "meta.ann_source", "an object with tensors {name: sha256}", src)
        for key in ("options", "stats"):
            _need(isinstance(meta.get(key, {}), dict), f"meta.{key}", "an object", meta.get(key))
        for key in ("source", "source_sha256", "snnc_version"):
            _need(isinstance(meta.get(key, ""), str), f"meta.{key}", "a string", meta.get(key))
        for key in ("passes", "host_outputs"):
            _need(meta.get(key) is None or isinstance(meta[key], list) and all(isinstance(v, str) for v in meta[key]),
                  f"meta.{key}", "a list of strings", meta.get(key))
        names_ = meta.get("class_names")
        _need(names_ is None or isinstance(names_, list) and all(isinstance(v, str) for v in names_),
              "meta.class_names", "a list of strings or null", names_)
        clip = meta.get("stats", {}).get("clipping_error")
        _need(clip is None or isinstance(clip, dict) and all(_is_num(v) for v in clip.values()),
              "meta.stats.clipping_error", "an object of finite numbers", clip)
    except _Bad as exc:
        raise FormatError(f"{path}: corrupt .lava manifest: {exc}; recompile it with `snnc compile`") from None


# ---- the network: arrays against layers ------------------------------------------------------------------------


def _conv_out(size: int, k: int, s: int, d: int, p0: int, p1: int) -> int:
    return (size + p0 + p1 - d * (k - 1) - 1) // s + 1


def _deconv_out(size: int, k: int, s: int, d: int, p0: int, p1: int, op: int) -> int:
    return (size - 1) * s - p0 - p1 + d * (k - 1) + op + 1


def _finite_array(arr: np.ndarray, what: str) -> None:
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise SnncError(f"{what} has dtype {arr.dtype}; expected float32")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise SnncError(f"{what} holds {bad} NaN or infinite value(s)")


def _check_layer(layer: Layer, shapes: dict[str, tuple[int, ...]]) -> None:
    where = f"layer '{layer.name}'"
    ins = [shapes[s] for s in layer.inputs]
    want_inputs = {"input": (0, 0), "conv": (1, 1), "deconv": (1, 1), "dense": (1, 1), "pad": (1, 1),
                   "maxpool": (1, 1), "concat": (1, 1 << 30)}[layer.op]
    if not want_inputs[0] <= len(ins) <= want_inputs[1]:
        raise SnncError(f"{where}: a {layer.op} layer with {len(ins)} input(s)")
    shape = layer.shape
    if layer.op == "input":
        if len(shape) != 3:
            raise SnncError(f"{where}: input shape {list(shape)}; expected [C, H, W]")
        check_input_size(shape, where)
        return
    if layer.op in ("conv", "deconv", "pad", "concat", "maxpool") and (len(shape) != 3 or any(len(s) != 3 for s in ins)):
        raise SnncError(f"{where}: {layer.op} needs [C, H, W] shapes, got {list(shape)} from {[list(s) for s in ins]}")
    expected: tuple[int, ...]
    if layer.op == "concat":
        if len({s[1:] for s in ins}) != 1:
            raise SnncError(f"{where}: concatenated inputs differ in height/width: {[list(s) for s in ins]}")
        expected = (sum(s[0] for s in ins),) + ins[0][1:]
    elif layer.op == "pad":
        t, l, b, r = layer.attrs["pads"]
        c, h, w = ins[0]
        expected = (c, h + t + b, w + l + r)
    elif layer.op == "maxpool":
        (kh, kw), (sh, sw) = layer.attrs["kernel_shape"], layer.attrs["strides"]
        c, h, w = ins[0]
        if kh > h or kw > w:
            raise SnncError(f"{where}: a {kh}x{kw} window does not fit its {h}x{w} input")
        expected = (c, (h - kh) // sh + 1, (w - kw) // sw + 1)
    else:
        w = layer.weight
        assert w is not None  # the manifest check requires it
        if layer.op == "dense":
            if w.ndim != 2 or w.shape[1] != int(np.prod(ins[0])):
                raise SnncError(f"{where}: dense weight of shape {list(w.shape)} for an input of {int(np.prod(ins[0]))}")
            expected = (w.shape[0],)
        else:
            a = layer.attrs
            g = a["group"]
            c, h, wd = ins[0]
            if w.ndim != 4 or c % g:
                raise SnncError(f"{where}: weight of shape {list(w.shape)} with group {g} for input {list(ins[0])}")
            (sh, sw), (dh, dw), (pt, pl, pb, pr) = a["strides"], a["dilations"], a["pads"]
            kh, kw = w.shape[2:]
            if layer.op == "conv":
                if w.shape[1] * g != c or w.shape[0] % g:
                    raise SnncError(f"{where}: conv weight of shape {list(w.shape)} with group {g} does not fit "
                                    f"the input's {c} channels")
                expected = (w.shape[0], _conv_out(h, kh, sh, dh, pt, pb), _conv_out(wd, kw, sw, dw, pl, pr))
            else:
                oh, ow = a.get("output_padding", [0, 0])
                if w.shape[0] != c:
                    raise SnncError(f"{where}: deconv weight of shape {list(w.shape)} does not fit the input's {c} "
                                    "channels")
                if oh >= max(sh, dh) or ow >= max(sw, dw):
                    raise SnncError(f"{where}: output_padding {[oh, ow]} must be smaller than the stride or dilation")
                expected = (w.shape[1] * g, _deconv_out(h, kh, sh, dh, pt, pb, oh),
                            _deconv_out(wd, kw, sw, dw, pl, pr, ow))
        _finite_array(w, f"{where}: weight")
        if layer.bias is not None:
            if layer.bias.shape != (expected[0],):
                raise SnncError(f"{where}: bias of shape {list(layer.bias.shape)}; expected [{expected[0]}]")
            _finite_array(layer.bias, f"{where}: bias")
    if tuple(shape) != tuple(expected):
        raise SnncError(f"{where}: shape {list(shape)} does not match its inputs and weights ({list(expected)})")
    n = layer.neuron
    if n is not None:
        if n.threshold.shape != (shape[0],):
            raise SnncError(f"{where}: {n.threshold.shape[0]} thresholds for {shape[0]} channels")
        bad = ~(np.isfinite(n.threshold) & (n.threshold > 0))
        if bad.any():
            raise SnncError(f"{where}: thresholds must be finite and > 0 (channel {int(np.argmax(bad))} has "
                            f"{float(n.threshold[np.argmax(bad)])!r})")
        if not (math.isfinite(n.v_init) and 0.0 <= n.v_init <= 1.0):
            raise SnncError(f"{where}: v_init {n.v_init!r}; expected a fraction of the threshold in [0, 1]")
        if n.kind == "SignedIF" and not (math.isfinite(n.alpha) and 0.0 < n.alpha <= 1.0):
            raise SnncError(f"{where}: alpha {n.alpha!r}; expected a number in (0, 1] for SignedIF")
        if n.graded:
            if n.threshold_neg.shape != (shape[0],):
                raise SnncError(f"{where}: {n.threshold_neg.shape[0]} negative thresholds for {shape[0]} channels")
            if not np.all(np.isfinite(n.threshold_neg) & (n.threshold_neg > 0)):
                raise SnncError(f"{where}: negative thresholds (threshold_neg) must be finite and > 0")


def check_network(net: Network, what: str = "network") -> None:
    """SnncError naming `what` and the layer when the network's arrays and shapes are inconsistent."""
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        for layer in net.layers:
            _check_layer(layer, shapes)
            shapes[layer.name] = tuple(layer.shape)
    except SnncError as exc:
        raise type(exc)(f"{what}: {exc}") from None
    if not net.input_layers:
        raise SnncError(f"{what}: no input layer")


def network_macs(net: Network) -> int:
    """Operations of one time step per image: each layer's MACs plus one update per output element."""
    total = 0
    shapes = {layer.name: layer.shape for layer in net.layers}
    for layer in net.layers:
        total += int(np.prod(layer.shape))
        if layer.op == "maxpool":  # one comparison per window tap
            total += int(np.prod(layer.shape)) * int(np.prod(layer.attrs["kernel_shape"]))
        if layer.weight is not None:
            if layer.op == "deconv":
                total += int(np.prod(shapes[layer.inputs[0]])) * int(np.prod(layer.weight.shape[1:]))
            elif layer.op == "conv":
                total += int(np.prod(layer.shape[1:])) * int(np.prod(layer.weight.shape))
            else:
                total += int(layer.weight.size)
    return total
