"""`snnc eval --workers N` through Ray: the same metrics as the single-process run; bad input gives one line.

The digits ReLU detector on 4 labelled test images, 2 batches of 2 as Ray tasks on 2 local workers (numpy backend,
fixed point); `snnc eval` and `snnc run --image DIR` (a folder of photos) with --backend torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from snnc.apps.cli import main as snnc_main

MODELS = Path(__file__).resolve().parent.parent / "examples" / "digits" / "models"


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from snnc.apps.outputs import write_output
    from snnc.compiler.api import compile_model
    from snnc.evaluation.digits import make_digits, write_digits

    root = tmp_path_factory.mktemp("digits-workers")
    calib = root / "calib"
    calib.mkdir()
    for i, img in enumerate(make_digits("train", 4, seed=0).images):
        Image.fromarray(img).save(calib / f"{i:03d}.png")
    lava = write_output(compile_model(MODELS / "digits_relu.onnx", calib_dir=calib, progress=False),
                        root / "relu.lava")
    return {"root": root, "lava": lava, "calib": calib, "test": write_digits(root / "test", "test", 4, seed=0,
                                                                            layout="coco")}


def _eval(digits, **kw):
    from snnc.evaluation.run import EvalConfig, evaluate

    cfg = EvalConfig(T=[4, 16], data=digits["test"], batch=2, errors=False, examples=2, progress=False, **kw)
    return evaluate(digits["lava"], cfg)


def test_workers_give_the_single_process_metrics(digits):
    """Fixed point: 2 Ray workers give the single-process metrics exactly; so does the torch backend."""
    one = _eval(digits, mode="fixed")
    two = _eval(digits, mode="fixed", workers=2)
    assert two["settings"]["workers"] == 2 and one["settings"]["workers"] is None
    assert two["accuracy"] == one["accuracy"]
    assert two["activity"] == one["activity"]
    assert one["accuracy"]["snn"][-1]["mAP50"] > 0.5  # a real detector: the comparison is not between zeros
    assert one["activity"]["images"] == two["activity"]["images"] == 4
    assert all(r["sops_exact"] for r in two["activity"]["T"])  # per-neuron recording ran in the workers
    torch_run = _eval(digits, mode="fixed", backend="torch")
    assert torch_run["settings"]["simulator"] == "torch"
    assert torch_run["accuracy"] == one["accuracy"]
    for mine, ref in zip(torch_run["activity"]["T"], one["activity"]["T"]):
        assert mine["layer_rates"] == ref["layer_rates"]


def _one_line_error(capsys, argv: list[str], pattern: str) -> None:
    assert snnc_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("snnc: error: ") and pattern in err[0], err


def test_bad_worker_input_one_line(digits, capsys, monkeypatch, tmp_path):
    base = ["eval", str(digits["lava"]), "--data", str(digits["test"]), "-T", "8", "-q"]
    _one_line_error(capsys, base + ["--workers", "0"], "--workers 0: expected a positive number")
    _one_line_error(capsys, base + ["--ray-address", "auto"], "--ray-address needs --workers")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    _one_line_error(capsys, base + ["--workers", "2", "--report", str(tmp_path / "r")], "pip install 'snnc[ray]'")
    assert not (tmp_path / "r").exists()
    monkeypatch.setitem(sys.modules, "torch", None)
    import snnc.backends as backends

    monkeypatch.delitem(backends._REGISTRY, "torch", raising=False)
    monkeypatch.delitem(sys.modules, "snnc.backends.torch", raising=False)
    _one_line_error(capsys, base + ["--backend", "torch"], "pip install 'snnc[torch]'")


def test_run_image_folder_backend_torch(digits, tmp_path, capsys, monkeypatch):
    """`snnc run --image DIR` on every photo of a folder, torch backend (photos in batches of 2): the numpy
    backend's detections (one batch of 3)."""
    import snnc.runtime.run as run_module

    photos = sorted(digits["calib"].glob("*.png"))[:3]
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in photos:
        (folder / p.name).write_bytes(p.read_bytes())
    got = {}
    for backend in ("numpy", "torch"):
        monkeypatch.setattr(run_module, "RUN_BATCH", 2 if backend == "torch" else 8)
        out = tmp_path / f"{backend}.json"
        assert snnc_main(["run", str(digits["lava"]), "--image", str(folder), "-T", "8", "--backend", backend,
                          "--mode", "fixed", "--json", str(out), "-q"]) == 0
        got[backend] = json.loads(out.read_text())
    assert [im["image"] for im in got["torch"]["images"]] == [str(folder / p.name) for p in photos]
    assert got["torch"]["images"] == got["numpy"]["images"]
    assert got["torch"]["figures"]["spikes_per_layer"] == got["numpy"]["figures"]["spikes_per_layer"]
    assert sum(len(im["detections"]) for im in got["torch"]["images"]) > 0
    _one_line_error(capsys, ["run", str(digits["lava"]), "--image", str(folder), "-T", "4", "--backend", "torch",
                             "--device", "cuda:7"], "--device cuda:7")
    assert np.isfinite(got["torch"]["figures"]["overall_firing_rate"])
