"""The fast paths of the C and torch backends agree with the NumPy reference: the C backend's input-channel-outer
convolutions, its cached render and weight blob, and torch's one-thread neuron scan.

Tiny networks: a conv whose weights outweigh its input current z (so the generator takes the input-channel-outer
loops), strided and padded, fed by spikes and by the image.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import snnc.backends.c as c_backend
from snnc.backends import get_backend
from snnc.ir.network import Network

from networks import conv, images, inp, with_memory

# the modules (snnc.backends.c re-exports functions of the same names)
c_backend_module = importlib.import_module("snnc.backends.c.backend")
c_generate = importlib.import_module("snnc.backends.c.generate")


def wide_net() -> Network:
    """Spikes into convs with many channels on small maps: weights > z, the input-channel-outer loops."""
    rng = np.random.default_rng(7)
    layers = [inp((3, 6, 6)),
              conv("c0", "x", 3, 32, (6, 6), rng),                       # fed by the image (int64 z)
              conv("c1", "c0", 32, 48, (6, 6), rng, s=2, pads=(1, 0, 1, 2)),  # strided, asymmetric pads
              conv("c2", "c1", 48, 64, (3, 3), rng, k=1, pads=(0, 0, 0, 0), kind=None)]
    return with_memory(Network(layers=layers, outputs=["c2", "c1"], input_encoding={"kind": "direct",
                                                                                   "scale": 1 / 255}))


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    return c_backend.CBackend(cache_dir=tmp_path_factory.mktemp("c-cache"), cflags="-O1")


def _same(res, ref) -> None:
    for t in ref.outputs:
        for n, v in ref.outputs[t].items():
            assert np.array_equal(res.outputs[t][n], v), (t, n)
    for n, v in ref.spike_counts.items():
        assert np.array_equal(res.spike_counts[n], v), n
    assert sum(int(v.sum()) for v in ref.spike_counts.values()) > 0


def test_c_input_channel_outer_is_bit_exact(backend):
    net = wide_net()
    src = c_generate.render(net, "fixed").files["snn_model.c"].decode()
    assert src.count("input channel outer") == 2  # c1 and c2 take the new loops, c0 (z > weights) the old
    c_backend_module._RENDER_CACHE.clear()
    x = images((3, 6, 6), batch=2, seed=3)
    ref = get_backend("numpy").simulate(net, x, [3, 7], mode="fixed", progress=False)
    _same(backend.simulate(net, x, [3, 7], mode="fixed"), ref)
    ref_f = get_backend("numpy").simulate(net, x, 7, mode="float", progress=False)
    res_f = backend.simulate(net, x, 7, mode="float")
    for n, v in ref_f.outputs[7].items():
        np.testing.assert_allclose(res_f.outputs[7][n], v, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(v).max()))


def test_c_render_is_cached_per_network(backend, monkeypatch):
    calls = []
    real = c_backend_module.render
    monkeypatch.setattr(c_backend_module, "render", lambda *a, **k: calls.append(1) or real(*a, **k))
    c_backend_module._RENDER_CACHE.clear()
    net = wide_net()
    x = images((3, 6, 6), batch=1, seed=4)
    first = backend.simulate(net, x, 4, mode="fixed")
    second = backend.simulate(net, x, 4, mode="fixed")
    assert len(calls) == 1
    _same(second, first)
    blobs = list((backend.cache_dir / "weights").glob("*.bin"))
    assert blobs
    # other weights: a new render and blob, and the results follow the new weights
    net.layers[2].weight[...] *= -1
    changed = backend.simulate(net, x, 4, mode="fixed")
    assert len(calls) == 2
    ref = get_backend("numpy").simulate(net, x, 4, mode="fixed", progress=False)
    _same(changed, ref)


def test_torch_scan_in_one_thread_is_exact_and_restores_threads():
    import snnc.backends.torch  # noqa: F401  (sets torch's OpenMP wait policy first)
    import torch

    net = wide_net()
    x = images((3, 6, 6), batch=2, seed=5)
    old = torch.get_num_threads()
    res = get_backend("torch").simulate(net, x, [2, 6], mode="fixed", threads=2, progress=False)
    assert torch.get_num_threads() == old
    _same(res, get_backend("numpy").simulate(net, x, [2, 6], mode="fixed", progress=False))
