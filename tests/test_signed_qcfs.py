"""A fine-tuned LeakyReLU keeps its trained lambdas: the signed QCFS export becomes one graded neuron per channel
(theta = lam+, theta_n = lam-; the default) or two IF neurons per channel (--leaky split) in snnc compile, equal to
the QCFS ANN at T = L; refused with one line under --leaky ibt."""

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
from snnc.compiler.split import split_model  # noqa: E402
from snnc.training.finetune import export_qcfs  # noqa: E402
from snnc.training.importer import import_onnx  # noqa: E402
from snnc.training.qcfs import SignedQCFS  # noqa: E402

LAM_POS, LAM_NEG, ALPHA, L = 0.9, 0.4, 0.1, 4
# --lambda-per channel: one lam+ and one lam- per channel of the 5
CHANNEL_POS, CHANNEL_NEG = [0.5, 0.9, 1.3, 0.7, 1.1], [0.2, 0.6, 0.4, 0.3, 0.5]


def _leaky_qcfs(tmp_path, lam_pos=LAM_POS, lam_neg=LAM_NEG):
    """conv -> LeakyReLU(0.1) -> conv head, the LeakyReLU a signed QCFS(L = 4) with lam+ = 0.9, lam- = 0.4 (or
    the per-channel lambdas given)."""
    b = Builder(3)
    h = b.node("LeakyRelu", [b.conv("images", 3, 5)], alpha=ALPHA)
    head = b.conv(h, 5, 4, k=1)
    path = tmp_path / "leaky.onnx"
    onnx.save(b.model([1, 3, 8, 8], [head]), path)
    prepared = prepare(path)
    student = import_onnx(split_model(prepared).spiking)
    for node in student.activation_nodes():
        student.replace_activation(node.name, SignedQCFS(L, lam_pos, lam_neg, ALPHA))
    qmodel = export_qcfs(prepared, student)
    out = tmp_path / "leaky_qcfs.onnx"
    onnx.save(qmodel, out)
    return out, qmodel, student.eval(), head


@pytest.mark.parametrize("per", ["layer", "channel"])
@pytest.mark.parametrize("leaky", ["graded", "split"])
def test_signed_qcfs_export_round_trip_through_compile(tmp_path, leaky, per):
    """graded (the default): one graded neuron per channel with theta = lam+, theta_n = lam-; split: IF pairs;
    with one lambda per layer or per channel (--lambda-per channel)."""
    pos, neg = (CHANNEL_POS, CHANNEL_NEG) if per == "channel" else ([LAM_POS] * 5, [LAM_NEG] * 5)
    path, qmodel, student, head = _leaky_qcfs(tmp_path, *((pos, neg) if per == "channel" else ()))
    assert "LeakyRelu" not in {n.op_type for n in qmodel.graph.node}
    x = np.random.default_rng(5).uniform(-1, 1, (3, 3, 8, 8)).astype(np.float32)
    ref = run_model(qmodel, {"images": x})[head]
    with torch.no_grad():  # the ONNX chain computes the trained module
        assert np.abs(student(torch.from_numpy(x))[0].numpy() - ref).max() < 1e-5
    res = compile_model(path, calib_random=2, progress=False, leaky=leaky)
    ifs = [n for n in res.spiking.graph.node if n.domain == "snnc"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in ifs[0].attribute}
    assert attrs["qcfs_levels"] == L and attrs["v_init"] == 0.5
    if leaky == "split":
        assert [n.op_type for n in ifs] == ["IF"]  # one layer of IF neurons: the split, no signed IBT neuron
        assert np.allclose(attrs["lambda"], np.stack([pos, neg], 1).reshape(-1), rtol=1e-6)  # z, -z pairs
    else:
        assert [n.op_type for n in ifs] == ["SignedIF"] and attrs["graded"] == 1 and attrs["memory"] == 1
        assert np.allclose(attrs["lambda"], pos, rtol=1e-6)  # 5 channels, not 10
        assert np.allclose(np.broadcast_to(attrs["threshold_neg"], (5,)), np.divide(neg, pos), rtol=1e-6)  # theta = 1
    got = get_backend("numpy").simulate(res.network, x, [L], progress=False).outputs[L][res.network.outputs[0]]
    assert np.abs(got - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())  # the trained QCFS at T = L


@pytest.mark.parametrize("per", ["layer", "channel"])
def test_signed_qcfs_to_graded_golden(tmp_path, golden, per):
    """activations_to_neurons on the fine-tuned graph: the signed QCFS chains become one graded SignedIF (its
    thresholds one per layer, or one per channel)."""
    from test_passes import check_pass

    from snnc.compiler.frontend import prepare
    from snnc.compiler.split import split_model

    path = _leaky_qcfs(tmp_path, *((CHANNEL_POS, CHANNEL_NEG) if per == "channel" else ()))[0]
    m = split_model(prepare(path)).spiking
    name = "activations_signed_qcfs_graded" + ("_per_channel" if per == "channel" else "")
    out = check_pass("activations_to_neurons", m, golden, name, rewrites=1, leaky="graded")
    assert [n.op_type for n in out.graph.node if n.domain == "snnc"] == ["SignedIF"]
    assert not {"Floor", "Sub", "Clip"} & {n.op_type for n in out.graph.node}


def test_graded_qcfs_is_refused_under_leaky_signed(tmp_path):
    from snnc.ir.errors import UnsupportedOpError

    path = _leaky_qcfs(tmp_path)[0]
    with pytest.raises(UnsupportedOpError, match="--leaky graded"):
        compile_model(path, calib_random=2, progress=False, leaky="signed")


def test_signed_qcfs_refused_under_leaky_ibt(tmp_path, capsys):
    path = _leaky_qcfs(tmp_path)[0]
    out = tmp_path / "m.lava"
    photos = random_photos(tmp_path / "photos", 2, size=8)  # real calibration: no --calib-random warning on stderr
    rc = main(["compile", str(path), "--calib", str(photos), "--leaky", "ibt", "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("snnc: error: ") and "signed QCFS" in err[0], err
    assert not out.exists()


def test_finetune_leaky_model_keeps_every_lambda(tmp_path):
    """snnc finetune on a LeakyReLU detector: every LeakyReLU comes back from snnc compile as IF neurons whose
    lambdas are the trained ones in the training log."""
    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_yolo(leaky=True), model)
    photos = random_photos(tmp_path / "photos", 4)
    out = tmp_path / "tiny_T4.onnx"
    assert main(["finetune", str(model), "--images", str(photos), "-T", "4", "--epochs", "1", "--batch", "2",
                 "-o", str(out), "-q", "--threads", "1"]) == 0
    trained = json.loads(out.with_suffix(".json").read_text())["lambda_final"]
    want = sorted(tuple(np.round(v, 4)) for v in trained.values())  # all six, both signs
    res = compile_model(out, calib_random=2, progress=False, leaky="split", maxpool="exact")
    got = sorted(tuple(np.round(onnx.helper.get_attribute_value(a)[:2], 4))
                 for n in res.spiking.graph.node
                 if n.domain == "snnc" and any(a.name == "qcfs_levels" for a in n.attribute)
                 for a in n.attribute if a.name == "lambda")
    assert got == want
    res = compile_model(out, calib_random=2, progress=False)  # the defaults: graded neurons, count max-pools
    graded = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in res.spiking.graph.node
              if n.domain == "snnc" and n.op_type == "SignedIF"]
    assert len(graded) == len(want) and all(g["graded"] == 1 and "qcfs_levels" in g for g in graded)
    assert sorted((round(g["lambda"][0], 4), round(g["lambda"][0] * g["threshold_neg"][0], 4))
                  for g in graded) == want
    assert any(layer.op == "maxpool" for layer in res.network.layers)


def test_finetune_lambda_per_channel_keeps_every_channel(tmp_path):
    """--lambda-per channel: the log has one lam+ and one lam- per channel, and the default compile's graded
    neurons carry exactly those thresholds, channel by channel."""
    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_yolo(leaky=True), model)
    photos = random_photos(tmp_path / "photos", 4)
    out = tmp_path / "tiny_T4.onnx"
    assert main(["finetune", str(model), "--images", str(photos), "-T", "4", "--epochs", "1", "--batch", "2",
                 "--lambda-per", "channel", "-o", str(out), "-q", "--threads", "1"]) == 0
    trained = json.loads(out.with_suffix(".json").read_text())["lambda_final"]
    assert all(isinstance(pos, list) and len(pos) == len(neg) > 1 for pos, neg in trained.values())
    res = compile_model(out, calib_random=2, progress=False)
    graded = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in res.spiking.graph.node
              if n.domain == "snnc" and n.op_type == "SignedIF"]
    assert len(graded) == len(trained)
    for pos, neg in trained.values():  # each trained layer is one graded population with its lambdas
        same = [g for g in graded if len(g["lambda"]) == len(pos) and np.allclose(g["lambda"], pos, rtol=1e-5)]
        assert len(same) == 1
        assert np.allclose(np.multiply(same[0]["lambda"], same[0]["threshold_neg"]), neg, rtol=1e-5)
