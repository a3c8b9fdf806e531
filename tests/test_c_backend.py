"""C backend: generated C99 agrees with the NumPy reference (bit for bit in fixed point), builds warning-free and
standalone with make, and its driver runs.

Every op alone and a small YOLO-shaped network, random weights. A tiny loop-based reference below checks the
fixed-point results independently of the NumPy simulator as well.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import snnc.backends.c as c_backend
from snnc.backends import get_backend

from snnc.ir.errors import SnncError
from snnc.ir.fixedpoint import quantize
from snnc.ir.network import Layer, Network, Neuron

from networks import CURRENTS, NET_COUNT, conv, deconv, dense, images, inp, memory_train_net, with_memory

# A C compiler and make are requirements of these tests (CI has both): a missing one fails, it does not skip.
STRICT = ["-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-O2"]
SCALE = 1.0 / 255.0


# ---- networks --------------------------------------------------------------------------------------------------

def single_op(case: str) -> Network:
    """One op under test, fed by a spiking layer (so it sees spikes) unless the case is about the input."""
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    first = conv("c0", "x", 3, 6, (8, 8), rng)  # spikes for everything downstream
    layers = [inp(), first]
    outs = []
    if case == "conv":
        layers.append(conv("op", "c0", 6, 7, (8, 8), rng))
    elif case == "conv_stride2":
        layers.append(conv("op", "c0", 6, 7, (8, 8), rng, s=2))
    elif case == "conv_pads_asym":
        layers.append(conv("op", "c0", 6, 5, (8, 8), rng, s=2, pads=(0, 1, 2, 0)))
    elif case == "conv_group":
        layers.append(conv("op", "c0", 6, 9, (8, 8), rng, g=3))
    elif case == "conv_depthwise_dilated":
        layers.append(conv("op", "c0", 6, 6, (8, 8), rng, g=6, d=2, pads=(2, 2, 2, 2)))
    elif case == "conv_5x5_nobias":
        layers.append(conv("op", "c0", 6, 4, (8, 8), rng, k=5, pads=(2, 1, 2, 3), bias=False))
    elif case == "conv_on_input":
        layers = [inp(), conv("op", "x", 3, 5, (8, 8), rng, s=2, pads=(1, 0, 1, 0))]
    elif case == "deconv_stride2":
        layers.append(deconv("op", "c0", 6, 5, (8, 8), rng))
    elif case == "deconv_k2_nopad":
        layers.append(deconv("op", "c0", 6, 4, (8, 8), rng, k=2, pads=(0, 0, 0, 0), out_pad=(0, 0)))
    elif case == "deconv_group_upsample":
        lay = deconv("op", "c0", 6, 6, (8, 8), rng, k=2, pads=(0, 0, 0, 0), out_pad=(0, 0), g=6)
        lay.weight = np.ones_like(lay.weight)  # nearest-neighbour upsampling by 2
        layers.append(lay)
    elif case == "upsample_copy":  # nearest upsampling as a linear depthwise 0/1 deconv: routes integers
        lay = deconv("up", "c0", 6, 6, (8, 8), rng, k=2, pads=(0, 0, 0, 0), out_pad=(0, 0), g=6, kind=None,
                     bias=False)
        lay.weight = np.ones_like(lay.weight)
        layers += [lay, Layer("op", "concat", ["up", "up"], (12, 16, 16), attrs={"axis": 0}),
                   conv("after", "op", 12, 4, (16, 16), rng, kind="SignedIF")]
        outs = ["after", "up"]
    elif case == "sumpool_copy":  # a 0/1 copy layer whose values exceed one spike (2x2 window sums)
        lay = conv("pool", "c0", 6, 6, (8, 8), rng, k=2, pads=(0, 0, 0, 0), g=6, kind=None, bias=False)
        lay.weight = np.ones_like(lay.weight)
        layers += [lay, conv("op", "pool", 6, 5, (7, 7), rng)]
    elif case == "deconv_asym":
        layers.append(deconv("op", "c0", 6, 4, (8, 8), rng, k=3, s=2, pads=(0, 1, 1, 0), out_pad=(1, 0), g=2))
    elif case == "dense":
        layers.append(dense("op", "c0", 6 * 8 * 8, 10, rng))
    elif case == "dense_linear":
        layers.append(dense("op", "c0", 6 * 8 * 8, 10, rng, kind=None))
    elif case == "concat":
        layers.append(conv("c1", "x", 3, 4, (8, 8), rng, kind="SignedIF"))
        layers.append(Layer("op", "concat", ["c0", "c1"], (10, 8, 8), attrs={"axis": 0}))
        layers.append(conv("after", "op", 10, 3, (8, 8), rng))
        outs = ["after"]
    elif case == "pad_edge":
        layers.append(Layer("op", "pad", ["c0"], (6, 10, 9), attrs={"pads": [1, 0, 1, 1], "mode": "edge"}))
        layers.append(conv("after", "op", 6, 4, (10, 9), rng, k=2, pads=(0, 0, 0, 0)))
        outs = ["after"]
    elif case == "pad_constant":
        layers.append(Layer("op", "pad", ["c0"], (6, 11, 8), attrs={"pads": [2, 0, 1, 0], "mode": "constant"}))
        layers.append(conv("after", "op", 6, 4, (11, 8), rng))
        outs = ["after"]
    elif case == "pad_on_input":
        layers = [inp(), Layer("op", "pad", ["x"], (3, 9, 9), attrs={"pads": [0, 0, 1, 1], "mode": "edge"}),
                  conv("after", "op", 3, 4, (9, 9), rng, k=2, pads=(0, 0, 0, 0))]
        outs = ["after"]
    elif case == "if":
        layers.append(conv("op", "c0", 6, 6, (8, 8), rng, kind="IF"))
    elif case == "signed_if":
        layers.append(conv("op", "c0", 6, 6, (8, 8), rng, kind="SignedIF"))
    elif case == "linear_head":
        layers.append(conv("op", "c0", 6, 8, (8, 8), rng, k=1, pads=(0, 0, 0, 0), kind=None))
    else:
        raise AssertionError(case)
    return Network(layers, outs or ["op"])


OPS = ["conv", "conv_stride2", "conv_pads_asym", "conv_group", "conv_depthwise_dilated", "conv_5x5_nobias",
       "conv_on_input", "deconv_stride2", "deconv_k2_nopad", "deconv_group_upsample", "upsample_copy",
       "sumpool_copy", "deconv_asym", "dense",
       "dense_linear", "concat", "pad_edge", "pad_constant", "pad_on_input", "if", "signed_if", "linear_head"]


# Cases whose memory IF layers emit no -1 spike in 6 steps: those fed only by the constant (direct) image, whose
# constant z never takes V below 0 after a spike, and the 10 dense neurons (memory_train_net covers dense layers).
NO_NEGATIVE_SPIKES = {"conv_on_input", "upsample_copy", "dense_linear", "pad_on_input", "signed_if", "linear_head",
                      "dense"}


def net_for(case: str, memory: bool) -> Network:
    return with_memory(single_op(case)) if memory else single_op(case)


def yolo_like(size: int = 16) -> Network:
    """conv, strided conv, IBT neurons, edge pad + k2 conv (the max-pool stand-in), deconv, concat, two heads."""
    rng = np.random.default_rng(7)
    s2, s4 = size // 2, size // 4
    L = [inp((3, size, size)),
         conv("c1", "x", 3, 8, (size, size), rng, kind="SignedIF"),
         conv("c2", "c1", 8, 12, (size, size), rng, s=2, kind="SignedIF"),
         conv("c3", "c2", 12, 16, (s2, s2), rng, s=2, kind="SignedIF"),
         Layer("p3", "pad", ["c3"], (16, s4 + 1, s4 + 1), attrs={"pads": [0, 0, 1, 1], "mode": "edge"}),
         conv("c4", "p3", 16, 16, (s4 + 1, s4 + 1), rng, k=2, pads=(0, 0, 0, 0), kind="IF"),
         conv("c5", "c4", 16, 8, (s4, s4), rng, k=1, pads=(0, 0, 0, 0), kind="SignedIF"),
         conv("head1", "c5", 8, 14, (s4, s4), rng, k=1, pads=(0, 0, 0, 0), kind=None),
         conv("c6", "c5", 8, 6, (s4, s4), rng, k=1, pads=(0, 0, 0, 0), kind="SignedIF"),
         deconv("up", "c6", 6, 6, (s4, s4), rng, k=3, s=2, pads=(1, 1, 1, 1), out_pad=(1, 1), kind="SignedIF"),
         Layer("cat", "concat", ["up", "c2"], (18, s2, s2), attrs={"axis": 0}),
         conv("c7", "cat", 18, 10, (s2, s2), rng, kind="SignedIF"),
         conv("head2", "c7", 10, 14, (s2, s2), rng, k=1, pads=(0, 0, 0, 0), kind=None)]
    return Network(L, ["head1", "head2"])


# ---- a loop-level reference, independent of the NumPy simulator -----------------------------------------------

def ref_conv(x, w, attrs):
    sh, sw = attrs.get("strides", [1, 1])
    dh, dw = attrs.get("dilations", [1, 1])
    pt, pl, pb, pr = attrs.get("pads", [0, 0, 0, 0])
    g = attrs.get("group", 1)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr)))
    co, cig, kh, kw = w.shape
    oh = (xp.shape[1] - (dh * (kh - 1) + 1)) // sh + 1
    ow = (xp.shape[2] - (dw * (kw - 1) + 1)) // sw + 1
    out = np.zeros((co, oh, ow), dtype=np.result_type(x, w))
    cog = co // g
    for gi in range(g):
        for ky in range(kh):
            for kx in range(kw):
                patch = xp[gi * cig:(gi + 1) * cig, ky * dh:ky * dh + sh * (oh - 1) + 1:sh,
                           kx * dw:kx * dw + sw * (ow - 1) + 1:sw]
                out[gi * cog:(gi + 1) * cog] += np.einsum("oc,chw->ohw", w[gi * cog:(gi + 1) * cog, :, ky, kx], patch)
    return out


def ref_deconv(x, w, attrs, out_shape):
    sh, sw = attrs.get("strides", [1, 1])
    dh, dw = attrs.get("dilations", [1, 1])
    pt, pl, _, _ = attrs.get("pads", [0, 0, 0, 0])
    oph, opw = attrs.get("output_padding", [0, 0])
    g = attrs.get("group", 1)
    ci, cog, kh, kw = w.shape
    cig = ci // g
    _, ih, iw = x.shape
    full = np.zeros((cog * g, sh * (ih - 1) + dh * (kh - 1) + 1 + oph, sw * (iw - 1) + dw * (kw - 1) + 1 + opw),
                    dtype=np.result_type(x, w))
    for gi in range(g):
        for ky in range(kh):
            for kx in range(kw):
                full[gi * cog:(gi + 1) * cog, ky * dh:ky * dh + sh * (ih - 1) + 1:sh,
                     kx * dw:kx * dw + sw * (iw - 1) + 1:sw] += np.einsum(
                         "co,chw->ohw", w[gi * cig:(gi + 1) * cig, :, ky, kx], x[gi * cig:(gi + 1) * cig])
    return full[:, pt:pt + out_shape[1], pl:pl + out_shape[2]]


def ref_fixed(net: Network, x: np.ndarray, ts: list[int], v_init=None, negatives: dict | None = None):
    """Fixed-point simulation with plain loops: (outputs[T][name] (B, ...), spike_counts[name] (B,)).
    negatives, when given, receives the number of -1 spikes per neuron layer (all samples)."""
    net = net.with_v_init(v_init)
    if negatives is not None:
        negatives.update({lay.name: 0 for lay in net.neuron_layers})
    q = quantize(net)
    outs = {t: {n: [] for n in net.outputs} for t in ts}
    counts = {lay.name: [] for lay in net.neuron_layers}
    for xb in x:
        V = {lay.name: np.broadcast_to(q[lay.name].v0_int.reshape((-1,) + (1,) * (len(lay.shape) - 1)),
                                       lay.shape).astype(np.int64) for lay in net.neuron_layers}
        sums = {n: np.zeros(net.layer(n).shape, np.int64) for n in net.outputs}
        cnt = {n: 0 for n in V}
        emitted = {n: np.zeros(net.layer(n).shape, np.int64) for n in V}  # memory IF: +1s minus -1s
        for t in range(1, ts[-1] + 1):
            val = {}
            for lay in net.layers:
                if lay.op == "input":
                    val[lay.name] = np.round(xb / net.input_encoding["scale"]).astype(np.int64)
                elif lay.op == "concat":
                    val[lay.name] = np.concatenate([val[s] for s in lay.inputs])
                elif lay.op == "pad":
                    pt, pl, pb, pr = lay.attrs["pads"]
                    mode = "edge" if lay.attrs.get("mode") == "edge" else "constant"
                    val[lay.name] = np.pad(val[lay.inputs[0]], ((0, 0), (pt, pb), (pl, pr)), mode=mode)
                else:
                    ql = q[lay.name]
                    src = val[lay.inputs[0]]
                    w = ql.w_int.astype(np.int64)
                    if lay.op == "conv":
                        z = ref_conv(src, w, lay.attrs) + ql.b_int[:, None, None]
                    elif lay.op == "deconv":
                        z = ref_deconv(src, w, lay.attrs, lay.shape) + ql.b_int[:, None, None]
                    else:
                        z = w @ src.reshape(-1) + ql.b_int
                    if lay.neuron is None:
                        val[lay.name] = z
                        continue
                    shp = (-1,) + (1,) * (len(lay.shape) - 1)
                    th = ql.theta_int.reshape(shp)
                    v = V[lay.name] + z
                    pos = v >= th
                    v = v - th * pos
                    s = pos.astype(np.int64)
                    if lay.neuron.kind == "SignedIF":
                        tn = ql.theta_neg_int.reshape(shp)
                        neg = v <= -tn
                        v = v + tn * neg
                        s = s - neg
                    elif lay.neuron.memory:
                        neg = (v < 0) & (emitted[lay.name] > 0)
                        v = v + th * neg
                        s = s - neg
                        emitted[lay.name] += s
                    if lay.neuron.kind == "SignedIF" or lay.neuron.memory:
                        if negatives is not None:
                            negatives[lay.name] += int(neg.sum())
                    V[lay.name] = v
                    cnt[lay.name] += int(np.abs(s).sum())
                    val[lay.name] = s
            for n in net.outputs:
                sums[n] += val[n]
            if t in ts:
                for n in net.outputs:
                    unit = q[n].out_unit.reshape((-1,) + (1,) * (len(net.layer(n).shape) - 1))
                    outs[t][n].append(sums[n] * unit / t)
        for n in cnt:
            counts[n].append(cnt[n])
    return ({t: {n: np.stack(v) for n, v in d.items()} for t, d in outs.items()},
            {n: np.array(v, np.int64) for n, v in counts.items()})


# ---- helpers ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cbk(tmp_path_factory):
    # -O1 builds quickest; the default flags are exercised by test_default_flags_build
    return c_backend.CBackend(cache_dir=tmp_path_factory.mktemp("c-cache"), cflags="-O1")


def numpy_backend():
    return get_backend("numpy")


def require_make() -> None:
    if shutil.which("make") is None:
        pytest.fail("`make` is needed to build the generated project")


def assert_same(res, ref_outputs, ref_counts):
    assert set(res.outputs) == set(ref_outputs)
    for t in ref_outputs:
        for n, v in ref_outputs[t].items():
            assert res.outputs[t][n].shape == v.shape, (t, n)
            assert np.array_equal(res.outputs[t][n], v), (t, n, np.abs(res.outputs[t][n] - v).max())
    for n, v in ref_counts.items():
        assert np.array_equal(res.spike_counts[n], v), (n, res.spike_counts[n], v)


def assert_close(res, ref, rtol=1e-5):
    for t in ref.outputs:
        for n, v in ref.outputs[t].items():
            got = res.outputs[t][n]
            np.testing.assert_allclose(got, v, rtol=rtol, atol=rtol * max(1.0, float(np.abs(v).max())),
                                       err_msg=f"T={t} {n}")
    for n, v in ref.spike_counts.items():
        np.testing.assert_allclose(res.spike_counts[n], v, rtol=1e-3, atol=1, err_msg=n)


# ---- tests -----------------------------------------------------------------------------------------------------

def test_rng_is_numpy_default_rng(tmp_path):
    """PCG64 + SeedSequence in C reproduce numpy.random.default_rng, including advance()."""
    proj = c_backend.generate(single_op("if"), tmp_path, "fixed")
    (proj / "rng.c").write_text(r"""
#include <stdio.h>
#include <stdlib.h>
#include "snn_model.h"
int main(int argc, char **argv) {
    snn_pcg64 r; int i; (void)argc;
    snn_pcg64_seed(&r, strtoull(argv[1], NULL, 10));
    for (i = 0; i < 3; ++i) printf("%llu\n", (unsigned long long)snn_pcg64_next(&r));
    snn_pcg64_advance(&r, 12345);
    printf("%.17g\n", snn_pcg64_double(&r));
    return 0;
}
""")
    cc = c_backend.find_compiler()
    subprocess.run([*cc, *STRICT, "rng.c", "snn_model.c", "-o", "rng"], cwd=proj, check=True)
    for seed in (0, 1, 2**32 + 5, 2**64 - 1):
        got = subprocess.run([str(proj / "rng"), str(seed)], capture_output=True, text=True, check=True).stdout.split()
        rng = np.random.default_rng(seed)
        raw = rng.bit_generator.random_raw(3)
        rng.bit_generator.advance(12345)
        assert [int(v) for v in got[:3]] == [int(v) for v in raw]
        assert float(got[3]) == rng.random()


@pytest.mark.parametrize("memory", [False, True], ids=["plain", "memory"])
@pytest.mark.parametrize("case", OPS)
def test_op_fixed_matches_loop_reference(case, memory, cbk):
    net = net_for(case, memory)
    x = images(net.input_layers[0].shape)
    res = cbk.simulate(net, x, [1, 3, 6], mode="fixed")
    negatives: dict = {}
    ref_out, ref_counts = ref_fixed(net, x, [1, 3, 6], negatives=negatives)
    assert_same(res, ref_out, ref_counts)
    assert sum(int(v.sum()) for v in res.spike_counts.values()) > 0
    if memory and case not in NO_NEGATIVE_SPIKES:  # the memory IF's -1 spikes happened: the check is not vacuous
        assert sum(negatives[lay.name] for lay in net.neuron_layers if lay.neuron.memory) > 0, negatives


@pytest.mark.parametrize("memory", [False, True], ids=["plain", "memory"])
@pytest.mark.parametrize("case", OPS)
def test_op_matches_numpy_backend(case, memory, cbk):
    ref_bk = numpy_backend()
    net = net_for(case, memory)
    x = images(net.input_layers[0].shape)
    ref = ref_bk.simulate(net, x, [1, 3, 6], mode="fixed")
    res = cbk.simulate(net, x, [1, 3, 6], mode="fixed")
    assert_same(res, ref.outputs, ref.spike_counts)
    assert res.neurons == ref.neurons and res.steps == ref.steps
    ref = ref_bk.simulate(net, x, [1, 3, 6], mode="float")
    res = cbk.simulate(net, x, [1, 3, 6], mode="float")
    assert_close(res, ref)


@pytest.mark.parametrize("memory", [False, True], ids=["as_built", "memory"])
def test_yolo_like_fixed_bit_exact(memory, cbk):
    net = with_memory(yolo_like(), signed_too=True) if memory else yolo_like()
    x = images((3, 16, 16), batch=2, seed=3)
    ts = [1, 4, 16]
    res = cbk.simulate(net, x, ts, mode="fixed")
    negatives: dict = {}
    ref_out, ref_counts = ref_fixed(net, x, ts, negatives=negatives)
    assert_same(res, ref_out, ref_counts)
    rates = res.firing_rates()
    assert all(0 < r < 1 for r in rates.values()), rates
    if memory:  # memory IF -1 spikes in every layer but the first (fed by the constant image)
        assert all(negatives[lay.name] > 0 for lay in net.neuron_layers[1:]), negatives
    ref = numpy_backend().simulate(net, x, ts, mode="fixed")
    assert_same(res, ref.outputs, ref.spike_counts)


@pytest.mark.parametrize("memory", [False, True], ids=["as_built", "memory"])
def test_yolo_like_float_and_v_init(memory, cbk):
    ref_bk = numpy_backend()
    net = with_memory(yolo_like(), signed_too=True) if memory else yolo_like()
    x = images((3, 16, 16), batch=2, seed=4)
    for v_init in (None, 0.0):
        ref = ref_bk.simulate(net, x, [2, 8], mode="float", v_init=v_init)
        res = cbk.simulate(net, x, [2, 8], mode="float", v_init=v_init)
        assert_close(res, ref)
        ref = ref_bk.simulate(net, x, [2, 8], mode="fixed", v_init=v_init)
        res = cbk.simulate(net, x, [2, 8], mode="fixed", v_init=v_init)
        assert_same(res, ref.outputs, ref.spike_counts)


def single_memory_neuron() -> Network:
    """input (1,) -> dense W = 1 -> one memory IF neuron, theta 1, V(0) = 0, input unit 0.1 (as test_numpy_sim)."""
    return Network([Layer("x", "input", [], (1,)),
                    Layer("n", "dense", ["x"], (1,), np.ones((1, 1), np.float32), None, {},
                          Neuron("IF", np.ones(1, np.float32), v_init=0.0, memory=True))], ["n"],
                   input_encoding={"kind": "direct", "scale": 0.1})


@pytest.mark.parametrize("mode", ["fixed", "float"])
def test_memory_if_hand_made_spike_train(mode, cbk):
    """A memory IF neuron fed the currents 0.6, 0.6, -1, 0.5, 0.5, 0.5, -0.4, -0.4 spikes +1, -1, +1, -1 at
    t = 2, 3, 5, 8 (tests/test_numpy_sim.py::test_memory_if_takes_back_excess_spikes). The C backend has no
    explicit encoding: the currents come from a direct input through 8 plain IF neurons (`memory_train_net`),
    which the NumPy simulator confirms gives what the explicit currents give. Read at every checkpoint
    t = 1..8: the output sum is the neuron's count n(t) = +1s minus -1s; spike counts count both signs."""
    ts = list(range(1, 9))
    explicit = numpy_backend().simulate(single_memory_neuron(), CURRENTS.astype(np.float32).reshape(8, 1, 1), ts,
                                        mode=mode, encoding="explicit", progress=False)
    net = memory_train_net()
    x = np.ones((1, 1), np.float32)
    ref = numpy_backend().simulate(net, x, ts, mode=mode, progress=False)
    res = cbk.simulate(net, x, ts, mode=mode)
    for r in (explicit, ref, res):
        assert [r.outputs[t]["n"][0, 0] * t for t in ts] == pytest.approx(NET_COUNT, abs=1e-5)
        assert r.spike_counts["n"].tolist() == [4]
    assert res.spike_counts["k"].tolist() == ref.spike_counts["k"].tolist() == [8 + 4 + 2 + 2 + 1 + 1 + 1 + 1]
    if mode == "fixed":
        assert [int(res.extra["raw_sums"][t]["n"][0, 0]) for t in ts] == NET_COUNT
        assert_same(res, ref.outputs, ref.spike_counts)
    # the plain IF keeps its t = 2 spike: count 1 from t = 2 on
    plain = cbk.simulate(memory_train_net(memory=False), x, ts, mode=mode)
    assert [plain.outputs[t]["n"][0, 0] * t for t in ts] == pytest.approx([0] + [1] * 7, abs=1e-5)


@pytest.mark.parametrize("memory", [False, True], ids=["as_built", "memory"])
def test_rate_encoding_bit_exact(memory, cbk):
    ref_bk = numpy_backend()
    base = with_memory(yolo_like(8), signed_too=True) if memory else yolo_like(8)
    net = dataclasses.replace(base, input_encoding={"kind": "rate"})
    x = images((3, 8, 8), batch=3, seed=5)
    ref = ref_bk.simulate(base, x, 4, mode="fixed", seed=3, encoding="rate")
    res = cbk.simulate(base, x, 4, mode="fixed", seed=3, encoding="rate")
    assert_same(res, ref.outputs, ref.spike_counts)
    for mode in ("fixed", "float"):
        ref = ref_bk.simulate(net, x, [3, 7], mode=mode, seed=11)
        res = cbk.simulate(net, x, [3, 7], mode=mode, seed=11)
        if mode == "fixed":
            assert_same(res, ref.outputs, ref.spike_counts)
        else:
            assert_close(res, ref)


@pytest.mark.parametrize("mode,weights,rate,memory", [
    ("fixed", "bin", False, False), ("float", "bin", False, False), ("fixed", "header", False, False),
    ("float", "header", True, False), ("fixed", "bin", False, True), ("float", "header", True, True)])
def test_generated_sources_compile_strict(tmp_path, mode, weights, rate, memory):
    net = with_memory(yolo_like(8)) if memory else yolo_like(8)
    if rate:
        net = dataclasses.replace(net, input_encoding={"kind": "rate"})
    proj = c_backend.generate(net, tmp_path, mode, weights=weights)
    cc = c_backend.find_compiler()
    for src in ("snn_model.c", "main.c"):
        proc = subprocess.run([*cc, *STRICT, "-c", src], cwd=proj, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_make_builds_standalone_and_driver_runs(tmp_path, cbk):
    require_make()
    net = yolo_like()
    proj = c_backend.generate(net, tmp_path / "proj", "fixed")
    proc = subprocess.run(["make"], cwd=proj, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (proj / "libsnn.a").exists() and (proj / "snn_run").exists()
    x = images((3, 16, 16), batch=2, seed=9)
    np.round(x / SCALE).astype(np.int32).tofile(tmp_path / "in.bin")
    proc = subprocess.run(["./snn_run", "-i", str(tmp_path / "in.bin"), "-o", str(tmp_path / "out.bin"),
                           "-T", "2,5"], cwd=proj, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "ms/step" in proc.stderr
    # decoded float64 outputs, then int64 spike counts, per sample
    raw = (tmp_path / "out.bin").read_bytes()
    sizes = [int(np.prod(net.layer(n).shape)) for n in net.outputs]
    n_nl = len(net.neuron_layers)
    per_sample = 2 * sum(sizes) * 8 + n_nl * 8
    assert len(raw) == 2 * per_sample
    res = cbk.simulate(net, x, [2, 5], mode="fixed")
    for b in range(2):
        vals = np.frombuffer(raw, "<f8", 2 * sum(sizes), b * per_sample)
        pos = 0
        for t in (2, 5):
            for n, size in zip(net.outputs, sizes):
                np.testing.assert_allclose(vals[pos:pos + size], res.outputs[t][n][b].reshape(-1), rtol=1e-12)
                pos += size
        counts = np.frombuffer(raw, "<i8", n_nl, b * per_sample + 2 * sum(sizes) * 8)
        assert list(counts) == [int(res.spike_counts[lay.name][b]) for lay in net.neuron_layers]
    # a weight blob of another network is refused
    other = c_backend.generate(single_op("if"), tmp_path / "other", "fixed")
    proc = subprocess.run(["./snn_run", "-w", str(other / "weights.bin"), "-i", str(tmp_path / "in.bin"),
                           "-o", str(tmp_path / "o2.bin"), "-T", "1"], cwd=proj, capture_output=True, text=True)
    assert proc.returncode != 0 and "different network" in proc.stderr


def test_header_weights_same_results(tmp_path, cbk):
    require_make()
    net = single_op("concat")
    proj = c_backend.generate(net, tmp_path, "fixed", weights="header")
    assert not (proj / "weights.bin").exists()
    subprocess.run(["make", "snn_run"], cwd=proj, check=True, capture_output=True)
    x = images((3, 8, 8), batch=1)
    np.round(x / SCALE).astype(np.int32).tofile(tmp_path / "in.bin")
    subprocess.run(["./snn_run", "-i", str(tmp_path / "in.bin"), "-o", str(tmp_path / "out.bin"), "-T", "4", "-q"],
                   cwd=proj, check=True, capture_output=True)
    got = np.fromfile(tmp_path / "out.bin", "<f8", int(np.prod(net.layer("after").shape)))
    res = cbk.simulate(net, x, 4, mode="fixed")
    np.testing.assert_allclose(got, res.outputs[4]["after"][0].reshape(-1), rtol=1e-12)


def test_build_is_cached(cbk):
    net = single_op("if")
    x = images((3, 8, 8), batch=1)
    a = cbk.simulate(net, x, 2, mode="fixed")
    exe = Path(a.extra["build_dir"]) / "snn_run"
    mtime = exe.stat().st_mtime_ns
    net2 = single_op("if")
    net2.layers[1].weight = net2.layers[1].weight * 0.5  # new weights, same layout: same binary
    b = cbk.simulate(net2, x, 2, mode="fixed")
    assert b.extra["build_dir"] == a.extra["build_dir"] and exe.stat().st_mtime_ns == mtime


def test_errors(monkeypatch, cbk):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.raises(SnncError, match="compiler"):
        c_backend.CBackend().simulate(single_op("if"), images((3, 8, 8), 1), 1, mode="fixed")
    monkeypatch.delenv("CC")
    with pytest.raises(SnncError, match="mode"):
        cbk.simulate(single_op("if"), images((3, 8, 8), 1), 1, mode="double")
    with pytest.raises(SnncError, match="input batch"):
        cbk.simulate(single_op("if"), images((3, 4, 4), 1), 1, mode="fixed")
    bad = single_op("conv")
    bad.layers[2].shape = (7, 5, 5)
    with pytest.raises(SnncError, match="attributes give"):
        cbk.simulate(bad, images((3, 8, 8), 1), 1, mode="fixed")


def test_default_flags_build(tmp_path):
    """The backend's default flags (-O3 -march=native, or the -O2 fallback) build and agree bit for bit."""
    net = single_op("signed_if")
    x = images((3, 8, 8), batch=1)
    res = c_backend.CBackend(cache_dir=tmp_path).simulate(net, x, [2, 5], mode="fixed")
    ref_out, ref_counts = ref_fixed(net, x, [2, 5])
    assert_same(res, ref_out, ref_counts)
    assert "-O" in (Path(res.extra["build_dir"]) / "build.log").read_text().splitlines()[0]



@pytest.mark.parametrize("memory", [False, True], ids=["as_built", "memory"])
def test_openmp_threads_change_nothing(tmp_path, memory):
    """Built with -fopenmp, 1 and 3 threads (uneven splits of 8, 14 or 10 channels) give the same float
    outputs bit for bit, and fixed point stays bit-exact with the NumPy reference; the sources compile strictly."""
    net = with_memory(yolo_like(), signed_too=True) if memory else yolo_like()
    x = images((3, 16, 16), batch=2, seed=5)
    bk = c_backend.CBackend(cache_dir=tmp_path, cflags="-O1 -fopenmp")
    one = bk.simulate(net, x, [3, 9], mode="float", threads=1)
    three = bk.simulate(net, x, [3, 9], mode="float", threads=3)
    assert "-fopenmp" in (Path(three.extra["build_dir"]) / "build.log").read_text().splitlines()[0]
    for t in (3, 9):
        for n, v in one.outputs[t].items():
            assert np.array_equal(three.outputs[t][n], v), (t, n)
    assert one.spike_counts.keys() == three.spike_counts.keys()
    assert all(np.array_equal(one.spike_counts[n], three.spike_counts[n]) for n in one.spike_counts)
    ref = numpy_backend().simulate(net, x, [3, 9], mode="fixed")
    assert_same(bk.simulate(net, x, [3, 9], mode="fixed", threads=3), ref.outputs, ref.spike_counts)
    proj = c_backend.generate(net, tmp_path / "strict", "float")
    proc = subprocess.run([*c_backend.find_compiler(), *STRICT, "-fopenmp", "-c", "snn_model.c"], cwd=proj,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

# ---- the command line: `snnc compile --backend c` and `snnc run --backend c` -------------------------------------

def snnc_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snnc.apps.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=900)


def test_cli_compile_backend_c_builds_with_make_and_matches_numpy(tmp_path):
    """`snnc compile model.onnx --backend c -o out/`: sources + Makefile that `make` builds; the driver's raw
    output sums and spike counts equal the NumPy simulator's fixed-point run of the same compile (.lava)."""
    require_make()
    import onnx
    from models import tiny_yolo
    from PIL import Image

    from snnc.ir import lavafile

    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_yolo(), model)
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((40, 50, 3)) * 255).astype(np.uint8)).save(calib / f"img{i}.png")
    out = tmp_path / "tiny_snn"
    res = snnc_cli("compile", str(model), "--backend", "c", "-o", str(out), "--calib", str(calib), "-q")
    assert res.returncode == 0, res.stderr
    assert {"snn_model.h", "snn_model.c", "main.c", "Makefile", "weights.bin"} <= {p.name for p in out.iterdir()}
    res = snnc_cli("compile", str(model), "-o", str(tmp_path / "tiny.lava"), "--calib", str(calib), "-q")
    assert res.returncode == 0, res.stderr
    net = lavafile.load(tmp_path / "tiny.lava")
    same = c_backend.render(net, "fixed")  # the C project of the .lava network: the same compile
    assert all((out / name).read_bytes() == data for name, data in same.files.items())
    proc = subprocess.run(["make"], cwd=out, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    x = images(net.input_layers[0].shape, batch=2, seed=12)
    np.round(x.astype(np.float64) / net.input_encoding["scale"]).astype(np.int32).tofile(tmp_path / "in.bin")
    ts = [3, 8]
    proc = subprocess.run(["./snn_run", "-i", str(tmp_path / "in.bin"), "-o", str(tmp_path / "out.bin"),
                           "-T", "3,8", "--raw", "-q"], cwd=out, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ref = numpy_backend().simulate(net, x, ts, mode="fixed")
    sizes = [int(np.prod(net.layer(n).shape)) for n in net.outputs]
    n_nl = len(net.neuron_layers)
    raw = (tmp_path / "out.bin").read_bytes()
    per_sample = len(ts) * sum(sizes) * 8 + n_nl * 8
    assert len(raw) == 2 * per_sample
    for b in range(2):
        sums = np.frombuffer(raw, "<i8", len(ts) * sum(sizes), b * per_sample)
        pos = 0
        for t in ts:
            for n, size in zip(net.outputs, sizes):
                assert np.array_equal(sums[pos:pos + size], ref.extra["sums"][t][n][b].reshape(-1)), (b, t, n)
                pos += size
        counts = np.frombuffer(raw, "<i8", n_nl, b * per_sample + len(ts) * sum(sizes) * 8)
        assert list(counts) == [int(ref.spike_counts[lay.name][b]) for lay in net.neuron_layers]
    assert sum(int(v.sum()) for v in ref.spike_counts.values()) > 0


YOLO_SIZE = 96


@pytest.fixture(scope="module")
def yolo96(tmp_path_factory):
    """yolov3-tiny (COCO Darknet weights) at 96 x 96, the default pipeline, calibrated on two letterboxed photos."""
    import onnx
    from PIL import Image
    from skimage import data

    from snnc.apps.outputs import write_output
    from snnc.compiler.api import compile_model
    from snnc.compiler.darknet import darknet_to_onnx
    from snnc.compiler.zoo import fetch_yolov3_tiny

    work = tmp_path_factory.mktemp("yolo96")
    calib = work / "calib"
    calib.mkdir()
    for name in ("astronaut", "coffee"):
        Image.fromarray(getattr(data, name)()[..., :3]).save(calib / f"{name}.png")
    cfg, weights = fetch_yolov3_tiny()
    model = work / "yolov3-tiny-96.onnx"
    onnx.save(darknet_to_onnx(cfg, weights, input_size=YOLO_SIZE, decode=True), model)
    result = compile_model(model, calib_dir=calib, v_init=0.5, progress=False, include_ann=False)
    return write_output(result, work / "yolov3-tiny-96.lava"), calib / "astronaut.png"


def test_snnc_run_backend_c_reproduces_numpy_detections(yolo96, tmp_path):
    """`snnc run --backend c` on a real photo (yolov3-tiny at 96 x 96, memory IF neurons from every ReLU): the same
    detections (class, score, box) at every checkpoint and the same spikes per layer as `--backend numpy`, in
    fixed point (bit-exact), at the default score threshold (0.25). Both persons of the photo are there at each
    checkpoint (the ANN: 0.64 and 0.54; fixed point measured 0.57 / 0.47 at T = 32 and 0.58 / 0.50 at T = 64)."""
    import json

    from snnc.runtime.host import SCORE_THR

    from snnc.ir import lavafile

    path, photo = yolo96
    assert all(lay.neuron.memory for lay in lavafile.load(path).neuron_layers)  # the default pipeline's neurons
    got = {}
    for backend in ("numpy", "c"):
        out = tmp_path / f"{backend}.json"
        res = snnc_cli("run", str(path), "--image", str(photo), "-T", "32,64", "--backend", backend,
                       "--mode", "fixed", "--json", str(out), "-q")
        assert res.returncode == 0, res.stderr
        got[backend] = json.loads(out.read_text())
    ref, c = got["numpy"], got["c"]
    assert ref["score_threshold"] == SCORE_THR == 0.25
    for t, dets in ref["images"][0]["detections_at"].items():
        assert [d["name"] for d in dets].count("person") >= 2, (t, dets)
    assert c["images"][0]["detections_at"] == ref["images"][0]["detections_at"]
    assert c["figures"]["spikes_per_layer"] == ref["figures"]["spikes_per_layer"]
    assert c["backend"] == "c"


def test_yolov3_tiny_float_within_1e5(yolo96):
    """Float mode on the real network: after one step the heads are within 1e-5 relative of the NumPy simulator
    (measured: 5e-7). C sums in another order (it scatters per spike, onnxruntime convolves), so now and then a
    membrane within float rounding of a threshold fires in one and not the other, and the flipped spike spreads:
    over 8 steps the spike counts stay within 0.5 % per layer (a head value can move by a whole spike's worth,
    1/8 of a weight; at T = 64 the heads differ by about 1 % of their range, measured); fixed point is the mode
    that is identical."""
    from skimage import data

    from snnc.ir import lavafile
    from snnc.compiler.images import letterbox

    path, _ = yolo96
    net = lavafile.load(path)
    x = np.stack([letterbox(getattr(data, n)()[..., :3], (YOLO_SIZE, YOLO_SIZE))[0] for n in ("astronaut", "rocket")])
    bk = c_backend.CBackend()
    assert_close(bk.simulate(net, x, 1, mode="float"), numpy_backend().simulate(net, x, 1, mode="float"))
    ref = numpy_backend().simulate(net, x, 8, mode="float")
    res = bk.simulate(net, x, 8, mode="float")
    for name, want in ref.spike_counts.items():
        assert want.min() > 0 and np.all(np.abs(res.spike_counts[name] - want) <= 0.005 * want), name


def gather_net() -> Network:
    """Two ungrouped convs with 168 input channels (five full blocks of GATHER_BLOCK = 32 and a remainder of 8): one
    whose weights outweigh its z (the input-channel-outer loops; in fixed point its sums need int64 and its
    blocks' sums fit int32, so it adds them in z32 and flushes), one on a larger map with few weights (position
    outer); graded signed memory neurons (payloads, not +-1, scattered) and plain IF spikes."""
    rng = np.random.default_rng(11)
    gr = lambda c: Neuron("SignedIF", rng.uniform(0.3, 1.2, c).astype(np.float32), alpha=0.1, v_init=0.5,
                          memory=True, graded=True, threshold_neg=rng.uniform(0.5, 2.0, c).astype(np.float32))
    one = {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1}
    return Network([inp((3, 12, 12)),
                    dataclasses.replace(conv("c0", "x", 3, 168, (12, 12), rng), neuron=gr(168)),
                    dataclasses.replace(conv("wo", "c0", 168, 24, (12, 12), rng), neuron=gr(24)),
                    conv("po", "c0", 168, 8, (12, 12), rng, k=1, pads=(0, 0, 0, 0)),
                    Layer("h", "conv", ["wo"], (4, 12, 12), rng.normal(0, 0.3, (4, 24, 1, 1)).astype(np.float32),
                          None, one)], ["h", "po"])


def test_gathered_blocks_bit_exact_with_default_flags(tmp_path):
    """The gathered scatter (blocks of input channels, their nonzeros four at a time) in both loop orders, with a
    block remainder, built with the backend's default flags (OpenMP, omp simd neuron updates) on 2 threads: fixed
    point bit-exact with the NumPy reference, float within float rounding."""
    from snnc.backends.c.generate import GATHER_BLOCK

    net = gather_net()
    assert 168 % GATHER_BLOCK and 168 > 5 * GATHER_BLOCK
    src = c_backend.render(net, "fixed").files["snn_model.c"].decode()
    wo, po = (src.split(f"/* {name}:")[1].split("\n/* ")[0] for name in ("wo", "po"))
    assert "input channel outer" in wo.split("*/")[0] and "input channel outer" not in po.split("*/")[0]
    flush = re.search(r"% (\d+) == \d+ \|\|", wo)  # int32 blocks flushed into the int64 z every `flush` blocks
    assert "int64_t *z" in wo and "z32[k] = 0" in wo and flush and 1 < int(flush.group(1)) < 6, flush
    x = images((3, 12, 12), batch=2, seed=9)
    bk = c_backend.CBackend(cache_dir=tmp_path)
    ref = numpy_backend().simulate(net, x, [2, 7], mode="fixed")
    res = bk.simulate(net, x, [2, 7], mode="fixed", threads=2)
    assert_same(res, ref.outputs, ref.spike_counts)
    assert all(0 < r < 1 for r in res.firing_rates().values())
    assert_close(bk.simulate(net, x, [2, 7], mode="float", threads=2),
                 numpy_backend().simulate(net, x, [2, 7], mode="float"))
