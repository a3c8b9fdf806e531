"""snnc finetune: the ONNX -> torch importer against onnxruntime, QCFS and its ONNX export through snnc compile
(IF neurons with theta = lambda, no error at T = L), the dual error model, and bad input through the CLI."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from models import Builder, random_photos, tiny_yolo

torch = pytest.importorskip("torch")  # the `train` extra; CI installs it with `test`

from snnc.apps.cli import main  # noqa: E402
from snnc.backends import get_backend  # noqa: E402
from snnc.compiler.api import compile_model  # noqa: E402
from snnc.compiler.frontend import prepare  # noqa: E402
from snnc.compiler.graph import run_model  # noqa: E402
from snnc.compiler.spikesim import neuron_scan  # noqa: E402
from snnc.compiler.split import split_model  # noqa: E402
from snnc.training.finetune import export_qcfs, qcfs_nodes  # noqa: E402
from snnc.training.importer import import_onnx  # noqa: E402
from snnc.training.qcfs import QCFS, quantize  # noqa: E402


def _spiking(model: onnx.ModelProto, tmp_path) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    prepared = prepare(path)
    return prepared, split_model(prepared).spiking


@pytest.mark.parametrize("leaky", [True, False], ids=["leaky", "relu"])
def test_importer_matches_onnxruntime(tmp_path, leaky):
    _, spiking = _spiking(tiny_yolo(leaky=leaky), tmp_path)
    module = import_onnx(spiking).eval()
    for seed in (0, 1):
        x = np.random.default_rng(seed).uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
        ref = run_model(spiking, {"images": x})
        with torch.no_grad():
            got = module(torch.from_numpy(x))
        for name, g in zip(module.output_names, got):
            assert np.abs(g.numpy() - ref[name]).max() <= 1e-4 * max(1.0, np.abs(ref[name]).max())


def test_importer_pad_add_edge_cases(tmp_path):
    b = Builder(4)
    x = b.conv("images", 3, 4)
    y = b.node("Pad", [x, b.const(np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64))], mode="edge")
    y = b.node("Relu", [y])
    z = b.conv(y, 4, 4, k=3, pad=0)
    z = b.node("Add", [z, b.const(np.float32(0.25))])
    out = b.conv(b.node("Relu", [z]), 4, 6, k=1)
    m = b.model([1, 3, 12, 12], [out])
    _, spiking = _spiking(m, tmp_path)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 12, 12)).astype(np.float32)
    ref = run_model(spiking, {"images": x})
    with torch.no_grad():
        got = import_onnx(spiking)(torch.from_numpy(x))[0].numpy()
    assert np.abs(got - ref[spiking.graph.output[0].name]).max() < 1e-4


def test_qcfs_is_the_if_neuron_at_T_equal_L():
    """For a constant input, an IF neuron (V(0) = theta/2, reset by subtraction) over T = L steps outputs QCFS."""
    L, lam = 4, 1.5
    z = np.linspace(-0.5, 2.0, 101, dtype=np.float32).reshape(1, 1, -1)
    snn = neuron_scan(z[None], L, kind="IF", theta=np.array([lam]), v0=np.array([lam / 2])).mean(0)
    q = quantize(torch.from_numpy(z), torch.tensor(lam), L).numpy()
    assert np.abs(snn - q).max() < 1e-6


def test_dual_error_model_bounds_and_eval_mode():
    torch.manual_seed(0)
    T, lam = 8, 2.0
    act = QCFS(levels=T, lam=lam, dual_T=T, unevenness=1.0)
    z = torch.linspace(-1, 3, 4001)
    det = quantize(z, act.lam_value(), T)
    act.train()
    y = act(z)
    noise = (y - det).detach()
    active = (det > 0) & (det < act.lam_value())
    assert noise.abs().max() <= lam / T + 1e-5  # at most one spike's worth
    assert float(noise[active].abs().mean()) > 0.2 * lam / T  # and really there where the neuron is active
    assert float(noise[~active].abs().max()) == 0.0  # silent and saturated neurons: no order effect
    act.eval()
    assert torch.equal(act(z), det)  # evaluation: QCFS alone
    y.sum().backward()
    assert act.lam.grad is not None and torch.isfinite(act.lam.grad)


@pytest.mark.parametrize("lam", [0.8, [0.5, 0.7, 0.9, 1.1, 1.3, 0.6]], ids=["per_layer", "per_channel"])
def test_qcfs_export_round_trip_through_compile(tmp_path, lam):
    """conv -> ReLU -> conv head as QCFS(L=4): snnc compile gives an IF neuron with theta = lambda (lambda
    attribute after normalization; one per layer, or one per channel with --lambda-per channel) and the SNN at
    T = L equals the QCFS ANN exactly (constant input)."""
    b = Builder(2)
    h = b.node("Relu", [b.conv("images", 3, 6)])
    head = b.conv(h, 6, 5, k=1)
    prepared, spiking = _spiking(b.model([1, 3, 8, 8], [head]), tmp_path)
    student = import_onnx(spiking)
    for node in student.activation_nodes():
        student.replace_activation(node.name, QCFS(4, lam))
    qmodel = export_qcfs(prepared, student)
    path = tmp_path / "qcfs.onnx"
    onnx.save(qmodel, path)
    res = compile_model(path, calib_random=2, progress=False)
    ifs = [n for n in res.spiking.graph.node if n.domain == "snnc"]
    assert len(ifs) == 1 and ifs[0].op_type == "IF"
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in ifs[0].attribute}
    assert attrs["qcfs_levels"] == 4 and attrs["v_init"] == 0.5
    assert np.allclose(attrs["lambda"], np.broadcast_to(lam, (6,)), rtol=1e-6)
    x = np.random.default_rng(5).uniform(-1, 1, (3, 3, 8, 8)).astype(np.float32)
    ref = run_model(qmodel, {"images": x})[head]
    with torch.no_grad():
        assert np.abs(student.eval()(torch.from_numpy(x))[0].numpy() - ref).max() < 1e-5
    layer = res.network.outputs[0]
    got = get_backend("numpy").simulate(res.network, x, [4], progress=False).outputs[4][layer]
    assert np.abs(got - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())


def test_qcfs_chain_is_what_activations_to_neurons_matches():
    nodes, consts = qcfs_nodes("a", "x", "y", 2.0, 8)
    assert [n.op_type for n in nodes] == ["Mul", "Add", "Floor", "Div", "Clip", "Mul"]
    vals = {c.name: float(onnx.numpy_helper.to_array(c)) for c in consts}
    assert vals["a_qcfs_scale"] == 4.0 and vals["a_qcfs_levels"] == 8.0 and vals["a_qcfs_lam"] == 2.0


def test_finetune_cli_end_to_end(tmp_path, capsys):
    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_yolo(leaky=False), model)
    out = tmp_path / "tiny_T4.onnx"
    photos = random_photos(tmp_path / "photos", 4, size=32)
    rc = main(["finetune", str(model), "--images", str(photos), "-T", "4", "--epochs", "2",
               "--batch", "2", "-o", str(out), "-q", "--threads", "1"])
    assert rc == 0 and out.exists()
    log = json.loads(out.with_suffix(".json").read_text())
    assert len(log["history"]) == 2 and log["options"]["T"] == 4
    res = compile_model(out, calib_random=2, progress=False)
    ifs = [n for n in res.spiking.graph.node if n.domain == "snnc" and
           any(a.name == "qcfs_levels" for a in n.attribute)]
    assert len(ifs) == 6  # every ReLU of the model came back as a QCFS neuron


def _sigmoid_model():
    b = Builder(1)
    h = b.node("Sigmoid", [b.conv("images", 3, 4)])
    return b.model([1, 3, 16, 16], [b.conv(h, 4, 4, k=1)])


@pytest.mark.parametrize("case", ["no_photos", "T0", "sigmoid", "lambda_per"])
def test_finetune_cli_bad_input(tmp_path, capsys, case):
    model = tmp_path / "m.onnx"
    onnx.save(_sigmoid_model() if case == "sigmoid" else tiny_yolo(leaky=False), model)
    photos = random_photos(tmp_path / "photos", 2, size=32) if case != "no_photos" else tmp_path / "empty"
    photos.mkdir(exist_ok=True)
    out = tmp_path / "out.onnx"
    rc = main(["finetune", str(model), "--images", str(photos), "-T", "0" if case == "T0" else "4",
               "--epochs", "1", "-o", str(out), "-q"] + (["--lambda-per", "neuron"] if case == "lambda_per" else []))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("snnc: error: "), err
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert {"no_photos": "photos", "T0": "-T", "sigmoid": "Sigmoid", "lambda_per": "--lambda-per"}[case] in err[0]
