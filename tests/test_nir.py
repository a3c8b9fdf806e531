"""NIR export and import (docs/nir.md): the round trip is exact, the refusals name the layer and the fix, and a
real consumer, snnTorch, simulates the exported graph through its own NIR importer with the same spike counts
as snnc's NumPy simulator where the semantics match; where snnTorch differs, the tests show by how much."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from snnc.apps.cli import main
from snnc.backends import get_backend
from snnc.backends.nir import to_nir, write_nir
from snnc.compiler.nir_frontend import nir_to_network, read_nir
from snnc.ir import lavafile
from snnc.ir.errors import SnncError, UnsupportedOpError
from snnc.ir.network import Layer, Network, Neuron

nir = pytest.importorskip("nir")
torch = pytest.importorskip("torch")
snn = pytest.importorskip("snntorch")

from nir_consumer import by_layer, compile_digits, run_snntorch, snntorch_model  # noqa: E402 (needs snntorch)


def conv(name, src, w, b=None, *, pads=(1, 1, 1, 1), stride=1, group=1, neuron=None, shape=None):
    return Layer(name, "conv", [src], shape, weight=w.astype(np.float32),
                 bias=None if b is None else b.astype(np.float32), neuron=neuron,
                 attrs={"strides": [stride, stride], "pads": list(pads), "dilations": [1, 1], "group": group})


def small_net(theta=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0), v_init=0.0, scale=0.6, seed=0) -> Network:
    """input 2x10x10 -> conv 3x3 (6 ch) IF -> zero pad 1 -> grouped conv 3x3 (groups 2, 4 ch) IF -> linear 1x1 head."""
    rng = np.random.default_rng(seed)
    theta = np.asarray(theta, np.float32)
    layers = [
        Layer("images", "input", [], (2, 10, 10)),
        conv("conv1", "images", rng.normal(0, scale, (6, 2, 3, 3)), rng.normal(0.1, 0.1, 6),
             neuron=Neuron("IF", theta, v_init=v_init), shape=(6, 10, 10)),
        Layer("pad", "pad", ["conv1"], (6, 12, 12), attrs={"pads": [1, 1, 1, 1], "mode": "constant"}),
        conv("conv2", "pad", rng.normal(0, scale, (4, 3, 3, 3)), rng.normal(0.05, 0.1, 4), pads=(0, 0, 0, 0),
             group=2, neuron=Neuron("IF", np.full(4, theta[0]), v_init=v_init), shape=(4, 10, 10)),
        conv("head", "conv2", rng.normal(0, 0.5, (5, 4, 1, 1)), rng.normal(0, 0.1, 5), pads=(0, 0, 0, 0),
             shape=(5, 10, 10)),
    ]
    return Network(layers, ["head"], output_names={"head": "head_out"})


def simulate(net, x, T, **kw):
    return get_backend("numpy").simulate(net, x, T, threads=1, **kw)


# ---------------------------------------------------------------- export, import, round trip


def test_round_trip_is_identical(tmp_path):
    """Per-channel thresholds != 1 (NIR Scale nodes), V(0) = theta/2, a grouped conv and a zero pad layer
    (folded into the conv's padding): export -> file -> import simulates identically, float and fixed point."""
    net = small_net(theta=(0.7, 1.3, 1.0, 0.9, 1.1, 2.0), v_init=0.5)
    path = write_nir(net, tmp_path / "net.nir")
    back = read_nir(path)
    assert [l.name for l in back.layers] == ["images", "conv1", "conv2", "head"]  # the pad is inside conv2
    c2 = back.layer("conv2")
    assert c2.attrs["group"] == 2 and c2.attrs["pads"] == [1, 1, 1, 1]
    np.testing.assert_array_equal(c2.weight, net.layer("conv2").weight)
    np.testing.assert_array_equal(back.layer("conv1").neuron.threshold, net.layer("conv1").neuron.threshold)
    assert back.layer("conv1").neuron.v_init == 0.5 and back.outputs == ["head"]
    assert back.output_names == {"head": "head_out"}
    x = np.random.default_rng(1).random((2, 2, 10, 10)).astype(np.float32)
    for mode in ("float", "fixed"):
        a, b = simulate(net, x, [8, 24], mode=mode), simulate(back, x, [8, 24], mode=mode)
        for T in (8, 24):
            np.testing.assert_array_equal(a.outputs[T]["head"], b.outputs[T]["head"])
        for name in ("conv1", "conv2"):
            np.testing.assert_array_equal(a.spike_counts[name], b.spike_counts[name])
            assert a.spike_counts[name].sum() > 0


def test_the_graph_states_snnc_semantics(tmp_path):
    """What a reader finds in the file: IF nodes with r = 1, v_reset = 0 and v_threshold one float32 step below
    theta (NIR fires on v > v_threshold, snnc on V >= theta); reset rule, V(0) and theta in the metadata; the
    spike value theta as a Scale node; grouped convs as full block-diagonal weights, which nir.read type-checks."""
    net = small_net(theta=(0.7, 1.3, 1.0, 0.9, 1.1, 2.0), v_init=0.5)
    write_nir(net, tmp_path / "net.nir")
    g = nir.read(tmp_path / "net.nir")  # type_check=True, nir's default
    if1 = g.nodes["conv1_if"]
    theta = net.layer("conv1").neuron.threshold
    assert isinstance(if1, nir.IF) and if1.v_threshold.shape == (6, 10, 10)
    np.testing.assert_array_equal(if1.v_threshold[:, 0, 0], np.nextafter(theta, np.float32(0)))
    assert np.all(if1.v_threshold[:, 0, 0] < theta) and np.all(if1.r == 1) and np.all(if1.v_reset == 0)
    meta = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in if1.metadata.items()}
    assert meta["snnc_reset"] == "subtract" and float(meta["snnc_v_init"]) == 0.5
    np.testing.assert_array_equal(np.asarray(meta["snnc_theta"]), theta)
    np.testing.assert_array_equal(g.nodes["conv1_out"].scale[:, 0, 0], theta)
    assert np.all(g.nodes["conv2_out"].scale == np.float32(0.7))
    c2 = g.nodes["conv2"]
    assert c2.groups == 1 and c2.weight.shape == (4, 6, 3, 3) and tuple(c2.padding) == (1, 1)
    assert np.all(c2.weight[:2, 3:] == 0) and np.all(c2.weight[2:, :3] == 0)
    assert ("conv1_out", "conv2") in g.edges and ("head", "output_head") in g.edges


def test_dense_layers_round_trip(tmp_path):
    """A dense layer on a (C, H, W) source is written as Flatten(start_dim=0) + Affine, and read back."""
    rng = np.random.default_rng(6)
    net = Network([Layer("x", "input", [], (2, 4, 4)),
                   conv("c", "x", rng.normal(0, 0.6, (3, 2, 3, 3)), rng.normal(0.1, 0.1, 3),
                        neuron=Neuron("IF", np.ones(3)), shape=(3, 4, 4)),
                   Layer("d", "dense", ["c"], (5,), weight=rng.normal(0, 0.3, (5, 48)).astype(np.float32),
                         bias=rng.normal(0, 0.1, 5).astype(np.float32), neuron=Neuron("IF", np.full(5, 0.8))),
                   Layer("h", "dense", ["d"], (2,), weight=rng.normal(0, 1, (2, 5)).astype(np.float32),
                         bias=np.zeros(2, np.float32))], ["h"])
    g = nir.read(write_nir(net, tmp_path / "d.nir"))
    assert isinstance(g.nodes["d_flatten"], nir.Flatten) and ("c_if", "d_flatten") in g.edges
    back = nir_to_network(g)
    assert [(l.name, l.op) for l in back.layers] == [("x", "input"), ("c", "conv"), ("d", "dense"), ("h", "dense")]
    x = np.random.default_rng(7).random((2, 2, 4, 4)).astype(np.float32)
    a, b = simulate(net, x, 32), simulate(back, x, 32)
    np.testing.assert_array_equal(a.outputs[32]["h"], b.outputs[32]["h"])
    assert a.spike_counts["d"].sum() > 0 and np.array_equal(a.spike_counts["d"], b.spike_counts["d"])


def concat_net(theta_b: float = 1.0) -> Network:
    """Two IF branches concatenated and read by two convolutions with IF neurons, each with a linear head."""
    rng = np.random.default_rng(8)
    w = lambda *shape: rng.normal(0, 0.5, shape)  # noqa: E731
    layers = [Layer("x", "input", [], (2, 8, 8)),
              conv("a", "x", w(3, 2, 3, 3), rng.normal(0.1, 0.1, 3), neuron=Neuron("IF", np.ones(3)), shape=(3, 8, 8)),
              conv("b", "x", w(2, 2, 1, 1), rng.normal(0.1, 0.1, 2), pads=(0, 0, 0, 0),
                   neuron=Neuron("IF", np.full(2, theta_b)), shape=(2, 8, 8)),
              Layer("cat", "concat", ["a", "b"], (5, 8, 8), attrs={"axis": 0}),
              conv("c", "cat", w(4, 5, 3, 3), rng.normal(0.1, 0.1, 4), neuron=Neuron("IF", np.ones(4)), shape=(4, 8, 8)),
              conv("d", "cat", w(3, 5, 1, 1), rng.normal(0.1, 0.1, 3), pads=(0, 0, 0, 0),
                   neuron=Neuron("IF", np.ones(3)), shape=(3, 8, 8)),
              conv("hc", "c", w(2, 4, 1, 1), pads=(0, 0, 0, 0), shape=(2, 8, 8)),
              conv("hd", "d", w(2, 3, 1, 1), pads=(0, 0, 0, 0), shape=(2, 8, 8))]
    return Network(layers, ["hc", "hd"])


def test_concat_into_convolutions_round_trip_and_snntorch(tmp_path):
    """conv(concat(a, b)) is written as conv_a(a) + conv_b(b) summed at the IF node; snnc rebuilds the concat
    exactly, and snnTorch (whose graph executor sums a node's inputs) spikes as snnc does."""
    net = concat_net(theta_b=0.8)
    g = nir.read(write_nir(net, tmp_path / "cat.nir"))
    assert {("c_part0", "c_if"), ("c_part1", "c_if"), ("a_if", "c_part0"), ("b_out", "c_part1")} <= set(g.edges)
    back = nir_to_network(g)
    assert back.layer("cat").inputs == ["a", "b"] and back.layer("c").inputs == ["cat"]
    np.testing.assert_array_equal(back.layer("c").weight, net.layer("c").weight)
    x = np.random.default_rng(9).random((2, 2, 8, 8)).astype(np.float32)
    a, b = simulate(net, x, 24), simulate(back, x, 24)
    for name in ("hc", "hd"):
        np.testing.assert_array_equal(a.outputs[24][name], b.outputs[24][name])

    torch.set_num_threads(1)
    net = concat_net()  # theta 1 everywhere: snnTorch's importer has no Scale
    # one head: nirtorch 2.6 does not finish building a graph with two Output nodes (docs/nir.md)
    graph = to_nir(net, ["hc"])
    ref = simulate(net, x, 24)
    model, leaky = snntorch_model(graph)
    counts = by_layer(graph, run_snntorch(model, leaky, np.broadcast_to(x, (24, *x.shape)))[0])
    assert set(counts) == {"a", "b", "c"}
    for name, c in counts.items():
        np.testing.assert_array_equal(c, ref.spike_counts[name], err_msg=name)
        assert c.sum() > 0


def test_export_only_what_the_chosen_outputs_need(tmp_path):
    net = small_net()
    g = to_nir(net, ["conv1"])
    assert {type(n).__name__ for n in g.nodes.values()} == {"Input", "Conv2d", "IF", "Output"}
    with pytest.raises(SnncError, match="'nope' is not a layer"):
        to_nir(net, ["nope"])


def _with(net: Network, **changes) -> Network:
    layers = [Layer(l.name, l.op, list(l.inputs), l.shape, l.weight, l.bias, dict(l.attrs), l.neuron)
              for l in net.layers]
    for name, fn in changes.items():
        fn(next(l for l in layers if l.name == name))
    return Network(layers, list(net.outputs))


@pytest.mark.parametrize("change, says", [
    (dict(conv1=lambda l: setattr(l, "neuron", Neuron("IF", np.ones(6), memory=True))), "--neuron plain"),
    (dict(conv1=lambda l: setattr(l, "neuron", Neuron("SignedIF", np.ones(6), alpha=0.1))), "--leaky split"),
    (dict(pad=lambda l: l.attrs.update(mode="edge")), "NIR only pads with zeros"),
    (dict(pad=lambda l: l.attrs.update(pads=[0, 0, 2, 2])), "asymmetric padding"),
])
def test_refusals_name_the_layer_and_the_fix(change, says):
    net = _with(small_net(), **change)
    with pytest.raises(UnsupportedOpError, match=says) as exc:
        to_nir(net)
    assert "'conv1'" in str(exc.value) or "'conv2'" in str(exc.value) or "'pad'" in str(exc.value)


def test_deconv_and_concat_are_refused_per_layer():
    rng = np.random.default_rng(0)
    layers = [Layer("x", "input", [], (2, 4, 4)),
              conv("a", "x", rng.normal(0, 1, (2, 2, 3, 3)), neuron=Neuron("IF", np.ones(2)), shape=(2, 4, 4)),
              Layer("up", "deconv", ["a"], (2, 8, 8), weight=np.ones((2, 1, 2, 2), np.float32),
                    attrs={"strides": [2, 2], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 2,
                           "output_padding": [0, 0]}),
              Layer("cat", "concat", ["up", "up"], (4, 8, 8), attrs={"axis": 0})]
    net = Network(layers, ["cat", "a"])  # a concat that is an output cannot be split into its consumers
    with pytest.raises(UnsupportedOpError) as exc:
        to_nir(net)
    msg = str(exc.value)
    assert "'up' (deconv)" in msg and "'cat' (concat)" in msg and "--outputs" in msg and "'a'" not in msg
    assert len(to_nir(net, ["a"]).nodes) == 4  # the part before them exports


# ---------------------------------------------------------------- the consumer: snnTorch


def test_snntorch_small_conv_same_spike_counts():
    torch.set_num_threads(1)
    net = small_net()
    graph = to_nir(net)
    x = np.random.default_rng(2).random((2, 2, 10, 10)).astype(np.float32)
    T = 32
    ref = simulate(net, x, T)
    model, leaky = snntorch_model(graph)
    counts, out = run_snntorch(model, leaky, np.broadcast_to(x, (T, *x.shape)))
    counts = by_layer(graph, counts)
    assert set(counts) == {"conv1", "conv2"}
    for name, c in counts.items():
        np.testing.assert_array_equal(c, ref.spike_counts[name])
        assert c.sum() > 100
    np.testing.assert_allclose(out, ref.outputs[T]["head"], atol=1e-5)


def test_snntorch_differences_single_neuron():
    """One IF neuron (theta 1) behind a 1x1 weight of 1, fed explicit inputs: what snnTorch changes."""
    torch.set_num_threads(1)

    def one_neuron(v_init: float = 0.0) -> Network:
        return Network([Layer("x", "input", [], (1,)),
                        Layer("n", "dense", ["x"], (1,), weight=np.ones((1, 1), np.float32),
                              bias=np.zeros(1, np.float32), neuron=Neuron("IF", np.ones(1), v_init=v_init))], ["n"])

    def spikes(net, z, **snt):
        steps = np.asarray(z, np.float32).reshape(-1, 1, 1)
        ours = int(simulate(net, steps, len(z), encoding="explicit").spike_counts["n"][0])
        model, leaky = snntorch_model(to_nir(net), as_imported=snt.get("as_imported", False))
        for m in leaky.values():
            m.reset_delay = snt.get("reset_delay", m.reset_delay)
        theirs = int(next(iter(run_snntorch(model, leaky, steps)[0].values()))[0])
        return ours, theirs

    # matching settings: equal, also at ties (V = theta exactly: 0.25 * 4)
    assert spikes(one_neuron(), [0.25] * 12) == (3, 3)
    # as imported by snnTorch 1.0.0: beta = 0.9 leaks, a steady 1/16 levels off at 0.625 and never spikes
    assert spikes(one_neuron(), [0.0625] * 32, as_imported=True) == (2, 0)
    # reset_delay=False (what the importer sets): after V >= 2 theta the membrane stays above theta, unspent
    assert spikes(one_neuron(), [2.5, 0, 0, 0]) == (2, 2)
    assert spikes(one_neuron(), [2.5, 0, 0, 0], reset_delay=False) == (2, 1)
    # V(0) = theta/2 lives in the metadata only: snnTorch starts at 0
    assert spikes(one_neuron(0.5), [0.25] * 6) == (2, 1)


def test_snntorch_digits_detector(tmp_path):
    """The trained digits detector compiled with plain IF neurons and V(0) = 0: its 8x8 head and the eleven
    spiking layers before it (the 16x16 head needs the upsampling and the concat NIR cannot express) in snnTorch
    give snnc's spike counts in every layer; as snnTorch imports it (beta 0.9) the counts fall."""
    from snnc.evaluation.digits import make_digits

    torch.set_num_threads(1)
    net = compile_digits(tmp_path, neuron="plain", v_init=0.0, maxpool="exact")  # what NIR can express
    with pytest.raises(UnsupportedOpError, match="Resize_deconv"):
        to_nir(net)
    head = "/head8/Conv"
    write_nir(net, tmp_path / "digits.nir", [head])
    graph = nir.read(tmp_path / "digits.nir")
    x = make_digits("test", 2, seed=0).images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    T = 16
    ref = simulate(net, x, T)
    model, leaky = snntorch_model(graph)
    counts, out = run_snntorch(model, leaky, np.broadcast_to(x, (T, *x.shape)))
    counts = by_layer(graph, counts)
    assert len(counts) == 11
    for name, c in counts.items():
        np.testing.assert_array_equal(c, ref.spike_counts[name], err_msg=name)
    np.testing.assert_allclose(out, ref.outputs[T][head], atol=1e-4 * np.abs(ref.outputs[T][head]).max())
    model, leaky = snntorch_model(graph, as_imported=True)
    leaked = by_layer(graph, run_snntorch(model, leaky, np.broadcast_to(x, (T, *x.shape)))[0])
    total, total_leaked = sum(int(c.sum()) for c in counts.values()), sum(int(c.sum()) for c in leaked.values())
    assert total_leaked < 0.9 * total


def test_import_a_conv_if_stack_written_by_snntorch(tmp_path):
    """snnTorch's exporter writes a conv + leak-free Leaky stack as Conv2d + LIF(tau = inf, r = inf): snnc reads
    it as conv + IF layers and spikes as the snnTorch module does."""
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(0)
    torch.set_num_threads(1)
    # per-neuron beta and threshold tensors: snnTorch 1.0.0's exporter fails nir 1.0.8's type check with scalars
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1), snn.Leaky(beta=torch.ones(4, 8, 8), threshold=torch.ones(4, 8, 8),
                                                       init_hidden=True),
        torch.nn.Conv2d(4, 3, 3, padding=1), snn.Leaky(beta=torch.ones(3, 8, 8), threshold=torch.ones(3, 8, 8),
                                                       init_hidden=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = export_to_nir(model, torch.randn(2, 8, 8))
    nir.write(tmp_path / "snntorch.nir", graph)
    assert main(["import", str(tmp_path / "snntorch.nir"), "-o", str(tmp_path / "s.lava")]) == 0
    net = lavafile.load(tmp_path / "s.lava")
    assert [(l.op, l.neuron.kind) for l in net.layers[1:]] == [("conv", "IF"), ("conv", "IF")]
    x = np.random.default_rng(3).random((2, 2, 8, 8)).astype(np.float32)
    T = 24
    ref = simulate(net, x, T)
    leaky = {str(i): m for i, m in enumerate(model) if isinstance(m, snn.Leaky)}
    counts, _ = run_snntorch(model, leaky, np.broadcast_to(x, (T, *x.shape)))
    for (i, c), layer in zip(counts.items(), net.layers[1:]):
        np.testing.assert_array_equal(c, ref.spike_counts[layer.name])
        assert c.sum() > 0


# ---------------------------------------------------------------- command line


def test_cli_export_import_and_errors(tmp_path, capsys):
    net = small_net(theta=(0.7, 1.3, 1.0, 0.9, 1.1, 2.0))
    lavafile.save(net, tmp_path / "net.lava")
    assert main(["export", str(tmp_path / "net.lava"), "--to", "nir", "-o", str(tmp_path / "net.nir")]) == 0
    assert main(["import", str(tmp_path / "net.nir"), "-o", str(tmp_path / "back.lava")]) == 0
    back = lavafile.load(tmp_path / "back.lava")
    x = np.random.default_rng(4).random((1, 2, 10, 10)).astype(np.float32)
    np.testing.assert_array_equal(simulate(net, x, 8).outputs[8]["head"], simulate(back, x, 8).outputs[8]["head"])
    capsys.readouterr()

    bad = _with(small_net(), conv2=lambda l: setattr(l, "neuron", Neuron("IF", np.ones(4), memory=True)))
    lavafile.save(bad, tmp_path / "memory.lava")
    assert main(["export", str(tmp_path / "memory.lava"), "--to", "nir", "-o", str(tmp_path / "m.nir")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("snnc: error: NIR cannot express layer 'conv2'") and err.count("\n") == 1
    assert not (tmp_path / "m.nir").exists() and not list(tmp_path.glob(".m.nir*"))
    assert main(["import", str(tmp_path / "net.lava"), "-o", str(tmp_path / "x.lava")]) == 2
    assert "not a readable NIR file" in capsys.readouterr().err and not (tmp_path / "x.lava").exists()
    assert main(["import", str(tmp_path / "net.nir"), "-o", str(tmp_path / "y.lava"),
                 "--like", str(tmp_path / "memory.lava")]) == 0  # same output layer names: takes its host part


def test_compile_emit_nir(tmp_path, capsys):
    from models import Builder

    b = Builder(seed=1)
    x = b.node("Relu", [b.conv("images", 3, 8)])
    model = b.model([1, 3, 16, 16], [b.conv(x, 8, 4, k=1)])
    import onnx

    onnx.save(model, tmp_path / "m.onnx")
    args = ["compile", str(tmp_path / "m.onnx"), "--calib-random", "2", "-q", "--emit", "nir"]
    assert main(args + ["-o", str(tmp_path / "m.nir")]) == 2  # the memory IF, the default neuron
    assert "--neuron plain" in capsys.readouterr().err and not (tmp_path / "m.nir").exists()
    assert main(args + ["--neuron", "plain", "-o", str(tmp_path / "m.nir")]) == 0
    g = nir.read(tmp_path / "m.nir")
    assert sorted(type(n).__name__ for n in g.nodes.values()) == ["Conv2d", "Conv2d", "IF", "Input", "Output"]
    net = nir_to_network(g)
    assert [l.op for l in net.layers] == ["input", "conv", "conv"] and net.layers[1].neuron.v_init == 0.5


def test_imported_graph_runs_in_the_c_backend(tmp_path):
    """A NIR graph read by snnc is an ordinary Network: the generated C is bit-exact with the NumPy simulator."""
    import snnc.backends.c as c_backend

    net = small_net(theta=(0.7, 1.3, 1.0, 0.9, 1.1, 2.0), v_init=0.5)
    back = read_nir(write_nir(net, tmp_path / "net.nir"))
    x = np.random.default_rng(5).random((1, 2, 10, 10)).astype(np.float32)
    cbk = c_backend.CBackend(cache_dir=tmp_path / "c-cache", cflags="-O1")
    c, ref = cbk.simulate(back, x, [4, 12], mode="fixed"), simulate(back, x, [4, 12], mode="fixed")
    for T in (4, 12):
        np.testing.assert_array_equal(c.outputs[T]["head"], ref.outputs[T]["head"])
    for name in ("conv1", "conv2"):
        np.testing.assert_array_equal(c.spike_counts[name], ref.spike_counts[name])


def test_without_the_nir_package_one_clear_error(monkeypatch, tmp_path, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "nir", None)  # `import nir` raises ImportError
    lavafile.save(small_net(), tmp_path / "net.lava")
    assert main(["export", str(tmp_path / "net.lava"), "--to", "nir", "-o", str(tmp_path / "net.nir")]) == 2
    assert "pip install 'snnc[nir]'" in capsys.readouterr().err and not (tmp_path / "net.nir").exists()
