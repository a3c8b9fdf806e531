"""`--maxpool count`: the spike-count max-pool routing layer, through the whole chain.

The pass (golden dump, onnxruntime equality, idempotence), the recurrence (snnc.ir.countpool: chunking,
exactness of the decoded max, spike outputs), lowering and the .lava round trip, the NumPy reference against
the rate limit, torch (float equal, fixed bit-exact) and C (fixed bit-exact) against NumPy, NIR's refusal and
Lava's plan, and the cost / energy / Loihi counting."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from models import Builder, tiny_yolo

from snnc.backends import get_backend
from snnc.backends.numpy.sim import rate_limit_forward
from snnc.compiler.api import compile_model
from snnc.compiler.cost import network_cost, network_rows
from snnc.compiler.dump import graph_dump
from snnc.compiler.energy import energy_report, fanout_maps
from snnc.compiler.graph import run_model
from snnc.compiler.loihi import fit
from snnc.compiler.pipeline import apply_pass, run_pass
from snnc.ir import lavafile
from snnc.ir.countpool import count_maxpool, window_max

SEEDS = (0, 1, 2)


def _pool_model(act: str, **pool) -> onnx.ModelProto:
    b = Builder(7)
    x = b.conv("images", 3, 4)
    x = b.node(act, [x], alpha=0.1) if act == "LeakyRelu" else b.node(act, [x])
    y = b.conv(b.node("MaxPool", [x], **pool), 4, 3)
    return b.model([1, 3, 8, 8], [y])


# ---------------------------------------------------------------- the pass

@pytest.mark.parametrize("name,pool", [
    ("k3s2_pad1", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("k2s2", dict(kernel_shape=[2, 2], strides=[2, 2])),
])
def test_pass_keeps_a_pad_free_maxpool(golden, name, pool):
    m = _pool_model("LeakyRelu", **pool)
    first = run_pass(m, "maxpool_to_strided_conv", maxpool="count")
    out = first.model
    onnx.checker.check_model(out)
    golden(f"maxpool_count_{name}", graph_dump(out))
    assert first.rewrites == (1 if "pads" in pool else 0)  # an already pad-free pool is its own final form
    again = run_pass(out, "maxpool_to_strided_conv", maxpool="count")
    assert again.rewrites == 0 and graph_dump(again.model) == graph_dump(out)
    pools = [n for n in out.graph.node if n.op_type == "MaxPool"]
    assert len(pools) == 1 and not any(a.name in ("pads", "auto_pad", "ceil_mode") for a in pools[0].attribute)
    for seed in SEEDS:  # exact: edge padding gives a -inf-padded max-pool's maxima
        x = np.random.default_rng(seed).uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
        ref, got = run_model(m, {"images": x}), run_model(out, {"images": x})
        assert all(np.allclose(ref[k], got[k], rtol=0, atol=1e-6) for k in ref)


def test_pass_count_resolves_ceil_mode():
    m = _pool_model("Relu", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    out = apply_pass(m, "maxpool_to_strided_conv", maxpool="count")
    assert [n.op_type for n in out.graph.node].count("Pad") == 1
    x = np.random.default_rng(3).uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    ref, got = run_model(m, {"images": x}), run_model(out, {"images": x})
    assert all(np.allclose(ref[k], got[k], atol=1e-6) for k in ref)


# ---------------------------------------------------------------- the recurrence

def test_count_maxpool_decodes_the_exact_max_and_emits_spikes():
    rng = np.random.default_rng(0)
    T, k, s = 40, [3, 2], [1, 2]
    x = rng.choice(np.array([-1, 0, 1], np.int8), size=(T, 2, 3, 7, 8), p=[0.1, 0.5, 0.4])
    out, _ = count_maxpool(x, k, s)
    assert out.dtype == np.int8 and set(np.unique(out)) <= {-1, 0, 1}
    counts = np.cumsum(x, axis=0, dtype=np.int64)
    # the stated bound is zero: at every t the output count is the window max of the input counts
    assert np.array_equal(np.cumsum(out, axis=0, dtype=np.int64), window_max(counts, k, s))
    parts, state = [], None  # chunked as the simulators run it
    for a, b in ((0, 7), (7, 8), (8, 40)):
        o, state = count_maxpool(x[a:b], k, s, state)
        parts.append(o)
    assert np.array_equal(np.concatenate(parts), out)


def test_window_max_matches_onnx_maxpool():
    b = Builder(1)
    m = b.model([2, 3, 9, 7], [b.node("MaxPool", ["images"], kernel_shape=[3, 2], strides=[2, 1])])
    x = np.random.default_rng(1).normal(size=(2, 3, 9, 7)).astype(np.float32)
    ref = list(run_model(m, {"images": x}).values())[0]
    assert np.array_equal(window_max(x, [3, 2], [2, 1]), ref)


# ---------------------------------------------------------------- the chain

@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    out = {}
    for leaky in (False, True):
        p = tmp_path_factory.mktemp("m") / "m.onnx"
        onnx.save(tiny_yolo(leaky=leaky, host=False), str(p))
        out[leaky] = compile_model(p, calib_random=4, maxpool="count", progress=False).network
    return out


def _x(net, n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n,) + net.input_layers[0].shape).astype(np.float32)


@pytest.mark.parametrize("leaky", [False, True])
def test_lowered_pools_have_no_neurons_and_round_trip(nets, leaky: bool, tmp_path):
    net = nets[leaky]
    pools = [l for l in net.layers if l.op == "maxpool"]
    assert len(pools) == 3 and all(l.neuron is None and l.weight is None for l in pools)
    path = tmp_path / "n.lava"
    lavafile.save(net, path)
    back = lavafile.load(path)
    assert [(l.op, l.attrs) for l in back.layers if l.op == "maxpool"] == [(l.op, l.attrs) for l in pools]


@pytest.mark.parametrize("leaky", [False, True])
def test_numpy_converges_to_the_rate_limit(nets, leaky):
    net, x = nets[leaky], _x(nets[leaky])
    rl = rate_limit_forward(net, x)
    res = get_backend("numpy").simulate(net, x, [16, 256])
    err = {t: max(float(np.abs(res.outputs[t][k] - rl[k]).mean() / np.abs(rl[k]).mean()) for k in rl)
           for t in (16, 256)}
    assert err[256] < 0.25 * err[16] and err[256] < 0.02, err


@pytest.mark.parametrize("leaky", [False, True])
def test_torch_and_c_match_numpy(nets, leaky):
    net, x = nets[leaky], _x(nets[leaky], seed=1)
    ts = [5, 16, 37]
    ref = {m: get_backend("numpy").simulate(net, x, ts, mode=m) for m in ("float", "fixed")}
    tor = {m: get_backend("torch").simulate(net, x, ts, mode=m) for m in ("float", "fixed")}
    c = get_backend("c").simulate(net, x, ts, mode="fixed")
    for t in ts:
        for k in net.outputs:
            # float: summation order differs (BLAS vs onnxruntime), which can move an odd spike by one step
            a, b = tor["float"].outputs[t][k], ref["float"].outputs[t][k]
            assert np.abs(a - b).mean() <= 1e-3 * np.abs(b).mean()
            assert np.array_equal(tor["fixed"].outputs[t][k], ref["fixed"].outputs[t][k])
            assert np.array_equal(c.outputs[t][k], ref["fixed"].outputs[t][k])
    for k, v in ref["fixed"].spike_counts.items():
        assert np.array_equal(v, c.spike_counts[k]) and np.array_equal(v, tor["fixed"].spike_counts[k])


def test_nir_refuses_naming_the_layer_lava_plans_a_pool_process(nets):
    from snnc.backends.lava.plan import make_plan

    net = nets[False]
    pool = next(l.name for l in net.layers if l.op == "maxpool")
    assert make_plan(net).pop(pool).kind == "CountMaxPool"  # run in Lava: tests/test_countpool_lava.py (3.10)
    from snnc.backends.nir.export import _why_not

    assert "--maxpool exact" in _why_not(net.layer(pool), net)


def test_cost_energy_and_loihi_count_the_pool(nets):
    net = nets[False]
    pools = [l for l in net.layers if l.op == "maxpool"]
    rows = {r["layer"]: r for r in network_rows(net)}
    for l in pools:
        taps = int(np.prod(l.shape)) * int(np.prod(l.attrs["kernel_shape"]))
        assert rows[l.name]["neurons"] == 0 and rows[l.name]["parameters"] == 0
        assert rows[l.name]["synapses"] == taps == rows[l.name]["macs"]
    assert network_cost(net)["neurons"] == sum(int(np.prod(l.shape)) for l in net.neuron_layers)
    f = fit(net)
    assert sum(r.neurons for r in f.layers if r.op == "maxpool") == sum(int(np.prod(l.shape)) for l in pools)
    maps = fanout_maps(net)
    src = net.layer(pools[0].inputs[0])  # an edge pad or a neuron layer
    assert maps[src.name].min() >= 1  # every input reaches at least one window: one count update
    sim = get_backend("numpy").simulate(net, _x(net, 1), 8)
    rep = energy_report(net, {k: v.mean() for k, v in sim.spike_counts.items()}, 8)
    assert rep["snn_sops"] > 0


def test_calibrate_to_T_simulates_count_pools(tmp_path):
    """calibrate_to_T's graph simulation (compiler/spikesim.py) runs the pools with the same recurrence."""
    from snnc.compiler.spikesim import GraphSim

    b = Builder(3)
    x = b.node("Relu", [b.conv("images", 3, 4)])
    m = b.model([1, 3, 8, 8], [b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])])
    graph = gs.import_onnx(apply_pass(m, "maxpool_to_strided_conv", maxpool="count"))
    pool = next(n for n in graph.nodes if n.op == "MaxPool")
    sim = GraphSim(graph, np.zeros((1, 3, 8, 8), np.float32), 6)
    spikes = np.random.default_rng(0).integers(0, 2, (6, 1, 4, 8, 8)).astype(np.float32)
    sim.values[pool.inputs[0].name] = spikes
    got = sim.step(pool)
    assert np.array_equal(np.cumsum(got, axis=0), window_max(np.cumsum(spikes, axis=0), [2, 2], [2, 2]))
    p = tmp_path / "m.onnx"
    onnx.save(tiny_yolo(leaky=False, host=False), str(p))
    net = compile_model(p, calib_random=2, maxpool="count", target_T=4, progress=False).network
    assert [l.op for l in net.layers].count("maxpool") == 3
