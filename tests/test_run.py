"""`snnc run` end to end on the trained digits detector: detections, drawn boxes, JSON figures, backends agree,
bad input gives one line and exit 2 with no output left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from snnc.ir import lavafile
from snnc.apps.outputs import write_output
from snnc.compiler.api import compile_model
from snnc.evaluation.digits import make_digits
from snnc.runtime.run import run_network

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples/digits/models/digits_relu.onnx"


def snnc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snnc.apps.cli", *args], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("digits_run")
    calib, photos = root / "calib", root / "photos"
    calib.mkdir()
    photos.mkdir()
    for i, img in enumerate(make_digits("train", 16, seed=3).images):
        Image.fromarray(img).save(calib / f"c{i:02d}.png")
    test = make_digits("test", 3, seed=5)
    for i, img in enumerate(test.images):
        Image.fromarray(img).save(photos / f"t{i}.png")
    net = root / "digits.lava"
    write_output(compile_model(MODEL, calib_dir=calib, progress=False), net)
    return {"root": root, "net": net, "photos": photos, "test": test}


def _boxes(dets) -> list[tuple[int, tuple[float, ...]]]:
    return [(d.cls, d.box) for d in dets]


def test_run_writes_png_and_json(digits, tmp_path):
    png, js = tmp_path / "det.png", tmp_path / "det.json"
    photo = digits["photos"] / "t0.png"
    res = snnc("run", str(digits["net"]), "--image", str(photo), "-T", "32,128", "--ann", "--out", str(png),
               "--json", str(js), "-q")
    assert res.returncode == 0, res.stderr
    assert "ANN" in res.stdout and "SNN (T=128)" in res.stdout
    with Image.open(png) as im:
        w, h = im.size
    assert w > 2 * 64 and h > 64  # two panels, scaled up from 64 px
    data = json.loads(js.read_text())
    assert data["T"] == [32, 128]
    img = data["images"][0]
    assert set(img["detections_at"]) == {"32", "128"} and img["detections"] == img["detections_at"]["128"]
    fig = data["figures"]
    net = lavafile.load(digits["net"])
    assert set(fig["spikes_per_layer"]) == {layer.name for layer in net.neuron_layers}
    assert 0 < fig["overall_firing_rate"] < 1
    assert fig["energy"]["snn_sops"] > 0 and fig["energy"]["ann_macs"] > 0
    # the ANN finds the ground-truth digits; the SNN at T=128 finds the same classes where the ANN is confident
    gt = digits["test"].samples()[0]
    ann_classes = sorted(d["class"] for d in img["ann_detections"] if d["score"] >= 0.5)
    assert ann_classes == sorted(int(c) for c in gt.classes)
    snn_classes = sorted(d["class"] for d in img["detections"] if d["score"] >= 0.25)
    assert set(ann_classes) <= set(snn_classes)


def test_run_folder_draws_one_png_per_image(digits, tmp_path):
    out = tmp_path / "drawn"
    res = snnc("run", str(digits["net"]), "--image", str(digits["photos"]), "-T", "16", "--out", str(out), "-q")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["t0.png", "t1.png", "t2.png"]


def test_c_and_numpy_backends_detect_the_same_in_fixed_point(digits):
    net = lavafile.load(digits["net"])
    photos = sorted(digits["photos"].iterdir())
    a = run_network(net, photos, [24, 48], backend="numpy", mode="fixed", progress=False)
    b = run_network(net, photos, [24, 48], backend="c", mode="fixed", progress=False)
    for t in (24, 48):
        assert [_boxes(d) for d in a.detections[t]] == [_boxes(d) for d in b.detections[t]]
        for k in a.heads[t]:
            np.testing.assert_array_equal(a.heads[t][k], b.heads[t][k])
    assert a.figures["spikes_per_layer"] == b.figures["spikes_per_layer"]


def _user_error(res: subprocess.CompletedProcess, pattern: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("snnc: error: ") and pattern in lines[0], res.stderr


def test_bad_input(digits, tmp_path):
    net, photo = str(digits["net"]), str(digits["photos"] / "t0.png")
    out = tmp_path / "x.png"
    _user_error(snnc("run", net, "--image", str(tmp_path / "missing.jpg"), "-T", "8"), "missing.jpg")
    _user_error(snnc("run", net, "--image", photo, "-T", "0"), "-T")
    _user_error(snnc("run", net, "--image", photo, "-T", "abc"), "-T")
    _user_error(snnc("run", net, "--image", str(digits["photos"]), "-T", "8", "--out", str(out)), "folder")
    not_image = tmp_path / "notes.png"
    not_image.write_text("not a picture")
    _user_error(snnc("run", net, "--image", str(not_image), "-T", "8", "--out", str(out)), "notes.png")
    not_lava = tmp_path / "net.lava"
    not_lava.write_bytes(b"garbage")
    _user_error(snnc("run", str(not_lava), "--image", photo, "-T", "8"), "net.lava")
    _user_error(snnc("run", net, "--image", photo, "-T", "8", "--backend", "nope"), "nope")
    _user_error(snnc("run", net, "--image", photo, "-T", "8", "--out", str(tmp_path / "no/such/dir/x.png")),
                "does not exist")
    assert not out.exists() and not list(tmp_path.glob(".snnc-*"))
