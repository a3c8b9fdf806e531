"""channel_norm: data-based normalization, folding per-channel activation scales into weights and thresholds.

Run the ANN (every neuron replaced by its activation, onnxruntime) on calibration inputs; for each neuron
channel j take lambda_j, the p-th percentile of its activations (|a| for signed neurons; option
`percentile`, default 99.99; `norm=layer` takes one percentile over the whole layer; `norm=auto` chooses
per layer between the two and among the percentiles 99.9 / 99.99 / 100 by the error on held-out calibration
images, see `_choose`). Then, for every
convolution with input channels i and output channels j (Spiking YOLOv3 eq. 15, docs/methods.md section 3):

    W~[j, i] = W[j, i] * lambda_in[i] / lambda_out[j]        b~[j] = b[j] / lambda_out[j]      theta_j = 1

lambda_in comes from whatever produced the input: a neuron's lambdas, Concat's inputs' lambdas in channel order,
Pad, MaxPool (left by `--maxpool count`) and copy convolutions (nearest upsampling as a deconvolution: depthwise, 0/1 weights, no bias, no neuron)
pass them through untouched, the image has 1. A convolution with no neuron after it (a detection head, or a linear
1x1 left by maxpool_to_strided_conv) has lambda_out = 1: its output stays in the ANN's units, so the host graph
reads the same values. ConvTranspose weights (C_in, C_out/group, ...) get the same bookkeeping on their axes.
Neurons with a given threshold (Clip(0, lambda), QCFS) use that lambda instead of data.

Graded signed neurons (`--leaky graded`) take lambda from the positive part of their activations only, as the
split pair's positive IF neuron does, and a second lambda_n, by the same percentile rule, from the negative part
in input units, relu(-z) = relu(-a) / alpha, as the split pair's negative IF neuron does; the neuron gets
threshold_neg = lambda_n / lambda (its negative threshold in the normalized units where theta = 1).

Exactness: in the rate limit, neuron j computes clip(z_j, 0, lambda_j) in ANN units, so the pass is exact where
no activation exceeds lambda: with percentile 100 the rate-limit ANN equals the ANN on the calibration inputs.
Percentiles below 100 trade a clipping error (measured and reported, see compile's summary) for higher firing
rates. Layers with more than `samples` positions are subsampled (seeded) for the percentile; the maximum is
always exact.

Preconditions: neurons inserted (activations_to_neurons), calibration data given, no neuron output is a graph
output (heads must be linear convolutions). Idempotent: normalized neurons carry normalized=1 and are skipped.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs
from tqdm import tqdm

from snnc.ir.errors import SnncError, UnsupportedOpError
from snnc.compiler.graph import (
    const_value, export_model, is_graph_output, is_neuron, make_const, node_label, producer, run_model, sole_consumer,
    with_outputs,
)
from snnc.compiler.linear import is_copy_conv
from snnc.compiler.ratelimit import neuron_thresholds, neurons_to_activations
from snnc.compiler.registry import Pass, PassContext, register_pass

log = logging.getLogger(__name__)
EPS = 1e-8


class _Stats:
    """Per-channel running maximum and a bounded, seeded sample of values for percentiles."""

    def __init__(self, samples: int, seed: int = 0) -> None:
        self.samples = samples
        self.rng = np.random.default_rng(seed)
        self.max: np.ndarray | None = None
        self.parts: list[np.ndarray] = []

    def add(self, a: np.ndarray) -> None:
        flat = np.moveaxis(a, 1, 0).reshape(a.shape[1], -1)  # (C, N*H*W)
        m = flat.max(axis=1)
        self.max = m if self.max is None else np.maximum(self.max, m)
        if flat.shape[1] > self.samples:
            flat = flat[:, self.rng.choice(flat.shape[1], self.samples, replace=False)]
        self.parts.append(flat)

    def lambdas(self, percentile: float, per_channel: bool) -> np.ndarray:
        values = np.concatenate(self.parts, axis=1)
        if percentile >= 100:
            lam = self.max if per_channel else np.full_like(self.max, self.max.max())
        elif per_channel:
            lam = np.percentile(values, percentile, axis=1)
        else:
            lam = np.full(values.shape[0], np.percentile(values, percentile))
        # A channel silent on all calibration data: borrow the layer's scale so its weights stay finite.
        layer = float(np.max(lam)) if np.max(lam) > EPS else 1.0
        return np.where(lam > EPS, lam, layer).astype(np.float64)


AUTO_PERCENTILES = (99.9, 99.99, 100.0)  # the percentiles norm=auto chooses from (and the option's own)
AUTO_T = 32  # the T whose quantization error norm=auto weighs against clipping when no --target-T is given
SMALL_CALIBRATION = 16  # fewer images than this: warn that thresholds may not hold on other photos


def _choose(fit: _Stats, held: _Stats, percentiles: tuple[float, ...], T: int) -> tuple[str, float, dict]:
    """norm=auto for one layer: the (norm, percentile) whose thresholds, fitted on one part of the calibration
    images, give the smallest error on the other part: the clipping error there plus the quantization error of
    a neuron with that threshold at T steps (theta / T per spike, uniform: theta^2 / (12 T^2)), both relative
    to the held-out activations' mean square."""
    values = np.concatenate(held.parts, axis=1)  # (C, samples), held-out
    power = max(float(np.mean(values ** 2)), EPS)
    scores = {}
    for norm in ("channel", "layer"):
        for p in percentiles:
            lam = fit.lambdas(p, norm == "channel")
            clip = float(np.mean((values - np.minimum(values, lam[:, None])) ** 2))
            quant = float(np.mean(lam ** 2)) / (12.0 * T * T) * float(np.mean(values > 0))
            scores[f"{norm}@{p:g}"] = (clip + quant) / power
    best = min(scores, key=scores.get)
    norm, p = best.split("@")
    return norm, float(p), scores


def _merged(a: _Stats, b: _Stats) -> _Stats:
    out = _Stats(a.samples)
    out.max = np.maximum(a.max, b.max)
    out.parts = a.parts + b.parts
    return out


def _graded(n: gs.Node) -> bool:
    return n.op == "SignedIF" and int(n.attrs.get("graded", 0)) == 1


def _calibrate(graph: gs.Graph, neurons: list[gs.Node], ctx: PassContext,
               neg_lambdas: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-channel lambdas of every neuron; graded signed neurons' negative-side lambdas go into neg_lambdas."""
    need = [n for n in neurons if int(n.attrs.get("calibrated", 0)) == 0]
    lambdas = {n.name: np.broadcast_to(neuron_thresholds(n).astype(np.float64),
                                       (n.outputs[0].shape[1],)).copy() for n in neurons if n not in need}
    for n in neurons:  # a fine-tuned graded neuron (signed QCFS) brings its trained negative lambda too
        if n not in need and _graded(n):
            neg_lambdas[n.name] = np.broadcast_to(np.asarray(n.attrs["threshold_neg"], np.float64),
                                                  (n.outputs[0].shape[1],)).copy()
    if not need:
        return lambdas
    percentile = float(ctx.options.percentile)
    auto = ctx.options.norm == "auto"
    per_channel = ctx.options.norm == "channel"
    ann = neurons_to_activations(export_model(graph.copy()), clip=False)
    names = [n.outputs[0].name for n in need]
    ann = with_outputs(ann, names)
    x = ctx.calibration
    # norm=auto holds out every third image (at least one) to choose each layer's normalization on.
    held_out = np.arange(len(x)) % 3 == 2 if auto and len(x) >= 2 else np.zeros(len(x), bool)
    if auto and len(x) < 2:
        log.warning("--norm auto needs at least 2 calibration images to hold one out; using layer norm")
    if auto and len(x) < SMALL_CALIBRATION:
        log.warning("only %d calibration images: thresholds from so few photos may clip other photos; "
                    "use %d or more", len(x), SMALL_CALIBRATION)
    stats = {n: _Stats(ctx.options.calib_samples) for n in names}
    held = {n: _Stats(ctx.options.calib_samples) for n in names}
    neg_stats: dict[str, _Stats] = {}
    batch = ctx.options.calib_batch
    input_name = graph.inputs[0].name
    for start in tqdm(range(0, len(x), batch), desc="calibrating", unit="batch",
                      disable=not ctx.progress):
        outs = run_model(ann, {input_name: x[start:start + batch].astype(np.float32)}, names)
        mask = held_out[start:start + batch]
        for n in need:
            a = outs[n.outputs[0].name]
            if _graded(n):  # the positive side alone; the negative side (in z units) gets its own statistics
                neg_stats.setdefault(n.name, _Stats(ctx.options.calib_samples)).add(
                    np.maximum(-a, 0) / float(n.attrs["alpha"]))
                a = np.maximum(a, 0)
            elif n.op == "SignedIF":
                a = np.abs(a)
            if mask.any():
                held[n.outputs[0].name].add(a[mask])
            if not mask.all():
                stats[n.outputs[0].name].add(a[~mask])
    summary = {}
    for n in need:
        st = stats[n.outputs[0].name]
        norm, p = ("channel" if per_channel else "layer"), percentile
        if auto:
            scores = None
            if held_out.any():
                T = int(ctx.options.target_T or AUTO_T)
                cands = tuple(sorted(set(AUTO_PERCENTILES) | {percentile}))
                norm, p, scores = _choose(st, held[n.outputs[0].name], cands, T)
                st = _merged(st, held[n.outputs[0].name])
            else:
                norm = "layer"
        lam = st.lambdas(p, norm == "channel")
        lambdas[n.name] = lam
        if n.name in neg_stats:  # graded: the negative side's threshold by the same rule as the positive side's
            neg_lambdas[n.name] = neg_stats[n.name].lambdas(p, norm == "channel")
        values = np.concatenate(st.parts, axis=1)
        summary[n.name] = {"lambda_min": float(lam.min()), "lambda_median": float(np.median(lam)),
                           "lambda_max": float(lam.max()), "max_activation": float(st.max.max()),
                           "clipped_fraction": float((values > lam[:, None]).mean())}
        if auto:
            summary[n.name].update(norm=norm, percentile=p)
            if scores:
                summary[n.name]["scores"] = {k: round(v, 6) for k, v in scores.items()}
    ctx.stats.setdefault("channel_norm", {}).update(
        percentile=percentile, norm=ctx.options.norm, images=int(len(x)), layers=summary)
    return lambdas


def _lambda_in(t: gs.Tensor, lambdas: dict[str, np.ndarray], graph: gs.Graph) -> np.ndarray:
    p = producer(t)
    if p is None:
        return np.ones(t.shape[1])
    if is_neuron(p):
        return lambdas[p.name]
    if p.op == "Concat":
        if int(p.attrs.get("axis", 1)) not in (1, -3):
            raise UnsupportedOpError(f"{node_label(p)}: only channel concatenation is supported")
        return np.concatenate([_lambda_in(s, lambdas, graph) for s in p.inputs])
    if p.op in ("Pad", "MaxPool") or is_copy_conv(graph, p):  # MaxPool (--maxpool count): per channel, max(l x) = l max(x)
        return _lambda_in(p.inputs[0], lambdas, graph)
    if p.op in ("Conv", "ConvTranspose"):
        return np.ones(t.shape[1])  # a linear conv: its output is in ANN units
    raise UnsupportedOpError(f"{node_label(p)} feeds a convolution; channel_norm cannot track scales through it")


def _rescale(conv: gs.Node, lam_in: np.ndarray, lam_out: np.ndarray, graph: gs.Graph) -> None:
    w = const_value(conv.inputs[1])
    if w is None:
        raise UnsupportedOpError(f"{node_label(conv)}: weights are not constant")
    dtype = w.dtype
    w = w.astype(np.float64)
    group = int(conv.attrs.get("group", 1))
    if conv.op == "Conv":
        c_out, c_in_g = w.shape[:2]
        per = c_out // group
        for g in range(group):
            rows = slice(g * per, (g + 1) * per)
            w[rows] *= lam_in[g * c_in_g:(g + 1) * c_in_g][None, :, None, None]
            w[rows] /= lam_out[rows][:, None, None, None]
    else:
        c_in, c_out_g = w.shape[:2]
        per_in = c_in // group
        w *= lam_in[:, None, None, None]
        for g in range(group):
            w[g * per_in:(g + 1) * per_in] /= lam_out[g * c_out_g:(g + 1) * c_out_g][None, :, None, None]
    conv.inputs[1] = make_const(graph, conv.name + "_W_norm", w.astype(dtype))
    if len(conv.inputs) > 2:
        b = const_value(conv.inputs[2]).astype(np.float64)
        conv.inputs[2] = make_const(graph, conv.name + "_B_norm", (b / lam_out).astype(dtype))


@register_pass
class ChannelNorm(Pass):
    name = "channel_norm"
    summary = "per-channel (or layer) activation percentiles from calibration data folded into weights; theta=1"
    exact = False  # exact in the rate limit at percentile 100 on the calibration data

    def requires(self, graph: gs.Graph, ctx: PassContext) -> None:
        uncalibrated = [n for n in graph.nodes if is_neuron(n) and int(n.attrs.get("calibrated", 0)) == 0
                        and int(n.attrs.get("normalized", 0)) == 0]
        if uncalibrated and ctx.calibration is None:
            raise SnncError("channel_norm needs calibration images: pass --calib DIR (a folder of jpg/png), "
                            "or --calib-random N to calibrate on random inputs")

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        neurons = [n for n in graph.nodes if is_neuron(n)]
        done = [n for n in neurons if int(n.attrs.get("normalized", 0)) == 1]
        if not neurons or len(done) == len(neurons):
            return graph
        if done:
            raise SnncError("channel_norm: the graph is partly normalized; start from the ANN")
        for n in neurons:
            if sole_consumer(graph, n.inputs[0]) is not n:
                raise UnsupportedOpError(f"{node_label(n)}: its input convolution has other consumers too; "
                                         "channel_norm needs the neuron to be the only one")
            if is_graph_output(graph, n.outputs[0]):
                raise UnsupportedOpError(f"{node_label(n)} is a network output; detection heads must be linear "
                                         "convolutions (their membrane potential is the output)")
        neg_lambdas: dict[str, np.ndarray] = {}
        lambdas = _calibrate(graph, neurons, ctx, neg_lambdas)
        for conv in [n for n in graph.nodes if n.op in ("Conv", "ConvTranspose") and not is_copy_conv(graph, n)]:
            y = conv.outputs[0]
            nxt = sole_consumer(graph, y)
            lam_out = lambdas[nxt.name] if nxt is not None and is_neuron(nxt) else np.ones(y.shape[1])
            _rescale(conv, _lambda_in(conv.inputs[0], lambdas, graph), lam_out, graph)
        for n in neurons:
            n.attrs["threshold"] = [1.0]
            n.attrs["normalized"] = 1
            n.attrs["lambda"] = [float(v) for v in lambdas[n.name]]
            if n.name in neg_lambdas:  # graded: theta_n in the positive side's normalized units (theta = 1)
                n.attrs["threshold_neg"] = [float(v) for v in neg_lambdas[n.name] / lambdas[n.name]]
            elif _graded(n):
                raise SnncError(f"{node_label(n)}: a graded signed neuron needs calibration data for its "
                                "negative threshold")
        self.rewrites = len(neurons)
        return graph
