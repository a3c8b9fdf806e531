"""snnc finetune --noise-from: the dual error model's noise per layer read from snnc eval's metrics.json (its
per-layer unevenness), matched to the model's activations by convolution name; bad files one line, exit 2."""

from __future__ import annotations

import json

import onnx
import pytest
from models import tiny_detector

torch = pytest.importorskip("torch")  # the `train` extra; CI installs it with `test`

from snnc.apps.cli import main  # noqa: E402
from snnc.training.qcfs import QCFS, quantize  # noqa: E402


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """A tiny ReLU detector, compiled and evaluated at T = 2 and 4 with the error split: (model, photos, metrics)."""
    tmp = tmp_path_factory.mktemp("noise")
    model, photos = tiny_detector(tmp, photos=3)
    lava = tmp / "det.lava"
    assert main(["compile", str(model), "--calib", str(photos), "-o", str(lava), "-q"]) == 0
    assert main(["eval", str(lava), "--images", str(photos), "-T", "2,4", "--report", str(tmp / "rep"),
                 "--examples", "0", "-q"]) == 0
    return model, photos, tmp / "rep" / "metrics.json"


def test_noise_per_layer_from_metrics(tmp_path, measured):
    model, photos, metrics = measured
    out = tmp_path / "ft.onnx"
    assert main(["finetune", str(model), "--images", str(photos), "-T", "4", "--epochs", "1", "--batch", "3",
                 "--noise-from", str(metrics), "-o", str(out), "-q", "--threads", "1"]) == 0
    got = json.loads(out.with_suffix(".json").read_text())["order_error_per_layer"]
    layers = json.loads(metrics.read_text())["errors"]["layers"]
    convs = {n.name for n in onnx.load(model).graph.node if n.op_type == "Conv"}
    assert set(got) == {entry["layer"] for entry in layers} and len(set(got) & convs) == 6  # + max-pool trees
    for entry in layers:  # the mean order error per neuron at T = 4, in spikes (theta = 1)
        row = next(r for r in entry["T"] if r["T"] == 4)
        assert got[entry["layer"]] == pytest.approx(entry["mean_abs_rate_limit"] * row["unevenness"] * 4, rel=1e-9)
    assert all(v < 1 for v in got.values()) and any(v > 0 for v in got.values())  # at most one spike; measured


def test_measured_order_error_sets_the_mean_noise():
    """QCFS with mean_error e: over a whole layer the noise's mean |u| is e spikes (lambda / T each)."""
    torch.manual_seed(0)
    T, lam, e = 4, 1.0, 0.05
    act = QCFS(T, lam, dual_T=T, unevenness=0.5, mean_error=e).train()
    z = torch.rand(200_000) * 3 - 1.5  # about 1/3 of it active (0 < y < lam)
    noise = (act(z) - quantize(z, act.lam_value(), T)).detach()
    assert float(noise.abs().mean()) * T / lam == pytest.approx(e, rel=0.03)


@pytest.mark.parametrize("case", ["missing", "no_errors", "not_json", "no_dual"])
def test_noise_from_bad_input(tmp_path, capsys, measured, case):
    model, photos, metrics = measured
    path = {"missing": tmp_path / "none.json", "not_json": tmp_path / "bad.json",
            "no_errors": tmp_path / "m.json", "no_dual": metrics}[case]
    (tmp_path / "bad.json").write_text("{ not json")
    (tmp_path / "m.json").write_text(json.dumps({"accuracy": {}}))
    out = tmp_path / "out.onnx"
    args = ["finetune", str(model), "--images", str(photos), "-T", "4", "--epochs", "1", "--noise-from", str(path),
            "-o", str(out), "-q"] + (["--no-dual-error"] if case == "no_dual" else [])
    rc = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("snnc: error: ") and "noise" in err[0], err
    assert not out.exists()
