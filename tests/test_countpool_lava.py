"""The count max-pool (`--maxpool count`) in the Lava backend (CountMaxPool process): spike counts and output sums
bit-exact with the NumPy reference in fixed point and equal to float rounding in float mode, on tiny
conv -> pool -> conv networks (plain and memory IF sources, a strided pool and a stride-1 pool behind an edge pad,
a pool on the input image itself) and on the digits ReLU detector compiled with --maxpool count. Runs in the
Python 3.10 environment (`make .venv310`), where lava-nc is installed; it is not collected elsewhere (the
Makefile lists it with the 3.10 tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from networks import conv, images, inp, pad, with_memory

from snnc.backends import get_backend
from snnc.backends.lava.compare import compare_with_numpy
from snnc.backends.lava.plan import make_plan
from snnc.ir.network import Layer, Network

TS = [5, 16]
DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits" / "models" / "digits_relu.onnx"


def pool_net(case: str, memory: bool = False) -> Network:
    """x (3, 8, 8) -> conv c1 (IF) -> [edge pad] -> count max-pool -> conv c2 (IF) -> linear 1x1 head.

    k2s2: a 2x2 pool, stride 2; edge_k2s1: yolov3-tiny's stride-1 pool (edge pad bottom / right, 2x2, stride 1);
    k3s2: a 3x3 pool with stride 2 (overlapping windows); concat_k2s2: a 2x2 pool over the concat of c1 and a conv
    c1b behind it; on_input: the pool reads the image (no neurons in front)."""
    rng = np.random.default_rng(11)
    layers = [inp((3, 8, 8))]
    if case == "on_input":
        layers += [Layer("pool", "maxpool", ["x"], (3, 4, 4), attrs={"kernel_shape": [2, 2], "strides": [2, 2]}),
                   conv("c2", "pool", 3, 5, (4, 4), rng)]
    else:
        layers.append(conv("c1", "x", 3, 4, (8, 8), rng))
        src, hw = "c1", 8
        c = 4
        if case == "edge_k2s1":
            layers.append(pad("p1", "c1", (4, 9, 9), (0, 0, 1, 1), "edge"))
            src, hw = "p1", 9
        if case == "concat_k2s2":  # two routes of different depth into the pool's input (a Delay on c1's)
            layers += [conv("c1b", "c1", 4, 3, (8, 8), rng),
                       Layer("cat", "concat", ["c1b", "c1"], (7, 8, 8), attrs={"axis": 0})]
            src, c = "cat", 7
        k, s = {"k2s2": (2, 2), "edge_k2s1": (2, 1), "k3s2": (3, 2), "concat_k2s2": (2, 2)}[case]
        o = (hw - k) // s + 1
        layers += [Layer("pool", "maxpool", [src], (c, o, o), attrs={"kernel_shape": [k, k], "strides": [s, s]}),
                   conv("c2", "pool", c, 5, (o, o), rng)]
    o = layers[-1].shape[1]
    layers.append(conv("head", "c2", 5, 6, (o, o), rng, k=1, pads=(0, 0, 0, 0), kind=None))
    net = Network(layers, ["head"], input_encoding={"kind": "direct", "scale": 1.0 / 255, "max_value": 1.0})
    return with_memory(net) if memory else net


def test_plan_has_a_pool_population_one_stage_deeper():
    plan = make_plan(pool_net("edge_k2s1"), "fixed")
    pool, c1, c2 = plan.pop("pool"), plan.pop("c1"), plan.pop("c2")
    assert pool.kind == "CountMaxPool" and pool.shape == (8, 8, 4) and pool.in_shape == (9, 9, 4)
    assert pool.depth == c1.depth + 1 and c2.depth == pool.depth + 1
    (route,) = [c for c in plan.conns if c.target == "pool"]
    assert route.kind == "sparse" and route.source == "c1" and route.synapses == 9 * 9 * 4  # the edge pad, 0/1
    assert {p.kind for p in make_plan(pool_net("k2s2", memory=True), "float").pops} >= {"CountMaxPool", "MemoryIF"}
    cat = make_plan(pool_net("concat_k2s2"), "fixed")
    assert sorted((c.source, c.delay) for c in cat.conns if c.target == "pool") == [("c1", 1), ("c1b", 0)]


@pytest.mark.parametrize("case", ["k2s2", "edge_k2s1", "k3s2", "concat_k2s2"])
@pytest.mark.parametrize("memory", [False, True], ids=["if", "memory"])
def test_fixed_bit_exact(case, memory):
    net = pool_net(case, memory)
    x = images((3, 8, 8), batch=2, seed=3)
    cmp = compare_with_numpy(net, x, TS).check()
    assert cmp.lava.spike_counts["c2"].sum() > 0  # spikes went through the pool
    if memory:  # the pool met -1 spikes: its sums can fall, and the reference differs from the plain-IF twin's
        plain = get_backend("numpy").simulate(pool_net(case), x, TS, mode="fixed", progress=False)
        assert not np.array_equal(plain.extra["sums"][16]["head"], cmp.reference.extra["sums"][16]["head"])


@pytest.mark.parametrize("case", ["k2s2", "edge_k2s1"])
def test_float_same_spikes(case):
    net = pool_net(case, memory=True)
    cmp = compare_with_numpy(net, images((3, 8, 8), batch=1, seed=4), TS, mode="float").check()
    assert cmp.lava.spike_counts["c2"].sum() > 0


@pytest.mark.parametrize("mode", ["fixed", "float"])
def test_pool_on_the_image_constant_current_and_per_step(mode):
    """A pool reading the image: its a_in is a constant current (or a Sparse from the source every step), its
    output max(window) every step, as in the reference."""
    net, x = pool_net("on_input"), images((3, 8, 8), batch=1, seed=5)
    ref = get_backend("numpy").simulate(net, x, TS, mode=mode, progress=False)
    for constant in (True, False):
        res = get_backend("lava").simulate(net, x, TS, mode=mode, constant_input=constant)
        assert res.extra["constant_current"] == (["pool"] if constant else [])
        np.testing.assert_array_equal(res.spike_counts["c2"], ref.spike_counts["c2"])
        for t in TS:
            if mode == "fixed":
                np.testing.assert_array_equal(res.extra["sums"][t]["head"], ref.extra["sums"][t]["head"])
            np.testing.assert_allclose(res.outputs[t]["head"], ref.outputs[t]["head"], rtol=1e-5, atol=1e-6)


def test_compiled_tiny_yolo_with_signed_memory_neurons_fixed_bit_exact(tmp_path):
    """The pipeline's own output: a yolov3-tiny-shaped model with LeakyReLUs compiled with --maxpool count (signed
    memory neurons feed the three pools, the last a stride-1 pool behind an edge pad), two inputs, T = 5 and 16."""
    import onnx
    from models import tiny_yolo

    from snnc.compiler.api import compile_model

    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_yolo(leaky=True, host=False), str(path))
    net = compile_model(path, calib_random=4, maxpool="count", leaky="split", progress=False).network
    kinds = {p.name: p.kind for p in make_plan(net, "fixed").pops}
    assert list(kinds.values()).count("CountMaxPool") == 3 and "SignedMemoryIF" in kinds.values()
    assert any(l.op == "pad" and l.attrs.get("mode") == "edge" for l in net.layers)
    x = np.random.default_rng(1).uniform(0, 1, (2,) + net.input_layers[0].shape).astype(np.float32)
    cmp = compare_with_numpy(net, x, TS).check()
    assert all(v.sum() > 0 for v in cmp.lava.spike_counts.values())


def test_digits_relu_detector_count_pool_fixed_bit_exact(tmp_path):
    """The trained digits ReLU detector (three 2x2 count max-pools) calibrated on four train canvases, on one
    test canvas, T = 4 and 8."""
    from PIL import Image

    from snnc.compiler.api import compile_model
    from snnc.evaluation.digits import make_digits

    for i, img in enumerate(make_digits("train", 4).images):
        Image.fromarray(img).save(tmp_path / f"train_{i}.png")
    net = compile_model(DIGITS, calib_dir=tmp_path, maxpool="count", progress=False, include_ann=False).network
    assert sum(l.op == "maxpool" for l in net.layers) == 3
    x = (make_digits("test", 1).images[0].astype(np.float32) / 255).transpose(2, 0, 1)[None]
    cmp = compare_with_numpy(net, x, [4, 8]).check()
    assert all(v.sum() > 0 for v in cmp.lava.spike_counts.values())
