"""snnc finetune --tandem: the student's spiking forward is the network snnc compiles from its export (memory IF,
graded neurons, count max-pools), the snapped pass carries the SNN's heads with the QCFS gradient, tandem epochs
lower the SNN's loss, and a bad --tandem is one line through the CLI."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from models import random_photos, tiny_yolo

torch = pytest.importorskip("torch")  # the `train` extra; CI installs it with `test`

from snnc.apps.cli import main  # noqa: E402
from snnc.backends import get_backend  # noqa: E402
from snnc.compiler.api import compile_model  # noqa: E402
from snnc.compiler.frontend import prepare  # noqa: E402
from snnc.compiler.split import split_model  # noqa: E402
from snnc.training.finetune import FinetuneOptions, _head_loss, export_qcfs, qcfs_student  # noqa: E402
from snnc.training.importer import import_onnx  # noqa: E402
from snnc.training.tandem import spiking_rates, tandem_forward  # noqa: E402


def _student(tmp_path, leaky: bool, T: int = 4, lambda_per: str = "layer"):
    path = tmp_path / "m.onnx"
    onnx.save(tiny_yolo(leaky=leaky), path)
    prepared = prepare(path)
    spiking = split_model(prepared).spiking
    x = torch.from_numpy(np.random.default_rng(0).uniform(0, 1, (4, 3, 32, 32)).astype(np.float32))
    student, _ = qcfs_student(spiking, x, FinetuneOptions(T=T, dual_error=False, lambda_per=lambda_per))
    return prepared, spiking, student.eval()


@pytest.mark.parametrize("per", ["layer", "channel"])
@pytest.mark.parametrize("leaky", [False, True], ids=["relu", "leaky"])
def test_spiking_forward_is_the_compiled_snn(tmp_path, leaky, per):
    """Default compile of the QCFS export (memory IF / graded neurons, count max-pools), NumPy float simulation:
    the same heads at T = L and at T != L, for several inputs; lambdas per layer or per channel. Same up to
    float32 rounding: the compiled network compares v / theta with 1 (its weights divided by theta), the torch
    model v with theta, so a potential within rounding of the threshold can spike in one and not the other (one
    spike, 48 of 6144 head values, in one of the 24 cases here); nearly every value must agree to 1e-5."""
    prepared, _, student = _student(tmp_path, leaky, lambda_per=per)
    lam = [a.pos.lam if leaky else a.lam for a in map(student.activation, [n.name for n in student.activation_nodes()])]
    assert all(v.ndim == (1 if per == "channel" else 0) for v in lam)
    if per == "channel":  # the calibration percentiles differ between channels
        assert any(float(v.std()) > 0 for v in lam)
    path = tmp_path / "q.onnx"
    onnx.save(export_qcfs(prepared, student), path)
    net = compile_model(path, calib_random=2, progress=False).network
    kinds = {layer.neuron.kind for layer in net.layers if layer.neuron is not None}
    assert kinds == ({"SignedIF"} if leaky else {"IF"})
    assert any(layer.op == "maxpool" for layer in net.layers)
    for seed in (1, 2, 3):
        x = np.random.default_rng(seed).uniform(0, 1, (2, 3, 32, 32)).astype(np.float32)
        for T in (4, 7):
            ref = get_backend("numpy").simulate(net, x, [T], progress=False).outputs[T]
            _, heads = spiking_rates(student, torch.from_numpy(x), T)
            with torch.no_grad():
                snapped = tandem_forward(student, torch.from_numpy(x), T)
            for name, h, s in zip(net.outputs, heads, snapped):
                scale = max(1.0, float(np.abs(ref[name]).max()))
                for got in (h.numpy(), s.numpy()):
                    off = np.abs(got - ref[name]) > 1e-5 * scale
                    assert off.mean() < 0.01 and np.abs(got - ref[name]).max() < 0.2 * scale


def test_snapped_pass_differs_from_the_ann_and_trains_weights_and_lambdas(tmp_path):
    _, _, student = _student(tmp_path, leaky=True)
    x = torch.from_numpy(np.random.default_rng(4).uniform(0, 1, (2, 3, 32, 32)).astype(np.float32))
    with torch.no_grad():
        ann = student(x)
    out = tandem_forward(student, x, 4)
    assert max(float((a - b).detach().abs().max()) for a, b in zip(ann, out)) > 1e-3  # the SNN's order error is there
    sum(o.square().mean() for o in out).backward()
    grads = [p.grad for p in student.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    lam_grads = [a.pos.lam.grad for a in student.activations.values()]
    assert sum(float(g.abs()) for g in lam_grads) > 0


def test_tandem_epochs_lower_the_snn_loss(tmp_path):
    """The same fine-tuning (T = 4, same seed and steps) with and without tandem epochs: compiled with the defaults
    and simulated by the NumPy reference, the tandem model's SNN is closer to the teacher's heads."""
    from snnc.training.finetune import finetune, load_photos, write_result

    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_yolo(leaky=False), model)
    photos = random_photos(tmp_path / "photos", 4, size=32)
    x = load_photos(photos, (32, 32))
    teacher = import_onnx(split_model(prepare(model)).spiking).eval()
    with torch.no_grad():
        ref = teacher(torch.from_numpy(x))
    losses = {}
    for tandem in (0, 10):
        opts = FinetuneOptions(T=4, epochs=20, tandem=tandem, batch=4, lr=3e-3, augment=False, dual_error=False)
        result = finetune(model, photos, opts, progress=False)
        path = write_result(result, tmp_path / f"t{tandem}.onnx")
        net = compile_model(path, calib_dir=photos, progress=False).network
        got = get_backend("numpy").simulate(net, x, [4], progress=False).outputs[4]
        losses[tandem] = float(_head_loss(tuple(torch.from_numpy(got[n]).float() for n in net.outputs), ref))
        if tandem:  # the log's SNN loss is the compiled network's
            assert abs(result.log["history"][-1]["eval_loss_snn"] - losses[tandem]) < 1e-4
    assert losses[10] < 0.95 * losses[0], losses  # measured: 0.069 against 0.082


def test_tandem_bad_input_through_the_cli(tmp_path, capsys):
    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_yolo(leaky=False), model)
    photos = random_photos(tmp_path / "photos", 2, size=32)
    out = tmp_path / "t.onnx"
    rc = main(["finetune", str(model), "--images", str(photos), "-T", "4", "--epochs", "2", "--tandem", "3",
               "-o", str(out), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not out.exists() and len(err) == 1 and "--tandem 3" in err[0]
    rc = main(["finetune", str(model), "--images", str(photos), "-T", "2", "--epochs", "2", "--tandem", "1",
               "--batch", "2", "-o", str(out), "-q", "--threads", "1"])
    assert rc == 0 and out.exists()
    hist = json.loads(out.with_suffix(".json").read_text())["history"]
    assert "eval_loss_snn" not in hist[0] and "eval_loss_snn" in hist[1]
