"""The graded signed memory neuron (`--leaky graded`) in the Lava backend (GradedSignedMemoryIF process):
bit-exact with the NumPy reference in fixed point and the same results in float mode, on the YOLO-shaped network of
tests/test_lava_backend.py with every SignedIF graded. Runs in the Python 3.10 environment (`make .venv310`), where
lava-nc is installed; the Makefile lists it with the 3.10 tests."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_lava_backend import images, yolo_like

from snnc.backends import get_backend
from snnc.backends.lava.compare import compare_with_numpy
from snnc.backends.lava.plan import make_plan
from snnc.ir.network import Network


def graded(net: Network, seed: int = 5) -> Network:
    """`net` with every SignedIF a graded signed memory neuron, negative thresholds drawn per channel."""
    rng = np.random.default_rng(seed)
    layers = []
    for l in net.layers:
        if l.neuron is not None and l.neuron.kind == "SignedIF":
            l = dataclasses.replace(l, neuron=dataclasses.replace(
                l.neuron, memory=True, graded=True,
                threshold_neg=l.neuron.threshold * rng.uniform(0.5, 12.0, l.shape[0]).astype(np.float32)))
        layers.append(l)
    return dataclasses.replace(net, layers=layers)


def test_plan_uses_the_graded_process():
    plan = make_plan(graded(yolo_like(8)), "fixed")
    pops = [p for p in plan.pops if p.kind == "GradedSignedMemoryIF"]
    assert pops and not [p for p in plan.pops if p.kind in ("SignedIF", "SignedMemoryIF")]
    assert all(p.max_out > 1 and p.pay_pos is not None for p in pops)


@pytest.mark.parametrize("mode", ["fixed", "float"])
def test_yolo_like(mode):
    net = graded(yolo_like())
    x = images((3, 16, 16), batch=2)
    cmp = compare_with_numpy(net, x, [5, 12, 24], mode=mode).check()
    assert all(r > 0 for r in cmp.lava.firing_rates().values())
    # not vacuous: graded differs from the signed memory neuron with the same network
    plain = dataclasses.replace(net, layers=[dataclasses.replace(l, neuron=dataclasses.replace(
        l.neuron, graded=False, threshold_neg=None)) if l.neuron is not None and l.neuron.graded else l
        for l in net.layers])
    other = get_backend("numpy").simulate(plain, x, [24], mode=mode)
    assert any(not np.array_equal(other.outputs[24][o], cmp.reference.outputs[24][o]) for o in net.outputs)


def test_graded_with_count_maxpools(tmp_path):
    """The lean graph (`--leaky graded --maxpool count`) compiled from a small YOLO: graded neurons feeding the
    CountMaxPool process, bit-exact with NumPy in fixed point."""
    import onnx
    from models import tiny_yolo

    from snnc.compiler.api import compile_model
    path = tmp_path / "m.onnx"
    onnx.save(tiny_yolo(host=False), path)
    net = compile_model(str(path), calib_random=2, leaky="graded", maxpool="count", progress=False).network
    assert any(l.op == "maxpool" for l in net.layers) and any(l.neuron is not None and l.neuron.graded
                                                               for l in net.layers)
    x = images(net.input_layers[0].shape, batch=1, seed=4)
    compare_with_numpy(net, x, [4, 10], mode="fixed").check()
