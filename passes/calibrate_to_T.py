"""calibrate_to_T: training-free correction of each neuron layer so that its SNN output at a target T matches
the rate-limit ANN on the calibration data (Li et al. 2021, "A free lunch from ANN", bias and potential
calibration). Active only with the option `target_T` (`--target-T`).

For neuron layers l in topological order, with every earlier layer already corrected, simulate the spiking
network up to l at T steps on the calibration inputs (compiler/spikesim.py) and compare the mean output over
the T steps, m_l = (1/T) sum_t out_l(t), with the rate-limit ANN's output r_l on the same inputs
(clip(z_l, 0, theta) for IF neurons, the neuron's own rate limit for signed and graded ones: what the SNN computes
as T -> infinity). Per output channel c, over images and positions:

    e_c = mean(r_l - m_l)                          the expected conversion error of channel c
    bias correction:      b_c <- b_c + e_c         a neuron in its linear range answers a shift of its input by
                                                   the same shift of its rate, so this removes the mean error
    potential correction: V(0) <- V(0) + T * e'    with e' the layer's mean error left after the bias
                                                   correction: T * e' is the charge the layer misses over T steps

Each correction is kept only if it lowers the layer's mean squared error against r_l (the one-step search of
the light pipeline, not the SGD of the paper's advanced pipeline). The potential correction is one value per
layer: the network's neurons hold V(0) as one fraction of theta per layer (`v_init`), clipped to [0, 1].

Approximation: the corrections are fitted on the calibration set at exactly T; at other T they are not the
best ones, and far above T they cost a small bias, since the rate limit of a shifted neuron is shifted too.
Exactness is given up on purpose (exact = False): the pass makes the SNN at T closer to the rate-limit ANN, not
the rate-limit ANN closer to the ANN.

Preconditions: the graph is normalized (channel_norm ran: neurons carry normalized=1), calibration data is given.
At most `calib_T_bytes` of spike trains are held per tensor: with large inputs only the first images are used.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs
from tqdm import tqdm

from snnc.compiler.graph import const_value, export_model, is_neuron, make_const, node_label, producer, run_model, \
    with_outputs
from snnc.compiler.ratelimit import neurons_to_activations
from snnc.compiler.registry import Pass, PassContext, register_pass
from snnc.compiler.spikesim import GraphSim
from snnc.ir.errors import SnncError

log = logging.getLogger(__name__)
CALIB_T_BYTES = 256 * 1024**2  # spike trains of the largest tensor, all images and steps together


def _images(x: np.ndarray, graph: gs.Graph, T: int) -> np.ndarray:
    largest = max(int(np.prod(t.shape[1:])) for t in graph.tensors().values()
                  if isinstance(t, gs.Variable) and t.shape and all(isinstance(d, int) for d in t.shape))
    n = max(1, min(len(x), CALIB_T_BYTES // (4 * T * largest)))
    if n < len(x):
        log.info("calibrate_to_T: %d of %d calibration images (spike trains of %d steps are held in memory)",
                 n, len(x), T)
    return x[:n]


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a - b) ** 2))


def _add_bias(graph: gs.Graph, conv: gs.Node, delta: np.ndarray) -> None:
    c_out = conv.outputs[0].shape[1]
    b = const_value(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2].name else None
    b = np.zeros(c_out, np.float32) if b is None else b.astype(np.float64)
    new = make_const(graph, conv.name + "_B_calT", (b + delta).astype(np.float32))
    if len(conv.inputs) > 2:
        conv.inputs[2] = new
    else:
        conv.inputs.append(new)


@register_pass
class CalibrateToT(Pass):
    name = "calibrate_to_T"
    summary = "only with --target-T: per-channel bias and per-layer V(0) fitted so the SNN at T matches the rate limit"
    exact = False  # changes the rate-limit function on purpose, to cut the error at one T

    def requires(self, graph: gs.Graph, ctx: PassContext) -> None:
        if ctx.options.target_T is None:
            return
        if ctx.calibration is None:
            raise SnncError("--target-T needs calibration images: pass --calib DIR")
        if any(is_neuron(n) and int(n.attrs.get("normalized", 0)) != 1 for n in graph.nodes):
            raise SnncError("calibrate_to_T runs after channel_norm (the neurons are not normalized)")

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        T = ctx.options.target_T
        neurons = [n for n in graph.nodes if is_neuron(n)]
        if T is None or not neurons:
            return graph
        if all(int(n.attrs.get("calibrated_T", 0)) == T for n in neurons):
            return graph  # idempotent: already calibrated to this T
        graph.toposort()
        x = _images(ctx.calibration, graph, T)
        ratelimit = neurons_to_activations(export_model(graph.copy()), clip=True)
        names = [n.outputs[0].name for n in neurons]
        targets = run_model(with_outputs(ratelimit, names), {graph.inputs[0].name: x.astype(np.float32)}, names)
        sim = GraphSim(graph, x, T)
        layers, bar = {}, tqdm(total=len(neurons), desc=f"calibrating to T={T}", unit="layer",
                               disable=not ctx.progress)
        for node in list(graph.nodes):
            if not is_neuron(node):
                sim.step(node)
                continue
            z = sim.values[node.inputs[0].name]
            r = targets[node.outputs[0].name]
            out = sim.neuron(node, z)
            before = _mse(out.mean(0), r)
            axes = (0, 2, 3) if r.ndim == 4 else (0,)
            e = (r - out.mean(0)).mean(axis=axes)
            shape = (1, 1, -1) + (1,) * (z.ndim - 3)
            out_b = sim.neuron(node, z + e.reshape(shape).astype(np.float32))
            err, bias_kept, v_shift = before, False, 0.0
            if _mse(out_b.mean(0), r) < before:
                out, err, bias_kept = out_b, _mse(out_b.mean(0), r), True
                z = z + e.reshape(shape).astype(np.float32)
                _add_bias(graph, producer(node.inputs[0]), e)
            v_init = float(node.attrs.get("v_init", 0.0))
            theta = float(np.mean(node.attrs.get("threshold", [1.0])))
            shifted = float(np.clip(v_init + T * float((r - out.mean(0)).mean()) / theta, 0.0, 1.0))
            if shifted != v_init:
                node.attrs["v_init"] = shifted
                out_p = sim.neuron(node, z)
                if _mse(out_p.mean(0), r) < err:
                    out, err, v_shift = out_p, _mse(out_p.mean(0), r), shifted - v_init
                else:
                    node.attrs["v_init"] = v_init
            node.attrs["calibrated_T"] = int(T)
            sim.step(node, out)
            layers[node.name] = {"mse_before": before, "mse_after": err, "bias": bias_kept,
                                 "bias_shift_mean": float(np.mean(e)) if bias_kept else 0.0, "v_init_shift": v_shift}
            log.debug("calibrate_to_T %s: mse %.3g -> %.3g", node_label(node), before, err)
            self.rewrites += int(bias_kept) + int(v_shift != 0.0)
            bar.update()
        bar.close()
        ctx.stats.setdefault(self.name, {}).update(T=int(T), images=int(len(x)), layers=layers)
        return graph
