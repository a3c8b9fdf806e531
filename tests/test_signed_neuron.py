"""The signed memory neuron (`--leaky signed`: snnc.SignedIF with memory=1, docs/neurons.md "Signed memory neuron").

Its count tracks trunc(leaky(V(0) + sum z) / theta) on hand-made input sequences (including the one that makes the
IBT neuron re-trigger), in the NumPy scan and in the compiler's spikesim; its rate limit is the IBT neuron's;
activations_to_neurons emits it (golden dump, rate-limit equality with onnxruntime over several seeds); the .lava
file keeps it; NIR refuses it with the layer named; the error analysis and the energy count see its -1 spikes;
a compile of a leaky model with --leaky signed runs and is closer to the ANN than IBT.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from models import tiny_yolo
from test_c_backend import images, yolo_like
from test_passes import SEEDS, check_pass, max_rel_err, ops

from snnc.backends import get_backend
from snnc.backends.numpy.scan import scan
from snnc.compiler.graph import run_model
from models import apply_pass  # the classic choices unless a test names others
from snnc.compiler.pipeline import select_passes
from snnc.compiler.ratelimit import neurons_to_activations
from snnc.compiler.spikesim import neuron_scan
from snnc.evaluation import errors
from snnc.ir import lavafile
from snnc.ir.errors import SnncError
from snnc.ir.network import Network
from snnc.ir.options import CompileOptions, compile_options
from snnc.ir.validate import check_network


def signed_memory(net: Network) -> Network:
    """`net` with every SignedIF neuron turned into the signed memory neuron."""
    return dataclasses.replace(net, layers=[
        dataclasses.replace(l, neuron=dataclasses.replace(l.neuron, memory=True))
        if l.neuron is not None and l.neuron.kind == "SignedIF" else l for l in net.layers])


def run_scan(z: np.ndarray, theta: float, alpha: float, v0: float, memory: bool, dtype=np.float64):
    """One neuron through the NumPy backend's scan: spikes (T,) and the count after each step."""
    T = len(z)
    V = np.full((1, 1), v0, dtype)
    spikes = np.zeros((T, 1, 1), np.int8)
    count = np.zeros((1, 1), np.int32) if memory else None
    scan(V, np.asarray(z, dtype).reshape(T, 1, 1), False, spikes, np.full(1, theta, dtype),
         np.full(1, theta / alpha, dtype), count=count)
    return spikes[:, 0, 0].astype(int), np.cumsum(spikes[:, 0, 0].astype(int))


def target(z, theta, alpha, v0) -> np.ndarray:
    """trunc(leaky(V(0) + sum z) / theta) after each step: what the count should be when one spike a step is
    enough (docs/neurons.md)."""
    s = v0 + np.cumsum(z)
    return np.trunc(np.where(s >= 0, s, alpha * s) / theta).astype(int)


# theta 1, alpha 0.5 (negative threshold -2). The input alternates -2, +1: IBT spikes -1, +1, -1, +1, ... (each
# -1 leaves V at 0 and the next +1 crosses theta), count 0, while leaky(sum z) goes to -2.
IBT_RETRIGGER = np.array([-2.0, 1.0] * 4)
# the memory IF's hand-made train (tests/test_numpy_sim.py), positive side: +1 at 2, -1 at 3, +1 at 5, -1 at 8
MEMORY_IF_TRAIN = np.array([0.6, 0.6, -1.0, 0.5, 0.5, 0.5, -0.4, -0.4])
# crossing zero both ways: positive spikes are taken back, then negative ones, then negative ones taken back
ZERO_CROSSING = np.array([1.5, 0.75, -1.0, -1.5, -1.0, -1.0, 0.5, 1.0, 1.0, 1.25, 0.0, 0.0])


@pytest.mark.parametrize("dtype", [np.float64, np.int64])
def test_ibt_retrigger_sequence(dtype):
    z = (IBT_RETRIGGER * 4).astype(dtype)  # integer units: theta 4, negative threshold 8
    s_ibt, n_ibt = run_scan(z, 4, 0.5, 0, memory=False, dtype=dtype)
    assert list(s_ibt) == [-1, 1] * 4 and n_ibt[-1] == 0  # IBT re-triggers: its count stays at 0
    s, n = run_scan(z, 4, 0.5, 0, memory=True, dtype=dtype)
    assert list(n) == list(target(z, 4, 0.5, 0)) == [-1, 0, -1, -1, -2, -1, -2, -2]
    assert list(s) == [-1, 1, -1, 0, -1, 1, -1, 0]  # each +1 takes a -1 back


@pytest.mark.parametrize("z", [MEMORY_IF_TRAIN, ZERO_CROSSING], ids=["memory_if_train", "zero_crossing"])
@pytest.mark.parametrize("alpha", [0.1, 0.5])
def test_count_tracks_leaky_of_the_input_sum(z, alpha):
    s, n = run_scan(z, 1.0, alpha, 0.0, memory=True)
    want = target(z, 1.0, alpha, 0.0)
    assert np.all(np.abs(np.diff(np.concatenate([[0], want]))) <= 1)  # one spike a step is enough here
    assert list(n) == list(want)
    assert set(s.tolist()) == {-1, 0, 1}
    out = neuron_scan(z.reshape(-1, 1, 1).astype(np.float32), len(z), kind="SignedIF", theta=np.ones(1),
                      v0=np.zeros(1), alpha=alpha, memory=True)
    assert list(out[:, 0, 0].astype(int)) == list(s)  # the compiler's spikesim: the same rule


def test_zero_crossing_uses_both_take_backs():
    s, n = run_scan(ZERO_CROSSING, 1.0, 0.5, 0.0, memory=True)
    # +1 +1, two -1 taking them back, a new -1 below 0, a +1 taking it back, then a new +1
    assert list(s) == [1, 1, -1, -1, 0, -1, 1, 0, 0, 1, 0, 0]
    assert n[-1] == target(ZERO_CROSSING, 1.0, 0.5, 0.0)[-1] == 1
    s_ibt, n_ibt = run_scan(ZERO_CROSSING, 1.0, 0.5, 0.0, memory=False)
    assert n_ibt[-1] == 3  # IBT: the -1 spent 2 of input, the +1s after it re-trigger


@pytest.mark.parametrize("seed", SEEDS)
def test_random_sequences_rate_and_bounds(seed):
    """Random inputs: the count is within one step of the target whenever the target moves slowly, and the mean
    output tends to the rate limit clip(leaky(mean z), -theta, theta)."""
    rng = np.random.default_rng(seed)
    theta, alpha, T = 1.0, 0.1, 2000
    for mean in (-3.0, -0.4, 0.3, 0.8, 2.0):
        z = rng.normal(mean, 0.3, T)
        s, n = run_scan(z, theta, alpha, 0.5, memory=True)
        limit = np.clip(mean if mean >= 0 else alpha * mean, -theta, theta)
        assert abs(n[-1] / T - limit) < 0.02, (mean, n[-1] / T, limit)
    z = rng.normal(0, 0.2, T)  # small steps: V stays within one threshold band of the target
    s, n = run_scan(z, theta, 0.5, 0.0, memory=True)
    assert np.abs(n - target(z, theta, 0.5, 0.0)).max() <= 1


def test_scan_fixed_and_float_agree_with_integer_inputs():
    rng = np.random.default_rng(3)
    z = rng.integers(-30, 20, 200)
    sf, nf = run_scan(z.astype(np.float64), 8, 0.25, 4, memory=True)
    si, ni = run_scan(z.astype(np.int64), 8, 0.25, 4, memory=True, dtype=np.int64)
    assert np.array_equal(sf, si) and np.array_equal(nf, ni)
    assert np.count_nonzero(sf == -1) > 0 and np.count_nonzero(sf == 1) > 0


# ---- compiler: options, pass, rate limit, lowering ---------------------------------------------------------------

def test_option_and_pipeline():
    assert compile_options(leaky="signed").leaky == "signed"
    assert "split_leaky_relu" not in select_passes(CompileOptions(leaky="signed"))
    assert "split_leaky_relu" in select_passes(CompileOptions(leaky="split"))
    with pytest.raises(SnncError, match="--leaky 'x': expected one of split, ibt, signed"):
        compile_options(leaky="x")


def _leaky_model():
    return apply_pass(apply_pass(apply_pass(tiny_yolo(host=False), "fold_batchnorm"), "upsample_to_deconv"),
                      "maxpool_to_strided_conv")


def test_activations_to_neurons_signed_golden(golden):
    m = _leaky_model()
    out = check_pass("activations_to_neurons", m, golden, "activations_tiny_yolo_signed",
                     rewrites=ops(m).count("Relu") + ops(m).count("LeakyRelu"), leaky="signed")
    signed = [n for n in out.graph.node if n.op_type == "SignedIF"]
    assert signed
    for n in signed:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        assert attrs["memory"] == 1 and attrs["alpha"] == pytest.approx(0.1)
    ibt = apply_pass(m, "activations_to_neurons", leaky="ibt")
    assert [n for n in ibt.graph.node if n.op_type == "SignedIF"]
    assert not [a for n in ibt.graph.node if n.op_type == "SignedIF" for a in n.attribute if a.name == "memory"]


def test_activations_to_neurons_graded_golden(golden):
    """The defaults' graph (count max-pools): every leaky layer one graded SignedIF with theta_n = 1/alpha until
    channel_norm sets it from data."""
    m = apply_pass(apply_pass(apply_pass(tiny_yolo(host=False), "fold_batchnorm"), "upsample_to_deconv"),
                   "maxpool_to_strided_conv", maxpool="count")
    out = check_pass("activations_to_neurons", m, golden, "activations_tiny_yolo_graded",
                     rewrites=ops(m).count("Relu") + ops(m).count("LeakyRelu"), leaky="graded", maxpool="count")
    graded = [n for n in out.graph.node if n.op_type == "SignedIF"]
    assert len(graded) == ops(m).count("LeakyRelu") and "MaxPool" in ops(out)
    for n in graded:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        assert attrs["graded"] == 1 and attrs["memory"] == 1
        assert attrs["threshold_neg"] == pytest.approx([1 / attrs["alpha"]])


def test_rate_limit_equals_onnxruntime_leaky_relu():
    """Thresholds 1 (not yet calibrated): the unclipped rate-limit network is the ANN, and the clipped one is the
    ANN with every leaky activation clipped to [-1, 1], on random inputs, several seeds."""
    m = _leaky_model()
    out = apply_pass(m, "activations_to_neurons", leaky="signed")
    unclipped, clipped = neurons_to_activations(out, clip=False), neurons_to_activations(out, clip=True)
    for seed in SEEDS:
        x = np.random.default_rng(seed).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
        assert max_rel_err(run_model(m, {"images": x}), run_model(unclipped, {"images": x})) <= 1e-5
        small = (x * 0.05).astype(np.float32)  # activations below the threshold 1: clipping changes nothing
        assert max_rel_err(run_model(m, {"images": small}), run_model(clipped, {"images": small})) <= 1e-5


def test_compile_lower_and_lavafile_roundtrip(tmp_path):
    from snnc.compiler.api import compile_model
    model = tiny_yolo(host=False)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    net = compile_model(str(path), calib_random=2, leaky="signed", progress=False).network
    kinds = {(l.neuron.kind, l.neuron.memory) for l in net.neuron_layers}
    assert ("SignedIF", True) in kinds and ("SignedIF", False) not in kinds
    check_network(net)
    lavafile.save(net, tmp_path / "m.lava")
    back = lavafile.load(tmp_path / "m.lava")
    assert [(l.neuron.kind, l.neuron.memory) for l in back.neuron_layers] == \
        [(l.neuron.kind, l.neuron.memory) for l in net.neuron_layers]
    assert back.meta["options"]["leaky"] == "signed"


# ---- simulation-level checks ------------------------------------------------------------------------------------

def test_yolo_like_closer_to_rate_limit_than_ibt_and_counts_negative_spikes():
    from snnc.backends.numpy.sim import rate_limit_forward
    from snnc.compiler.energy import energy_report
    nb = get_backend("numpy")
    ibt = yolo_like()
    sig = signed_memory(ibt)
    x = images((3, 16, 16), batch=2, seed=11)
    rl = rate_limit_forward(ibt, x)
    T = 64

    def err(net):
        res = nb.simulate(net, x, [T], mode="float")
        return sum(float(np.abs(res.outputs[T][o] - rl[o]).sum()) for o in net.outputs) / \
            sum(float(np.abs(rl[o]).sum()) for o in net.outputs), res

    e_ibt, _ = err(ibt)
    e_sig, res = err(sig)
    assert e_sig < e_ibt, (e_sig, e_ibt)
    # the recorded states: -1 spikes of signed memory neurons are counted (both signs cost SOPs)
    rec = nb.simulate(sig, x, [T], mode="fixed", record_layers=True)
    state = rec.extra["layers_at"][T]
    layer = sig.neuron_layers[1].name
    d = state[layer]
    assert d["memory"] and d["theta_neg"] is not None and int(d["neg"].sum()) > 0
    assert np.array_equal(rec.spike_counts[layer], d["pos"].sum(axis=1) + d["neg"].sum(axis=1))
    spikes = {k: float(np.mean(v)) for k, v in res.spike_counts.items()}
    report = energy_report(sig, spikes, T)
    assert report["snn_sops"] > 0


def test_error_analysis_reconstructs_mean_input():
    """errors.mean_inputs from the record equals W phi_in + b from layer_forward (signed memory neurons)."""
    from snnc.backends.numpy.sim import layer_forward
    nb = get_backend("numpy")
    net = signed_memory(yolo_like())
    x = images((3, 16, 16), batch=2, seed=12)
    T = 24
    res = nb.simulate(net, x, [T], mode="float", record_layers=True)
    state = res.extra["layers_at"][T]
    phi = errors.mean_outputs(state, T)
    over = {k: v.reshape((v.shape[0],) + tuple(net.layer(k).shape)) for k, v in phi.items()}
    zs, _ = layer_forward(net, x, override=over)
    for layer in net.neuron_layers:
        d = state[layer.name]
        got = errors.mean_inputs(d, T)
        want = zs[layer.name].reshape(got.shape)
        np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, float(np.abs(want).max())))
        _, e, mask = errors.split_layer(d, T)
        theta = d["theta"]
        assert np.all(np.abs(e[mask]) <= (theta * np.ones_like(e))[mask] * (1 + 0.05) / T * 1.001 + 1e-6)


def test_nir_refuses_with_layer_name():
    from snnc.backends.nir.export import to_nir
    net = signed_memory(yolo_like())
    with pytest.raises(SnncError, match=r"c1.*signed memory neuron.*--leaky split"):
        to_nir(net)


def test_network_checks_accept_signed_memory(tmp_path):
    net = signed_memory(yolo_like())
    check_network(net)
    lavafile.save(net, tmp_path / "y.lava")
    assert all(l.neuron.memory for l in lavafile.load(tmp_path / "y.lava").neuron_layers
               if l.neuron.kind == "SignedIF")
