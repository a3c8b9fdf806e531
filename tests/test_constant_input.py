"""The constant input current: under direct encoding the layers fed by the image alone get the same synaptic input
every step, so the backends compute it once per image; that path must equal the per-step one (`constant_input=
False`) bit for bit in fixed point. The Lava backend's test is in test_lava_backend.py (Python 3.10). The energy
estimate counts those MACs once: tests/test_evaluation.py::test_sops_by_hand."""

from __future__ import annotations

import numpy as np
import pytest

from snnc.backends import get_backend
from snnc.ir.network import Layer, Network, Neuron


def _conv(name, src, c_in, c_out, hw, rng, kind="IF", memory=True, pads=(1, 1, 1, 1), k=3):
    h, w = hw
    oh, ow = h + pads[0] + pads[2] - k + 1, w + pads[1] + pads[3] - k + 1
    weight = rng.normal(0, 1.5 / np.sqrt(c_in * k * k), (c_out, c_in, k, k)).astype(np.float32)
    neuron = None
    if kind is not None:
        neuron = Neuron(kind, rng.uniform(0.3, 1.0, c_out).astype(np.float32), alpha=0.1 if kind == "SignedIF" else 0,
                        v_init=0.5, memory=memory and kind == "IF")
    return Layer(name, "conv", [src], (c_out, oh, ow), weight, rng.normal(0, 0.2, c_out).astype(np.float32),
                 {"strides": [1, 1], "pads": list(pads), "dilations": [1, 1], "group": 1}, neuron)


def constant_net(seed: int = 0) -> Network:
    """Two layers on the image (one through an edge pad), a concat with it, spiking layers and a linear head."""
    rng = np.random.default_rng(seed)
    layers = [Layer("x", "input", [], (3, 8, 8)),
              _conv("c0", "x", 3, 6, (8, 8), rng),
              Layer("p", "pad", ["x"], (3, 9, 9), attrs={"pads": [0, 0, 1, 1], "mode": "edge"}),
              _conv("c1", "p", 3, 4, (9, 9), rng, kind="SignedIF", pads=(0, 0, 0, 0), k=2),
              Layer("cat", "concat", ["c0", "c1"], (10, 8, 8), attrs={"axis": 0}),
              _conv("c2", "cat", 10, 8, (8, 8), rng, memory=False),
              _conv("head", "c2", 8, 5, (8, 8), rng, kind=None, pads=(0, 0, 0, 0), k=1)]
    return Network(layers, ["head"], input_encoding={"kind": "direct", "scale": 1 / 255, "max_value": 1.0})


def _image(batch: int = 2) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (batch, 3, 8, 8)).astype(np.float32) / 255


def _same(a, b) -> None:
    for t in a.extra["sums"]:
        for k in a.extra["sums"][t]:
            np.testing.assert_array_equal(a.extra["sums"][t][k], b.extra["sums"][t][k])
    for k in a.spike_counts:
        np.testing.assert_array_equal(a.spike_counts[k], b.spike_counts[k])


@pytest.mark.parametrize("mode", ["fixed", "float"])
def test_numpy_constant_current_equals_per_step(mode):
    net, x = constant_net(), _image()
    be = get_backend("numpy")
    const = be.simulate(net, x, [5, 24], mode=mode, threads=1)
    step = be.simulate(net, x, [5, 24], mode=mode, threads=1, constant_input=False)
    assert step.extra["encoding"] == "explicit" and const.extra["encoding"] == "direct"
    assert sum(int(v.sum()) for v in const.spike_counts.values()) > 0
    if mode == "fixed":
        _same(const, step)
    for t in (5, 24):  # float: onnxruntime gives a sample the same result whatever the batch it shares
        np.testing.assert_array_equal(const.outputs[t]["head"], step.outputs[t]["head"])


def test_c_constant_current_equals_per_step_and_numpy():
    net, x = constant_net(), _image()
    c = get_backend("c")
    const = c.simulate(net, x, [5, 24], mode="fixed")
    step = c.simulate(net, x, [5, 24], mode="fixed", constant_input=False)
    ref = get_backend("numpy").simulate(net, x, [5, 24], mode="fixed", threads=1)
    for res in (const, step):
        for t in (5, 24):
            np.testing.assert_array_equal(res.extra["raw_sums"][t]["head"], ref.extra["sums"][t]["head"])
        for k in ref.spike_counts:
            np.testing.assert_array_equal(res.spike_counts[k], ref.spike_counts[k])


def test_c_per_step_path_is_generated_without_the_input_guard():
    from snnc.backends.c.generate import render

    net = constant_net()
    assert b"if (c->input_changed)" in render(net, "fixed").files["snn_model.c"]
    assert b"if (c->input_changed)" not in render(net, "fixed", constant_input=False).files["snn_model.c"]
