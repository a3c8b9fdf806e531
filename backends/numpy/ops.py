"""Synaptic operators of the NumPy simulator: one callable per connection layer, built once.

Convolutions, transposed convolutions and dense layers (as 1x1 convolutions) run in onnxruntime: a one-node
ONNX model per layer, float32, cached. On 2 cores MLAS runs yolov3-tiny-sized layers 3-7x faster than numpy
im2col + matmul. The input may be int8 spikes, float32 values or int64 integers: the model casts it to float32.
Results per sample do not depend on the batch size (steps x samples), so chunked runs equal unchunked ones.

Integer (fixed-point) use: a float32 sum of integers is exact when every partial sum stays below 2**24 in
magnitude, whatever the summation order. `exact_parts` splits an integer weight tensor into base-2**k digits
whose convolutions each obey that bound, so every integer convolution is computed exactly in float32 and
recombined in int64.
"""

from __future__ import annotations

import numpy as np

from snnc.ir.errors import SnncError
from snnc.ir.fixedpoint import FLOAT32_EXACT
from snnc.ir.ort import ort_session
from snnc.ir.network import Layer


def _onnx_dtype(dtype: np.dtype) -> int:
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


# onnxruntime graph optimization of the one-node models. "all" lets MLAS use its blocked (NCHWc) convolution
# kernels: 10-40 % faster per layer inside the simulator as long as one call's tensors stay small (the simulator
# caps the samples per call, CALL_BYTES); exactness for integers does not depend on the summation order, and
# results per sample do not depend on the batch size or the thread count (tested).
ORT_OPT_LEVEL = "all"
# Idle onnxruntime threads spinning would steal the cores from numpy's neuron scan that runs between convolutions.
ORT_SPIN = False
# Cap on the float32 bytes (input or output) of one onnxruntime call; a larger batch runs in pieces. Larger calls
# cost more in page faults (glibc serves large blocks with fresh mmap pages) than they save in call overhead: on
# yolov3-tiny at 416 x 416 one step per call (11 MiB) was fastest, 2-3 steps 5-10 % slower in CPU time, 12-24
# steps clearly slower; at 13 x 13 batching more steps did not speed the convolutions up either. The simulator
# also sizes its time chunks with it.
CALL_BYTES = 12 * 1024**2
# onnxruntime's memory arena keeps every session's largest buffers (the float32 copy of a whole chunk of spikes)
# for the life of the session: with one session per layer that grew the process to several GiB. Off, the buffers
# go back after each call and memory stays near `max_bytes`.
ORT_ARENA = False


def conv_attrs(layer: Layer) -> dict:
    a = layer.attrs
    kh, kw = layer.weight.shape[2:]
    out = {"kernel_shape": [int(kh), int(kw)], "strides": [int(s) for s in a.get("strides", [1, 1])],
           "pads": [int(p) for p in a.get("pads", [0, 0, 0, 0])],
           "dilations": [int(d) for d in a.get("dilations", [1, 1])], "group": int(a.get("group", 1))}
    if layer.op == "deconv":
        out["output_padding"] = [int(p) for p in a.get("output_padding", [0, 0])]
    # Network stores pads as [top, left, bottom, right], which is ONNX's [x1_begin, x2_begin, x1_end, x2_end].
    return out


class OrtConv:
    """y = Conv or ConvTranspose(cast_float32(x), weight) (+ bias), float32, batch of any size.

    One onnxruntime session per input dtype, built on first use and kept.
    """

    def __init__(self, layer: Layer, weight: np.ndarray, bias: np.ndarray | None, threads: int):
        self.name = layer.name
        self.op = "Conv" if layer.op == "conv" else "ConvTranspose"
        self.attrs = conv_attrs(layer)
        self.weight = np.ascontiguousarray(weight, dtype=np.float32)
        self.bias = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
        self.out_shape = tuple(layer.shape)
        self.threads = threads
        self._sessions: dict[str, object] = {}

    def _session(self, dtype: np.dtype):
        key = np.dtype(dtype).str
        sess = self._sessions.get(key)
        if sess is not None:
            return sess
        from onnx import TensorProto, helper, numpy_helper

        nodes, x = [], "x"
        if np.dtype(dtype) != np.float32:
            nodes.append(helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT))
            x = "xf"
        inits = [numpy_helper.from_array(self.weight, "w")]
        ins = [x, "w"]
        if self.bias is not None:
            inits.append(numpy_helper.from_array(self.bias, "b"))
            ins.append("b")
        nodes.append(helper.make_node(self.op, ins, ["y"], **self.attrs))
        graph = helper.make_graph(nodes, self.name or "layer",
                                  [helper.make_tensor_value_info("x", _onnx_dtype(dtype), None)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        sess = ort_session(model, what=f"layer {self.name} ({self.op})", optimize=ORT_OPT_LEVEL == "all",
                           threads=self.threads, arena=ORT_ARENA, spinning=ORT_SPIN)
        self._sessions[key] = sess
        return sess

    def __call__(self, x: np.ndarray) -> np.ndarray:
        sess = self._session(x.dtype)
        n = x.shape[0]
        per_sample = 4 * max(int(np.prod(x.shape[1:])), int(np.prod(self.out_shape)))
        step = max(1, CALL_BYTES // per_sample)
        if n <= step:
            return self._check(sess.run(None, {"x": np.ascontiguousarray(x)})[0])
        y = np.empty((n,) + self.out_shape, np.float32)
        for a in range(0, n, step):
            y[a:a + step] = self._check(sess.run(None, {"x": np.ascontiguousarray(x[a:a + step])})[0])
        return y

    def _check(self, y: np.ndarray) -> np.ndarray:
        if y.shape[1:] != self.out_shape:
            raise SnncError(f"layer {self.name}: {self.op} gives per-sample shape {y.shape[1:]}, the network says "
                            f"{self.out_shape}; the layer attributes (pads, output_padding) are inconsistent")
        return y


class Dense:
    """y = flatten(x) @ W.T (+ b), run as a 1x1 convolution in onnxruntime.

    Not numpy's matmul: BLAS switches kernels (gemv for one row) with the number of rows, and the result of a
    sample must not depend on how many steps share its batch (chunked runs equal unchunked ones bit for bit).
    """

    def __init__(self, layer: Layer, weight: np.ndarray, bias: np.ndarray | None, threads: int = 1):
        self.name = layer.name
        w = np.asarray(weight, dtype=np.float32)
        self.features = w.shape[1]
        as_conv = Layer(layer.name, "conv", list(layer.inputs), (w.shape[0], 1, 1), weight=w[:, :, None, None])
        self.conv = OrtConv(as_conv, as_conv.weight, bias, threads)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.features:
            raise SnncError(f"layer {self.name}: dense layer expects {self.features} inputs, gets {flat.shape[1]}")
        return self.conv(flat.reshape(flat.shape + (1, 1))).reshape(x.shape[0], -1)


def make_op(layer: Layer, weight: np.ndarray, bias: np.ndarray | None, threads: int):
    if layer.op == "dense":
        return Dense(layer, weight, bias, threads)
    return OrtConv(layer, weight, bias, threads)


# ---- exact integer convolutions ------------------------------------------------------------------------------

def abs_sum_bound(layer: Layer, w: np.ndarray) -> int:
    """max over output neurons of sum |w| over the inputs that reach one output value (exact for deconv phases)."""
    a = np.abs(np.asarray(w, dtype=np.int64))
    if layer.op == "dense" or layer.op == "conv":
        return int(a.reshape(a.shape[0], -1).sum(axis=1).max(initial=0))
    # deconv: weight (C_in, C_out/group, kh, kw); one output pixel receives the taps of one stride phase only.
    group = int(layer.attrs.get("group", 1))
    sh, sw = (int(s) for s in layer.attrs.get("strides", [1, 1]))
    dh, dw = (int(d) for d in layer.attrs.get("dilations", [1, 1]))
    c_in, c_out_g, kh, kw = a.shape
    per_group = a.reshape(group, c_in // group, c_out_g, kh, kw).sum(axis=1)  # (group, c_out_g, kh, kw)
    best = 0
    ph = (np.arange(kh) * dh) % sh
    pw = (np.arange(kw) * dw) % sw
    for p in range(sh):
        for q in range(sw):
            taps = per_group[:, :, ph == p, :][..., pw == q]
            best = max(best, int(taps.reshape(group * c_out_g, -1).sum(axis=1).max(initial=0)))
    return best


MAX_CHANNEL_PARTS = 16


def _in_axis(layer: Layer) -> int:
    """The weight axis that indexes input channels (input features for dense)."""
    return 0 if layer.op == "deconv" else 1


def exact_parts(layer: Layer, w_int: np.ndarray, max_in: int) -> list[tuple[int, slice | None, np.ndarray]]:
    """Split conv(x, w_int) into float32-exact pieces for |x| <= max_in: [(shift, input slice, weight part)].

    z = sum over parts of conv(x[:, slice], part) * 2**shift. One part (0, None, w_int) when the whole sum is
    exact. Otherwise, for ungrouped layers, the input channels are split into the fewest equal contiguous ranges
    whose sums are exact (no extra arithmetic); failing that, the weights are split into base-2**k digits of |w|
    with the sign of w, the largest k that works (each digit costs one more convolution).
    """
    w = np.asarray(w_int, dtype=np.int64)
    max_in = max(1, int(max_in))

    def exact(part: np.ndarray) -> bool:
        return abs_sum_bound(layer, part) * max_in < FLOAT32_EXACT

    if exact(w):
        return [(0, None, w)]
    axis = _in_axis(layer)
    n_in = w.shape[axis]
    if int(layer.attrs.get("group", 1)) == 1 and n_in > 1:
        for k in range(2, min(n_in, MAX_CHANNEL_PARTS) + 1):
            edges = np.linspace(0, n_in, k + 1).round().astype(int)
            slices = [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]
            parts = [(0, sl, np.take(w, np.arange(sl.start, sl.stop), axis=axis)) for sl in slices]
            if all(exact(p) for _, _, p in parts):
                return parts
    mag, sign = np.abs(w), np.sign(w)
    bits = max(1, int(mag.max()).bit_length())
    for k in range(bits - 1, 0, -1):
        parts = []
        for j in range(-(-bits // k)):
            digit = sign * ((mag >> (k * j)) & ((1 << k) - 1))
            if np.any(digit):
                parts.append((k * j, None, digit))
        if all(exact(p) for _, _, p in parts):
            return parts
    raise SnncError(f"layer {layer.name}: fan-in x input range too large for exact float32 accumulation even "
                    f"with 1-bit weight digits (max input {max_in}); use float mode")


class ExactIntOp:
    """z_int = conv(x_int, w_int) in int64, computed exactly as one or a few float32 operations (exact_parts)."""

    def __init__(self, layer: Layer, w_int: np.ndarray, max_in: int, threads: int):
        self.dense = layer.op == "dense"
        self.parts = [(shift, sl, make_op(layer, part.astype(np.float32), None, threads))
                      for shift, sl, part in exact_parts(layer, w_int, max_in)]
        self.bound = abs_sum_bound(layer, w_int) * max(1, int(max_in))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        total = None
        if self.dense and len(self.parts) > 1:
            x = x.reshape(x.shape[0], -1)
        for shift, sl, op in self.parts:
            y = op(x if sl is None else x[:, sl]).astype(np.int64)
            if shift:
                y <<= shift
            if total is None:
                total = y
            else:
                total += y
        return total
