"""Event-driven synapses of the NumPy simulator: only the inputs that spiked are propagated.

A connection layer fed with int8 spikes in {-1, 0, 1} computes z = W s (+ b). The dense path (`ops`) convolves
every input, spiking or not; the event path here touches only the nonzero ones:

    S       = the spikes as a sparse (active pixels x C_in) matrix (scipy CSR; rows: pixels with any spike)
    P       = S @ W_all                       W_all: (C_in, taps x C_out), the weight columns of every kernel tap
    z[o(p, k)] += P[p, tap k]                 each tap k moves pixel p to one output pixel o (or off the map)

The product costs nnz x taps x C_out multiply-adds (the dense convolution: every input x taps x C_out), the
scatter the same number of additions, and a few passes over the input and output arrays. Within one tap the
pixel -> output map is one to one, so the scatter is a plain indexed add.

Numbers: in fixed point the event path works on int64 and is exact, so it is bit-exact with the dense path. In
float it sums in another order (float32 products, float32 accumulation): within float32 rounding of the dense
path (tested at 1e-5 relative). Per-sample results do not depend on the batch, and the choice between the two
paths is made per sample (one step of one image) from that sample's spike fraction, so chunked runs still equal
unchunked ones.

When it pays ("auto"): `EVENT_RATE_PER_FAN_IN`, measured with `bench/event_driven.py` on the 2-core development machine (see
docs/backends.md, "Event-driven synapses").
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from snnc.ir.errors import SnncError
from snnc.ir.network import Layer

# "auto" takes the event path for a sample whose input spike fraction is at most EVENT_RATE_PER_FAN_IN x the
# layer's fan-in per input (C_in x taps / strides: the multiply-adds one input spike does that land on an output),
# capped at EVENT_MAX_RATE. The event path's cost per active input pixel (the transposes, the per-tap scatter) is
# amortized over that fan-in, so its crossover rises with it. bench/event_driven.py (one thread) measured
# crossovers of 0.14-0.22 % at fan-in 144-288 (yolov3-tiny's 208 and 104 px layers), 0.6-0.85 % at 576-1152,
# 2-5 % at 1024-2304 in float; about half of that in fixed point (int64 products against exact float32 pieces).
# The constants stay at or below the measured crossovers, so "auto" is not slower than the dense path.
EVENT_RATE_PER_FAN_IN = {"float": 4e-6, "fixed": 2.5e-6}
EVENT_MAX_RATE = 0.02
# Cap on the float32/int64 bytes of one sparse product (active pixels x taps x C_out); larger batches run in pieces.
EVENT_BYTES = 32 * 1024**2
EVENT_MODES = ("auto", "off", "on")


def supports(layer: Layer) -> bool:
    """Conv, deconv and dense layers without groups have an event path."""
    return layer.op in ("conv", "deconv", "dense") and int(layer.attrs.get("group", 1)) == 1


def auto_rate(layer: Layer, mode: str = "float") -> float:
    """The largest input spike fraction at which "auto" takes the event path for this layer."""
    w = layer.weight
    if layer.op == "dense":
        fan_in = int(w.shape[1])
    else:
        strides = np.prod([int(v) for v in layer.attrs.get("strides", [1, 1])])
        c_in = w.shape[1] if layer.op == "conv" else w.shape[0]
        # conv: a spike's taps that fall between strided outputs are computed and dropped
        fan_in = int(c_in * np.prod(w.shape[2:])) // (int(strides) if layer.op == "conv" else 1)
    return min(EVENT_MAX_RATE, fan_in * EVENT_RATE_PER_FAN_IN[mode])


class EventSynapses:
    """z = W s (+ bias) for int8 spike batches, by scattering the weight columns of the inputs that spiked.

    weight: float32 (float mode, thresholds folded in) or int64 (fixed point, no bias: the simulator adds it).
    """

    def __init__(self, layer: Layer, weight: np.ndarray, bias: np.ndarray | None, in_shape: tuple[int, ...]):
        self.op = layer.op
        self.out_shape = tuple(int(s) for s in layer.shape)
        self.in_shape = tuple(int(s) for s in in_shape)
        w = np.asarray(weight)
        self.dtype = np.dtype(np.int64) if np.issubdtype(w.dtype, np.integer) else np.dtype(np.float32)
        w = w.astype(self.dtype)
        self.bias = None if bias is None else np.asarray(bias, np.float32)
        if self.op == "dense":
            self.w_all = np.ascontiguousarray(w.T)  # (F, C_out)
            self.taps: list[tuple[int, int]] = []
            return
        a = layer.attrs
        if self.op == "conv":  # (C_out, C_in, kh, kw) -> (C_in, kh, kw, C_out)
            self.w_all = np.ascontiguousarray(w.transpose(1, 2, 3, 0)).reshape(w.shape[1], -1)
            kh, kw = w.shape[2:]
        else:  # deconv (C_in, C_out, kh, kw) -> (C_in, kh, kw, C_out)
            self.w_all = np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(w.shape[0], -1)
            kh, kw = w.shape[2:]
        self.stride = tuple(int(s) for s in a.get("strides", [1, 1]))
        self.dil = tuple(int(d) for d in a.get("dilations", [1, 1]))
        self.pads = tuple(int(p) for p in a.get("pads", [0, 0, 0, 0]))  # top, left, bottom, right
        self.taps = [(ky, kx) for ky in range(int(kh)) for kx in range(int(kw))]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        cout = self.out_shape[0]
        per_sample = max(1, int(np.prod(self.in_shape[1:])) if self.op != "dense" else 1) * max(1, len(self.taps))
        step = max(1, EVENT_BYTES // (per_sample * cout * self.dtype.itemsize))
        out = np.empty((n,) + self.out_shape, np.float32 if self.dtype == np.float32 else np.int64)
        for a in range(0, n, step):
            out[a:a + step] = self._run(x[a:a + step])
        if self.bias is not None:
            out += self.bias.reshape((1, cout) + (1,) * (out.ndim - 2))
        return out

    def _run(self, x: np.ndarray) -> np.ndarray:
        from scipy.sparse import csr_array

        n = x.shape[0]
        cout = self.out_shape[0]
        if self.op == "dense":
            flat = x.reshape(n, -1)
            nz = np.flatnonzero(flat)
            rows, cols = np.divmod(nz, flat.shape[1])
            indptr = np.searchsorted(rows, np.arange(n + 1))
            s = csr_array((flat.reshape(-1)[nz].astype(self.dtype), cols, indptr), shape=flat.shape)
            return np.asarray(s @ self.w_all)
        cin, h, w = self.in_shape
        _, oh, ow = self.out_shape
        pix = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(-1, cin)  # (n*h*w, cin), pixel-major
        nz = np.flatnonzero(pix)
        p, c = np.divmod(nz, cin)
        first = np.ones(len(p), bool)
        first[1:] = p[1:] != p[:-1]
        starts = np.flatnonzero(first)
        active = p[starts]  # pixels with at least one spike, ascending
        indptr = np.append(starts, len(p))
        s = csr_array((pix.reshape(-1)[nz].astype(self.dtype), c, indptr), shape=(len(active), cin))
        prod = np.asarray(s @ self.w_all).reshape(len(active), len(self.taps), cout)
        out = np.zeros((n * oh * ow, cout), prod.dtype)
        b, rem = np.divmod(active, h * w)
        y, xx = np.divmod(rem, w)
        sh, sw = self.stride
        dh, dw = self.dil
        top, left = self.pads[0], self.pads[1]
        for k, (ky, kx) in enumerate(self.taps):
            if self.op == "conv":  # y = oy * sh - top + ky * dh
                ny, nx = y + top - ky * dh, xx + left - kx * dw
                ok = (ny % sh == 0) & (nx % sw == 0)
                oy, ox = ny // sh, nx // sw
            else:  # deconv: oy = y * sh - top + ky * dh
                oy, ox = y * sh - top + ky * dh, xx * sw - left + kx * dw
                ok = np.ones(len(oy), bool)
            ok &= (oy >= 0) & (oy < oh) & (ox >= 0) & (ox < ow)
            idx = (b[ok] * oh + oy[ok]) * ow + ox[ok]
            out[idx] += prod[ok, k]
        return out.reshape(n, oh, ow, cout).transpose(0, 3, 1, 2)


class AutoSynapses:
    """Per sample, the event path when its spike fraction is at most max_rate, else the dense operator.

    Only int8 inputs (spikes) can take the event path; anything else goes to the dense operator unchanged.
    `events` / `samples` count the samples that took the event path (for the figures).
    """

    def __init__(self, dense: Callable[[np.ndarray], np.ndarray], event: EventSynapses, max_rate: float):
        self.dense = dense
        self.event = event
        self.max_rate = float(max_rate)
        self.events = 0
        self.samples = 0

    def __getattr__(self, name: str):  # the dense operator's attributes (bound, parts, ...)
        return getattr(self.__dict__["dense"], name)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.dtype != np.int8 or self.max_rate <= 0:
            return self.dense(x)
        n = x.shape[0]
        self.samples += n
        if self.max_rate >= 1:
            self.events += n
            return self.event(x)
        per = int(np.prod(x.shape[1:]))
        rate = np.count_nonzero(x.reshape(n, -1), axis=1) / max(1, per)
        sparse = rate <= self.max_rate
        k = int(sparse.sum())
        self.events += k
        if k == 0:
            return self.dense(x)
        if k == n:
            return self.event(x)
        out = np.empty((n,) + self.event.out_shape, self.event.dtype)
        out[sparse] = self.event(x[sparse])
        out[~sparse] = self.dense(x[~sparse])
        return out


def wrap(op: Callable, layer: Layer, weight: np.ndarray, bias: np.ndarray | None, in_shape: tuple[int, ...],
         event: str, spikes_in: bool) -> Callable:
    """The simulator's operator for a layer: `op` itself, or op with an event path (`event`: auto, on, off)."""
    if event == "off" or not spikes_in or not supports(layer):
        return op
    try:  # scipy is not one of snnc's own dependencies: without it "auto" stays dense
        import scipy.sparse  # noqa: F401
    except ImportError:
        if event == "on":
            raise SnncError("event='on' (event-driven synapses) needs scipy: pip install scipy") from None
        return op
    mode = "fixed" if np.issubdtype(np.asarray(weight).dtype, np.integer) else "float"
    rate = 1.0 if event == "on" else auto_rate(layer, mode)
    return AutoSynapses(op, EventSynapses(layer, weight, bias, in_shape), rate)
