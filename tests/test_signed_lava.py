"""The signed memory neuron (SignedIF with memory) in the Lava backend (SignedMemoryIF process): bit-exact with the
NumPy reference in fixed point and the same spikes in float mode, on one hand-made neuron and on the YOLO-shaped
network of tests/test_lava_backend.py. Runs in the Python 3.10 environment (`make .venv310`), where lava-nc is
installed; it is not collected elsewhere (the Makefile lists it with the 3.10 tests)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_lava_backend import images, yolo_like

from snnc.backends import get_backend
from snnc.backends.lava.compare import compare_with_numpy
from snnc.backends.lava.plan import make_plan
from snnc.ir.network import Layer, Network, Neuron


def signed_memory(net: Network) -> Network:
    return dataclasses.replace(net, layers=[
        dataclasses.replace(l, neuron=dataclasses.replace(l.neuron, memory=True))
        if l.neuron is not None and l.neuron.kind == "SignedIF" else l for l in net.layers])


def test_plan_uses_the_signed_memory_process():
    plan = make_plan(signed_memory(yolo_like(8)), "fixed")
    kinds = {p.kind for p in plan.pops}
    assert "SignedMemoryIF" in kinds and "SignedIF" not in kinds


@pytest.mark.parametrize("mode", ["fixed", "float"])
def test_yolo_like(mode):
    net = signed_memory(yolo_like())
    x = images((3, 16, 16), batch=2)
    cmp = compare_with_numpy(net, x, [5, 12, 24], mode=mode).check()
    assert all(r > 0 for r in cmp.lava.firing_rates().values())
    ibt = get_backend("numpy").simulate(yolo_like(), x, [24], mode=mode)
    assert any(not np.array_equal(ibt.spike_counts[k], cmp.reference.spike_counts[k]) for k in ibt.spike_counts)


def retrigger_net(memory: bool) -> Network:
    """Neuron 'n' (theta 1, alpha 0.5: negative threshold -2, V(0) = 0) receives -2, +1, -2, +1, ...: two IF neurons
    'k' driven by constant currents 1.01 and 0.51 spike every step and every second step, with weights -2 and 3."""
    return Network([Layer("x", "input", [], (1,)),
                    Layer("k", "dense", ["x"], (2,), np.array([[1.01], [0.51]], np.float32), None, {},
                          Neuron("IF", np.ones(2, np.float32), v_init=0.0)),
                    Layer("n", "dense", ["k"], (1,), np.array([[-2.0, 3.0]], np.float32), None, {},
                          Neuron("SignedIF", np.ones(1, np.float32), alpha=0.5, v_init=0.0, memory=memory))],
                   ["n"], input_encoding={"kind": "direct", "scale": 1.0})


@pytest.mark.parametrize("mode", ["fixed", "float"])
def test_ibt_retrigger_input(mode):
    """IBT spikes -1, +1, -1, ... (mean 0); the signed memory neuron takes each -1 back only while leaky(sum z)
    allows: its count after 8 steps is trunc(0.5 * -4) = -2, in Lava as in NumPy."""
    x = np.ones((1, 1), np.float32)
    for memory, count in ((False, 0), (True, -2)):
        cmp = compare_with_numpy(retrigger_net(memory), x, [8], mode=mode).check()
        assert round(float(cmp.lava.outputs[8]["n"][0, 0]) * 8) == count
