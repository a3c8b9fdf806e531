"""torch backend: the NumPy reference's semantics, bit for bit in fixed point and within 1e-5 in float.

Every op alone (the C backend's cases, plain and memory IF), the YOLO-shaped network, the random networks of
test_numpy_sim over several seeds, rate and explicit encoding, checkpoints, time chunks, and the device option.
The CUDA case runs where torch finds a GPU; elsewhere it is skipped with the reason NO_GPU, the one skip
tests/conftest.py lets through under SNNC_NO_SKIP=1.
"""

from __future__ import annotations

import numpy as np
import pytest

import snnc.backends.torch  # noqa: E402,F401  (first: it sets torch's OpenMP wait policy before torch loads)
import torch  # noqa: E402  (part of the test environment: the Makefile installs it into .venv)

from conftest import NO_GPU  # noqa: E402
from test_c_backend import OPS, assert_close, assert_same, images, net_for, with_memory, yolo_like  # noqa: E402
from test_numpy_sim import random_net, reference_fixed  # noqa: E402

from snnc.backends import get_backend  # noqa: E402
from snnc.backends.torch import TorchBackend  # noqa: E402
from snnc.ir.errors import SnncError  # noqa: E402
from snnc.ir.network import Layer, Network, Neuron  # noqa: E402


def same_fixed(res, ref) -> None:
    assert_same(res, ref.outputs, ref.spike_counts)
    for t, per in ref.extra["sums"].items():
        for name, v in per.items():
            assert np.array_equal(res.extra["sums"][t][name], v), (t, name)
    for t, per in ref.extra["spike_counts_at"].items():
        for name, v in per.items():
            assert np.array_equal(res.extra["spike_counts_at"][t][name], v), (t, name)
    assert res.neurons == ref.neurons and res.steps == ref.steps


def test_registered_as_torch(tb):
    assert isinstance(tb, TorchBackend) and tb.name == "torch"


@pytest.mark.parametrize("memory", [False, True], ids=["plain", "memory"])
@pytest.mark.parametrize("case", OPS)
def test_op_matches_numpy(case, memory, tb, nb):
    net = net_for(case, memory)
    x = images(net.input_layers[0].shape)
    same_fixed(tb.simulate(net, x, [1, 3, 6], mode="fixed"), nb.simulate(net, x, [1, 3, 6], mode="fixed"))
    ref = nb.simulate(net, x, [1, 3, 6], mode="float")
    res = tb.simulate(net, x, [1, 3, 6], mode="float")
    assert_close(res, ref)
    assert sum(int(v.sum()) for v in ref.spike_counts.values()) > 0


@pytest.mark.parametrize("memory", [False, True], ids=["as_built", "memory"])
@pytest.mark.parametrize("seed", [3, 4])
def test_yolo_like(seed, memory, tb, nb):
    net = with_memory(yolo_like(), signed_too=True) if memory else yolo_like()
    x = images((3, 16, 16), batch=2, seed=seed)
    for v_init in ((None, 0.0) if seed == 3 else (0.5,)):
        same_fixed(tb.simulate(net, x, [1, 4, 16], mode="fixed", v_init=v_init),
                   nb.simulate(net, x, [1, 4, 16], mode="fixed", v_init=v_init))
        ref = nb.simulate(net, x, [2, 8], mode="float", v_init=v_init)
        assert_close(tb.simulate(net, x, [2, 8], mode="float", v_init=v_init), ref)
        rates = ref.firing_rates()
        assert all(0 < r < 1 for r in rates.values()), rates


@pytest.mark.parametrize("kind", ["IF", "SignedIF"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_networks(seed, kind, tb, nb):
    """test_numpy_sim's random network (conv, strided conv, grouped deconv, concat, edge pad, linear conv and dense
    heads), thresholds from the data: float within 1e-5, fixed bit-exact at 8 and 16 bits."""
    net, x = random_net(seed, kind, size=8, batch=2)
    ref = nb.simulate(net, x, [5, 20], mode="float", progress=False)
    assert_close(tb.simulate(net, x, [5, 20], mode="float"), ref)
    for bits in (8, 16):
        same_fixed(tb.simulate(net, x, [5, 20], mode="fixed", weight_bits=bits),
                   nb.simulate(net, x, [5, 20], mode="fixed", weight_bits=bits, progress=False))


def test_fixed_equals_the_integer_reference(tb):
    """Independently of the NumPy simulator: test_numpy_sim's step-by-step int64 reference (the first layer's
    convolution runs as several exact float32 pieces)."""
    from snnc.backends.torch import sim as torch_sim

    net, x = random_net(5, "SignedIF", size=8, batch=2)
    res = tb.simulate(net, x, 12, mode="fixed")
    first = next(reversed(torch_sim._PLAN_CACHE.values()))[1]  # the plan just used: the conv on the image
    assert first.parts is not None and len(first.parts) > 1  # 16-bit weights x 0..255 pixels: split, still exact
    for b in range(2):
        ref = reference_fixed(net, x[b], 12)
        for k in net.outputs:
            np.testing.assert_array_equal(res.extra["sums"][12][k][b], ref[k])


@pytest.mark.parametrize("mode", ["float", "fixed"])
def test_chunks_and_checkpoints(mode, tb, monkeypatch):
    """A run chunked one step at a time equals the unchunked run; checkpoints of one run equal separate runs."""
    from snnc.backends.torch import sim as torch_sim

    net, x = random_net(4, "SignedIF", size=8, batch=2)
    whole = tb.simulate(net, x, [7, 30], mode=mode)
    assert whole.extra["chunk_steps"] == 30
    monkeypatch.setattr(torch_sim, "_bytes_per_step", lambda *a: 1 << 40)  # any budget: one step per chunk
    chunked = tb.simulate(net, x, [7, 30], mode=mode, threads=1)
    monkeypatch.undo()
    assert chunked.extra["chunk_steps"] == 1
    alone = tb.simulate(net, x, 7, mode=mode)
    for T in (7, 30):
        for k in net.outputs:
            if mode == "fixed":
                np.testing.assert_array_equal(chunked.outputs[T][k], whole.outputs[T][k])
            else:
                np.testing.assert_allclose(chunked.outputs[T][k], whole.outputs[T][k], rtol=1e-5, atol=1e-5)
    for k in net.outputs:
        np.testing.assert_allclose(alone.outputs[7][k], whole.outputs[7][k], rtol=1e-6, atol=1e-6)
    for k, v in whole.spike_counts.items():
        np.testing.assert_array_equal(chunked.spike_counts[k], v)
        np.testing.assert_array_equal(alone.spike_counts[k], whole.extra["spike_counts_at"][7][k])


@pytest.mark.parametrize("seed", [0, 11])
def test_rate_encoding(seed, tb, nb):
    net = with_memory(yolo_like(), signed_too=False)
    x = images((3, 16, 16), batch=2, seed=1)
    for mode in ("fixed", "float"):
        ref = nb.simulate(net, x, [3, 12], mode=mode, encoding="rate", seed=seed)
        res = tb.simulate(net, x, [3, 12], mode=mode, encoding="rate", seed=seed)
        if mode == "fixed":
            same_fixed(res, ref)
        else:
            assert_close(res, ref)


def test_explicit_encoding_and_memory_if(tb, nb):
    """A hand-made input train (one memory IF neuron, test_numpy_sim's currents) and random spike trains."""
    net = Network([Layer("x", "input", [], (1,)),
                   Layer("n", "dense", ["x"], (1,), np.ones((1, 1), np.float32), None, {},
                         Neuron("IF", np.ones(1, np.float32), v_init=0.0, memory=True))], ["n"],
                  input_encoding={"kind": "direct", "scale": 0.1})
    currents = np.array([0.6, 0.6, -1.0, 0.5, 0.5, 0.5, -0.4, -0.4], np.float32).reshape(8, 1, 1)
    ts = list(range(1, 9))
    for mode in ("float", "fixed"):
        res = tb.simulate(net, currents, ts, mode=mode, encoding="explicit")
        counts = [int(res.outputs[t]["n"][0, 0] * t + 0.5) for t in ts]
        assert counts == [0, 1, 0, 0, 1, 1, 1, 0]  # +1 at 2, -1 at 3, +1 at 5, -1 at 8
        assert res.spike_counts["n"].tolist() == [4]
    big = yolo_like()
    rng = np.random.default_rng(2)
    train = rng.integers(0, 2, (10, 2, 3, 16, 16)).astype(np.float32)
    same_fixed(tb.simulate(big, train, [4, 10], mode="fixed", encoding="explicit"),
               nb.simulate(big, train, [4, 10], mode="fixed", encoding="explicit"))
    assert_close(tb.simulate(big, train, [4, 10], encoding="explicit"),
                 nb.simulate(big, train, [4, 10], encoding="explicit"))


def test_device_errors(tb):
    net = yolo_like()
    x = images((3, 16, 16), batch=1)
    with pytest.raises(SnncError, match="cpu, cuda or cuda:N"):
        tb.simulate(net, x, 2, device="tpu")
    with pytest.raises(SnncError, match="cpu, cuda or cuda:N"):
        tb.simulate(net, x, 2, device="cudax")
    with pytest.raises(SnncError, match="cuda:99"):
        tb.simulate(net, x, 2, device="cuda:99")
    if not torch.cuda.is_available():
        with pytest.raises(SnncError, match="finds no CUDA GPU"):
            tb.simulate(net, x, 2, device="cuda")
    with pytest.raises(SnncError, match="does not support"):
        tb.simulate(net, x, 2, record_layers=True)
    with pytest.raises(SnncError, match="runs on the CPU only"):
        get_backend("numpy").simulate(net, x, 2, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)
def test_cuda_matches_numpy(tb, nb):
    """On a GPU: fixed point bit-exact (float64 convolutions, rounded), float within 1e-5 (TF32 off)."""
    for memory in (False, True):
        net = with_memory(yolo_like(), signed_too=True) if memory else yolo_like()
        x = images((3, 16, 16), batch=2, seed=5)
        res = tb.simulate(net, x, [1, 4, 16], mode="fixed", device="cuda")
        assert res.extra["device"].startswith("cuda")
        same_fixed(res, nb.simulate(net, x, [1, 4, 16], mode="fixed"))
        assert_close(tb.simulate(net, x, [2, 8], device="cuda"), nb.simulate(net, x, [2, 8]))
    net, x = random_net(1, "IF", size=8, batch=2)
    same_fixed(tb.simulate(net, x, [5, 20], mode="fixed", device="cuda", encoding="rate", seed=3),
               nb.simulate(net, x, [5, 20], mode="fixed", encoding="rate", seed=3, progress=False))
