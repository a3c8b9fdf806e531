"""The signed memory neuron (SignedIF with memory) in the C and torch backends: bit-exact with the NumPy reference
in fixed point, within 1e-5 in float, on single layers and on the YOLO-shaped network (tests/test_c_backend.py's
networks with every SignedIF a signed memory neuron), with -1 spikes of both kinds (new and take-back) happening.
The Lava backend's twin is tests/test_signed_lava.py (Python 3.10)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import snnc.backends.torch  # noqa: F401  (first: it sets torch's OpenMP wait policy before torch loads)
from test_c_backend import assert_close, assert_same, cbk, images, single_op, yolo_like  # noqa: F401
from test_signed_neuron import signed_memory

from snnc.backends import get_backend
from snnc.ir.network import Network, Neuron


def without_memory(net: Network) -> Network:
    """The IBT twin of a network of signed memory neurons."""
    return dataclasses.replace(net, layers=[
        dataclasses.replace(l, neuron=dataclasses.replace(l.neuron, memory=False)) if l.neuron is not None else l
        for l in net.layers])


def differs_from_ibt(net: Network, x: np.ndarray, T: int) -> bool:
    """The signed memory neurons spike otherwise than IBT on this input: the check is not vacuous."""
    nb = get_backend("numpy")
    ibt, sig = (nb.simulate(n, x, [T], mode="fixed") for n in (without_memory(net), net))
    return any(not np.array_equal(ibt.spike_counts[k], sig.spike_counts[k]) for k in sig.spike_counts)


CASES = ["signed_if", "conv", "deconv_stride2"]


def _single(case: str) -> Network:
    """tests/test_c_backend.py's single-op network with every neuron a signed memory neuron."""
    net = single_op(case)
    return signed_memory(dataclasses.replace(net, layers=[
        dataclasses.replace(l, neuron=Neuron("SignedIF", l.neuron.threshold, alpha=0.1, v_init=l.neuron.v_init))
        if l.neuron is not None else l for l in net.layers]))


@pytest.mark.parametrize("backend", ["c", "torch"])
@pytest.mark.parametrize("case", CASES)
def test_single_layer(case, backend, cbk, tb, nb):  # noqa: F811
    bk = cbk if backend == "c" else tb
    net = _single(case)
    x = images(net.input_layers[0].shape)
    ts = [1, 3, 12]
    ref = nb.simulate(net, x, ts, mode="fixed")
    assert_same(bk.simulate(net, x, ts, mode="fixed"), ref.outputs, ref.spike_counts)
    assert_close(bk.simulate(net, x, ts, mode="float"), nb.simulate(net, x, ts, mode="float"))


@pytest.mark.parametrize("backend", ["c", "torch"])
def test_yolo_like(backend, cbk, tb, nb):  # noqa: F811
    bk = cbk if backend == "c" else tb
    net = signed_memory(yolo_like())
    x = images((3, 16, 16), batch=2, seed=3)
    ts = [1, 4, 16, 40]
    ref = nb.simulate(net, x, ts, mode="fixed", record_layers=True)
    res = bk.simulate(net, x, ts, mode="fixed")
    assert_same(res, ref.outputs, ref.spike_counts)
    state = ref.extra["layers_at"][40]
    signed = [l.name for l in net.neuron_layers if l.neuron.kind == "SignedIF"]
    # -1 spikes and take-backs (a neuron with both signs) happen in the layers fed by spikes
    assert all(int(state[n]["neg"].sum()) > 0 for n in signed[1:])
    assert any(int(((state[n]["pos"] > 0) & (state[n]["neg"] > 0)).sum()) > 0 for n in signed)
    assert differs_from_ibt(net, x, 40)
    assert_close(bk.simulate(net, x, ts, mode="float"), nb.simulate(net, x, ts, mode="float"))
    ref = nb.simulate(net, x, [9], mode="fixed", v_init=0.0, weight_bits=8)
    assert_same(bk.simulate(net, x, [9], mode="fixed", v_init=0.0, weight_bits=8), ref.outputs, ref.spike_counts)
