"""Event-driven synapses of the NumPy simulator (backends/numpy/event.py): the same numbers as the dense path."""

from __future__ import annotations

import numpy as np
import pytest

from test_c_backend import OPS, assert_close, assert_same, images, net_for, yolo_like
from test_numpy_sim import random_net

from snnc.backends.numpy import event, ops
from snnc.backends.numpy.sim import simulate
from snnc.ir.errors import SnncError
from snnc.ir.network import Layer


def spikes(rng, shape, rate):
    x = (rng.random(shape) < rate).astype(np.int8)
    x[rng.random(shape) < 0.3] *= -1
    return x


LAYERS = [  # (op, c_in, c_out, input hw, kernel, stride, pads, dilation)
    ("conv", 5, 7, 9, 3, 1, [1, 1, 1, 1], 1),
    ("conv", 5, 7, 10, 3, 2, [1, 0, 1, 2], 1),
    ("conv", 4, 3, 11, 3, 2, [0, 0, 0, 0], 2),
    ("conv", 6, 4, 8, 1, 1, [0, 0, 0, 0], 1),
    ("deconv", 6, 4, 7, 2, 2, [0, 0, 0, 0], 1),
    ("deconv", 6, 4, 7, 3, 2, [1, 1, 1, 1], 1),
]


def make_layer(rng, op, cin, cout, hw, k, s, pads, d):
    top, left, bottom, right = pads
    if op == "conv":
        w = rng.standard_normal((cout, cin, k, k)).astype(np.float32)
        oh = (hw + top + bottom - d * (k - 1) - 1) // s + 1
        ow = (hw + left + right - d * (k - 1) - 1) // s + 1
    else:
        w = rng.standard_normal((cin, cout, k, k)).astype(np.float32)
        oh = (hw - 1) * s - top - bottom + d * (k - 1) + 1
        ow = (hw - 1) * s - left - right + d * (k - 1) + 1
    attrs = {"strides": [s, s], "pads": pads, "dilations": [d, d]}
    return Layer("l", op, ["x"], (cout, oh, ow), weight=w, bias=rng.standard_normal(cout).astype(np.float32),
                 attrs=attrs)


@pytest.mark.parametrize("case", range(len(LAYERS)))
def test_event_op_equals_dense_op(case):
    rng = np.random.default_rng(case)
    op, cin = LAYERS[case][0], LAYERS[case][1]
    layer = make_layer(rng, *LAYERS[case])
    hw = LAYERS[case][3]
    for rate in (0.02, 0.3, 1.0):
        x = spikes(rng, (4, cin, hw, hw), rate)
        dense = ops.make_op(layer, layer.weight, layer.bias, 1)(x)
        ev = event.EventSynapses(layer, layer.weight, layer.bias, (cin, hw, hw))(x)
        assert ev.shape == dense.shape and ev.dtype == np.float32
        np.testing.assert_allclose(ev, dense, rtol=1e-5, atol=1e-5 * float(np.abs(dense).max()))
        w_int = np.round(layer.weight * 1000).astype(np.int64)
        exact = ops.ExactIntOp(layer, w_int, 1, 1)(x)
        assert np.array_equal(event.EventSynapses(layer, w_int, None, (cin, hw, hw))(x), exact)


def test_dense_layer_and_pieces(monkeypatch):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((6, 40)).astype(np.float32)
    layer = Layer("d", "dense", ["x"], (6,), weight=w, bias=np.ones(6, np.float32))
    x = spikes(rng, (9, 40), 0.2)
    x[4] = 0  # a sample without any spike
    np.testing.assert_allclose(event.EventSynapses(layer, w, layer.bias, (40,))(x),
                               ops.make_op(layer, w, layer.bias, 1)(x), rtol=1e-5, atol=1e-5)
    # a batch larger than EVENT_BYTES runs in pieces with the same result
    conv = make_layer(rng, *LAYERS[0])
    xs = spikes(rng, (5, 5, 9, 9), 0.2)
    whole = event.EventSynapses(conv, conv.weight, conv.bias, (5, 9, 9))(xs)
    monkeypatch.setattr(event, "EVENT_BYTES", 1)
    assert np.array_equal(event.EventSynapses(conv, conv.weight, conv.bias, (5, 9, 9))(xs), whole)


def test_auto_chooses_per_sample():
    """Samples below the rate take the event path, the others the dense one; each equals its path alone."""
    rng = np.random.default_rng(5)
    layer = make_layer(rng, *LAYERS[0])
    w_int = np.round(layer.weight * 1000).astype(np.int64)
    dense = ops.ExactIntOp(layer, w_int, 1, 1)
    ev = event.EventSynapses(layer, w_int, None, (5, 9, 9))
    x = np.concatenate([spikes(rng, (3, 5, 9, 9), 0.01), spikes(rng, (3, 5, 9, 9), 0.5)])
    auto = event.AutoSynapses(dense, ev, max_rate=0.05)
    assert np.array_equal(auto(x), dense(x))
    assert (auto.events, auto.samples) == (3, 6)
    assert auto.bound == dense.bound  # the dense operator's attributes stay visible
    assert auto(x.astype(np.float32)).dtype == np.int64 and auto.samples == 6  # not spikes: dense, not counted


@pytest.mark.parametrize("case", [c for c in OPS if c not in ("conv_on_input", "pad_on_input")])
def test_single_ops_fixed_bit_exact_float_close(case):
    net = net_for(case, memory=True)
    x = images(net.input_layers[0].shape, seed=1)
    for mode in ("fixed", "float"):
        ref = simulate(net, x, [3, 6], mode=mode, event="off", progress=False)
        res = simulate(net, x, [3, 6], mode=mode, event="on", progress=False)
        if mode == "fixed":
            assert_same(res, ref.outputs, ref.spike_counts)
            for t in ref.extra["sums"]:
                for n, v in ref.extra["sums"][t].items():
                    assert np.array_equal(res.extra["sums"][t][n], v)
        else:
            assert_close(res, ref)


@pytest.mark.parametrize("build", ["yolo_like", "random_if", "random_signed"])
def test_networks(build):
    if build == "yolo_like":
        net = yolo_like()
        x = images(net.input_layers[0].shape, seed=2)
    else:
        net, x = random_net(seed=4, kind="IF" if build == "random_if" else "SignedIF")
    ts = [16, 48]
    for mode in ("fixed", "float"):
        ref = simulate(net, x, ts, mode=mode, event="off", progress=False)
        for ev in ("on", "auto"):
            res = simulate(net, x, ts, mode=mode, event=ev, progress=False)
            if mode == "fixed":
                assert_same(res, ref.outputs, ref.spike_counts)
            else:
                assert_close(res, ref)
    # rate encoding: the input layer's spikes take the event path too
    ref = simulate(net, x, 16, mode="fixed", encoding="rate", event="off", progress=False)
    assert_same(simulate(net, x, 16, mode="fixed", encoding="rate", event="on", progress=False),
                ref.outputs, ref.spike_counts)


def test_bad_event_value():
    net = net_for("conv", memory=False)
    with pytest.raises(SnncError, match="event must be one of"):
        simulate(net, images(net.input_layers[0].shape), 4, event="sometimes", progress=False)


def test_without_scipy(monkeypatch):
    """scipy is optional: "auto" then keeps the dense operator, "on" is one clear error."""
    import sys

    rng = np.random.default_rng(6)
    layer = make_layer(rng, *LAYERS[0])
    dense = ops.make_op(layer, layer.weight, layer.bias, 1)
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.sparse", None)
    assert event.wrap(dense, layer, layer.weight, layer.bias, (5, 9, 9), "auto", True) is dense
    with pytest.raises(SnncError, match="needs scipy"):
        event.wrap(dense, layer, layer.weight, layer.bias, (5, 9, 9), "on", True)
