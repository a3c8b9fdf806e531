"""Raw-head exports (`snnc compile --head yolo|yolov5`), graphs with NMS inside, and the SiLU refusal.

The three export forms of one yolov3-tiny-shaped Darknet network (random weights, 36x44 input) give the same
detections through `snnc run`: raw heads + `--head yolo --darknet-cfg` (or `--anchors`), the decoded graph snnc's
Darknet reader writes, and that graph with ONNX NonMaxSuppression appended.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from models import Builder
from PIL import Image
from test_cli import assert_user_error, snnc
from test_darknet import TINY_CFG, TINY_CONVS, TINY_HW, write_darknet

from snnc.apps.cli import main
from snnc.compiler.darknet import darknet_to_onnx
from snnc.compiler.graph import run_model
from snnc.compiler.heads import HeadSpec, anchors_from_cfg, append_nms, attach_head
from snnc.ir.errors import SnncError

# TINY_CFG's [yolo] layers: mask 3,4,5 (the 9x11 head, stride 4) and 0,1,2 (the 18x22 head, stride 2)
ANCHORS = "4,5,8,9,12,16,20,18,30,26,40,34"


@pytest.fixture(scope="module")
def forms(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("forms")
    cfg, weights = write_darknet(tmp, "tiny", TINY_CFG, TINY_CONVS, seed=7)
    raw = darknet_to_onnx(cfg, weights, input_size=TINY_HW, decode=False)
    decoded = darknet_to_onnx(cfg, weights, input_size=TINY_HW, decode=True)
    paths = {"cfg": cfg, "raw": tmp / "raw.onnx", "decoded": tmp / "decoded.onnx", "nms": tmp / "nms.onnx"}
    onnx.save(raw, paths["raw"])
    onnx.save(decoded, paths["decoded"])
    onnx.save(append_nms(decoded, iou_thr=0.45, score_thr=0.25, max_per_class=10000), paths["nms"])
    rng = np.random.default_rng(3)
    img = tmp / "images"
    img.mkdir()
    for i in range(2):
        Image.fromarray((rng.random((TINY_HW[0], TINY_HW[1], 3)) * 255).astype(np.uint8)).save(img / f"p{i}.png")
    paths["images"] = img
    return paths


def _detections(tmp: Path, model: Path, images: Path, *flags: str) -> list:
    lava, out = tmp / f"{model.stem}.lava", tmp / f"{model.stem}.json"
    assert main(["compile", str(model), "--calib-random", "2", "-q", "-o", str(lava), *flags]) == 0
    assert main(["run", str(lava), "--image", str(images), "-T", "16", "-q", "--json", str(out)]) == 0
    images = json.loads(out.read_text())["images"]
    return [[(d["class"], d["score"], d["box"]) for d in im["detections"]] for im in images]


def test_three_export_forms_give_the_same_detections(tmp_path, forms):
    decoded = _detections(tmp_path, forms["decoded"], forms["images"])
    assert sum(len(d) for d in decoded) > 0, "no detections at all: the comparison would be empty"
    raw_cfg = _detections(tmp_path, forms["raw"], forms["images"], "--head", "yolo", "--darknet-cfg", str(forms["cfg"]))
    assert raw_cfg == decoded
    nms = _detections(tmp_path, forms["nms"], forms["images"])
    key = lambda dets: sorted(dets, key=lambda d: (d[0], -d[1], d[2]))  # noqa: E731  (NMS output order is by class)
    assert [key(d) for d in nms] == [key(d) for d in decoded]


def test_raw_heads_with_anchors_equal_the_decoded_graph(forms):
    """--anchors (split evenly, the smallest to the smallest stride) gives the Darknet reader's decoded graph."""
    raw = onnx.load(forms["raw"])
    got = attach_head(raw, HeadSpec("yolo", tuple(float(v) for v in ANCHORS.split(","))))
    ref = onnx.load(forms["decoded"])
    x = np.random.default_rng(0).random((1, 3, *TINY_HW), dtype=np.float32)
    a, b = run_model(got, {"images": x}), run_model(ref, {"images": x})
    for k in ("boxes", "scores"):
        assert np.allclose(a[k], b[k], rtol=1e-5, atol=1e-4), k


def test_anchors_from_cfg_order_by_size(forms):
    groups = anchors_from_cfg(forms["cfg"])
    assert groups == [[(4.0, 5.0), (8.0, 9.0), (12.0, 16.0)], [(20.0, 18.0), (30.0, 26.0), (40.0, 34.0)]]


def _yolov5_numpy(head: np.ndarray, anchors: np.ndarray, stride: float) -> tuple[np.ndarray, np.ndarray]:
    a = len(anchors)
    _, c, h, w = head.shape
    p = 1 / (1 + np.exp(-head.reshape(a, c // a, h, w).transpose(0, 2, 3, 1)))  # (a, h, w, 5 + C)
    gy, gx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    xy = (p[..., :2] * 2 - 0.5 + np.stack([gx, gy], -1)) * stride
    wh = (p[..., 2:4] * 2) ** 2 * anchors[:, None, None, :]
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], -1).reshape(-1, 4)
    return boxes, (p[..., 4:5] * p[..., 5:]).reshape(-1, c // a - 5)


def test_yolov5_decoding_matches_the_published_formula():
    b = Builder(30)
    x = b.node("Relu", [b.conv("images", 3, 8)])
    h0 = b.conv(x, 8, 2 * (5 + 3), k=1)  # 32x32, stride 1
    h1 = b.conv(b.node("Relu", [b.conv(x, 8, 8, stride=2)]), 8, 2 * (5 + 3), k=1)  # 16x16, stride 2
    m = b.model([1, 3, 32, 32], [h1, h0])  # output order does not matter: heads pair with anchors by stride
    anchors = np.array([[4, 5], [6, 7], [10, 12], [14, 16]], np.float32)
    dec = attach_head(m, HeadSpec("yolov5", tuple(anchors.ravel().tolist())))
    xin = np.random.default_rng(1).random((1, 3, 32, 32), dtype=np.float32)
    heads = run_model(m, {"images": xin})
    got = run_model(dec, {"images": xin})
    ref1 = _yolov5_numpy(heads[h1], anchors[2:], 2.0)
    ref0 = _yolov5_numpy(heads[h0], anchors[:2], 1.0)
    assert np.allclose(got["boxes"][0], np.concatenate([ref1[0], ref0[0]]), atol=1e-4)
    assert np.allclose(got["scores"][0], np.concatenate([ref1[1], ref0[1]]), atol=1e-6)


def _user_error(capsys, out: Path, pattern: str, *args: str) -> str:
    """The CLI in-process (a subprocess per case costs seconds): exit 2, one line, no output file."""
    capsys.readouterr()
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("snnc: error: ") and pattern in lines[0], err
    assert not out.exists() and not list(out.parent.glob(".snnc-*"))
    return err


def test_head_layout_mismatch_is_one_clear_error(tmp_path, forms, capsys):
    out = tmp_path / "x.lava"
    res = snnc("compile", str(forms["raw"]), "--calib-random", "1", "-o", str(out), "--head", "yolo",
               "--anchors", "1,2,3,4,5,6,7,8")  # 2 anchors per head: 21 channels is not 2 x (5 + C)
    assert_user_error(res, out, "not 2 anchors x (5 + classes)")
    names = tmp_path / "coco.names"
    names.write_text("\n".join(f"c{i}" for i in range(80)) + "\n")
    base = ("compile", str(forms["raw"]), "--calib-random", "1", "-o", str(out))
    _user_error(capsys, out, "--names lists 80 classes", *base, "--head", "yolo", "--anchors", ANCHORS,
                "--names", str(names))
    _user_error(capsys, out, "is not a raw head convolution", "compile", str(forms["decoded"]), "--calib-random",
                "1", "-o", str(out), "--head", "yolo", "--anchors", ANCHORS)
    _user_error(capsys, out, "need --head", *base, "--anchors", ANCHORS)
    _user_error(capsys, out, "even number", *base, "--head", "yolo", "--anchors", "1,2,3")
    _user_error(capsys, out, "either --anchors or --darknet-cfg", *base, "--head", "yolo", "--anchors", ANCHORS,
                "--darknet-cfg", str(forms["cfg"]))


def test_names_become_the_class_names(tmp_path, forms):
    names = tmp_path / "two.names"
    names.write_text("cat\ndog\n")
    lava = tmp_path / "named.lava"
    assert main(["compile", str(forms["raw"]), "--calib-random", "1", "-q", "-o", str(lava), "--head", "yolo",
                 "--darknet-cfg", str(forms["cfg"]), "--names", str(names)]) == 0
    from snnc.ir import lavafile

    net = lavafile.load(lava)
    assert net.meta["class_names"] == ["cat", "dog"] and net.meta["head"]["kind"] == "yolo"


def test_append_nms_refuses_other_outputs(forms):
    with pytest.raises(SnncError, match="boxes, scores"):
        append_nms(onnx.load(forms["raw"]))


@pytest.mark.parametrize("act", ["silu", "hardswish", "hardsigmoid_mul"])
def test_silu_like_activations_are_refused_with_the_node_and_the_fix(tmp_path, forms, capsys, act):
    b = Builder(31)
    x = b.conv("images", 3, 4)
    if act == "silu":
        x = b.node("Mul", [x, b.node("Sigmoid", [x])])
    elif act == "hardswish":
        x = b.node("HardSwish", [x])
    else:
        x = b.node("Mul", [x, b.node("HardSigmoid", [x], alpha=1 / 6, beta=0.5)])
    m = b.model([1, 3, 8, 8], [b.conv(x, 4, 6, k=1)])
    path, out = tmp_path / f"{act}.onnx", tmp_path / f"{act}.lava"
    onnx.save(m, path)
    node = {"silu": "sigmoid_", "hardswish": "hardswish_", "hardsigmoid_mul": "hardsigmoid_"}[act]
    args = ("compile", str(path), "--calib", str(forms["images"]), "-o", str(out))
    if act == "silu":  # once as a user runs it: a separate process, its stderr and exit status
        res = snnc(*args)
        assert_user_error(res, out, node)
        err = res.stderr
    else:
        err = _user_error(capsys, out, node, *args)
    assert "ReLU" in err and "retrain or fine-tune" in err
