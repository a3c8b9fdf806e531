"""The graded signed memory neuron (`--leaky graded`: snnc.SignedIF with memory=1, graded=1 and a per-channel
threshold_neg; docs/neurons.md "Graded signed memory neuron").

Its invariant and its count on hand-made and random input sequences (float and integer), its rate limit, the
values it sends (theta on the positive side of its count, alpha theta_n on the negative side, take-backs
included), the fixed-point payloads, the compile (channel_norm's negative thresholds, .lava round trip, the
validator), NumPy = torch = C (bit-exact in fixed point, 1e-5 in float) on a YOLO-shaped network, spike counts and
energy counting graded spikes, and the one-line refusals of NIR export and --target-T. The Lava backend's twin is
tests/test_graded_lava.py (Python 3.10).
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import onnx
import pytest

import snnc.backends.torch  # noqa: F401  (first: it sets torch's OpenMP wait policy before torch loads)
from models import tiny_yolo
from test_c_backend import assert_close, assert_same, cbk, images, yolo_like  # noqa: F401

from snnc.backends.numpy.graded import graded_values
from snnc.backends.numpy.scan import scan
from snnc.backends.numpy.sim import rate_limit_forward
from snnc.compiler.spikesim import neuron_scan
from snnc.ir import fixedpoint, lavafile
from snnc.ir.errors import SnncError
from snnc.ir.network import Layer, Network, Neuron
from snnc.ir.options import CompileOptions, SimOptions, compile_options
from snnc.ir.validate import check_network
from snnc.compiler.pipeline import select_passes


def run_graded(z: np.ndarray, theta: float, theta_n: float, alpha: float, v0: float, dtype=np.float64):
    """One graded neuron through the NumPy scan: spikes (T,), count after each step, V after each step, values."""
    T = len(z)
    V = np.full((1, 1), v0, dtype)
    count = np.zeros((1, 1), np.int32)
    spikes = np.zeros((T, 1, 1), np.int8)
    vs = []
    for t in range(T):  # one step at a time, to read V after each
        scan(V, np.asarray(z[t:t + 1], dtype).reshape(1, 1, 1), False, spikes[t:t + 1], np.full(1, theta, dtype),
             np.full(1, theta_n, dtype), count=count)
        vs.append(float(V[0, 0]))
    values = graded_values(spikes, np.zeros((1, 1), np.int32), theta, np.full(1, alpha * theta_n, np.float32))
    s = spikes[:, 0, 0].astype(int)
    return s, np.cumsum(s), np.array(vs), values[:, 0, 0].astype(np.float64)


def invariant_v(z, n, theta, theta_n, v0):
    """V = V(0) + sum z - theta max(n, 0) + theta_n max(-n, 0) after each step."""
    return v0 + np.cumsum(z) - theta * np.maximum(n, 0) + theta_n * np.maximum(-n, 0)


def target_count(z, theta, theta_n, v0):
    """trunc((V(0) + sum z) / theta) where >= 0, trunc((V(0) + sum z) / theta_n) below: the count when one spike a
    step is enough."""
    s = v0 + np.cumsum(z)
    return np.trunc(np.where(s >= 0, s / theta, s / theta_n)).astype(int)


def test_compiler_scan_sends_the_graded_payloads():
    """compiler/spikesim.py's scan (what calibrate_to_T simulates) sends what the NumPy backend's graded layer
    sends: +-theta on the positive side, +-alpha theta_n on the negative side, step by step."""
    theta, theta_n, alpha = 1.0, 3.0, 0.1
    z = ZERO_CROSSING.astype(np.float32)
    s, _, _, values = run_graded(z, theta, theta_n, alpha, 0.5 * theta, np.float32)
    out = neuron_scan(z.reshape(-1, 1, 1), len(z), kind="SignedIF", theta=np.full(1, theta), v0=np.full(1, 0.5),
                      alpha=alpha, memory=True, theta_neg=np.full(1, theta_n))[:, 0, 0]
    assert np.unique(np.round(np.abs(out[out != 0]).astype(float), 6)).tolist() == [0.3, 1.0]  # both sides fired
    np.testing.assert_allclose(out, values, rtol=1e-6)
    with pytest.raises(ValueError, match="graded"):
        neuron_scan(z.reshape(-1, 1, 1), len(z), kind="IF", theta=np.ones(1), v0=np.zeros(1), theta_neg=np.ones(1))


def test_v_init_rounds_both_sides():
    """With V(0) = theta/2 and the level r = (theta + theta_n)/2 the count is the nearest integer on both sides:
    round(S / theta) above 0 and -round(-S / theta_n) below (S = sum z), while one spike a step is enough; at
    V(0) = 0 the level is 0 and the rule is the one of the tests below."""
    theta, theta_n = 1.0, 3.0
    z = np.concatenate([np.full(10, 0.3), np.full(25, -0.65), np.full(34, 0.45)]).astype(np.float64)  # no ties
    V, count = np.full((1, 1), 0.5 * theta), np.zeros((1, 1), np.int32)
    spikes, n = np.zeros((1, 1, 1), np.int8), []
    for t in range(len(z)):
        scan(V, z[t:t + 1].reshape(1, 1, 1), False, spikes, np.full(1, theta), np.full(1, theta_n), count=count,
             neg_level=np.full(1, 0.5 * (theta + theta_n)))
        n.append(int(count[0, 0]))
    S = np.cumsum(z)
    want = np.where(S >= 0, np.floor(S / theta + 0.5), -np.floor(-S / theta_n + 0.5)).astype(int)
    assert min(n) < -2 and max(n) > 2 and n == list(want)
    assert Neuron("SignedIF", np.ones(1), alpha=0.1, v_init=0.5, memory=True, graded=True,
                  threshold_neg=np.full(1, 3.0)).neg_level.tolist() == [2.0]
    assert Neuron("SignedIF", np.ones(1), alpha=0.1, v_init=0.0, memory=True, graded=True,
                  threshold_neg=np.full(1, 3.0)).neg_level.tolist() == [0.0]


# theta 1, theta_n 3, alpha 0.1: crosses zero both ways, so all four rules fire (up, back_up, dn, back_dn)
ZERO_CROSSING = np.array([1.5, 0.75, -1.0, -1.5, -2.0, -3.0, -1.0, 2.0, 2.5, 1.5, 1.25, 0.0, -0.5])


@pytest.mark.parametrize("dtype", [np.float64, np.int64])
def test_invariant_count_and_values_on_a_zero_crossing(dtype):
    k = 4  # integer units: theta 4, theta_n 12
    z = (ZERO_CROSSING * k).astype(dtype)
    theta, theta_n, alpha = 1 * k, 3 * k, 0.1
    s, n, v, values = run_graded(z, theta, theta_n, alpha, 0, dtype)
    np.testing.assert_allclose(v, invariant_v(z.astype(float), n, theta, theta_n, 0), atol=1e-9)
    assert list(n) == list(target_count(z.astype(float), theta, theta_n, 0))
    before = np.concatenate([[0], n[:-1]])
    kinds = {("up", "back_up", "dn", "back_dn")[i] for i, hit in enumerate([
        np.any((s > 0) & (before >= 0)), np.any((s < 0) & (before > 0)), np.any((s < 0) & (before <= 0)),
        np.any((s > 0) & (before < 0))]) if hit}
    assert kinds == {"up", "back_up", "dn", "back_dn"}  # the sequence exercises every rule
    # the output sum is theta max(n, 0) - alpha theta_n max(-n, 0): leaky of the summed input, quantized
    want = theta * np.maximum(n, 0) - alpha * theta_n * np.maximum(-n, 0)
    np.testing.assert_allclose(np.cumsum(values), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_sequences_keep_the_invariant(seed):
    rng = np.random.default_rng(seed)
    theta, theta_n, alpha, v0 = 1.0, float(rng.uniform(0.3, 8.0)), 0.1, 0.5
    z = rng.normal(0, 0.4, 300)
    s, n, v, values = run_graded(z, theta, theta_n, alpha, v0)
    np.testing.assert_allclose(v, invariant_v(z, n, theta, theta_n, v0), atol=1e-9)
    # V stays in its band wherever the input is slow enough for one spike a step (|z| < min(theta, theta_n))
    slow = np.abs(z) < min(theta, theta_n)
    lo = np.where(n > 0, 0, -theta_n)
    hi = np.where(n < 0, 0, theta)
    inside = (v >= lo - 1e-9) & (v <= hi + 1e-9)
    assert inside[slow].mean() > 0.95, inside[slow].mean()
    assert np.all(np.abs(s) <= 1)
    np.testing.assert_allclose(np.cumsum(values), theta * np.maximum(n, 0) - alpha * theta_n * np.maximum(-n, 0),
                               rtol=1e-6, atol=1e-5)


def _single_layer(theta_n: np.ndarray) -> Network:
    rng = np.random.default_rng(3)
    c = len(theta_n)
    n = Neuron("SignedIF", np.ones(c), alpha=0.1, v_init=0.5, memory=True, graded=True, threshold_neg=theta_n)
    conv = dict(strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=1)
    one = dict(strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1], group=1)
    return Network([Layer("x", "input", [], (3, 6, 6)),
                    Layer("c1", "conv", ["x"], (c, 6, 6), weight=rng.normal(0, 0.5, (c, 3, 3, 3)).astype(np.float32),
                          bias=np.zeros(c, np.float32), attrs=conv, neuron=n),
                    Layer("h", "conv", ["c1"], (2, 6, 6), weight=rng.normal(0, 0.5, (2, c, 1, 1)).astype(np.float32),
                          attrs=one)], ["h"])


def test_rate_limit_is_leaky_clipped_at_alpha_theta_n(nb):
    net = _single_layer(np.array([0.3, 1.0, 3.0, 10.0], np.float32))
    x = np.random.default_rng(4).uniform(0, 0.3, (1, 3, 6, 6)).astype(np.float32)
    rl = rate_limit_forward(net, x, all_layers=True)
    z = rate_limit_forward(dataclasses.replace(net, layers=[dataclasses.replace(l, neuron=None) for l in net.layers]),
                           x, all_layers=True)["c1"]
    low = (0.1 * np.array([0.3, 1.0, 3.0, 10.0], np.float32)).reshape(1, -1, 1, 1)
    np.testing.assert_allclose(rl["c1"], np.clip(np.where(z >= 0, z, 0.1 * z), -low, 1.0), rtol=1e-6, atol=1e-7)
    assert (rl["c1"] < 0).any() and (rl["c1"] > 0).any()
    T = 2000
    res = nb.simulate(net, x, [T], mode="float")
    np.testing.assert_allclose(res.outputs[T]["h"], rl["h"], atol=2e-3 * max(1.0, float(np.abs(rl["h"]).max())))


def graded(net: Network, seed: int = 5) -> Network:
    """`net` with every SignedIF a graded signed memory neuron, negative thresholds drawn per channel."""
    rng = np.random.default_rng(seed)
    layers = []
    for l in net.layers:
        if l.neuron is not None and l.neuron.kind == "SignedIF":
            c = l.shape[0]
            l = dataclasses.replace(l, neuron=dataclasses.replace(
                l.neuron, memory=True, graded=True,
                threshold_neg=l.neuron.threshold * rng.uniform(0.5, 12.0, c).astype(np.float32)))
        layers.append(l)
    return dataclasses.replace(net, layers=layers)


def test_fixed_point_payloads():
    net = graded(yolo_like())
    q = fixedpoint.quantize(net)
    for l in net.neuron_layers:
        ql = q[l.name]
        if not l.neuron.graded:
            assert ql.payload_neg is None
            continue
        assert ql.payload_pos == fixedpoint.GRADED_PAYLOAD
        want = np.maximum(1, np.round(l.neuron.neg_payload / l.neuron.threshold * fixedpoint.GRADED_PAYLOAD))
        assert np.array_equal(ql.payload_neg, want.astype(np.int64))
        np.testing.assert_allclose(ql.out_unit, l.neuron.threshold / fixedpoint.GRADED_PAYLOAD)
    # a consumer's bound on its integer sums counts the payloads, not 1 per spike
    assert q["c2"].max_abs_sum >= int(np.abs(q["c2"].w_int).max()) * fixedpoint.GRADED_PAYLOAD


@pytest.fixture(scope="module")
def net_and_x():
    return graded(yolo_like()), images((3, 16, 16), batch=2, seed=21)


def test_numpy_and_torch_agree(nb, tb, net_and_x):
    net, x = net_and_x
    ts = [5, 24]
    for mode in ("fixed", "float"):
        a = nb.simulate(net, x, ts, mode=mode)
        b = tb.run(net, x, ts, SimOptions(mode=mode))
        for t in ts:
            for o in net.outputs:
                if mode == "fixed":
                    assert np.array_equal(a.extra["sums"][t][o], b.extra["sums"][t][o]), (t, o)
                    assert np.array_equal(a.outputs[t][o], b.outputs[t][o])
                else:
                    np.testing.assert_allclose(b.outputs[t][o], a.outputs[t][o], rtol=1e-5,
                                               atol=1e-5 * max(1.0, float(np.abs(a.outputs[t][o]).max())))
        for k, v in a.spike_counts.items():
            assert np.array_equal(np.asarray(b.spike_counts[k]), v), k
    # not vacuous: negative-side spikes happen, and graded differs from the signed memory neuron
    rec = nb.simulate(net, x, [24], mode="fixed", record_layers=True)
    assert sum(int(d["neg"].sum()) for d in rec.extra["layers_at"][24].values()
               if isinstance(d, dict) and d.get("neg") is not None) > 0
    plain = dataclasses.replace(net, layers=[dataclasses.replace(l, neuron=dataclasses.replace(
        l.neuron, graded=False, threshold_neg=None)) if l.neuron is not None and l.neuron.graded else l
        for l in net.layers])
    other = nb.simulate(plain, x, [24], mode="fixed")
    assert any(not np.array_equal(other.outputs[24][o], rec.outputs[24][o]) for o in net.outputs)


def test_c_backend_agrees(nb, net_and_x, cbk):  # noqa: F811
    net, x = net_and_x
    ts = [1, 4, 16]
    ref = nb.simulate(net, x, ts, mode="fixed")
    assert_same(cbk.simulate(net, x, ts, mode="fixed"), ref.outputs, ref.spike_counts)
    assert_close(cbk.simulate(net, x, ts, mode="float"), nb.simulate(net, x, ts, mode="float"))
    ref = nb.simulate(net, x, [9], mode="fixed", v_init=0.0, weight_bits=8)
    assert_same(cbk.simulate(net, x, [9], mode="fixed", v_init=0.0, weight_bits=8), ref.outputs, ref.spike_counts)


def test_spikes_counted_and_energy(nb, net_and_x):
    from snnc.compiler.energy import energy_report
    net, x = net_and_x
    T = 16
    res = nb.simulate(net, x, [T], mode="float", record_layers=True)
    state = res.extra["layers_at"][T]
    for l in net.neuron_layers:
        d = state[l.name]
        neg = 0 if d["neg"] is None else d["neg"].sum(axis=1)
        assert np.array_equal(res.spike_counts[l.name], d["pos"].sum(axis=1) + neg)
        if l.neuron.graded:
            assert int(d["neg"].sum()) > 0  # graded layers' -1 spikes are among the counted spikes
    report = energy_report(net, {k: float(np.mean(v)) for k, v in res.spike_counts.items()}, T)
    assert report["snn_sops"] > 0


def test_nir_refuses_with_one_line(net_and_x):
    from snnc.backends.nir.export import to_nir
    net, _ = net_and_x
    first = next(l.name for l in net.neuron_layers if l.neuron.graded)
    with pytest.raises(SnncError, match=f"{first}.*graded signed neuron") as e:
        to_nir(net)
    assert "\n" not in str(e.value)


def test_option_pipeline_compile_and_lavafile(tmp_path, nb):
    from snnc.compiler.api import compile_model
    from snnc.compiler.loihi import fit_report
    assert compile_options(leaky="graded").leaky == "graded"
    assert "split_leaky_relu" not in select_passes(CompileOptions(leaky="graded"))
    path = tmp_path / "m.onnx"
    onnx.save(tiny_yolo(host=False), path)
    net = compile_model(str(path), calib_random=2, leaky="graded", progress=False).network
    gl = [l for l in net.neuron_layers if l.neuron.graded]
    assert gl and all(l.neuron.kind == "SignedIF" and l.neuron.memory for l in gl)
    tn = np.concatenate([l.neuron.threshold_neg for l in gl])
    assert np.all(tn > 0) and np.std(tn) > 0  # calibrated per channel, not theta / alpha
    check_network(net)
    lavafile.save(net, tmp_path / "m.lava")
    back = lavafile.load(tmp_path / "m.lava")
    for a, b in zip(net.neuron_layers, back.neuron_layers):
        assert a.neuron.graded == b.neuron.graded
        if a.neuron.graded:
            assert np.array_equal(a.neuron.threshold_neg, b.neuron.threshold_neg)
    assert "graded spikes" in fit_report(net, weight_bits=8)
    # the compiled network converges to its rate limit
    x = images(net.input_layers[0].shape, batch=1, seed=3)
    rl = rate_limit_forward(net, x)
    res = nb.simulate(net, x, [8, 128], mode="float")
    err = {t: sum(float(np.abs(res.outputs[t][o] - rl[o]).sum()) for o in net.outputs)
           / sum(float(np.abs(rl[o]).sum()) for o in net.outputs) for t in (8, 128)}
    assert err[128] < 0.05 and err[128] < err[8] / 3, err


def test_validator_refuses_bad_graded_entries():
    from snnc.ir.validate import _neuron
    good = {"kind": "SignedIF", "alpha": 0.1, "v_init": 0.5, "memory": True, "graded": True,
            "threshold": {"npy": "1.threshold.npy"}, "threshold_neg": {"npy": "1.threshold_neg.npy"}}
    _neuron("layer", good)
    for bad in ({**good, "memory": False}, {**good, "kind": "IF"}, {k: v for k, v in good.items()
                                                                    if k != "threshold_neg"},
                {**good, "graded": False}):
        with pytest.raises(Exception):
            _neuron("layer", bad)


def test_error_analysis_reconstructs_mean_input(nb, net_and_x):
    """errors.mean_outputs (graded payloads on the negative side) fed through layer_forward gives every layer's
    mean input, which errors.mean_inputs recovers from the recorded state: float and fixed point."""
    from snnc.backends.numpy.sim import layer_forward
    from snnc.evaluation import errors
    net, x = net_and_x
    T = 24
    for mode in ("float", "fixed"):
        state = nb.simulate(net, x, [T], mode=mode, record_layers=True).extra["layers_at"][T]
        phi = errors.mean_outputs(state, T)
        over = {k: v.reshape((v.shape[0],) + tuple(net.layer(k).shape)) for k, v in phi.items()}
        zs, _ = layer_forward(net, x, override=over)
        for layer in net.neuron_layers:
            got, want = errors.mean_inputs(state[layer.name], T), zs[layer.name].reshape(x.shape[0], -1)
            np.testing.assert_allclose(got, want, atol=2e-3 * max(1.0, float(np.abs(want).max())), err_msg=mode)
            _, e, _ = errors.split_layer(state[layer.name], T)
            assert np.all(np.isfinite(e))


@pytest.fixture(scope="module")
def lean_net(tmp_path_factory):
    """tiny_yolo compiled as the lean graph: graded leaky neurons feeding count max-pools."""
    from snnc.compiler.api import compile_model
    path = tmp_path_factory.mktemp("lean") / "m.onnx"
    onnx.save(tiny_yolo(host=False), path)
    net = compile_model(str(path), calib_random=2, leaky="graded", maxpool="count", progress=False).network
    assert any(l.neuron is not None and l.neuron.graded for l in net.layers)
    assert any(l.op == "maxpool" for l in net.layers)
    return net


def test_graded_with_count_maxpools_agree_in_every_backend(nb, tb, cbk, lean_net, monkeypatch):  # noqa: F811
    from snnc.backends.torch import sim as torch_sim

    x = images(lean_net.input_layers[0].shape, batch=2, seed=4)
    ts = [3, 16]
    ref = nb.simulate(lean_net, x, ts, mode="fixed")
    assert_same(cbk.simulate(lean_net, x, ts, mode="fixed"), ref.outputs, ref.spike_counts)
    # one chunk per checkpoint, then one step per chunk: the scan's graded values and the count max-pools'
    # running sums and maxima carry over between chunks; then small scan tiles shared out over two threads
    for max_bytes, tile in ((None, None), (1, None), (None, 2048)):
        with monkeypatch.context() as m:
            seen = set()
            if tile:
                m.setattr(torch_sim, "TILE_VALUES", tile)
                m.setattr(torch_sim, "_scan_tile", lambda *a, f=torch_sim._scan_tile: (
                    seen.add(threading.get_ident()), f(*a)))
            got = tb.run(lean_net, x, ts, SimOptions(mode="fixed", max_bytes=max_bytes, threads=2))
        assert got.extra["chunk_steps"] == (1 if max_bytes else 16)
        assert not tile or seen - {threading.get_ident()}  # layers of several tiles ran in the pool's threads
        for t in ts:
            for o in lean_net.outputs:
                assert np.array_equal(got.outputs[t][o], ref.outputs[t][o]), (t, o, max_bytes, tile)
        for k, v in ref.spike_counts.items():
            assert np.array_equal(got.spike_counts[k], v), (k, max_bytes, tile)
    assert_close(cbk.simulate(lean_net, x, ts, mode="float"), nb.simulate(lean_net, x, ts, mode="float"))
