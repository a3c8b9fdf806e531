"""Per-layer conversion error (docs/methods.md section 5): clipping, quantization and unevenness, measured.

Why three parts: they have different cures. Clipping (activations above lambda all map to theta) does not shrink
with T at all; it is set by the normalization (percentile, per channel or per layer). Quantization (phi takes only
the values k theta / T) shrinks as 1 / T and V(0) = theta / 2 halves it. Unevenness (the order in which input
spikes arrive) also shrinks with T, but V(0) does not bound it; it is what the dual-error training of docs/methods.md
section 7 models.

Every part is measured "with equal inputs", i.e. for layer l on the inputs that layer actually receives:

  clipping      the rate-limit ANN's inputs x_l (what layer l reads in the T -> infinity limit): z = W x_l + b,
                error = f(z) - clip(f(z)), f = ReLU (IF) or leaky-ReLU (SignedIF), clip to [0, theta] or
                [-theta, theta];
  temporal      the SNN's own mean inputs over T: z_bar = W phi_in(T) + b (every layer is linear in its input and
                adds its bias every step), error e = phi(T) - clip(f(z_bar)), phi(T) the neuron's mean output
                (spike count * theta / T, a -1 spike counting -theta). z_bar comes from the neuron's own record
                by eq. 8, T z_bar = V(T) - V(0) + pos theta - neg r (a -1 spike adds r = theta / alpha back to a
                SignedIF's V, r = theta to a memory IF's): exact in fixed point as well, and no second pass over
                the network (the tests check it against W phi_in(T) + b from sim.layer_forward on the SNN's mean
                outputs).

The temporal error of each neuron is quantization or unevenness by its final potential V(T) (eq. 8:
T phi = T z_bar - (V(T) - V(0)) for IF; a SignedIF -1 spike adds theta / alpha back to V):

  IF        V(T) in [0, theta): the count is floor((T z_bar + V(0)) / theta), so phi is eq. 20's quantized value
            and |e| < theta / T: quantization. Otherwise (V(T) < 0: it fired more than its mean input pays for;
            V(T) >= theta: it owes spikes) the order of the inputs decided the count: unevenness.
  SignedIF  no -1 spike and V(T) in [0, theta), or no +1 spike and V(T) in (-theta / alpha, 0]: quantization,
            |e| <= theta (1 + alpha v_init) / T. A neuron that fired both signs, or whose V(T) sits on the other
            side of 0 from its spikes, crossed a threshold its mean input does not reach: unevenness. (The band
            [-theta / alpha, theta] alone is not enough: n spikes of each sign leave V in the band with
            |e| = n (1 - alpha) theta / T.)
  memory IF the IF rule: its -1 spikes (V < 0 while it has +1 spikes to take back; V += theta) keep V(T) in
            [0, theta) unless its count is 0 (then phi = 0 and e = 0) or one spike a step was not enough.
  signed memory neuron (SignedIF with memory): with n = pos - neg, V(T) in [0, theta) for n > 0, in
            (-theta / alpha, 0] for n < 0, in (-theta / alpha, theta) for n = 0: quantization. Its record gives
            T z_bar = V(T) - V(0) + theta max(n, 0) - (theta / alpha) max(-n, 0): a take-back undoes a reset.

Half-open bands: V(T) = theta exactly means one spike is owed (Spiking YOLOv3's example with inhibition first ends at
V = theta with e = -theta / T), which only order effects produce.

The measure, per layer l and T, over all its neurons and the evaluated images:

    E_part(l) = sum |e_part| / sum |a_RL(l)|         a_RL(l): the rate-limit ANN's output of layer l

The same denominator for all parts, so they stack and quantization + unevenness = the local temporal total
exactly (each neuron is in one class). Also reported: `accumulated` = sum |phi(T) - a_RL| / sum |a_RL|, the
layer's distance from its rate limit including everything inherited from earlier layers (not a sum of the
local parts), `uneven_fraction` = the fraction of the layer's neurons in the unevenness class with a non-zero
error (a silent IF neuron with V(T) < 0 is in that class by its potential but has e = 0), and for the linear heads sum |SNN - RL| / sum |RL|, sum |RL - ANN| / sum |ANN| (clipping seen at
the output) and sum |SNN - ANN| / sum |ANN|.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from snnc.ir.network import Layer, Network

BOUND_TOLERANCE = 1e-3  # float32 rounding of z_bar against the bound theta / T (relative)
BAND_TOLERANCE = 1e-5  # slack on the V(T) band edges, as a fraction of theta (float32 resets)


def unclipped(layer: Layer, z: np.ndarray) -> np.ndarray:
    """The ANN activation the neuron stands for, without the clip at theta: ReLU or leaky-ReLU."""
    n = layer.neuron
    if n.kind == "SignedIF":
        return np.where(z >= 0, z, n.alpha * z)
    return np.maximum(z, 0)


def _theta(layer: Layer, ndim: int) -> np.ndarray:
    c = layer.shape[0]
    return (layer.neuron.threshold.astype(np.float64) * np.ones(c)).reshape((1, c) + (1,) * (ndim - 2))


def rate_limit(layer: Layer, z: np.ndarray) -> np.ndarray:
    """The neuron's rate limit: clip(f(z), 0 or -theta, theta) (docs/neurons.md)."""
    theta = _theta(layer, z.ndim)
    lo = -theta if layer.neuron.kind == "SignedIF" else 0.0
    return np.clip(unclipped(layer, z), lo, theta)


def quantization_mask(pos: np.ndarray, neg: np.ndarray | None, v: np.ndarray, theta: np.ndarray,
                      theta_neg: np.ndarray | None, tol: float = BAND_TOLERANCE) -> np.ndarray:
    """True where a neuron's temporal error is pure quantization (module docstring); arrays (B, N), (N,).

    The edge at 0 gets tol * theta of slack: a float32 reset leaves V = -1e-8 where the exact value is 0 (common:
    right after a spike), and such a neuron would otherwise be called uneven with a quantization-sized error.
    The edge at theta stays exact (V(T) = theta: a spike is owed, an order effect).
    """
    eps = tol * theta
    nonneg = v >= -eps
    below = v < theta
    if neg is None:
        return nonneg & below
    up = (neg == 0) & nonneg & below
    down = (pos == 0) & (v <= eps) & (v > -theta_neg)
    return up | down


def quantization_bound(layer: Layer, T: int, v_init: float) -> float:
    """The largest |e| / theta a quantization-class neuron can have after T steps."""
    n = layer.neuron
    return (1.0 + (n.alpha * max(0.0, v_init) if n.kind == "SignedIF" else 0.0)) / T


def mean_outputs(state: Mapping[str, Mapping[str, Any]], T: int) -> dict[str, np.ndarray]:
    """phi(T) per recorded layer from simulate(record_layers=True)'s state: (pos - neg) theta / T (B, N) float64;
    a recorded input layer (rate or explicit encoding) gives its mean value."""
    out = {}
    for name, d in state.items():
        if "sum" in d:
            out[name] = d["sum"] / T
            continue
        out[name] = _phi(d, T)
    return out


def _phi(d: Mapping[str, Any], T: int) -> np.ndarray:
    """(pos - neg) theta / T; a graded neuron's negative side carries payload_neg = alpha theta_n instead."""
    count = d["pos"].astype(np.float64)
    if d["neg"] is not None:
        count -= d["neg"]
    if d.get("payload_neg") is not None:
        return (np.maximum(count, 0) * d["theta"] - np.maximum(-count, 0) * d["payload_neg"]) / T
    return count * d["theta"] / T


def mean_inputs(d: Mapping[str, Any], T: int) -> np.ndarray:
    """z_bar (B, N) float64, each neuron's mean synaptic input over T, from its recorded state by eq. 8:
    T z_bar = V(T) - V(0) + pos theta - neg r (r = theta / alpha for SignedIF, theta for the memory IF).
    Exact in fixed point too (integers in real units). The signed memory neuron: see the module docstring."""
    if d["theta_neg"] is not None and d.get("memory"):
        n = d["pos"].astype(np.float64) - d["neg"]
        z = d["v"].astype(np.float64) - d["v0"] + np.maximum(n, 0) * d["theta"] - np.maximum(-n, 0) * d["theta_neg"]
        return z / T
    z = d["v"].astype(np.float64) - d["v0"] + d["pos"] * d["theta"]
    if d["neg"] is not None:  # a -1 spike adds theta / alpha (SignedIF) or theta (memory IF) back to V
        z -= d["neg"] * (d["theta_neg"] if d["theta_neg"] is not None else d["theta"])
    return z / T


def neuron_rate_limit(z_bar: np.ndarray, d: Mapping[str, Any]) -> np.ndarray:
    """clip(f(z_bar)) per neuron with the thresholds the simulator used: IF clip(z, 0, theta); SignedIF the leaky
    slope theta / theta_neg (= alpha; in fixed point the rounded integers' ratio), clipped to [-theta, theta]."""
    theta = d["theta"]
    if d["theta_neg"] is None:
        return np.clip(z_bar, 0.0, theta)
    if d.get("payload_neg") is not None:  # graded: slope alpha = payload_neg / theta_n, floor -alpha theta_n
        low = d["payload_neg"]
        return np.clip(np.where(z_bar >= 0, z_bar, z_bar * (low / d["theta_neg"])), -low, theta)
    return np.clip(np.where(z_bar >= 0, z_bar, z_bar * (theta / d["theta_neg"])), -theta, theta)


def split_layer(d: Mapping[str, Any], T: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One neuron layer at T: (phi, e, quantization mask), (B, N) each; e = phi - clip(f(z_bar))."""
    phi = _phi(d, T)
    e = phi - neuron_rate_limit(mean_inputs(d, T), d)
    signed = d["theta_neg"] is not None  # SignedIF; a memory IF is classified by the IF rule
    if signed and d.get("memory"):  # the signed memory neuron: by the sign of its count (module docstring)
        n = d["pos"].astype(np.int64) - d["neg"]
        pos_side = quantization_mask(n, None, d["v"], d["theta"].astype(np.float32), None)
        v_neg = d["v"] if d.get("neg_level") is None else d["v"] - d["neg_level"]  # graded: V from its level r
        neg_side = quantization_mask(np.zeros_like(n), -n, v_neg, d["theta"].astype(np.float32),
                                     d["theta_neg"].astype(np.float32))
        return phi, e, np.where(n > 0, pos_side, np.where(n < 0, neg_side, pos_side | neg_side))
    mask = quantization_mask(d["pos"], d["neg"] if signed else None, d["v"], d["theta"].astype(np.float32),
                             d["theta_neg"].astype(np.float32) if signed else None)
    return phi, e, mask


class _LayerSums:
    def __init__(self, ts: Sequence[int]):
        self.values = 0
        self.rl_abs = 0.0
        self.clip_abs = 0.0
        self.clipped = 0
        self.t = {T: {"quantization": 0.0, "unevenness": 0.0, "accumulated": 0.0, "uneven": 0,
                      "bound_ratio": 0.0} for T in ts}


class ErrorAnalysis:
    """Streams batches: add_rate_limit once per batch, add_checkpoint at each T (a simulate on_checkpoint), then
    add_heads; result() gives the per-layer table of the module docstring."""

    def __init__(self, net: Network, ts: Sequence[int], v_init: float | None = None):
        self.net = net
        self.ts = sorted(int(t) for t in ts)
        self.v_init = v_init
        self.neuron_layers = [l for l in net.layers if l.neuron is not None]
        self.sums = {l.name: _LayerSums(self.ts) for l in self.neuron_layers}
        self.heads = {h: {"rl_abs": 0.0, "ann_abs": 0.0, "rl_ann": 0.0, "rl_ann_max": 0.0, "ann_max": 0.0,
                          "t": {T: {"snn_rl": 0.0, "snn_ann": 0.0} for T in self.ts}} for h in net.outputs}
        self._a_rl: dict[str, np.ndarray] = {}
        self.images = 0

    def add_rate_limit(self, z: Mapping[str, np.ndarray], a_rl: Mapping[str, np.ndarray]) -> None:
        """The batch's rate-limit walk (sim.layer_forward(net, x)): clipping error; a_RL kept for add_checkpoint."""
        self._a_rl = {name: a_rl[name] for name in [l.name for l in self.neuron_layers] + list(self.net.outputs)}
        for layer in self.neuron_layers:
            s = self.sums[layer.name]
            zz = z[layer.name].astype(np.float64)
            f = unclipped(layer, zz)
            diff = np.abs(f - rate_limit(layer, zz))
            s.values += diff.size
            s.rl_abs += float(np.abs(a_rl[layer.name]).sum(dtype=np.float64))
            s.clip_abs += float(diff.sum())
            s.clipped += int(np.count_nonzero(diff))
        self.images += next(iter(a_rl.values())).shape[0]

    def add_checkpoint(self, T: int, state: Mapping[str, Mapping[str, Any]]) -> None:
        """The SNN's state after T steps on the batch of the last add_rate_limit: local split and accumulated
        error per layer (simulate(record_layers=True)'s on_checkpoint state)."""
        for layer in self.neuron_layers:
            name = layer.name
            d = state[name]
            phi, e, mask = split_layer(d, T)
            ae = np.abs(e)
            rec = self.sums[name].t[T]
            rec["quantization"] += float(ae[mask].sum())
            rec["unevenness"] += float(ae[~mask].sum())
            rec["uneven"] += int(np.count_nonzero(~mask & (ae > BAND_TOLERANCE * d["theta"])))
            rec["accumulated"] += float(np.abs(phi - self._a_rl[name].reshape(e.shape)).sum())
            if mask.any():
                v_init = self.v_init if self.v_init is not None else float(layer.neuron.v_init)
                ratio = (ae / d["theta"])[mask].max() / quantization_bound(layer, T, v_init)
                rec["bound_ratio"] = max(rec["bound_ratio"], float(ratio))

    def add_heads(self, T: int, snn: Mapping[str, np.ndarray], ann: Mapping[str, np.ndarray] | None,
                  first: bool) -> None:
        """Decoded heads of the SNN at T vs the rate limit and (when known) the ANN's head tensors."""
        for h in self.net.outputs:
            rec = self.heads[h]
            rl = self._a_rl[h].astype(np.float64)
            out = np.asarray(snn[h], dtype=np.float64)
            if first:
                rec["rl_abs"] += float(np.abs(rl).sum())
                if ann is not None:
                    a = np.asarray(ann[h], dtype=np.float64).reshape(rl.shape)
                    rec["ann_abs"] += float(np.abs(a).sum())
                    rec["rl_ann"] += float(np.abs(rl - a).sum())
                    rec["rl_ann_max"] = max(rec["rl_ann_max"], float(np.abs(rl - a).max()))
                    rec["ann_max"] = max(rec["ann_max"], float(np.abs(a).max()))
            rec["t"][T]["snn_rl"] += float(np.abs(out - rl).sum())
            if ann is not None:
                rec["t"][T]["snn_ann"] += float(np.abs(out - np.asarray(ann[h], np.float64).reshape(rl.shape)).sum())

    def result(self) -> dict[str, Any]:
        """Per neuron layer and per head, every measure normalized as the module docstring says."""
        layers = []
        for layer in self.neuron_layers:
            s = self.sums[layer.name]
            den = max(s.rl_abs, 1e-30)
            rows = []
            for T in self.ts:
                r = s.t[T]
                q, u = r["quantization"] / den, r["unevenness"] / den
                rows.append({"T": T, "quantization": q, "unevenness": u, "local_total": q + u,
                             "accumulated": r["accumulated"] / den,
                             "uneven_fraction": r["uneven"] / max(1, s.values),
                             "quantization_bound_ratio": r["bound_ratio"]})
            layers.append({"layer": layer.name, "kind": layer.neuron.kind, "values": s.values,
                           "mean_abs_rate_limit": s.rl_abs / max(1, s.values), "clipping": s.clip_abs / den,
                           "clipped_fraction": s.clipped / max(1, s.values), "T": rows})
        heads = []
        for h, rec in self.heads.items():
            has_ann = rec["ann_abs"] > 0
            rows = [{"T": T, "snn_vs_rate_limit": rec["t"][T]["snn_rl"] / max(rec["rl_abs"], 1e-30),
                     "snn_vs_ann": rec["t"][T]["snn_ann"] / rec["ann_abs"] if has_ann else None} for T in self.ts]
            heads.append({"layer": h, "rate_limit_vs_ann": rec["rl_ann"] / rec["ann_abs"] if has_ann else None,
                          "rate_limit_vs_ann_max": rec["rl_ann_max"] / rec["ann_max"] if has_ann else None,
                          "T": rows})
        bound_ok = all(r["quantization_bound_ratio"] <= 1 + BOUND_TOLERANCE for l in layers for r in l["T"])
        return {"images": self.images, "layers": layers, "heads": heads, "quantization_bound_holds": bound_ok}
