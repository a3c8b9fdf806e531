"""snnc finetune --crop: training on random windows of the photos at the model's input size."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from models import random_photos, tiny_yolo

torch = pytest.importorskip("torch")  # the `train` extra; CI installs it with `test`

from snnc.apps.cli import main  # noqa: E402
from snnc.compiler.api import compile_model  # noqa: E402
from snnc.training.finetune import random_crop  # noqa: E402


def test_random_crop_windows_come_from_the_image():
    x = torch.arange(2 * 3 * 8 * 10, dtype=torch.float32).reshape(2, 3, 8, 10)
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(20):
        y = random_crop(x, 4, gen)
        assert y.shape == (2, 3, 4, 4)
        for i in range(2):
            top, left = divmod(int(y[i, 0, 0, 0] - x[i, 0, 0, 0]), 10)
            assert torch.equal(y[i], x[i, :, top:top + 4, left:left + 4])
            seen.add((top, left))
    assert len(seen) > 5  # the windows move
    assert torch.equal(random_crop(x, 16, gen), x)  # no larger than the crop: kept whole


def test_finetune_cli_crop_trains_on_windows_and_compiles(tmp_path):
    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_yolo(leaky=True), model)
    out = tmp_path / "tiny_T4.onnx"
    photos = random_photos(tmp_path / "photos", 3, size=40)
    rc = main(["finetune", str(model), "--images", str(photos), "-T", "4", "--epochs", "2",
               "--batch", "2", "--size", "16", "--crop", "-o", str(out), "-q", "--threads", "1"])
    assert rc == 0
    log = json.loads(out.with_suffix(".json").read_text())
    assert log["options"]["crop"] and log["options"]["size"] == 16
    shape = [d.dim_value for d in onnx.load(model).graph.input[0].type.tensor_type.shape.dim]
    assert log["input_size"] == shape[2:]  # photos kept at the model's size, only the windows are 16 px
    assert all(np.isfinite(h["eval_loss_qcfs"]) for h in log["history"])
    res = compile_model(out, calib_random=2, progress=False)
    assert any(n.domain == "snnc" for n in res.spiking.graph.node)


def test_finetune_cli_crop_needs_size(tmp_path, capsys):
    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_yolo(leaky=False), model)
    out = tmp_path / "out.onnx"
    photos = random_photos(tmp_path / "photos", 1, size=40)
    rc = main(["finetune", str(model), "--images", str(photos), "-T", "4", "--crop", "-o", str(out), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("snnc: error: ") and "--size" in err[0], err
    assert not out.exists()
