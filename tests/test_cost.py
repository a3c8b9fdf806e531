"""The cost report (compiler/cost.py) against a hand count, where compile and inspect show it, the accuracy /
energy Pareto view of `snnc eval`, and the lean .lava layout (version 2: exact, smaller, version 1 still read)."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import onnx
import pytest

from models import Builder
from snnc.apps.cli import main
from snnc.compiler.api import compile_model
from snnc.compiler.cost import ann_cost, cost_report, dominant, format_dominant, network_cost
from snnc.ir import lavafile
from snnc.ir.network import Layer, Network, Neuron


def _model(path, leaky: bool) -> str:
    """images (3, 8, 8) -> 3x3 conv 3->4 (bias) -> ReLU or LeakyReLU -> 1x1 conv 4->2 (bias), the head."""
    b = Builder(3)
    x = b.conv("images", 3, 4)
    x = b.node("LeakyRelu", [x], alpha=0.1) if leaky else b.node("Relu", [x])
    head = b.conv(x, 4, 2, k=1)
    onnx.save(b.model([1, 3, 8, 8], [head]), path)
    return str(path)


# Hand count. A 3x3 pad-1 conv on 8 x 8: per axis sum over outputs of in-bounds taps = 8 * 3 - 2 = 22, so
# 22 * 22 = 484 (position, tap) pairs per (output, input) channel pair.
ANN = {"parameters": 3 * 4 * 9 + 4 + 4 * 2 + 2,      # 122: both convolutions' weights and biases
       "neurons": 4 * 64,                            # the ReLU's outputs
       "synapses": 4 * 3 * 484 + 2 * 4 * 64,         # 5808 + 512
       "macs": 4 * 64 * 27 + 2 * 64 * 4}             # 6912 + 512
# split_leaky_relu doubles the first conv's channels (3 -> 8) and the head's fan-in (8 -> 2)
SPLIT = {"parameters": 8 * 27 + 8 + 2 * 8 + 2, "neurons": 8 * 64, "synapses": 8 * 3 * 484 + 2 * 8 * 64,
         "macs": 8 * 64 * 27 + 2 * 64 * 8}


@pytest.mark.parametrize("leaky, options", [(False, {}), (True, {"leaky": "split"}), (True, {})],
                         ids=["relu", "leaky_split", "leaky_graded"])
def test_cost_figures_by_hand(tmp_path, leaky, options):
    res = compile_model(_model(tmp_path / "m.onnx", leaky), calib_random=2, progress=False, **options)
    assert ann_cost(res.ann) == ANN
    want = SPLIT if options.get("leaky") == "split" else ANN  # the default graded neuron: one per channel
    assert network_cost(res.network) == want
    rep = res.network.meta["cost"]
    assert rep["snn"] == want and rep["ann"] == ANN
    assert rep["ratio"]["neurons"] == pytest.approx(want["neurons"] / ANN["neurons"])
    if want is SPLIT:
        assert rep["ratio"]["synapses"] == pytest.approx(2.0) and rep["ratio"]["macs"] == pytest.approx(2.0)


def test_dominant_shares_by_hand():
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    up = np.ones((4, 1, 2, 2), np.float32)
    w2 = rng.normal(size=(2, 4, 1, 1)).astype(np.float32)
    conv = {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1}
    net = Network([Layer("x", "input", [], (3, 8, 8)),
                   Layer("a", "conv", ["x"], (4, 8, 8), w1, None, conv, Neuron("IF", np.ones(4))),
                   Layer("up", "deconv", ["a"], (4, 16, 16), up, None,
                         {"strides": [2, 2], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 4}),
                   Layer("h", "conv", ["up"], (2, 16, 16), w2, None, {**conv, "pads": [0, 0, 0, 0]})], ["h"])
    # synapses: a 4*3*484 = 5808, up 4 * 64 * 4 = 1024 (each input to 4 outputs), h 2 * 4 * 256 = 2048
    assert network_cost(net) == {"parameters": 108 + 16 + 8, "neurons": 256, "synapses": 5808 + 1024 + 2048,
                                 "macs": 256 * 27 + 4 * 64 * 4 + 512 * 4}
    d = dominant(net)
    assert d["synapses"]["layers"][0][0] == "a" and d["synapses"]["layers"][0][2] == pytest.approx(5808 / 8880)
    kinds = dict(d["synapses"]["kinds"])
    assert kinds["deconv copy (routing)"] == pytest.approx(1024 / 8880)
    assert dict(d["neurons"]["kinds"]) == {"conv 3x3, IF": 1.0}
    assert "what dominates" in format_dominant(net)


def test_compile_prints_and_inspect_reads_the_cost_without_the_ann(tmp_path, capsys):
    model = _model(tmp_path / "m.onnx", leaky=True)
    out = tmp_path / "m.lava"
    assert main(["compile", model, "-o", str(out), "--calib-random", "2", "--no-ann", "-q", "--leaky", "split"]) == 0
    text = capsys.readouterr().out
    assert "dense MACs / step" in text and "2.00x" in text
    net = lavafile.load(out)
    assert net.ann_onnx is None and net.meta["cost"]["ann"] == ANN
    assert cost_report(net)["ann"] == ANN  # from the record, as the file has no ANN
    from snnc.compiler.energy import energy_report

    rep = energy_report(net, {l.name: 0 for l in net.neuron_layers}, 16)  # the energy ratio uses it too
    assert rep["ann_macs"] == ANN["macs"] and rep["ann_macs_from"] == "compile's cost record"
    assert main(["inspect", str(out), "--target", "loihi2"]) == 0
    text = capsys.readouterr().out
    assert "SNN / ANN" in text and "what dominates" in text and "synapses" in text
    old = tmp_path / "old.lava"  # a file without the cost record (compiled before it existed) but with the ANN
    res = compile_model(model, calib_random=2, progress=False)
    del res.network.meta["cost"]
    lavafile.save(res.network, old)
    assert cost_report(lavafile.load(old))["ann"] == ANN


def _pareto_metrics():
    snn = [{"T": t, "mAP50": a} for t, a in ((16, 0.5), (32, 0.7), (64, 0.69), (128, 0.8))]
    energy = {16: 0.2, 32: 0.4, 64: 0.8, 128: 1.6}
    act = [{"T": t, "energy_pj": {"int": {"ratio": e}, "float": {"ratio": e / 2}}} for t, e in energy.items()]
    return {"data": {"kind": "labelled"}, "accuracy": {"snn": snn, "ann": {"mAP50": 0.82}}, "activity": {"T": act}}


def test_pareto_front_and_plot(tmp_path):
    from snnc.evaluation.plots import accuracy_vs_energy, pareto_points

    m = _pareto_metrics()
    front = {p["T"]: p["front"] for p in pareto_points(m)}
    assert front == {16: True, 32: True, 64: False, 128: True}  # T=64 costs more than T=32 for less
    p = accuracy_vs_energy(m, tmp_path / "pareto.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- the .lava layout ------------------------------------------------------------------------------------------

def _routing_net() -> Network:
    """Arrays of every kind the writer shrinks: zero and ones fills, a pick pattern with per-row scales, small
    integers, float16-exact values, and plain float32."""
    rng = np.random.default_rng(1)
    pick = np.zeros((6, 1, 2, 2), np.float32)
    pick[0::3, 0, 0, 0], pick[1::3, 0, 0, 1], pick[2::3, 0, 1, 0] = 1, -1, 1
    pick *= rng.uniform(0.5, 3, (6, 1, 1, 1)).astype(np.float32)
    conv = {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1}
    layers = [Layer("x", "input", [], (2, 8, 8)),
              Layer("tree", "conv", ["x"], (6, 7, 7), pick, np.zeros(6, np.float32), {**conv, "group": 2},
                    Neuron("IF", rng.uniform(0.5, 1, 6))),
              Layer("up", "deconv", ["tree"], (6, 14, 14), np.ones((6, 1, 2, 2), np.float32), None,
                    {"strides": [2, 2], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 6}),
              Layer("ints", "conv", ["up"], (3, 14, 14), rng.integers(-3, 4, (3, 6, 1, 1)).astype(np.float32),
                    np.float32([0.5, -0.25, 2.0]), conv, Neuron("IF", np.ones(3), memory=True)),
              Layer("head", "conv", ["ints"], (4, 14, 14), rng.normal(size=(4, 3, 1, 1)).astype(np.float32),
                    rng.normal(size=4).astype(np.float32), conv)]
    return Network(layers, ["head"], meta={"note": "v2"})


def _arrays(net: Network):
    for l in net.layers:
        for a in (l.weight, l.bias, None if l.neuron is None else l.neuron.threshold):
            yield a


def test_lava_v2_is_exact_smaller_and_v1_still_reads(tmp_path):
    net = _routing_net()
    v1, v2 = tmp_path / "v1.lava", tmp_path / "v2.lava"
    lavafile.save(net, v1, version=1)
    lavafile.save(net, v2)
    for path, version in ((v1, 1), (v2, 2)):
        assert lavafile.read_manifest(path)["version"] == version
        back = lavafile.load(path)
        for a, b in zip(_arrays(net), _arrays(back)):
            assert (a is None) == (b is None)
            if a is not None:
                assert b.dtype == np.float32 and np.array_equal(a.view(np.uint32), b.view(np.uint32))
    m = lavafile.read_manifest(v2)["layers"]
    assert m[1]["bias"]["fill"] == 0 and "pattern" in m[1]["weight"] and m[2]["weight"]["fill"] == 1
    with zipfile.ZipFile(v2) as z:
        ints = np.load(io.BytesIO(z.read(m[3]["weight"]["npy"])))
        assert ints.dtype == np.int8
        assert np.load(io.BytesIO(z.read(m[3]["bias"]["npy"]))).dtype == np.float16
        assert np.load(io.BytesIO(z.read(m[4]["weight"]["npy"]))).dtype == np.float32
        assert json.loads(z.read("manifest.json"))["meta"] == {"note": "v2"}
    assert v2.stat().st_size < v1.stat().st_size


def test_lava_v2_stores_split_copies_once():
    """A layer between two split leaky layers: out rows [W; -W] and in columns [W, -alpha W], each times the
    normalization's lambdas, rounded to float32: stored as one quarter of the values plus int8 corrections."""
    rng = np.random.default_rng(2)
    base = rng.normal(size=(5, 4, 3, 3))
    u = rng.uniform(0.5, 2, 10) * np.tile([1.0, -1.0], 5)  # per output channel: sign / lambda_out
    v = rng.uniform(0.5, 2, 8) * np.tile([1.0, -0.1], 4)   # per input channel: (1 or -alpha) * lambda_in
    w = (np.repeat(np.repeat(base, 2, axis=0), 2, axis=1) * u[:, None, None, None] * v[None, :, None, None])
    w = w.astype(np.float32)
    ref, parts = lavafile.encode_array(w, "w")
    assert "copies" in ref and "copies" in ref["copies"]["base"]  # rows, then the columns of what is kept
    floats = sum(a.size for a in parts.values() if a.dtype == np.float32)
    assert floats == base.size
    back = lavafile.decode_array(ref, lambda k: parts[k])
    assert back.dtype == np.float32 and np.array_equal(back.view(np.uint32), w.view(np.uint32))
