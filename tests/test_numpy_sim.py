"""The NumPy reference simulator: hand-computed spike trains, rate limits, convergence, chunking, fixed point."""

from __future__ import annotations

import numpy as np
import pytest

from snnc.backends import get_backend
from snnc.backends.numpy import NumpyBackend, rate_limit_forward, simulate
from snnc.backends.numpy import ops as numpy_ops
from snnc.backends.numpy import sim as numpy_sim
from snnc.ir.errors import SnncError
from snnc.ir.fixedpoint import quantize
from snnc.ir.network import Layer, Network, Neuron

# ---- small networks ---------------------------------------------------------------------------------------------


def single_neuron(kind="IF", theta=1.0, alpha=0.1, v_init=0.0, weights=((1.0,),), scale=1.0,
                  memory=False) -> Network:
    """input (n,) -> dense -> one neuron per row of `weights`."""
    w = np.asarray(weights, np.float32)
    neuron = Neuron(kind, np.full(w.shape[0], theta, np.float32), alpha=alpha if kind == "SignedIF" else 0.0,
                    v_init=v_init, memory=memory)
    layers = [Layer("x", "input", [], (w.shape[1],)),
              Layer("n", "dense", ["x"], (w.shape[0],), weight=w, neuron=neuron)]
    return Network(layers, ["n"], input_encoding={"kind": "direct", "scale": scale})


def conv_attrs(stride=1, pad=0, group=1, **extra):
    return {"strides": [stride, stride], "pads": [pad] * 4, "dilations": [1, 1], "group": group, **extra}


def random_net(seed=0, kind="IF", size=12, alpha=0.1, v_init=0.5, percentile=99.0, batch=3):
    """conv, strided conv, grouped deconv, concat, edge pad, conv, linear 1x1 head and a linear dense head.

    Thresholds: layer-wise data-based normalization on the unclipped ANN (percentile of |activation|).
    Returns (net, x) with x a batch of random images in [0, 1].
    """
    rng = np.random.default_rng(seed)

    def w(*s):
        return (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32)

    def b(c):
        return (rng.standard_normal(c) * 0.1).astype(np.float32)

    h = size
    layers = [
        Layer("x", "input", [], (3, h, h)),
        Layer("c1", "conv", ["x"], (8, h, h), w(8, 3, 3, 3), b(8), conv_attrs(1, 1)),
        Layer("c2", "conv", ["c1"], (8, h // 2, h // 2), w(8, 8, 3, 3), b(8), conv_attrs(2, 1)),
        Layer("up", "deconv", ["c2"], (8, h, h), w(8, 4, 2, 2) * 2, b(8), conv_attrs(2, 0, 2, output_padding=[0, 0])),
        Layer("cat", "concat", ["c1", "up"], (16, h, h), attrs={"axis": 0}),
        Layer("pad", "pad", ["cat"], (16, h + 2, h + 2), attrs={"pads": [1, 1, 1, 1], "mode": "edge"}),
        Layer("c3", "conv", ["pad"], (8, h, h), w(8, 16, 3, 3), b(8), conv_attrs(1, 0)),
        Layer("head", "conv", ["c3"], (6, h, h), w(6, 8, 1, 1), b(6), conv_attrs(1, 0)),
        Layer("fc", "dense", ["c2"], (5,), w(5, 8 * (h // 2) ** 2), b(5)),
    ]
    net = Network(layers, ["head", "fc"], input_encoding={"kind": "direct", "scale": 1 / 255})
    x = rng.random((batch, 3, h, h)).astype(np.float32)
    spiking = ("c1", "c2", "up", "c3")
    for name in spiking:
        net.layer(name).neuron = Neuron(kind, np.full(net.layer(name).shape[0], 1e30, np.float32),
                                        alpha=alpha if kind == "SignedIF" else 0.0, v_init=v_init)
    acts = rate_limit_forward(net, x, all_layers=True)
    for name in spiking:
        lam = max(float(np.percentile(np.abs(acts[name]), percentile)), 1e-3)
        net.layer(name).neuron.threshold = np.full(net.layer(name).shape[0], lam, np.float32)
    return net, x


def spike_times(res, layer="n", sample=0) -> list[int]:
    """Steps at which the cumulative spike count grew (needs a checkpoint at every step)."""
    ts = sorted(res.extra["spike_counts_at"])
    counts = [0] + [int(res.extra["spike_counts_at"][t][layer][sample]) for t in ts]
    return [t for t, a, b in zip(ts, counts, counts[1:]) if b > a]


def rel_err(out: dict, ref: dict) -> float:
    return max(float(np.abs(out[k] - ref[k]).max() / np.abs(ref[k]).max()) for k in ref)


# ---- step-by-step references (slow, obviously correct) ----------------------------------------------------------


def ref_conv(x, w, attrs):
    """ONNX Conv on one sample (C, H, W), any numeric dtype (int64 stays exact)."""
    top, left, bottom, right = attrs["pads"]
    sh, sw = attrs["strides"]
    dh, dw = attrs["dilations"]
    g = attrs["group"]
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right)))
    o, cg, kh, kw = w.shape
    ho = (xp.shape[1] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[2] - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((o, ho, wo), np.result_type(x, w))
    og = o // g
    for gi in range(g):
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
                cols = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
                patch = xp[gi * cg:(gi + 1) * cg, rows, cols]
                out[gi * og:(gi + 1) * og] += np.einsum("chw,oc->ohw", patch, w[gi * og:(gi + 1) * og, :, i, j])
    return out


def ref_deconv(x, w, attrs, out_shape):
    """ONNX ConvTranspose on one sample by scattering every input pixel's kernel."""
    top, left = attrs["pads"][:2]
    sh, sw = attrs["strides"]
    dh, dw = attrs["dilations"]
    g = attrs["group"]
    c_in, og, kh, kw = w.shape
    _, h, wd = x.shape
    full = np.zeros((og * g, (h - 1) * sh + dh * (kh - 1) + 1 + out_shape[1],
                     (wd - 1) * sw + dw * (kw - 1) + 1 + out_shape[2]), np.result_type(x, w))
    cg = c_in // g
    for gi in range(g):
        for i in range(kh):
            for j in range(kw):
                contrib = np.einsum("chw,co->ohw", x[gi * cg:(gi + 1) * cg], w[gi * cg:(gi + 1) * cg, :, i, j])
                rows = slice(i * dh, i * dh + sh * (h - 1) + 1, sh)
                cols = slice(j * dw, j * dw + sw * (wd - 1) + 1, sw)
                full[gi * og:(gi + 1) * og, rows, cols] += contrib
    return full[:, top:top + out_shape[1], left:left + out_shape[2]]


def ref_synapses(layer, x, w):
    if layer.op == "conv":
        return ref_conv(x, w, layer.attrs)
    if layer.op == "deconv":
        return ref_deconv(x, w, layer.attrs, layer.shape)
    return w @ x.reshape(-1)


def ref_route(layer, vals):
    if layer.op == "concat":
        return np.concatenate([vals[s] for s in layer.inputs], axis=0)
    top, left, bottom, right = layer.attrs["pads"]
    return np.pad(vals[layer.inputs[0]], ((0, 0), (top, bottom), (left, right)), mode=layer.attrs["mode"])


def reference_fixed(net, x, T, weight_bits=16):
    """Integer step-by-step simulation of one sample, as sim.py's docstring specifies: int64 sums of outputs."""
    q = quantize(net, weight_bits)
    x_int = np.round(x.astype(np.float64) / net.input_encoding["scale"]).astype(np.int64)
    per = lambda v, l: np.broadcast_to(v.reshape((-1,) + (1,) * (len(l.shape) - 1)), l.shape)
    V = {l.name: per(q[l.name].v0_int, l).copy() for l in net.neuron_layers}
    sums = {o: np.zeros(net.layer(o).shape, np.int64) for o in net.outputs}
    for _ in range(T):
        vals = {}
        for l in net.layers:
            if l.op == "input":
                out = x_int
            elif l.op in ("pad", "concat"):
                out = ref_route(l, vals)
            else:
                ql = q[l.name]
                z = ref_synapses(l, vals[l.inputs[0]], ql.w_int.astype(np.int64)) + per(ql.b_int, l)
                if l.neuron is None:
                    out = z
                else:
                    v = V[l.name]
                    v += z
                    pos = v >= per(ql.theta_int, l)
                    neg = v <= -per(ql.theta_neg_int, l) if ql.theta_neg_int is not None else np.zeros_like(pos)
                    v -= pos * per(ql.theta_int, l)
                    if ql.theta_neg_int is not None:
                        v += neg * per(ql.theta_neg_int, l)
                    out = pos.astype(np.int64) - neg
            vals[l.name] = out
        for o in net.outputs:
            sums[o] += vals[o]
    return sums


def reference_float(net, x, T):
    """float64 step-by-step simulation of one sample straight from docs/neurons.md: decoded outputs."""
    V = {l.name: np.full(l.shape, 0.0) + l.neuron.v_init * l.neuron.threshold.astype(np.float64).reshape(
        (-1,) + (1,) * (len(l.shape) - 1)) for l in net.neuron_layers}
    sums = {o: np.zeros(net.layer(o).shape) for o in net.outputs}
    for _ in range(T):
        vals = {}
        for l in net.layers:
            if l.op == "input":
                out = x.astype(np.float64)
            elif l.op in ("pad", "concat"):
                out = ref_route(l, vals)
            else:
                z = ref_synapses(l, vals[l.inputs[0]], l.weight.astype(np.float64))
                if l.bias is not None:
                    z = z + l.bias.reshape((-1,) + (1,) * (len(l.shape) - 1))
                if l.neuron is None:
                    out = z
                else:
                    th = l.neuron.threshold.astype(np.float64).reshape((-1,) + (1,) * (len(l.shape) - 1))
                    v = V[l.name]
                    v += z
                    pos = v >= th
                    neg = (v <= -th / l.neuron.alpha) if l.neuron.kind == "SignedIF" else np.zeros_like(pos)
                    v -= pos * th
                    v += neg * th / (l.neuron.alpha or 1.0)
                    out = (pos.astype(np.float64) - neg) * th
            vals[l.name] = out
        for o in net.outputs:
            sums[o] += vals[o]
    return {o: s / T for o, s in sums.items()}


# ---- the registry -----------------------------------------------------------------------------------------------


def test_registered_as_numpy():
    backend = get_backend("numpy")
    assert isinstance(backend, NumpyBackend) and backend.name == "numpy"


# ---- hand-computed spike trains ---------------------------------------------------------------------------------


@pytest.mark.parametrize("v_init, expected", [
    # V: .375 .75 1.125* .5 .875 1.25* .625 1.0* | then the same 8 steps again (V back to 0 after step 8)
    (0.0, [3, 6, 8, 11, 14, 16, 19, 22, 24]),
    # V: .875 1.25* .625 1.0* .375 .75 1.125* .5 .875 1.25* .625 1.0* ... (period 8 from step 4)
    (0.5, [2, 4, 7, 10, 12, 15, 18, 20, 23]),
])
def test_if_constant_input_spike_times(v_init, expected):
    """IF, theta 1, z = 0.375 every step (exact in binary, so float32 hits V = 1.0 exactly)."""
    net = single_neuron("IF", v_init=v_init)
    res = simulate(net, np.array([[0.375]]), list(range(1, 25)), progress=False)
    assert spike_times(res) == expected
    assert res.outputs[24]["n"][0, 0] == pytest.approx(len(expected) / 24)
    assert res.outputs[8]["n"][0, 0] == pytest.approx(sum(t <= 8 for t in expected) / 8)


@pytest.mark.parametrize("v_init, expected", [
    # z = 0.3: V .3 .6 .9 1.2* .5 .8 1.1* .4 .7 1.0* (V = 0 after step 10, period 10)
    (0.0, [4, 7, 10, 14, 17, 20]),
    # V .8 1.1* .4 .7 1.0* .3 .6 .9 1.2* .5 | .8 1.1* .4 .7 1.0* ...
    (0.5, [2, 5, 9, 12, 15, 19]),
])
def test_if_fixed_point_hits_the_threshold_exactly(v_init, expected):
    """z = 0.3 is no binary fraction; in fixed point (x = 3 units of 0.1) V = theta is hit exactly at steps 10, 20."""
    net = single_neuron("IF", v_init=v_init, scale=0.1)
    res = simulate(net, np.array([[0.3]]), list(range(1, 21)), mode="fixed", progress=False)
    assert spike_times(res) == expected
    # float mode agrees up to the first exact boundary hit
    res_f = simulate(net, np.array([[0.3]]), list(range(1, 10)), progress=False)
    assert spike_times(res_f) == [t for t in expected if t < 10]


def test_signed_if_negative_spikes_reset_by_theta_over_alpha():
    """SignedIF theta 1, alpha 0.1 (negative threshold -10), z = -4 every step.

    V: -4 -8 -12* -> -2 | -6 -10* -> 0 | -4 -8 -12* -> -2 | -6 -10* -> 0 ...  -1 spikes at 3, 5, 8, 10, 13, 15:
    2 spikes every 5 steps, mean output -0.4 = alpha * z. (Resetting by theta would give -11 after the first spike
    and a -1 spike every ~1.3 steps.)
    """
    net = single_neuron("SignedIF", alpha=0.1)
    res = simulate(net, np.array([[-4.0]]), list(range(1, 16)), progress=False)
    assert spike_times(res) == [3, 5, 8, 10, 13, 15]
    assert res.outputs[15]["n"][0, 0] == pytest.approx(-6 / 15)
    assert res.outputs[10]["n"][0, 0] == pytest.approx(-0.4)
    fixed = simulate(net, np.array([[-4.0]]), list(range(1, 16)), mode="fixed", progress=False)
    assert spike_times(fixed) == [3, 5, 8, 10, 13, 15]


@pytest.mark.parametrize("z", [-15.0, -3.0, -0.5, 0.37, 0.8, 3.0])
def test_signed_if_rate_limit_is_clipped_leaky_relu(z):
    alpha, T = 0.1, 4000
    net = single_neuron("SignedIF", alpha=alpha)
    expected = float(np.clip(z if z >= 0 else alpha * z, -1, 1))
    limit = rate_limit_forward(net, np.array([[z]], np.float32))["n"][0, 0]
    assert limit == pytest.approx(expected, abs=1e-6)
    out = simulate(net, np.array([[z]]), T, progress=False).outputs[T]["n"][0, 0]
    assert abs(out - expected) <= 2 / (alpha * T)  # at most one pending spike of the 1/alpha larger threshold


def test_if_rate_limit_is_clipped_relu():
    net = single_neuron("IF")
    x = np.array([[-0.5], [0.25], [0.7], [2.0]], np.float32)
    np.testing.assert_allclose(rate_limit_forward(net, x)["n"][:, 0], [0, 0.25, 0.7, 1.0])
    out = simulate(net, x, 1000, progress=False).outputs[1000]["n"][:, 0]
    np.testing.assert_allclose(out, [0, 0.25, 0.7, 1.0], atol=1e-3)


def test_unevenness_example_of_methods_section_5():
    """W = [2, -1], theta 1, T = 6, both inputs fire 3 times: the arrival order decides 0.5, 0.67 or 0.33."""
    net = single_neuron("IF", weights=[[2.0, -1.0]])
    trains = np.zeros((6, 3, 2), np.float32)  # (T, B, inputs), explicit input spike trains
    trains[[0, 2, 4], 0, 0] = 1
    trains[[1, 3, 5], 0, 1] = 1  # alternating: 0.5
    trains[[0, 1, 2], 1, 0] = 1
    trains[[3, 4, 5], 1, 1] = 1  # excitation first: 4 spikes
    trains[[3, 4, 5], 2, 0] = 1
    trains[[0, 1, 2], 2, 1] = 1  # inhibition first: 2 spikes
    res = simulate(net, trains, 6, encoding="explicit", progress=False)
    np.testing.assert_allclose(res.outputs[6]["n"][:, 0], [0.5, 4 / 6, 2 / 6])
    np.testing.assert_array_equal(res.spike_counts["n"], [3, 4, 2])
    assert rate_limit_forward(net, trains.mean(axis=0))["n"][0, 0] == pytest.approx(0.5)


@pytest.mark.parametrize("mode", ["float", "fixed"])
def test_memory_if_takes_back_excess_spikes(mode):
    """Memory IF, theta 1, W = 1, input currents 0.6, 0.6, -1, 0.5, 0.5, 0.5, -0.4, -0.4 (sum 0.9).

    V: 0.6 | 1.2 -> +1 (0.2) | -0.8 -> -1 (0.2) | 0.7 | 1.2 -> +1 (0.2) | 0.7 | 0.3 | -0.1 -> -1 (0.9):
    spikes +1 -1 +1 -1, net 0 = floor(0.9). The plain IF keeps its first spike (net 1) and never returns it.
    """
    x = np.array([0.6, 0.6, -1.0, 0.5, 0.5, 0.5, -0.4, -0.4], np.float32).reshape(8, 1, 1)
    plain = simulate(single_neuron("IF", scale=0.1), x, [2, 3, 8], encoding="explicit", progress=False, mode=mode)
    mem = simulate(single_neuron("IF", memory=True, scale=0.1), x, [2, 3, 5, 8], encoding="explicit",
                   progress=False, mode=mode)  # input unit 0.1: the currents are exact integers in fixed point
    assert plain.outputs[8]["n"][0, 0] == pytest.approx(1 / 8) and plain.spike_counts["n"].tolist() == [1]
    assert [mem.outputs[t]["n"][0, 0] * t for t in (2, 3, 5, 8)] == pytest.approx([1, 0, 1, 0])
    assert mem.spike_counts["n"].tolist() == [4]  # both signs count (SOPs)


def test_memory_if_fixes_the_excitation_first_order_of_section_5():
    """The unevenness example: excitation first gave 4 spikes (0.67) with the plain IF; the memory IF returns one
    at t = 6 (V = -1 < 0) and ends at 3 = the ANN's 0.5. Inhibition first still gives 0.33: nothing to return."""
    net = single_neuron("IF", weights=[[2.0, -1.0]], memory=True)
    trains = np.zeros((6, 2, 2), np.float32)
    trains[[0, 1, 2], 0, 0] = 1
    trains[[3, 4, 5], 0, 1] = 1
    trains[[3, 4, 5], 1, 0] = 1
    trains[[0, 1, 2], 1, 1] = 1
    res = simulate(net, trains, 6, encoding="explicit", progress=False)
    np.testing.assert_allclose(res.outputs[6]["n"][:, 0], [0.5, 2 / 6])
    np.testing.assert_array_equal(res.spike_counts["n"], [5, 2])


@pytest.mark.parametrize("z", [-0.3, 0.0, 0.013, 0.37, 0.9, 1.7])
def test_memory_if_rate_limit_is_clipped_relu(z):
    net = single_neuron("IF", v_init=0.5, memory=True)
    rng = np.random.default_rng(1)
    noisy = (z + rng.normal(0, 0.5, 4096)).astype(np.float32).reshape(4096, 1, 1)  # spiky input around z
    noisy -= noisy.mean() - np.float32(z)
    res = simulate(net, noisy, 4096, encoding="explicit", progress=False)
    assert res.outputs[4096]["n"][0, 0] == pytest.approx(min(max(z, 0.0), 1.0), abs=1.5 / 4096 + 1e-6) or z > 1
    if z <= 0:
        assert res.outputs[4096]["n"][0, 0] == 0.0


def test_spike_counts_count_both_signs():
    """SignedIF theta 1, alpha 0.5 (negative threshold -2), W = 1, inputs 1.5, -3, 0, 1, 0.6.

    V: 1.5 -> +1 (0.5) | -2.5 -> -1 (-0.5) | -0.5 | 0.5 | 1.1 -> +1 (0.1): 2 positive and 1 negative spike.
    """
    net = single_neuron("SignedIF", alpha=0.5)
    x = np.array([1.5, -3, 0, 1, 0.6], np.float32).reshape(5, 1, 1)
    res = simulate(net, x, [4, 5], encoding="explicit", progress=False)
    assert res.spike_counts["n"].tolist() == [3]
    assert res.extra["spike_counts_at"][4]["n"].tolist() == [2]
    assert res.outputs[4]["n"][0, 0] == pytest.approx(0.0)
    assert res.outputs[5]["n"][0, 0] == pytest.approx(1 / 5)
    assert res.neurons == {"n": 1}
    assert res.firing_rates()["n"] == pytest.approx(3 / 5)


def test_rate_encoding_draws_as_documented():
    """Linear identity readout of the input: the mean equals numpy's draws, one (B, *shape) array per step."""
    layers = [Layer("x", "input", [], (4,)),
              Layer("id", "dense", ["x"], (4,), weight=np.eye(4, dtype=np.float32))]
    net = Network(layers, ["id"], input_encoding={"kind": "rate"})
    x = np.array([[0.1, 0.5, 0.9, 0.0], [1.0, 0.3, 0.7, 0.2]], np.float32)
    res = simulate(net, x, [10, 50], seed=7, progress=False)
    rng = np.random.default_rng(7)
    draws = np.stack([rng.random(x.shape) < x for _ in range(50)])
    np.testing.assert_allclose(res.outputs[10]["id"], draws[:10].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(res.outputs[50]["id"], draws.mean(axis=0), rtol=1e-6)
    again = simulate(net, x, [10, 50], seed=7, progress=False)
    np.testing.assert_array_equal(again.outputs[50]["id"], res.outputs[50]["id"])
    other = simulate(net, x, 50, seed=8, progress=False)
    assert not np.array_equal(other.outputs[50]["id"], res.outputs[50]["id"])


# ---- random networks --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["IF", "SignedIF"])
def test_converges_to_the_rate_limit(kind):
    net, x = random_net(1, kind)
    ref = rate_limit_forward(net, x)
    res = simulate(net, x, [64, 1024], progress=False)
    e64, e1024 = rel_err(res.outputs[64], ref), rel_err(res.outputs[1024], ref)
    assert e64 < 0.15
    assert e1024 < 0.03
    assert e1024 < e64 / 4


def test_float_mode_matches_a_step_by_step_reference():
    net, x = random_net(2, "SignedIF", size=8, batch=1)
    res = simulate(net, x, 48, progress=False)
    ref = reference_float(net, x[0], 48)
    # float32 vs float64 rounding may flip a spike at an exact threshold hit: almost all values agree
    for k in net.outputs:
        diff = np.abs(res.outputs[48][k][0] - ref[k])
        assert np.mean(diff < 1e-4) > 0.97, k
        assert diff.max() < 0.1 * np.abs(ref[k]).max(), k


def test_checkpoints_equal_separate_runs():
    net, x = random_net(3, "SignedIF")
    both = simulate(net, x, [20, 50], progress=False)
    for T in (20, 50):
        alone = simulate(net, x, T, progress=False)
        for k in net.outputs:
            np.testing.assert_array_equal(both.outputs[T][k], alone.outputs[T][k])
    for k, v in simulate(net, x, 50, progress=False).spike_counts.items():
        np.testing.assert_array_equal(both.spike_counts[k], v)


@pytest.mark.parametrize("mode", ["float", "fixed"])
def test_chunked_equals_unchunked(mode, monkeypatch):
    net, x = random_net(4, "SignedIF")
    whole = simulate(net, x, [7, 30], mode=mode, progress=False)
    monkeypatch.setattr(numpy_ops, "CALL_BYTES", 1)  # every convolution call also runs sample by sample
    chunked = simulate(net, x, [7, 30], mode=mode, max_bytes=1, threads=1, progress=False)
    assert chunked.extra["chunk_steps"] == 1 and whole.extra["chunk_steps"] == 30
    for T in (7, 30):
        for k in net.outputs:
            np.testing.assert_array_equal(chunked.outputs[T][k], whole.outputs[T][k])
    for k in whole.spike_counts:
        np.testing.assert_array_equal(chunked.spike_counts[k], whole.spike_counts[k])


@pytest.mark.parametrize("kind, weight_bits", [("SignedIF", 16), ("IF", 8)])
def test_fixed_point_equals_the_integer_reference(kind, weight_bits):
    """Bit for bit against a step-by-step int64 simulation, with 0..255 input integers (the first layer needs
    its weights split into digits to stay exact in float32 at 16 bits)."""
    net, x = random_net(5, kind, size=8, batch=2)
    T = 24
    res = simulate(net, x, [T], mode="fixed", weight_bits=weight_bits, progress=False)
    for b in range(2):
        ref = reference_fixed(net, x[b], T, weight_bits)
        for k in net.outputs:
            np.testing.assert_array_equal(res.extra["sums"][T][k][b], ref[k])
    if weight_bits == 16:
        plan = next(reversed(numpy_sim._PLAN_CACHE.values()))  # the plan just used
        assert len(plan.layers[1].op.parts) > 1  # the input layer's 0..255 integers forced a digit split


def test_fixed_point_is_close_to_float_and_deterministic():
    net, x = random_net(6, "SignedIF")
    ref = rate_limit_forward(net, x)
    f = simulate(net, x, 256, progress=False)
    a = simulate(net, x, 256, mode="fixed", progress=False)
    b = simulate(net, x, 256, mode="fixed", progress=False)
    for k in net.outputs:
        np.testing.assert_array_equal(a.outputs[256][k], b.outputs[256][k])
        # 16-bit weights: thresholds and weights within 2**-15 relative; the difference to float is of the order of
        # one flipped spike per neuron (theta / T) propagated, the same order as float's own error at T = 256
        assert np.abs(a.outputs[256][k] - f.outputs[256][k]).max() <= 0.05 * np.abs(ref[k]).max(), k
    assert rel_err(a.outputs[256], ref) < 0.05


def test_overrides_and_errors():
    net = single_neuron("IF", v_init=0.0)
    x = np.array([[0.375]])
    assert spike_times(simulate(net, x, list(range(1, 9)), v_init=0.5, progress=False)) == [2, 4, 7]
    assert net.layer("n").neuron.v_init == 0.0  # the override does not touch the network
    with pytest.raises(SnncError):
        simulate(net, x, 4, mode="double", progress=False)
    with pytest.raises(SnncError):
        simulate(net, np.zeros((1, 3)), 4, progress=False)
    with pytest.raises(SnncError):
        simulate(net, np.zeros((3, 1, 1)), 4, encoding="explicit", progress=False)  # fewer steps than T
    with pytest.raises(SnncError):
        simulate(net, x, 0, progress=False)
    unbatched = simulate(net, np.array([0.375]), 8, progress=False)
    assert unbatched.outputs[8]["n"].shape == (1, 1)


def test_exact_integer_splits_match_the_reference():
    """16-bit weights on 0..255 inputs: a 1-channel 5x5 conv can only be split into weight digits, a dense layer
    on 192 input features into channel ranges; both stay bit-exact."""
    rng = np.random.default_rng(9)
    layers = [Layer("x", "input", [], (3, 8, 8)),
              Layer("c", "conv", ["x"], (4, 8, 8), rng.standard_normal((4, 3, 5, 5)).astype(np.float32) * 0.1,
                    None, conv_attrs(1, 2, group=1),
                    Neuron("IF", np.full(4, 2.0, np.float32), v_init=0.5)),
              Layer("fc", "dense", ["x"], (3,), rng.standard_normal((3, 192)).astype(np.float32) * 0.1)]
    layers[1].weight[:, 0] *= 50  # one input channel dominates the conv: channel ranges cannot help it
    layers[2].weight[:, 0] *= 20  # one feature sets the dense layer's scale: a few channel ranges are enough
    net = Network(layers, ["c", "fc"], input_encoding={"kind": "direct", "scale": 1 / 255})
    x = rng.random((1, 3, 8, 8)).astype(np.float32)
    res = simulate(net, x, 5, mode="fixed", progress=False)
    ops_by_name = {lp.layer.name: lp.op for lp in next(reversed(numpy_sim._PLAN_CACHE.values())).layers}
    assert any(shift > 0 for shift, _, _ in ops_by_name["c"].parts)  # weight digits
    assert all(shift == 0 and sl is not None for shift, sl, _ in ops_by_name["fc"].parts)  # channel ranges
    assert len(ops_by_name["fc"].parts) > 1
    ref = reference_fixed(net, x[0], 5)
    for k in net.outputs:
        np.testing.assert_array_equal(res.extra["sums"][5][k][0], ref[k])
