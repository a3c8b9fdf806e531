"""Fixed-point (integer) form of a Network, shared by every backend so that they agree bit for bit.

Each output channel o of a connection layer gets its own scale s_o (a neuron's dynamics only involve its own row
of weights, so per-channel units change nothing but the rounding). Its source delivers integers with a
per-channel unit u_i:
the input layer's integers are round(x / input_scale) (unit input_scale; 1 for rate-encoded 0/1 spikes), a
neuron layer's integers are its spikes in {-1, 0, 1} (unit theta_i), concat and pad pass units through.

    W_eff[o, i] = W[o, i] * u_i                       (per input channel; the group layout is respected)
    s_o        = max_i |W_eff[o, i]| / (2**(weight_bits-1) - 1)   (a channel without weights: the layer's max)
    w_int      = round(W_eff / s_o)                   (signed, weight_bits wide; 16 by default, 8 as Loihi)
    b_int      = round(b / s_o)                       theta_int = max(1, round(theta / s_o))
    theta_neg_int = max(1, round(theta / alpha / s_o))  v0_int = round(v_init * theta / s_o)
    graded SignedIF: theta_neg_int = max(1, round(theta_n / s_o)); its spikes are the integers +P and -N_c,
                  P = 2**GRADED_BITS, N_c = max(1, round(alpha theta_n / theta * P)), in units of theta / P;
                  its negative side's level r_int = v0_int + round(v_init * theta_neg_int)

One scale per layer (the older rule) let one channel with large weights, such as a nearly silent channel whose
small lambda blew its weights up under channel-wise normalization, round every other channel's threshold to a
few units. Loihi's per-core weight exponent is per layer; per-channel scales map onto per-neuron thresholds
and weights there (see `snnc inspect --target loihi2` for the bits needed).

The membrane is a 64-bit integer; every step V += conv(spikes_int, w_int) + b_int, then the neuron update of
docs/neurons.md with the integer thresholds. A linear layer's value z_int decodes as z_int * s_o, a neuron
layer's spikes as s * theta. Rounding is numpy's (half to even) and happens here only, once, in Python:
backends receive the integers. A linear layer (no neuron) may only be a network output in fixed-point mode,
except a copy layer (depthwise, bias-free, weights 0/1, such as nearest upsampling as a deconvolution): it
routes integers unchanged (w_int = weight, b_int = 0) and its output keeps its source's units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from snnc.ir.errors import SnncError
from snnc.ir.network import Layer, Network

# 16-bit weights by default: with 8 bits, layers whose weights are large next to their threshold (the max-pool
# trees, where lambda_in / lambda_out reaches 200) round theta to 1-3 units, a 30-60 % threshold error.
# Loihi-style 8-bit weights remain available (weight_bits=8) and are what the Lava backend reports against.
DEFAULT_WEIGHT_BITS = 16
# A graded neuron's +1 spike carries the integer 2**8 and its -1 spike -round(alpha theta_n / theta * 2**8): its
# consumers' weights are in units of theta / 2**8 (their integer thresholds grow by 2**8), so the negative payload
# keeps 8 bits of its ratio to theta. Loihi 2's graded spikes carry integer payloads of up to 24 bits.
GRADED_BITS = 8
GRADED_PAYLOAD = 2 ** GRADED_BITS
# Largest integer a float32 sum represents exactly; convolutions on integers may use float32 BLAS below it.
FLOAT32_EXACT = 2**24


@dataclass
class QuantizedLayer:
    name: str
    scale: float  # the largest s_o: value of one integer unit of the layer's coarsest channel
    scales: np.ndarray | None = None  # (C,) float64 s_o per output channel
    w_int: np.ndarray | None = None  # same layout as Layer.weight, int32 holding weight_bits-wide values
    b_int: np.ndarray | None = None  # (C,) int64
    theta_int: np.ndarray | None = None  # (C,) int64, neuron layers only
    theta_neg_int: np.ndarray | None = None  # (C,) int64, SignedIF only
    v0_int: np.ndarray | None = None  # (C,) int64, neuron layers only
    neg_level_int: np.ndarray | None = None  # (C,) int64, SignedIF with memory: r (Neuron.neg_level; 0 unless graded)
    payload_neg: np.ndarray | None = None  # (C,) int64, graded only: a -1 spike's integer is -payload_neg
    payload_pos: int = 1  # a +1 spike's integer (GRADED_PAYLOAD for graded neurons)
    out_unit: np.ndarray | None = None  # (C,) float64: real value of one integer unit of this layer's output
    max_abs_sum: int = 0  # bound on |conv(spikes_int, w_int)|: float32 accumulation is exact below 2**24


def is_copy_layer(layer: Layer, c_in: int) -> bool:
    """A depthwise, bias-free conv/deconv without neurons whose weights are all 0 or 1: it only routes values."""
    if layer.neuron is not None or layer.op not in ("conv", "deconv") or layer.weight is None:
        return False
    if layer.bias is not None and np.any(layer.bias != 0):
        return False
    group = int(layer.attrs.get("group", 1))
    return group == c_in == layer.shape[0] and bool(np.all((layer.weight == 0) | (layer.weight == 1)))


def _input_unit(net: Network) -> float:
    enc = net.input_encoding
    return 1.0 if enc.get("kind") == "rate" else float(enc.get("scale", 1.0))


def _effective_weight(layer: Layer, unit_in: np.ndarray) -> np.ndarray:
    w = layer.weight.astype(np.float64)
    if layer.op == "conv":
        group = int(layer.attrs.get("group", 1))
        c_out, c_in_g = w.shape[:2]
        per_out = np.empty((c_out, c_in_g))
        for o in range(c_out):
            g = o // (c_out // group)
            per_out[o] = unit_in[g * c_in_g:(g + 1) * c_in_g]
        return w * per_out[:, :, None, None]
    if layer.op == "deconv":
        return w * unit_in[:, None, None, None]
    if layer.op == "dense":
        c_in = unit_in.shape[0]
        per_feature = np.repeat(unit_in, w.shape[1] // c_in)
        return w * per_feature[None, :]
    raise AssertionError(layer.op)


def _out_channel_peaks(layer: Layer, w_eff: np.ndarray) -> np.ndarray:
    """max |W_eff| per output channel, (C_out,), whatever the layout (conv rows; deconv columns within groups)."""
    a = np.abs(w_eff)
    if layer.op == "deconv":  # (C_in, C_out/g, kh, kw): output channel g*(C_out/g) + j reads rows of group g
        group = int(layer.attrs.get("group", 1))
        per_in = a.shape[0] // group
        return np.concatenate([a[g * per_in:(g + 1) * per_in].max(axis=(0, 2, 3)) for g in range(group)])
    return a.reshape(a.shape[0], -1).max(axis=1)


def _per_weight(layer: Layer, scales: np.ndarray) -> np.ndarray:
    """The (C_out,) scales broadcast onto the weight tensor's layout."""
    if layer.op == "deconv":
        group = int(layer.attrs.get("group", 1))
        per_in, per_out = layer.weight.shape[0] // group, layer.weight.shape[1]
        s = np.empty(layer.weight.shape[:2])
        for g in range(group):
            s[g * per_in:(g + 1) * per_in] = scales[g * per_out:(g + 1) * per_out][None, :]
        return s[:, :, None, None]
    return scales.reshape((-1,) + (1,) * (layer.weight.ndim - 1))


def _max_input_int(net: Network, src_units_are_spikes: bool) -> int:
    if src_units_are_spikes:
        return 1
    enc = net.input_encoding
    if enc.get("kind") == "rate":
        return 1
    return int(round(float(enc.get("max_value", 1.0)) / float(enc.get("scale", 1.0))))


def quantize(net: Network, weight_bits: int = DEFAULT_WEIGHT_BITS) -> dict[str, QuantizedLayer]:
    """Integer parameters for every layer, keyed by layer name. Raises SnncError where fixed point cannot apply."""
    qmax = 2 ** (weight_bits - 1) - 1
    units: dict[str, np.ndarray] = {}
    from_input: dict[str, bool] = {}
    peak: dict[str, int] = {}  # bound on a spiking layer's |output integer| (1 unless graded payloads reach it)
    linear: set[str] = set()
    out: dict[str, QuantizedLayer] = {}
    for layer in net.layers:
        if layer.op == "input":
            units[layer.name] = np.full(layer.shape[0], _input_unit(net))
            from_input[layer.name] = True
            out[layer.name] = QuantizedLayer(layer.name, _input_unit(net), out_unit=units[layer.name])
            continue
        for src in layer.inputs:
            if src in linear:
                raise SnncError(
                    f"layer {layer.name}: its input {src} is a linear layer without neurons; fixed-point mode "
                    "only allows those as network outputs (the fold_linear pass removes such layers where it can: "
                    "do not skip it; or use float mode)")
        if layer.op in ("concat", "pad", "maxpool"):  # routing: integers and units pass through
            unit = np.concatenate([units[s] for s in layer.inputs])
            units[layer.name] = unit
            from_input[layer.name] = any(from_input[s] for s in layer.inputs)
            peak[layer.name] = max(peak.get(s, 1) for s in layer.inputs)
            out[layer.name] = QuantizedLayer(layer.name, 1.0, out_unit=unit)
            continue
        src = layer.inputs[0]
        if is_copy_layer(layer, units[src].shape[0]):
            # Pure routing (e.g. nearest upsampling as a deconv): integers and units pass through unchanged.
            units[layer.name] = units[src]
            from_input[layer.name] = from_input[src]
            peak[layer.name] = peak.get(src, 1)
            out[layer.name] = QuantizedLayer(layer.name, 1.0, w_int=layer.weight.astype(np.int32),
                                             b_int=np.zeros(layer.shape[0], np.int64), out_unit=units[src],
                                             max_abs_sum=int(np.prod(layer.weight.shape[1:])) * _max_input_int(
                                                 net, not from_input[src]) * peak.get(src, 1))
            continue
        w_eff = _effective_weight(layer, units[src])
        c_out = layer.shape[0]
        peaks = _out_channel_peaks(layer, w_eff) if w_eff.size else np.zeros(c_out)
        top = float(peaks.max(initial=0.0))
        scales = np.where(peaks > 0, peaks, top if top > 0 else qmax) / qmax
        w_int = np.round(w_eff / _per_weight(layer, scales)).astype(np.int32)
        bias = np.zeros(c_out) if layer.bias is None else layer.bias.astype(np.float64)
        scale = float(scales.max())
        q = QuantizedLayer(layer.name, scale, scales=scales, w_int=w_int,
                           b_int=np.round(bias / scales).astype(np.int64))
        fan_in = w_int[0].size if layer.op != "deconv" else int(np.prod(w_int.shape[1:])) * w_int.shape[0]
        q.max_abs_sum = (int(np.abs(w_int).max(initial=0)) * fan_in * _max_input_int(net, not from_input[src])
                         * peak.get(src, 1))
        n = layer.neuron
        if n is None:
            linear.add(layer.name)
            q.out_unit = scales
        else:
            theta = n.threshold.astype(np.float64) * np.ones(c_out)
            q.theta_int = np.maximum(1, np.round(theta / scales)).astype(np.int64)
            if n.kind == "SignedIF":
                q.theta_neg_int = np.maximum(1, np.round(theta / n.alpha / scales)).astype(np.int64)
            q.v0_int = np.round(n.v_init * theta / scales).astype(np.int64)
            if n.kind == "SignedIF" and n.memory:
                q.neg_level_int = np.zeros(c_out, np.int64)
            q.out_unit = theta
            if n.graded:
                theta_n = n.neg_threshold.astype(np.float64) * np.ones(c_out)
                q.theta_neg_int = np.maximum(1, np.round(theta_n / scales)).astype(np.int64)
                q.neg_level_int = q.v0_int + np.round(n.v_init * q.theta_neg_int).astype(np.int64)
                q.payload_pos = GRADED_PAYLOAD
                ratio = n.neg_payload.astype(np.float64) / theta  # alpha theta_n / theta
                q.payload_neg = np.maximum(1, np.round(ratio * GRADED_PAYLOAD)).astype(np.int64)
                q.out_unit = theta / GRADED_PAYLOAD
                peak[layer.name] = int(max(GRADED_PAYLOAD, int(q.payload_neg.max(initial=1))))
        units[layer.name] = q.out_unit
        from_input[layer.name] = False
        out[layer.name] = q
    return out


def fold_units(layer: Layer, w: np.ndarray, unit_in: np.ndarray) -> np.ndarray:
    """W[o, i] * unit_i for the input channel i each weight reads (group layout respected), float64: in float
    mode a spike of source channel i is worth its threshold, so every backend folds it into the weights."""
    w = np.asarray(w, dtype=np.float64)
    if np.all(unit_in == 1.0):
        return w
    if layer.op == "conv":
        group = int(layer.attrs.get("group", 1))
        c_out, c_in_g = w.shape[:2]
        per_out = unit_in.reshape(group, c_in_g)[np.arange(c_out) // (c_out // group)]
        return w * per_out[:, :, None, None]
    if layer.op == "deconv":
        return w * unit_in[:, None, None, None]
    return w * np.repeat(unit_in, w.shape[1] // unit_in.shape[0])[None, :]
