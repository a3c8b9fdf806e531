"""snnc finetune --data: the heads' geometry read from the host decoding (both codings), the YOLO loss falls on a
tiny detector, the output is written and compiles, and a bad COCO json is one line, exit 2, nothing written."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from models import random_photos, tiny_yolo

torch = pytest.importorskip("torch")  # the `train` extra; CI installs it with `test`

from snnc.apps.cli import main  # noqa: E402
from snnc.compiler.api import compile_model  # noqa: E402
from snnc.compiler.frontend import prepare  # noqa: E402
from snnc.compiler.heads import HeadSpec, attach_head  # noqa: E402
from snnc.compiler.split import split_model  # noqa: E402
from snnc.evaluation.datasets import write_dataset  # noqa: E402
from snnc.training.detloss import probe_heads, yolo_loss  # noqa: E402

ANCHORS = ((4.0, 5.0), (7.0, 6.0), (10.0, 12.0), (14.0, 11.0))  # stride-2 head's pair first


def _detector(tmp_path, kind: str = "yolo"):
    """tiny_yolo's raw heads (2 anchors x (5 + 1 class)) with snnc's decoding attached: a 32x32 detector."""
    raw = tmp_path / "raw.onnx"
    onnx.save(tiny_yolo(leaky=False, host=False), raw)
    path = tmp_path / f"det_{kind}.onnx"
    onnx.save(attach_head(prepare(raw), HeadSpec(kind, tuple(v for a in ANCHORS for v in a), ("thing",))), path)
    return path


def _dataset(folder, n=6, size=32):
    rng = np.random.default_rng(1)
    images, boxes, classes = [], [], []
    for _ in range(n):
        img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        x, y, w, h = rng.integers(2, 14), rng.integers(2, 14), rng.integers(6, 14), rng.integers(6, 14)
        img[y:y + h, x:x + w] = 230  # a bright box on a dark ground: learnable in a few steps
        images.append(img)
        boxes.append(np.array([[x, y, x + w, y + h]], np.float64))
        classes.append(np.array([0]))
    return write_dataset(folder, images, boxes, classes, ["thing"], layout="coco")


@pytest.mark.parametrize("kind", ["yolo", "yolov5"])
def test_probe_reads_anchors_strides_and_coding(tmp_path, kind):
    parts = split_model(prepare(_detector(tmp_path, kind)))
    geoms = probe_heads(parts.host, [o.name for o in parts.spiking.graph.output])
    by_stride = sorted(geoms, key=lambda g: g.stride)
    assert [g.stride for g in by_stride] == [2.0, 4.0]
    assert np.allclose(by_stride[0].anchors, ANCHORS[:2]) and np.allclose(by_stride[1].anchors, ANCHORS[2:])
    assert {g.kind for g in geoms} == {kind} and {g.classes for g in geoms} == {1}


def test_yolo_loss_is_small_for_the_perfect_head(tmp_path):
    """A head with exactly the target values at the assigned anchor and -10 elsewhere costs about the entropy of
    the soft offset targets (the minimum of BCE), far less than the same head with the box's size and class wrong."""
    parts = split_model(prepare(_detector(tmp_path)))
    geoms = probe_heads(parts.host, [o.name for o in parts.spiking.graph.output])
    small = min(range(2), key=lambda k: geoms[k].stride)
    box = np.array([[8.0, 8.0, 15.0, 14.0]], np.float32)  # 7 x 6: anchor 1 of the stride-2 head, cell (5, 5)
    heads = [torch.full((1, 12, 32 // int(g.stride), 32 // int(g.stride)), -10.0) for g in geoms]
    good = [h.clone() for h in heads]
    # offsets 0.75, 0.5 (t_x = logit 0.75), wh = the anchor, objectness and class sure
    good[small][0, 6:12, 5, 5] = torch.tensor([np.log(3.0), 0.0, 0.0, 0.0, 10.0, 10.0])
    bad = [h.clone() for h in good]
    bad[small][0, 8:10, 5, 5] = 2.0  # wrong size
    bad[small][0, 11, 5, 5] = -10.0  # wrong class score
    target = [(box, np.array([0]))]
    lg, lb = (float(yolo_loss(tuple(h), geoms, target, (32, 32))) for h in (good, bad))
    bce = lambda p: -(p * np.log(p) + (1 - p) * np.log(1 - p))  # noqa: E731
    floor = (2 - 42 / 32 ** 2) * (bce(0.75) + bce(0.5))
    assert floor <= lg < floor + 0.1 and lb > lg + 10


def test_finetune_data_loss_falls_and_output_compiles(tmp_path):
    model = _detector(tmp_path)
    data = _dataset(tmp_path / "data")
    out = tmp_path / "ft.onnx"
    rc = main(["finetune", str(model), "--data", str(data), "-T", "4", "--epochs", "6", "--batch", "3",
               "--lr", "3e-3", "--label-weight", "1", "--no-augment", "-o", str(out), "-q", "--threads", "1"])
    assert rc == 0 and out.exists()
    log = json.loads(out.with_suffix(".json").read_text())
    hist = [h["train_label_loss"] for h in log["history"]]
    assert log["labelled"] == 6 and len(hist) == 6
    assert hist[-1] < 0.8 * hist[0], hist
    res = compile_model(out, calib_random=2, progress=False)
    qcfs = [n for n in res.spiking.graph.node
            if n.domain == "snnc" and any(a.name == "qcfs_levels" for a in n.attribute)]
    assert len(qcfs) == 6  # the six ReLUs, now QCFS IF neurons


def _bad_json(tmp_path, case):
    path = tmp_path / "bad.json"
    if case == "not_json":
        path.write_text("{ this is not json")
    elif case == "no_images_key":
        path.write_text(json.dumps({"annotations": []}))
    else:
        path.write_text(json.dumps({"images": [{"id": 1, "file_name": "missing.png"}], "annotations": [],
                                    "categories": [{"id": 1, "name": "thing"}]}))
    return path


@pytest.mark.parametrize("case", ["not_json", "no_images_key", "missing_image", "no_decoding"])
def test_finetune_data_bad_input(tmp_path, capsys, case):
    if case == "no_decoding":  # heads that end in a plain sigmoid: no boxes to learn from
        model = tmp_path / "m.onnx"
        onnx.save(tiny_yolo(leaky=False), model)
        data = _dataset(tmp_path / "data", n=2)
    else:
        model, data = _detector(tmp_path), _bad_json(tmp_path, case)
    out = tmp_path / "out.onnx"
    rc = main(["finetune", str(model), "--data", str(data), "-T", "4", "--epochs", "1", "-o", str(out), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("snnc: error: "), err
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert {"not_json": "not a COCO", "no_images_key": "not a COCO", "missing_image": "missing.png",
            "no_decoding": "--data needs"}[case] in err[0]


def test_object_weight_counts_the_teachers_object_cells_more():
    """The same error costs more at a cell where the teacher's objectness is high than at a background cell, by
    about 1 + k there; k = 0 is the plain relative MSE."""
    from snnc.training.finetune import _head_loss

    ref = torch.full((1, 12, 4, 4), -10.0)  # 2 anchors x (5 + 1): objectness logits at channels 4 and 10
    ref[0, 10, 1, 2] = 10.0  # the teacher sees an object at cell (1, 2), anchor 1
    at_object, at_ground = ref.clone(), ref.clone()
    at_object[0, 0, 1, 2] += 1.0
    at_ground[0, 0, 3, 3] += 1.0
    obj = [[4, 10]]
    plain = [float(_head_loss((g,), (ref,))) for g in (at_object, at_ground)]
    assert plain[0] == pytest.approx(plain[1])
    assert float(_head_loss((at_object,), (ref,), obj, 0.0)) == pytest.approx(plain[0])
    weighted = [float(_head_loss((g,), (ref,), obj, 9.0)) for g in (at_object, at_ground)]
    assert weighted[0] == pytest.approx(10 * weighted[1], rel=1e-3)


def test_finetune_object_weight_runs_and_refuses_heads_without_anchors(tmp_path, capsys):
    photos = random_photos(tmp_path / "photos", 4, size=32)
    out = tmp_path / "ft.onnx"
    rc = main(["finetune", str(_detector(tmp_path)), "--images", str(photos), "-T", "4", "--epochs", "1",
               "--batch", "2", "--object-weight", "4", "-o", str(out), "-q", "--threads", "1"])
    assert rc == 0 and out.exists()
    assert json.loads(out.with_suffix(".json").read_text())["options"]["object_weight"] == 4.0
    capsys.readouterr()
    plain = tmp_path / "plain.onnx"
    onnx.save(tiny_yolo(leaky=False), plain)  # heads end in a plain sigmoid: no objectness channels to find
    for model, weight in ((plain, "4"), (_detector(tmp_path), "-1")):
        bad = tmp_path / "bad.onnx"
        rc = main(["finetune", str(model), "--images", str(photos), "-T", "4", "--epochs", "1",
                   "--object-weight", weight, "-o", str(bad), "-q"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "--object-weight" in err[0], err
        assert not bad.exists()
