"""Small lowered networks (snnc.ir.network) with random weights, shared by the backend tests.

Builders for single layers, the memory-IF helpers and the hand-made spike train whose counts every backend must
reproduce.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from snnc.ir.network import Layer, Network, Neuron


def neuron(kind: str | None, c: int, rng, v_init: float = 0.5) -> Neuron | None:
    if kind is None:
        return None
    theta = rng.uniform(0.3, 1.2, c).astype(np.float32)
    return Neuron(kind, theta, alpha=0.1 if kind == "SignedIF" else 0.0, v_init=v_init)


def conv(name, src, c_in, c_out, hw, rng, k=3, s=1, pads=(1, 1, 1, 1), d=1, g=1, kind="IF", bias=True):
    h, w = hw
    oh = (h + pads[0] + pads[2] - (d * (k - 1) + 1)) // s + 1
    ow = (w + pads[1] + pads[3] - (d * (k - 1) + 1)) // s + 1
    weight = rng.normal(0, 1.5 / np.sqrt(c_in / g * k * k), (c_out, c_in // g, k, k)).astype(np.float32)
    b = rng.normal(0, 0.2, c_out).astype(np.float32) if bias else None
    attrs = {"strides": [s, s], "pads": list(pads), "dilations": [d, d], "group": g}
    return Layer(name, "conv", [src], (c_out, oh, ow), weight, b, attrs, neuron(kind, c_out, rng))


def deconv(name, src, c_in, c_out, hw, rng, k=3, s=2, pads=(1, 1, 1, 1), out_pad=(1, 1), g=1, kind="IF",
           bias=True):
    h, w = hw
    oh = s * (h - 1) + out_pad[0] + (k - 1) + 1 - pads[0] - pads[2]
    ow = s * (w - 1) + out_pad[1] + (k - 1) + 1 - pads[1] - pads[3]
    weight = rng.normal(0, 1.5 / np.sqrt(c_in / g), (c_in, c_out // g, k, k)).astype(np.float32)
    b = rng.normal(0, 0.2, c_out).astype(np.float32) if bias else None
    attrs = {"strides": [s, s], "pads": list(pads), "dilations": [1, 1], "group": g, "output_padding": list(out_pad)}
    return Layer(name, "deconv", [src], (c_out, oh, ow), weight, b, attrs, neuron(kind, c_out, rng))


def dense(name, src, n_in, n_out, rng, kind="IF"):
    weight = rng.normal(0, 1.5 / np.sqrt(n_in), (n_out, n_in)).astype(np.float32)
    b = rng.normal(0, 0.2, n_out).astype(np.float32)
    return Layer(name, "dense", [src], (n_out,), weight, b, {}, neuron(kind, n_out, rng))


def inp(shape=(3, 8, 8)) -> Layer:
    return Layer("x", "input", [], shape)


def pad(name, src, shape, pads, mode):
    return Layer(name, "pad", [src], shape, attrs={"pads": list(pads), "mode": mode})


def with_memory(net: Network, signed_too: bool = False) -> Network:
    """`net` with its IF neurons (with signed_too: every neuron) turned into memory IF neurons (docs/neurons.md)."""
    layers = []
    for lay in net.layers:
        n = lay.neuron
        if n is not None and (n.kind == "IF" or signed_too):
            lay = dataclasses.replace(lay, neuron=Neuron("IF", n.threshold, v_init=n.v_init, memory=True))
        layers.append(lay)
    return dataclasses.replace(net, layers=layers)


def memory_train_net(memory: bool = True) -> Network:
    """A memory IF neuron 'n' (theta 1, V(0) = 0) whose input current at t = 1..8 is CURRENTS, from a direct input.

    The input (1,) = 1 drives 8 plain IF neurons 'k' (theta 1, V(0) = 0, current 1/k + 0.01): neuron k spikes
    exactly at the multiples of k up to 8 (margin 0.01 * t to the threshold, safe in fixed point). The weights
    w_k from them to 'n' solve sum over k dividing t of w_k = CURRENTS[t] (Moebius inversion: 0.6, 0, -1.6, -0.1,
    -0.1, 1.5, -1, -0.9), so the currents reach 'n' although the backend only has direct encoding."""
    t = np.arange(1, 9)
    divides = (t[:, None] % t[None, :] == 0).astype(np.float64)  # [t, k]: k divides t
    w = np.round(np.linalg.solve(divides, CURRENTS), 6).astype(np.float32)
    drive = (1.0 / t + 0.01).astype(np.float32).reshape(8, 1)
    layers = [Layer("x", "input", [], (1,)),
              Layer("k", "dense", ["x"], (8,), drive, None, {}, Neuron("IF", np.ones(8, np.float32), v_init=0.0)),
              Layer("n", "dense", ["k"], (1,), w.reshape(1, 8), None, {},
                    Neuron("IF", np.ones(1, np.float32), v_init=0.0, memory=memory))]
    return Network(layers, ["n", "k"], input_encoding={"kind": "direct", "scale": 1.0})


# the hand-made spike train of tests/test_numpy_sim.py::test_memory_if_takes_back_excess_spikes
CURRENTS = np.array([0.6, 0.6, -1.0, 0.5, 0.5, 0.5, -0.4, -0.4])
NET_COUNT = [0, 1, 0, 0, 1, 1, 1, 0]  # +1 spikes minus -1 spikes after t = 1..8: +1 at 2, -1 at 3, +1 at 5, -1 at 8


def images(shape, batch=2, seed=0) -> np.ndarray:
    """Pixel values k/255 in float32 (what the preprocessing produces)."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (batch, *shape)) / 255.0).astype(np.float32)
