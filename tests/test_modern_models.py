"""The trained YOLOv5- and YOLOv8-style digits detectors (examples/digits/models/digits_v5*.onnx, digits_v8*.onnx,
ReLU) end to end: compile, `snnc run`, `snnc eval` on a few test canvases; the raw-head v5 export with
`--head yolov5` and the NMS-in-graph exports give the decoded export's detections."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from snnc.apps.cli import main
from snnc.evaluation.digits import make_digits, write_digits

MODELS = Path(__file__).resolve().parent.parent / "examples" / "digits" / "models"
T = "8,32"


def _anchors_v5() -> str:
    """The v5 model's anchors, smallest stride first, as train_modern.py recorded them."""
    meta = json.loads((MODELS / "metrics.json").read_text())["digits_v5.onnx"]
    by_head = np.asarray(meta["anchors"])  # head 0 = stride 8 (large anchors), head 1 = stride 4
    return ",".join(f"{v:g}" for v in np.concatenate([by_head[1], by_head[0]]).ravel())


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("modern")
    calib = tmp / "calib"
    calib.mkdir()
    for i, img in enumerate(make_digits("train", 4).images):
        Image.fromarray(img).save(calib / f"c{i}.png")
    photos = tmp / "photos"
    photos.mkdir()
    for i, img in enumerate(make_digits("test", 3).images):
        Image.fromarray(img).save(photos / f"t{i}.png")
    return {"tmp": tmp, "calib": calib, "photos": photos, "test": write_digits(tmp / "test", "test", 4)}


def _compiled(d: dict, model: str, *flags: str) -> Path:
    """Compile once per module run (the eval test reuses the run test's networks)."""
    lava = d["tmp"] / f"{Path(model).stem}.lava"
    if not lava.exists():
        assert main(["compile", str(MODELS / model), "--calib", str(d["calib"]), "-q", "-o", str(lava), *flags]) == 0
    return lava


def _compile_run(d: dict, model: str, *flags: str) -> list:
    lava, out = _compiled(d, model, *flags), d["tmp"] / f"{Path(model).stem}.json"
    assert main(["run", str(lava), "--image", str(d["photos"]), "-T", "32", "-q", "--json", str(out)]) == 0
    images = json.loads(out.read_text())["images"]
    return [[(x["class"], x["score"], x["box"]) for x in im["detections"]] for im in images]


def _sorted(dets: list) -> list:
    return [sorted(d, key=lambda x: (x[0], -x[1], x[2])) for d in dets]


@pytest.mark.parametrize("arch", ["v5", "v8"])
def test_export_forms_give_the_same_detections(digits, arch):
    decoded = _compile_run(digits, f"digits_{arch}.onnx")
    assert sum(len(d) for d in decoded) >= 3, "a trained detector finds the digits on three canvases"
    nms = _compile_run(digits, f"digits_{arch}_nms.onnx")
    assert _sorted(nms) == _sorted(decoded)
    if arch == "v5":
        # the same spiking part; the host decodes in torch's exported ops or in snnc's: float rounding apart
        raw = _compile_run(digits, "digits_v5_raw.onnx", "--head", "yolov5", "--anchors", _anchors_v5())
        flat = [[x for d in _sorted(dets) for x in d] for dets in (raw, decoded)]
        assert [len(d) for d in raw] == [len(d) for d in decoded]
        assert [c for c, _, _ in flat[0]] == [c for c, _, _ in flat[1]]
        assert np.allclose([s for _, s, _ in flat[0]], [s for _, s, _ in flat[1]], atol=1e-5)
        assert np.allclose([b for _, _, b in flat[0]], [b for _, _, b in flat[1]], atol=0.02)


@pytest.mark.parametrize("model", ["digits_v5_nms.onnx", "digits_v8.onnx"])
def test_eval_end_to_end(digits, model, capsys):
    lava = _compiled(digits, model)
    report = digits["tmp"] / f"report_{Path(model).stem}"
    capsys.readouterr()
    assert main(["eval", str(lava), "--data", str(digits["test"]), "-T", T, "--report", str(report), "-q",
                 "--no-errors", "--examples", "0"]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    acc = metrics["accuracy"]
    assert acc["ann"]["mAP50"] > 0.5, acc["ann"]  # the trained ANN finds the digits
    snn = {r["T"]: r["mAP50"] for r in acc["snn"]}
    assert set(snn) == {8, 32} and snn[32] > 0.3, snn


def test_c_backend_runs_the_v8_network(digits):
    """The generated C runs the YOLOv8-style network (SPPF trees, many-input concats) in float32 and agrees with
    the NumPy simulator (fixed point: tests/test_fold_linear.py)."""
    from snnc.backends import get_backend
    from snnc.ir import lavafile

    net = lavafile.load(_compiled(digits, "digits_v8.onnx"))
    x = make_digits("test", 1).images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    ref = get_backend("numpy").simulate(net, x, [2, 4], mode="float")
    res = get_backend("c").simulate(net, x, [2, 4], mode="float")
    for t in (2, 4):
        for k, v in ref.outputs[t].items():
            np.testing.assert_allclose(res.outputs[t][k], v, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(v).max())))
    assert sum(int(v.sum()) for v in ref.spike_counts.values()) > 0
