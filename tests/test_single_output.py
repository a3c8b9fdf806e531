"""ultralytics' single-tensor exports: (1, 4 + C, N) (YOLOv8/v11, `yolo export format=onnx`) and (1, N, 5 + C)
(YOLOv5's export.py), no NMS. `--head yolov8-output` / `yolov5-output` (or an `output0` of that shape, recognised)
attach the split into boxes and scores, and `snnc run` gives the same detections as the other forms of the same
weights (examples/digits/models/digits_v{5,8}_ultralytics.onnx, made by examples/digits/to_ultralytics.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from snnc.apps.cli import main
from snnc.compiler.graph import run_model
from snnc.compiler.heads import HeadSpec, attach_head, head_spec, single_output_kind
from snnc.evaluation.digits import make_digits
from snnc.ir.errors import SnncError

MODELS = Path(__file__).resolve().parent.parent / "examples" / "digits" / "models"


def _identity_model(shape: list[int]) -> onnx.ModelProto:
    """images -> Relu -> output0 of `shape`: feed the candidate tensor itself."""
    g = helper.make_graph([helper.make_node("Relu", ["images"], ["output0"], name="relu")], "g",
                          [helper.make_tensor_value_info("images", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("output0", TensorProto.FLOAT, shape)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_v8_layout_decodes_to_corner_boxes():
    rng = np.random.default_rng(0)
    x = rng.uniform(1, 20, (1, 4 + 3, 50)).astype(np.float32)  # cx cy w h, then 3 class scores
    m = _identity_model(list(x.shape))
    assert single_output_kind(m) == "yolov8-output"
    out = run_model(attach_head(m, HeadSpec("yolov8-output")), {"images": x})
    c = x[0].T
    want = np.concatenate([c[:, :2] - c[:, 2:4] / 2, c[:, :2] + c[:, 2:4] / 2], 1)
    assert np.allclose(out["boxes"][0], want, atol=1e-5)
    assert np.array_equal(out["scores"][0], c[:, 4:])


def test_v5_layout_multiplies_objectness():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (1, 40, 5 + 2)).astype(np.float32)
    m = _identity_model(list(x.shape))
    assert single_output_kind(m) == "yolov5-output"
    out = run_model(attach_head(m, HeadSpec("yolov5-output")), {"images": x})
    assert np.allclose(out["boxes"][0, :, :2], x[0, :, :2] - x[0, :, 2:4] / 2, atol=1e-6)
    assert np.allclose(out["scores"][0], x[0, :, 4:5] * x[0, :, 5:], atol=1e-7)


def test_single_output_refusals():
    with pytest.raises(SnncError, match="takes no anchors"):
        head_spec("yolov8-output", anchors="1,2")
    with pytest.raises(SnncError, match=r"\(1, N, 5 \+ classes\)"):
        attach_head(_identity_model([1, 3, 8, 8]), HeadSpec("yolov5-output"), source="m.onnx")
    with pytest.raises(SnncError, match="no class scores"):
        attach_head(_identity_model([1, 4, 30]), HeadSpec("yolov8-output"), source="m.onnx")
    with pytest.raises(SnncError, match="--head yolov8-output"):
        attach_head(_identity_model([1, 14, 320]), HeadSpec("yolov5-output"), source="m.onnx")
    assert single_output_kind(_identity_model([1, 3, 8, 8])) is None


ANCHORS_V5 = "8,13,10,15,13,18,15,23,18,24,21,27"


def _ann_detections(model: onnx.ModelProto, x: np.ndarray) -> list:
    from snnc.evaluation.ann import detections_from_outputs

    out = run_model(model, {"images": x})
    return detections_from_outputs(out["boxes"], out["scores"])


def _same(a: list, b: list, box_tol: float, score_tol: float = 1e-6) -> None:
    assert [len(x) for x in a] == [len(x) for x in b] and sum(len(x) for x in a) >= 2
    fa = [x for im in a for x in sorted(im)]
    fb = [x for im in b for x in sorted(im)]
    assert [d[0] for d in fa] == [d[0] for d in fb]
    assert np.allclose([d[1] for d in fa], [d[1] for d in fb], atol=score_tol)
    assert np.allclose([d[2:] for d in fa], [d[2:] for d in fb], atol=box_tol)


@pytest.mark.parametrize("arch", ["v5", "v8"])
def test_all_forms_of_the_same_weights_give_the_same_detections(arch):
    """The ANN graphs as snnc's host reads them (after --head): single tensor == decoded (== raw heads for v5)."""
    meta = np.asarray(json.loads((MODELS / "metrics.json").read_text())["digits_v5.onnx"]["anchors"])
    assert ANCHORS_V5 == ",".join(f"{v:g}" for v in np.concatenate([meta[1], meta[0]]).ravel())
    x = make_digits("test", 4).images.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    single = onnx.load(str(MODELS / f"digits_{arch}_ultralytics.onnx"))
    assert single_output_kind(single) == f"{'yolov8' if arch == 'v8' else 'yolov5'}-output"
    got = [_ann_detections(attach_head(single, HeadSpec(single_output_kind(single))), x[i:i + 1])[0]
           for i in range(len(x))]
    decoded = [_ann_detections(onnx.load(str(MODELS / f"digits_{arch}.onnx")), x[i:i + 1])[0] for i in range(len(x))]
    # torch's decoding and the cx cy w h round trip differ in float rounding only
    _same(got, decoded, box_tol=1e-3, score_tol=1e-5)
    if arch == "v5":
        raw = attach_head(onnx.load(str(MODELS / "digits_v5_raw.onnx")), head_spec("yolov5", ANCHORS_V5))
        _same(got, [_ann_detections(raw, x[i:i + 1])[0] for i in range(len(x))], box_tol=0.0, score_tol=0.0)


def test_cli_single_output_end_to_end(tmp_path):
    """`snnc compile` recognises output0 (1, 14, 320) without a flag; `snnc run` (fixed point) gives the same
    detections as the decoded export compiled beside it; a wrong --head is one error line."""
    for name, split, n in (("calib", "train", 2), ("photos", "test", 2)):
        (tmp_path / name).mkdir()
        for i, img in enumerate(make_digits(split, n).images):
            Image.fromarray(img).save(tmp_path / name / f"{i}.png")
    dets = []
    for model in ("digits_v8_ultralytics.onnx", "digits_v8.onnx"):
        lava, out = tmp_path / f"{model}.lava", tmp_path / f"{model}.json"
        assert main(["compile", str(MODELS / model), "--calib", str(tmp_path / "calib"), "-q", "-o", str(lava)]) == 0
        assert main(["run", str(lava), "--image", str(tmp_path / "photos"), "-T", "6", "--mode", "fixed", "-q",
                     "--json", str(out)]) == 0
        dets.append([[(x["class"], x["score"], *x["box"]) for x in im["detections"]]
                     for im in json.loads(out.read_text())["images"]])
    _same(dets[0], dets[1], box_tol=1e-3, score_tol=1e-5)
    code = main(["compile", str(MODELS / "digits_v8_ultralytics.onnx"), "--calib", str(tmp_path / "calib"), "-q",
                 "--head", "yolov5-output", "-o", str(tmp_path / "bad.lava")])
    assert code == 2 and not (tmp_path / "bad.lava").exists()
