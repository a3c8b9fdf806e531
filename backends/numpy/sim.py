"""The NumPy reference simulator: layer by layer over a chunk of time steps, chunk after chunk.

Semantics: docs/neurons.md (and `snnc.ir.network`). All layers see their sources' out(t) of the same step
t (no synaptic delay), so the network is feed-forward in time as well: for a chunk of steps [t0, t1) each layer
in topological order gets the outputs of all the chunk's steps of its sources at once, computes its synaptic
input z for all of them as ONE batched convolution over (steps * batch) samples, and only the neuron update
(`scan.py`) walks through time. Membranes, output sums and spike counts carry over from chunk to chunk, so
memory is bounded by `max_bytes` whatever T is. A value that is the same at every step (the image under direct
encoding and everything computed from it without a neuron: padding, the first convolution's z) is computed once.

Between layers spikes are int8 in {-1, 0, 1}; the real value s * theta is folded into the consumer's weights
(W[o, i] * theta_i, float mode) or is the integer unit (fixed point). A graded layer (`--leaky graded`) sends
float32 payloads instead: +1 and -alpha theta_n / theta (float mode, in units of theta), or the integers
+P and -N_c of `snnc.ir.fixedpoint` (fixed point, in units of theta / P).

Float mode: weights, z and membranes are float32; output sums are float64.

Fixed-point mode (`mode="fixed"`, integers from `snnc.ir.fixedpoint.quantize`), exactly, per sample:

    V[l] = v0_int[l]                          (int64, every neuron layer, before step 1)
    sums[o] = 0, count[l] = 0                 (int64)
    for t = 1 .. T:
      for each layer l in net.layers order:
        input  direct:   in = round(x / scale)        (np.round(x.astype(float64) / scale): half to even;
                                                      the same integers every step; scale = input unit)
               rate:     in = 1 if u < x else 0, u = rng.random(x.shape) (float64), rng = default_rng(seed),
                         one draw of the whole (B, *shape) batch per step, steps in order
               explicit: in = round(x[t] / scale)
        pad:     zero or edge padding of the source's integers
        maxpool: out = M(t) - M(t-1), M(t) = window max of the source's summed integers (snnc.ir.countpool)
        concat:  channel concatenation of the sources' integers
        conv / deconv / dense:
                 z = conv(in_int, w_int) + b_int      (exact integer arithmetic, int64)
                 no neuron: out = z                   (copy layers route integers; other linear layers are outputs)
                 IF:        V += z; s = (V >= theta_int); V -= s * theta_int; out = s
                 SignedIF:  V += z; p = (V >= theta_int); n = (V <= -theta_neg_int)   (both on the same V)
                            V -= p * theta_int; V += n * theta_neg_int; s = p - n; out = s
                 count[l] += |s|
        if l is an output: sums[l] += out     (int64)
      at each checkpoint T_k: decoded[l] = (float64(sums[l]) * out_unit[l][c]) / T_k     (float64, numpy order)
           out_unit = QuantizedLayer.out_unit: theta (float64 of the float32 threshold) for a neuron layer,
           the layer scale s_l for a linear layer, the source's unit for copy / routing layers.

The integer convolutions run in float32 (onnxruntime), which is exact while every partial sum stays below 2**24;
where the bound max_o sum|w_int[o]| * max|in| is larger, the weights are split into base-2**k digits whose
convolutions each stay below it (`ops.exact_parts`) and are recombined in int64. The raw int64 sums are returned
in `SimResult.extra["sums"][T][layer]` for bit-exact comparisons with other backends.

Recording per-neuron state (`record_layers=True`, off by default; for the error analysis of
`snnc.evaluation.errors`): every neuron layer also counts its positive and negative spikes per neuron,
and at each checkpoint T the counts and the membrane V(T) are handed to `on_checkpoint(T, state)` (or, without a
callback, copied into `SimResult.extra["layers_at"][T]`). state[layer] = {"pos", "neg" (SignedIF and memory IF,
else None): (B, N) counts of +1 and -1 spikes over steps 1..T (int16 when max(T) < 2**15, else int32), "v":
(B, N) float32 V(T) in real units (fixed point: V_int * theta / theta_int), "v0", "theta", "theta_neg" (SignedIF,
else None) (N,) float64 in real units, "memory" (bool), "payload_neg" (graded neurons: (N,) float64, what a
negative-side spike carries, alpha theta_n; else None)}; a non-constant input layer (rate or explicit encoding)
gets {"sum": (B, N) float64 sum of its out(t)}. The arrays may be the live accumulators: a callback must copy what
it keeps. With eq. 8 of docs/methods.md section 1 these give each neuron's mean input over T exactly:
T mean z = V(T) - V(0) + pos * theta - neg * r, where a -1 spike adds r back to V: r = theta / alpha for SignedIF,
r = theta for the memory IF; both send -theta downstream.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from snnc.backends import SimResult, checkpoints, lru_cached, rate_spikes
from snnc.ir import fixedpoint
from snnc.ir.countpool import count_maxpool, window_max
from snnc.ir.errors import SnncError
from snnc.ir.network import Layer, Network

from snnc.backends.numpy import event as events
from snnc.backends.numpy import ops
from snnc.backends.numpy.graded import graded_values
from snnc.backends.numpy.scan import scan

# Memory budget of the time-chunked buffers (an upper bound; ops.CALL_BYTES usually decides the chunk).
DEFAULT_MAX_BYTES = 1024**3
ENCODINGS = ("direct", "rate", "explicit")
MODES = ("float", "fixed")
DECODES = ("membrane", "spikes")


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# ---- the plan: everything about a network that does not depend on the input ----------------------------------

@dataclass
class _LayerPlan:
    layer: Layer
    n: int  # values per sample
    const: bool  # the same value at every step
    out_dtype: np.dtype  # dtype of the values passed to consumers
    unit: np.ndarray  # (C,) float64: real value of one unit of this layer's output
    out_max: int = 0  # fixed point: bound on |output integer|
    op: Any = None  # synaptic operator (conv / deconv / dense)
    bias_int: np.ndarray | None = None  # fixed point: (1, C, 1, 1) or (1, C) int64
    theta: np.ndarray | None = None  # (N,) per neuron, V's dtype
    theta_neg: np.ndarray | None = None  # (N,) SignedIF
    memory: bool = False  # memory IF: -1 spikes take back earlier +1 spikes (a spike count per neuron is kept)
    v0: np.ndarray | None = None  # (N,) initial membrane
    payload_neg: np.ndarray | None = None  # (N,) float32, graded neurons: a -1 spike's value is -payload_neg
    neg_level: np.ndarray | None = None  # (N,) V's dtype, graded neurons: the negative side's level r
    payload_pos: float = 1.0  # a +1 spike's value (in `unit`s)
    last_use: int = -1  # index of the last layer reading this one


@dataclass
class _Plan:
    mode: str
    encoding: str
    layers: list[_LayerPlan]
    v_dtype: np.dtype
    input_units: dict[str, float]


def _per_neuron(values: np.ndarray, shape: tuple[int, ...], dtype) -> np.ndarray:
    """(C,) per-channel values -> (N,) per neuron in (C, H, W) order."""
    per_channel = np.asarray(values).reshape(-1)
    rest = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return np.ascontiguousarray(np.repeat(per_channel.astype(dtype), rest))


def _with_overrides(net: Network, v_init: float | None, encoding: str) -> Network:
    """A shallow copy of net whose neurons start at v_init and whose input encoding is `encoding`."""
    net = net.with_v_init(v_init)
    enc = dict(net.input_encoding)
    if encoding == "rate":
        enc["kind"] = "rate"
    elif enc.get("kind") == "rate":  # direct or explicit values on a network built for rate encoding: unit 1
        enc = {"kind": "direct", "scale": 1.0, **{k: v for k, v in enc.items() if k not in ("kind", "scale")}}
    if enc == net.input_encoding:
        return net
    return dataclasses.replace(net, input_encoding=enc)


def _input_scale(net: Network) -> float:
    enc = net.input_encoding
    return 1.0 if enc.get("kind") == "rate" else float(enc.get("scale", 1.0))


def _build_plan(net: Network, mode: str, encoding: str, input_max: int, weight_bits: int, threads: int,
                event: str = "auto") -> _Plan:
    fixed = mode == "fixed"
    q = fixedpoint.quantize(net, weight_bits) if fixed else None
    v_dtype = np.dtype(np.int64) if fixed else np.dtype(np.float32)
    plans: dict[str, _LayerPlan] = {}
    order: list[_LayerPlan] = []
    input_units: dict[str, float] = {}
    for idx, layer in enumerate(net.layers):
        shape = layer.shape
        n = int(np.prod(shape))
        c = shape[0]
        srcs = [plans[s] for s in layer.inputs]
        for s in srcs:
            s.last_use = idx
        if layer.op == "input":
            unit = 1.0 if (encoding == "rate" or not fixed) else _input_scale(net)
            input_units[layer.name] = unit
            if encoding == "rate":
                lp = _LayerPlan(layer, n, False, np.dtype(np.int8), np.ones(c), out_max=1)
            else:
                lp = _LayerPlan(layer, n, encoding == "direct", np.dtype(np.float32),
                                q[layer.name].out_unit.astype(np.float64) if fixed else np.ones(c),
                                out_max=int(input_max))
        elif layer.op == "maxpool":  # routing: the source's units and bound (|M(t) - M(t-1)| <= max |in(t)|)
            src = srcs[0]
            lp = _LayerPlan(layer, n, src.const, src.out_dtype, src.unit, out_max=src.out_max)
        elif layer.op in ("pad", "concat"):
            if layer.op == "pad" and len(shape) != 3:
                raise SnncError(f"layer {layer.name}: pad needs (C, H, W) values, got shape {shape}")
            int8 = all(s.out_dtype == np.int8 for s in srcs)
            wide = any(s.out_dtype == np.int64 for s in srcs)
            dtype = np.dtype(np.int8 if int8 else (np.int64 if wide else np.float32))
            lp = _LayerPlan(layer, n, all(s.const for s in srcs), dtype,
                            np.concatenate([s.unit for s in srcs]), out_max=max(s.out_max for s in srcs))
        else:
            src = srcs[0]
            if src.out_dtype == np.int64:
                raise SnncError(f"layer {layer.name}: its input {src.layer.name} holds integers beyond 2**24; "
                                "fixed point cannot route them (use float mode)")
            n_ = layer.neuron
            if fixed:
                ql = q[layer.name]
                op = ops.ExactIntOp(layer, ql.w_int, src.out_max, threads)
                op = events.wrap(op, layer, ql.w_int, None, src.layer.shape, event, _spikes(src))
                bshape = (1, c, 1, 1) if len(shape) == 3 else (1, c)
                bias_int = ql.b_int.astype(np.int64).reshape(bshape)
                if n_ is None:
                    out_max = op.bound + int(np.abs(ql.b_int).max(initial=0))
                    dtype = np.int8 if out_max <= 127 else (np.float32 if out_max < fixedpoint.FLOAT32_EXACT
                                                            else np.int64)
                    lp = _LayerPlan(layer, n, src.const, np.dtype(dtype), ql.out_unit.astype(np.float64),
                                    out_max=out_max, op=op, bias_int=bias_int)
                else:
                    graded = ql.payload_neg is not None  # integer payloads +P / -N_c instead of +-1
                    lp = _LayerPlan(layer, n, False, np.dtype(np.float32 if graded else np.int8),
                                    ql.out_unit.astype(np.float64),
                                    out_max=int(max(ql.payload_pos, ql.payload_neg.max())) if graded else 1,
                                    op=op, bias_int=bias_int,
                                    theta=_per_neuron(ql.theta_int, shape, np.int64),
                                    theta_neg=None if ql.theta_neg_int is None else
                                    _per_neuron(ql.theta_neg_int, shape, np.int64),
                                    v0=_per_neuron(ql.v0_int, shape, np.int64), memory=n_.memory,
                                    payload_neg=_per_neuron(ql.payload_neg, shape, np.float32) if graded else None,
                                    payload_pos=float(ql.payload_pos),
                                    neg_level=_per_neuron(ql.neg_level_int, shape, np.int64) if graded else None)
            else:
                w = fixedpoint.fold_units(layer, layer.weight, src.unit).astype(np.float32)
                op = ops.make_op(layer, w, layer.bias, threads)
                op = events.wrap(op, layer, w, layer.bias, src.layer.shape, event, _spikes(src))
                if n_ is None:
                    lp = _LayerPlan(layer, n, src.const, np.dtype(np.float32), np.ones(c), op=op)
                else:
                    theta = n_.threshold.astype(np.float32) * np.ones(c, np.float32)
                    v0 = (float(n_.v_init) * theta.astype(np.float64)).astype(np.float32)
                    # graded: a -1 spike is worth alpha theta_n = (alpha theta_n / theta) units of theta
                    ratio = (n_.neg_payload * np.ones(c, np.float32) / theta).astype(np.float32) if n_.graded else None
                    lp = _LayerPlan(layer, n, False, np.dtype(np.float32 if n_.graded else np.int8),
                                    theta.astype(np.float64), out_max=1, op=op,
                                    theta=_per_neuron(theta, shape, np.float32),
                                    theta_neg=_per_neuron(n_.neg_threshold * np.ones(c, np.float32), shape,
                                                          np.float32) if n_.kind == "SignedIF" else None,
                                    v0=_per_neuron(v0, shape, np.float32), memory=n_.memory,
                                    payload_neg=None if ratio is None else _per_neuron(ratio, shape, np.float32),
                                    neg_level=_per_neuron(n_.neg_level * np.ones(c, np.float32), shape, np.float32)
                                    if n_.graded else None)
        plans[layer.name] = lp
        order.append(lp)
    for lp in order:
        if lp.last_use >= 0 and lp.out_dtype == np.int64 and lp.layer.op in ("pad", "concat", "maxpool"):
            raise SnncError(f"layer {lp.layer.name}: routes integers beyond 2**24; use float mode")
    return _Plan(mode, encoding, order, v_dtype, input_units)


def _fingerprint(net: Network, neurons: bool = True) -> str:
    """Content hash of the network (weights included), the key of the operator caches."""
    h = hashlib.sha1()  # the fastest hashlib digest here (about 1.6 GB/s); not a security boundary

    def add(obj: Any) -> None:
        if isinstance(obj, np.ndarray):
            h.update(str((obj.dtype.str, obj.shape)).encode())
            h.update(memoryview(np.ascontiguousarray(obj)).cast("B"))
        else:
            h.update(repr(obj).encode())

    add(sorted(net.input_encoding.items(), key=lambda kv: kv[0]))
    add(list(net.outputs))
    for layer in net.layers:
        add((layer.name, layer.op, layer.inputs, layer.shape, sorted(layer.attrs.items())))
        for arr in (layer.weight, layer.bias):
            add(arr if arr is not None else None)
        if neurons and layer.neuron is not None:
            n = layer.neuron
            add((n.kind, float(n.alpha), float(n.v_init), n.reset, bool(n.memory), bool(n.graded)))
            add(n.threshold)
            add(n.threshold_neg)
    return h.hexdigest()


_PLAN_CACHE: "OrderedDict[tuple, _Plan]" = OrderedDict()
_PLAN_CACHE_SIZE = 4


def _spikes(src: _LayerPlan) -> bool:
    """The source passes int8 values that change every step (spikes): the event path can take them."""
    return src.out_dtype == np.int8 and not src.const


def _plan(net: Network, mode: str, encoding: str, input_max: int, weight_bits: int, threads: int,
          event: str = "auto") -> _Plan:
    key = (_fingerprint(net), mode, encoding, int(input_max), int(weight_bits), int(threads), event)
    return lru_cached(_PLAN_CACHE, key, lambda: _build_plan(net, mode, encoding, input_max, weight_bits, threads,
                                                            event),
                      _PLAN_CACHE_SIZE)


_RL_CACHE: "OrderedDict[tuple, dict]" = OrderedDict()


def _rate_limit_ops(net: Network, threads: int) -> dict:
    key = (_fingerprint(net, neurons=False), int(threads))
    return lru_cached(_RL_CACHE, key, lambda: {l.name: ops.make_op(l, l.weight, l.bias, threads)
                                               for l in net.layers if l.op in ("conv", "deconv", "dense")},
                      _PLAN_CACHE_SIZE)


def clear_cache() -> None:
    """Forget the cached per-network operators (onnxruntime sessions)."""
    _PLAN_CACHE.clear()
    _RL_CACHE.clear()


# ---- inputs ----------------------------------------------------------------------------------------------------

def _inputs_by_layer(net: Network, x: Any, encoding: str) -> dict[str, np.ndarray]:
    inputs = net.input_layers
    if not inputs:
        raise SnncError("the network has no input layer")
    if isinstance(x, dict):
        missing = [l.name for l in inputs if l.name not in x]
        if missing:
            raise SnncError(f"no input given for input layer(s) {missing}")
        xs = {l.name: np.asarray(x[l.name]) for l in inputs}
    else:
        if len(inputs) != 1:
            raise SnncError(f"the network has {len(inputs)} input layers; pass a dict name -> array")
        xs = {inputs[0].name: np.asarray(x)}
    lead = 2 if encoding == "explicit" else 1
    for l in inputs:
        a = xs[l.name]
        if encoding != "explicit" and a.ndim == len(l.shape):
            a = a[None]
        if a.ndim != len(l.shape) + lead or tuple(a.shape[lead:]) != tuple(l.shape):
            want = ("(T, B, " if encoding == "explicit" else "(B, ") + ", ".join(map(str, l.shape)) + ")"
            raise SnncError(f"input {l.name}: expected shape {want}, got {tuple(a.shape)}")
        xs[l.name] = a
    batches = {a.shape[lead - 1] for a in xs.values()}
    if len(batches) != 1:
        raise SnncError(f"inputs have different batch sizes {sorted(batches)}")
    return xs


def _to_input_values(a: np.ndarray, fixed: bool, unit: float, name: str) -> tuple[np.ndarray, int]:
    """Float32 values fed to the first layers, and the bound on their magnitude (integers in fixed point)."""
    if not fixed:
        return np.ascontiguousarray(a, dtype=np.float32), 0
    ints = np.round(np.asarray(a, dtype=np.float64) / float(unit))
    peak = int(np.abs(ints).max(initial=0))
    if peak >= fixedpoint.FLOAT32_EXACT:
        raise SnncError(f"input {name}: integers up to {peak} (x / {unit}) are too large for fixed point")
    return ints.astype(np.float32), peak


# ---- the simulation --------------------------------------------------------------------------------------------

def _chunks(ts: list[int], steps: int) -> list[tuple[int, int]]:
    out, t0 = [], 0
    for t_end in ts:
        while t0 < t_end:
            t1 = min(t_end, t0 + steps)
            out.append((t0, t1))
            t0 = t1
    return out


def _bytes_per_step(plan: _Plan, batch: int) -> int:
    fixed = plan.mode == "fixed"
    live = sum(lp.n * lp.out_dtype.itemsize for lp in plan.layers if not lp.const)
    srcs = {lp.layer.name: lp for lp in plan.layers}
    transient = 0
    for lp in plan.layers:
        if lp.const:
            continue
        if lp.op is not None:
            n_in = srcs[lp.layer.inputs[0]].n
            t = 4 * n_in + 4 * lp.n + (24 * lp.n if fixed else 0) + (8 * lp.n if lp.theta is None else 0)
        elif lp.layer.op == "input":
            t = 8 * lp.n
        elif lp.layer.op == "maxpool":  # int64 / float64 running sums, their window maxima and the diff
            t = 8 * srcs[lp.layer.inputs[0]].n + 24 * lp.n
        else:
            t = 2 * lp.n * lp.out_dtype.itemsize
        transient = max(transient, t)
    return max(1, batch * (live + transient))


def _largest_call_per_step(plan: _Plan, batch: int) -> int:
    srcs = {lp.layer.name: lp for lp in plan.layers}
    largest = 1
    for lp in plan.layers:
        if lp.op is not None and not srcs[lp.layer.inputs[0]].const:
            largest = max(largest, 4 * batch * max(lp.n, srcs[lp.layer.inputs[0]].n))
    return largest


def simulate(net: Network, x: Any, T: int | Sequence[int], *, mode: str = "float", v_init: float | None = None,
             decode: str = "membrane", seed: int = 0, encoding: str | None = None,
             max_bytes: int = DEFAULT_MAX_BYTES, progress: bool | None = None, threads: int | None = None,
             weight_bits: int | None = None, record_layers: bool = False,
             on_checkpoint: Callable[[int, dict], None] | None = None, constant_input: bool = True,
             event: str = "auto") -> SimResult:
    """Simulate `net` on a batch x for max(T) steps; decoded outputs at every checkpoint in T. See the module doc.

    constant_input: under direct encoding, values that are the same every step (the image, the first layers' z)
    are computed once, a constant current. False feeds the image as an explicit input of T equal steps, so every
    layer computes z at every step: the per-step path, bit-exact with the default in fixed point (for tests).

    event: the event-driven synapses (`event.py`): "auto" (default) per sample where its input spike fraction is
    low enough to pay, "on" always, "off" never (dense convolutions only). The numbers do not depend on it (fixed
    point: bit-exact; float: within float32 rounding).

    record_layers: also count each neuron's spikes by sign and hand them, with V(T), to on_checkpoint(T, state)
    at every checkpoint (without a callback: copies in extra["layers_at"]); see the module docstring.
    """
    ts = checkpoints(T)
    t_max = ts[-1]
    if mode not in MODES:
        raise SnncError(f"mode must be one of {MODES}, got {mode!r}")
    if event not in events.EVENT_MODES:
        raise SnncError(f"event must be one of {events.EVENT_MODES}, got {event!r}")
    if decode not in DECODES:
        raise SnncError(f"decode must be one of {DECODES}, got {decode!r}")
    encoding = encoding or str(net.input_encoding.get("kind", "direct"))
    if encoding not in ENCODINGS:
        raise SnncError(f"input encoding must be one of {ENCODINGS}, got {encoding!r}")
    threads = default_threads() if threads is None else max(1, int(threads))
    weight_bits = fixedpoint.DEFAULT_WEIGHT_BITS if weight_bits is None else int(weight_bits)
    fixed = mode == "fixed"
    started = time.perf_counter()

    net_q = _with_overrides(net, v_init, encoding)
    xs = _inputs_by_layer(net, x, encoding)
    if not constant_input and encoding == "direct":
        xs = {k: np.broadcast_to(a[None], (t_max,) + a.shape) for k, a in xs.items()}
        encoding = "explicit"
    if encoding == "explicit":
        short = {k: a.shape[0] for k, a in xs.items() if a.shape[0] < t_max}
        if short:
            raise SnncError(f"explicit input has fewer steps than T={t_max}: {short}")
    batch = next(iter(xs.values())).shape[1 if encoding == "explicit" else 0]
    unit = _input_scale(net_q) if fixed and encoding != "rate" else 1.0
    values, input_max = {}, 0
    for name, a in xs.items():
        if encoding == "rate":
            values[name] = np.asarray(a)
        else:
            values[name], peak = _to_input_values(a[:t_max] if encoding == "explicit" else a, fixed, unit, name)
            input_max = max(input_max, peak)
    if fixed and encoding != "rate":
        enc = net_q.input_encoding
        default_max = int(round(float(enc.get("max_value", 1.0)) / float(enc.get("scale", 1.0))))
        input_max = max(input_max, default_max)
    plan = _plan(net_q, mode, encoding, input_max, weight_bits, threads, event)

    steps = int(max(1, min(t_max, max_bytes // _bytes_per_step(plan, batch),
                           ops.CALL_BYTES // _largest_call_per_step(plan, batch))))
    chunks = _chunks(ts, steps)
    by_name = {lp.layer.name: lp for lp in plan.layers}
    outputs = list(net.outputs)
    V = {lp.layer.name: np.tile(lp.v0, (batch, 1)) for lp in plan.layers if lp.theta is not None}
    counts = {name: np.zeros(batch, np.int64) for name in V}
    emitted = {lp.layer.name: np.zeros((batch, lp.n), np.int32) for lp in plan.layers if lp.memory}  # +1s - -1s
    sums = {}
    for name in outputs:
        lp = by_name[name]
        integer = (lp.theta is not None and lp.payload_neg is None) or np.issubdtype(lp.out_dtype, np.integer) \
            or fixed
        sums[name] = np.zeros((batch, lp.n), np.int64 if integer else np.float64)
    const_cache: dict[str, np.ndarray] = {}
    pool_state: dict[str, dict] = {}  # maxpool layers: running sums and maxima carried between chunks
    z_cache: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(seed) if encoding == "rate" else None
    result_out: dict[int, dict[str, np.ndarray]] = {}
    raw_sums: dict[int, dict[str, np.ndarray]] = {}
    counts_at: dict[int, dict[str, np.ndarray]] = {}
    layer_seconds = {lp.layer.name: 0.0 for lp in plan.layers}
    timers = {"synapses": 0.0, "neurons": 0.0}
    recorder = _Recorder(plan, batch, t_max, fixed) if record_layers else None
    layers_at: dict[int, dict] = {}

    from tqdm.auto import tqdm

    bar = tqdm(total=len(chunks) * len(plan.layers), disable=(None if progress is None else not progress),
               desc=f"numpy {mode} T={t_max}", unit="layer", leave=False)
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    try:
        for t0, t1 in chunks:
            tc = t1 - t0
            vals: dict[str, np.ndarray] = {}  # layer -> (B, ...) if const else (tc * B, ...)
            for idx, lp in enumerate(plan.layers):
                tic = time.perf_counter()
                layer = lp.layer
                name = layer.name
                if lp.const and name in const_cache:
                    data = const_cache[name]
                elif layer.op == "input":
                    data = _input_chunk(lp, values[name], encoding, rng, t0, t1, batch)
                    if recorder is not None and not lp.const:
                        recorder.add_input(name, data, tc)
                elif layer.op == "pad":
                    data = _pad(vals[layer.inputs[0]], layer)
                elif layer.op == "maxpool":
                    k, st = layer.attrs["kernel_shape"], layer.attrs["strides"]
                    src = vals[layer.inputs[0]]
                    if lp.const:  # a constant input: M(t) = t * max, so out(t) = max every step
                        data = window_max(src, k, st)
                    else:
                        out, pool_state[name] = count_maxpool(src.reshape((tc, batch) + src.shape[1:]), k, st,
                                                              pool_state.get(name))
                        data = out.reshape((tc * batch,) + layer.shape)
                elif layer.op == "concat":
                    parts = []
                    for s in layer.inputs:
                        d = vals[s]
                        if not lp.const and by_name[s].const:
                            d = np.broadcast_to(d[None], (tc,) + d.shape).reshape((tc * batch,) + d.shape[1:])
                        parts.append(d.astype(lp.out_dtype, copy=False))
                    data = np.concatenate(parts, axis=1)
                else:
                    src_const = by_name[layer.inputs[0]].const
                    if src_const and name in z_cache:
                        z = z_cache[name]
                    else:
                        tic_op = time.perf_counter()
                        z = lp.op(vals[layer.inputs[0]])
                        if fixed:
                            z += lp.bias_int
                        timers["synapses"] += time.perf_counter() - tic_op
                        if src_const:
                            z_cache[name] = z
                    if lp.theta is None:
                        data = z if not fixed else _narrow(z, lp.out_dtype)
                    else:
                        spikes = np.empty((tc, batch, lp.n), np.int8)
                        zf = z.reshape((batch, lp.n) if src_const else (tc, batch, lp.n))
                        tic_scan = time.perf_counter()
                        n_start = emitted[name].copy() if lp.payload_neg is not None else None
                        scan(V[name], zf, src_const, spikes, lp.theta, lp.theta_neg, pool, count=emitted.get(name),
                             neg_level=lp.neg_level)
                        timers["neurons"] += time.perf_counter() - tic_scan
                        for b in range(batch):
                            counts[name][b] += np.count_nonzero(spikes[:, b])
                        if recorder is not None:
                            recorder.add_spikes(name, spikes)
                        data = spikes.reshape((tc * batch,) + layer.shape)
                        if lp.payload_neg is not None:
                            data = graded_values(spikes, n_start, lp.payload_pos, lp.payload_neg)
                            data = data.reshape((tc * batch,) + layer.shape)
                    z = zf = None  # free before the next layer
                if lp.const:
                    const_cache[name] = data
                if name in sums:
                    _accumulate(sums[name], data, lp, tc, batch, fixed)
                vals[name] = data
                for s in set(layer.inputs):
                    if by_name[s].last_use == idx:
                        vals.pop(s, None)
                if lp.last_use < 0:
                    vals.pop(name, None)
                layer_seconds[name] += time.perf_counter() - tic
                bar.update(1)
            if t1 in ts:
                result_out[t1] = {}
                for name in outputs:
                    lp = by_name[name]
                    unit_n = _per_neuron(lp.unit, lp.layer.shape, np.float64)
                    dec = (sums[name].astype(np.float64) * unit_n) / t1
                    result_out[t1][name] = dec.reshape((batch,) + lp.layer.shape)
                    if fixed:
                        raw_sums.setdefault(t1, {})[name] = sums[name].reshape((batch,) + lp.layer.shape).copy()
                counts_at[t1] = {k: v.copy() for k, v in counts.items()}
                if recorder is not None:
                    state = recorder.state(V)
                    if on_checkpoint is not None:
                        on_checkpoint(t1, state)
                    else:
                        layers_at[t1] = {k: {f: (a.copy() if isinstance(a, np.ndarray) else a) for f, a in d.items()}
                                         for k, d in state.items()}
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()

    extra = {"mode": mode, "encoding": encoding, "chunk_steps": steps, "seconds": time.perf_counter() - started,
             "layer_seconds": layer_seconds, "synapse_seconds": timers["synapses"],
             "neuron_seconds": timers["neurons"], "spike_counts_at": counts_at, "threads": threads}
    if fixed:
        extra["sums"] = raw_sums
        extra["weight_bits"] = weight_bits
    if recorder is not None and on_checkpoint is None:
        extra["layers_at"] = layers_at
    neurons = {lp.layer.name: lp.n for lp in plan.layers if lp.theta is not None}
    return SimResult(outputs=result_out, spike_counts=counts, neurons=neurons, steps=t_max, extra=extra)


class _Recorder:
    """Per-neuron spike counts by sign (and input sums) for `record_layers`; only built when asked for.

    Counts accumulate as the signed sum and the number of spikes (|s| = s & 1 for s in {-1, 0, 1}), first in int8
    over blocks of up to 127 steps, then into int16 / int32: 15x faster than comparing and summing the whole
    chunk (measured on the digits network), so recording costs little next to the neuron scan.
    """

    BLOCK = 127  # steps whose int8 sums cannot overflow

    def __init__(self, plan: _Plan, batch: int, t_max: int, fixed: bool):
        dtype = np.int16 if t_max < 2**15 else np.int32
        self.net_sum: dict[str, np.ndarray] = {}
        self.abs_sum: dict[str, np.ndarray | None] = {}
        self.inputs: dict[str, np.ndarray] = {}
        self.meta: dict[str, tuple] = {}
        for lp in plan.layers:
            if lp.theta is not None:
                name = lp.layer.name
                self.net_sum[name] = np.zeros((batch, lp.n), dtype)
                signed = lp.theta_neg is not None or lp.memory  # -1 spikes possible
                self.abs_sum[name] = np.zeros((batch, lp.n), dtype) if signed else None
                # real threshold (float of float32); a graded layer's unit is theta / payload_pos
                theta = _per_neuron(lp.unit, lp.layer.shape, np.float64) * lp.payload_pos
                to_real = theta / lp.theta.astype(np.float64) if fixed else None  # V_int -> real units
                v0 = lp.v0.astype(np.float64) * (to_real if fixed else 1.0)
                theta_neg = None
                if lp.theta_neg is not None:
                    theta_neg = lp.theta_neg.astype(np.float64) * (to_real if fixed else 1.0)
                # graded: what a negative-side spike carries, alpha theta_n, in real units
                pay_neg = None if lp.payload_neg is None else \
                    lp.payload_neg.astype(np.float64) * _per_neuron(lp.unit, lp.layer.shape, np.float64)
                level = None if lp.neg_level is None else lp.neg_level.astype(np.float64) * (to_real if fixed else 1.0)
                self.meta[name] = (theta, theta_neg, v0, to_real, bool(lp.memory), pay_neg, level)
            elif lp.layer.op == "input" and not lp.const:
                self.inputs[lp.layer.name] = np.zeros((batch, lp.n), np.float64)

    def add_spikes(self, name: str, spikes: np.ndarray) -> None:
        """spikes (Tc, B, N) int8 in {-1, 0, 1}."""
        net_sum, abs_sum = self.net_sum[name], self.abs_sum[name]
        for a in range(0, spikes.shape[0], self.BLOCK):
            block = spikes[a:a + self.BLOCK]
            acc = block[0].copy()
            for t in range(1, block.shape[0]):
                np.add(acc, block[t], out=acc)
            net_sum += acc
            if abs_sum is not None:
                np.bitwise_and(block[0], 1, out=acc)
                tmp = np.empty_like(acc)
                for t in range(1, block.shape[0]):
                    np.bitwise_and(block[t], 1, out=tmp)
                    np.add(acc, tmp, out=acc)
                abs_sum += acc

    def add_input(self, name: str, data: np.ndarray, tc: int) -> None:
        acc = self.inputs[name]
        acc += data.reshape(tc, acc.shape[0], acc.shape[1]).sum(axis=0, dtype=np.float64)

    def state(self, V: dict[str, np.ndarray]) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for name, net_sum in self.net_sum.items():
            theta, theta_neg, v0, to_real, memory, pay_neg, level = self.meta[name]
            abs_sum = self.abs_sum[name]
            if abs_sum is None:
                pos, neg = net_sum, None
            else:
                pos, neg = (abs_sum + net_sum) >> 1, (abs_sum - net_sum) >> 1
            v = V[name] if to_real is None else V[name].astype(np.float64) * to_real
            out[name] = {"pos": pos, "neg": neg, "v": v.astype(np.float32, copy=False), "v0": v0,
                         "theta": theta, "theta_neg": theta_neg, "memory": memory, "payload_neg": pay_neg,
                         "neg_level": level}
        for name, acc in self.inputs.items():
            out[name] = {"sum": acc}
        return out


def _input_chunk(lp: _LayerPlan, x: np.ndarray, encoding: str, rng, t0: int, t1: int, batch: int) -> np.ndarray:
    shape = lp.layer.shape
    if encoding == "direct":
        return x
    if encoding == "explicit":
        return x[t0:t1].reshape(((t1 - t0) * batch,) + shape)
    return rate_spikes(x, rng, t1 - t0).reshape(((t1 - t0) * batch,) + shape)


def _pad(data: np.ndarray, layer: Layer) -> np.ndarray:
    top, left, bottom, right = (int(p) for p in layer.attrs.get("pads", [0, 0, 0, 0]))
    mode = layer.attrs.get("mode", "constant")
    if mode not in ("constant", "edge"):
        raise SnncError(f"layer {layer.name}: pad mode {mode!r}; only 'constant' (0) and 'edge' are supported")
    return np.pad(data, ((0, 0), (0, 0), (top, bottom), (left, right)), mode=mode)


def _narrow(z: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return z if z.dtype == dtype else z.astype(dtype)


def _accumulate(acc: np.ndarray, data: np.ndarray, lp: _LayerPlan, tc: int, batch: int, fixed: bool) -> None:
    if lp.const:
        flat = data.reshape(batch, lp.n)
        acc += flat.astype(acc.dtype) * tc
    else:
        acc += data.reshape(tc, batch, lp.n).sum(axis=0, dtype=acc.dtype)


# ---- the rate-limit ANN ----------------------------------------------------------------------------------------

def rate_limit_forward(net: Network, x: Any, *, all_layers: bool = False, threads: int | None = None,
                       encoding: str | None = None) -> dict[str, np.ndarray]:
    """The T -> infinity limit of the network (float32): each neuron replaced by its mean output.

    IF -> clip(z, 0, theta); SignedIF -> clip(leaky_relu(z, alpha), -theta, theta) (graded: the lower bound is
    -alpha * theta_n); linear layers pass z.
    Under rate encoding the input is its firing probability clip(x, 0, 1). Returns the outputs (or, with
    all_layers, every layer) as (B, *shape) arrays.
    """
    vals = _rate_limit_walk(net, x, threads, encoding, {}, None)
    keep = [l.name for l in net.layers] if all_layers else list(net.outputs)
    return {k: vals[k] for k in keep}


def layer_forward(net: Network, x: Any, *, override: dict[str, np.ndarray] | None = None,
                  threads: int | None = None, encoding: str | None = None
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One walk of the rate-limit network that also returns every synaptic layer's input z: (z, outputs).

    z[l] = W out[src] + b for conv / deconv / dense layers; outputs[l] is the layer's rate-limit output
    (rate_limit_forward's rule), or override[l] when given: a layer's consumers then read the override instead.
    With an SNN's mean outputs (spike count * theta / T per neuron layer) as overrides, z[l] is each layer's mean
    synaptic input over T in that SNN (the layers are linear in their inputs), which separates a layer's own
    temporal error from the error it inherits (snnc.evaluation.errors). Float32, (B, *shape) arrays.
    """
    zs: dict[str, np.ndarray] = {}
    vals = _rate_limit_walk(net, x, threads, encoding, override or {}, zs)
    return zs, vals


def _rate_limit_walk(net: Network, x: Any, threads: int | None, encoding: str | None,
                     override: dict[str, np.ndarray], zs: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """Every layer's rate-limit output (or its override); each synaptic layer's z goes into zs when given."""
    threads = default_threads() if threads is None else max(1, int(threads))
    encoding = encoding or str(net.input_encoding.get("kind", "direct"))
    xs = _inputs_by_layer(net, x, "direct")
    layer_ops = _rate_limit_ops(net, threads)
    vals: dict[str, np.ndarray] = {}
    for layer in net.layers:
        if layer.op == "input":
            a = np.asarray(xs[layer.name], dtype=np.float32)
            out = np.clip(a, 0, 1) if encoding == "rate" else a
        elif layer.op == "pad":
            out = _pad(vals[layer.inputs[0]], layer)
        elif layer.op == "maxpool":  # the count max-pool's limit: the max of the mean inputs
            out = window_max(vals[layer.inputs[0]], layer.attrs["kernel_shape"], layer.attrs["strides"])
        elif layer.op == "concat":
            out = np.concatenate([vals[s] for s in layer.inputs], axis=1)
        else:
            z = layer_ops[layer.name](vals[layer.inputs[0]]).astype(np.float32, copy=False)
            if zs is not None:
                zs[layer.name] = z
            out = z
            n = layer.neuron
            if n is not None and layer.name not in override:
                c = layer.shape[0]
                theta = (n.threshold * np.ones(c, np.float32)).reshape((1, c) + (1,) * (z.ndim - 2))
                if n.kind == "SignedIF":
                    low = theta if not n.graded else \
                        (n.neg_payload * np.ones(c, np.float32)).reshape((1, c) + (1,) * (z.ndim - 2))
                    out = np.clip(np.where(z >= 0, z, np.float32(n.alpha) * z), -low, theta)
                else:
                    out = np.clip(z, 0, theta)
        if layer.name in override:
            out = np.asarray(override[layer.name], dtype=np.float32).reshape((-1,) + tuple(layer.shape))
        vals[layer.name] = out.astype(np.float32, copy=False)
    return vals
