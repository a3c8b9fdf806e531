"""Host side: IoU, NMS, letterbox mapping, detect() on a hand-made host graph, drawing and JSON."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from snnc.ir.errors import SnncError
from snnc.runtime.host import (Detection, boxes_to_input, detect, detections_to_json, draw_detections, iou, nms,
                                run_host)
from snnc.compiler.images import Letterbox, letterbox
from snnc.ir.network import Layer, Network

# ---- IoU and NMS ------------------------------------------------------------------------------------------------


def test_iou_hand_cases():
    a = np.array([[0, 0, 2, 2], [0, 0, 1, 1]], float)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6], [1, 1, 1, 1]], float)
    expected = [[1 / 7, 1, 0, 0], [0, 1 / 4, 0, 0]]  # overlap 1 of union 7; identical; disjoint; zero area
    np.testing.assert_allclose(iou(a, b), expected)
    np.testing.assert_allclose(iou(a[0], b), expected[0])
    assert iou(np.zeros((0, 4)), b).shape == (0, 4)


def test_nms_greedy_per_class():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [20, 20, 30, 30], [0.5, 0, 10.5, 10]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.95])
    # one class: box 4 (best) suppresses 0 (IoU 0.9), 1 and 2; box 3 is far away
    assert nms(boxes, scores, 0.45).tolist() == [4, 3]
    # box 2 in another class survives
    classes = np.array([0, 0, 1, 0, 0])
    assert nms(boxes, scores, 0.45, classes=classes).tolist() == [4, 2, 3]
    assert nms(boxes, scores, 0.45, classes=classes, top_k=2).tolist() == [4, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0)).tolist() == []


def test_nms_threshold_is_strict():
    boxes = np.array([[0, 0, 2, 1], [0, 0, 1, 1]], float)  # IoU exactly 0.5
    scores = np.array([0.9, 0.8])
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.49).tolist() == [0]


def test_nms_ties_keep_the_lower_index():
    boxes = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], float)
    assert nms(boxes, np.array([0.5, 0.5])).tolist() == [0]


# ---- letterbox --------------------------------------------------------------------------------------------------


def test_letterbox_box_round_trip():
    rgb = np.zeros((100, 200, 3), np.uint8)
    tensor, lb = letterbox(rgb, (64, 64))
    assert tensor.shape == (3, 64, 64) and lb.scale == pytest.approx(0.32) and (lb.top, lb.left) == (16, 0)
    boxes = np.array([[10.0, 20.0, 150.0, 90.0], [0.0, 0.0, 200.0, 100.0]])
    inside = boxes_to_input(lb, boxes)
    np.testing.assert_allclose(inside[1], [0, 16, 64, 48])  # the whole photo is the letterbox's content area
    np.testing.assert_allclose(lb.boxes_to_image(inside), boxes)
    # boxes reaching into the grey border are clipped to the photo
    np.testing.assert_allclose(lb.boxes_to_image(np.array([[-5.0, 0.0, 70.0, 64.0]])), [[0, 0, 200, 100]])


# ---- detect() on a hand-made host graph -------------------------------------------------------------------------


def _net(host: bytes | None, class_names=("cat", "dog")) -> Network:
    layers = [Layer("images", "input", [], (3, 4, 4)),
              Layer("head", "conv", ["images"], (6, 2, 2), weight=np.zeros((6, 3, 3, 3), np.float32),
                    attrs={"strides": [2, 2], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1})]
    return Network(layers, ["head"], output_names={"head": "head_out"}, host_onnx=host,
                   meta={"class_names": list(class_names)})


def _host_graph(outputs: str = "boxes_scores", batch: int | None = None) -> bytes:
    """head_out (B, 6, 2, 2) -> 4 anchors x (x1, y1, x2, y2, logit_cat, logit_dog) -> boxes, sigmoid scores."""
    inits = [numpy_helper.from_array(np.array([0, 6, 4], np.int64), "shape"),
             numpy_helper.from_array(np.array([0], np.int64), "s0"),
             numpy_helper.from_array(np.array([4], np.int64), "s4"),
             numpy_helper.from_array(np.array([6], np.int64), "s6"),
             numpy_helper.from_array(np.array([2], np.int64), "axis")]
    nodes = [helper.make_node("Reshape", ["head_out", "shape"], ["flat"]),
             helper.make_node("Transpose", ["flat"], ["rows"], perm=[0, 2, 1])]
    if outputs == "boxes_scores":
        nodes += [helper.make_node("Slice", ["rows", "s0", "s4", "axis"], ["boxes"]),
                  helper.make_node("Slice", ["rows", "s4", "s6", "axis"], ["logits"]),
                  helper.make_node("Sigmoid", ["logits"], ["scores"])]
        outs = [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, None),
                helper.make_tensor_value_info("scores", TensorProto.FLOAT, None)]
    else:  # one raw tensor (B, N, 4 + classes), the layout detect() refuses
        nodes += [helper.make_node("Identity", ["rows"], ["output"])]
        outs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "host", [helper.make_tensor_value_info("head_out", TensorProto.FLOAT,
                                                                            [batch, 6, 2, 2])], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _logit(p):
    return float(np.log(p / (1 - p)))


def _heads() -> np.ndarray:
    """Two samples; rows are the 4 anchors (x1, y1, x2, y2, logit cat, logit dog)."""
    lo = _logit(0.05)
    rows0 = [[10, 10, 50, 50, _logit(0.9), lo],     # cat 0.9
             [12, 12, 52, 52, _logit(0.8), lo],     # cat 0.8, IoU 0.82 with the first: suppressed
             [100, 100, 140, 150, lo, _logit(0.7)],  # dog 0.7
             [11, 11, 51, 51, lo, _logit(0.6)]]     # dog 0.6 overlapping the cat: another class, kept
    rows1 = [[0, 0, 5, 5, lo, lo]] * 4              # nothing above the score threshold
    rows = np.array([rows0, rows1], np.float32)    # (2, 4, 6)
    return rows.transpose(0, 2, 1).reshape(2, 6, 2, 2)


def test_detect_on_a_hand_made_host_graph():
    net = _net(_host_graph())
    dets = detect(net, {"head": _heads()})
    assert len(dets) == 2 and dets[1] == [] and dets.message is None
    assert [(d.name, round(d.score, 4), d.box) for d in dets[0]] == [
        ("cat", 0.9, (10, 10, 50, 50)), ("dog", 0.7, (100, 100, 140, 150)), ("dog", 0.6, (11, 11, 51, 51))]
    assert [d.cls for d in dets[0]] == [0, 1, 1]
    assert set(dets.raw) == {"boxes", "scores"} and dets.raw["scores"].shape == (2, 4, 2)
    # class-agnostic NMS: the dog overlapping the cat goes
    assert [d.name for d in detect(net, {"head": _heads()}, class_agnostic=True)[0]] == ["cat", "dog"]
    # a stricter score threshold and top-k
    assert [d.score for d in detect(net, {"head": _heads()}, score_thr=0.65)[0]] == pytest.approx([0.9, 0.7])
    assert len(detect(net, {"head": _heads()}, max_det=1)[0]) == 1
    # keyed by the tensor name works too
    assert detect(net, {"head_out": _heads()})[0] == dets[0]


def test_detect_maps_boxes_to_the_photo():
    net = _net(_host_graph())
    lbs = [Letterbox(orig_h=200, orig_w=400, scale=0.5, top=25, left=0), None]
    dets = detect(net, {"head": _heads()}, lbs)
    assert dets[0][0].box == pytest.approx((20, 0, 100, 50))  # y1 = (10 - 25) / 0.5 clipped to 0
    assert dets[0][1].box == pytest.approx((200, 150, 280, 200))


def test_detect_with_a_batch_one_host_graph_runs_sample_by_sample():
    net = _net(_host_graph(batch=1))
    dets = detect(net, {"head": _heads()})
    assert [len(d) for d in dets] == [3, 0]


def test_detect_refuses_other_output_layouts():
    net = _net(_host_graph("raw"))
    with pytest.raises(SnncError, match="boxes"):
        detect(net, {"head": _heads()})
    assert run_host(net, {"head": _heads()})["output"].shape == (2, 4, 6)


def test_detect_without_host_graph_returns_the_heads(caplog):
    net = _net(None)
    with caplog.at_level(logging.WARNING):
        dets = detect(net, {"head": _heads()})
    assert dets == [[], []] and "no host graph" in dets.message
    np.testing.assert_array_equal(dets.raw["head_out"], _heads())


def test_detect_names_missing_inputs():
    net = _net(_host_graph())
    with pytest.raises(SnncError, match="head_out"):
        detect(net, {"other": _heads()})


def test_class_names_fall_back_to_numbers():
    net = _net(_host_graph(), class_names=("cat",))
    assert [d.name for d in detect(net, {"head": _heads()})[0]] == ["cat", "1", "1"]


# ---- drawing and JSON -------------------------------------------------------------------------------------------


def test_draw_and_json(tmp_path):
    rgb = np.full((60, 80, 3), 128, np.uint8)
    dets = [Detection(0, "cat", 0.9, (10.0, 20.0, 40.0, 50.0)), Detection(3, "car", 0.5, (50.0, 5.0, 79.0, 30.0))]
    path = tmp_path / "out.png"
    draw_detections(rgb, dets, path)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (80, 60)
        drawn = np.asarray(im)
    assert (drawn != 128).any() and (rgb == 128).all()  # drawn on a copy
    one = detections_to_json(dets)
    assert one[0] == {"class": 0, "name": "cat", "score": 0.9, "box": [10.0, 20.0, 40.0, 50.0]}
    jpath = tmp_path / "dets.json"
    batch = detections_to_json([dets, []], images=["a.jpg", "b.jpg"], path=jpath)
    assert json.loads(jpath.read_text()) == batch
    assert batch[1] == {"image": "b.jpg", "detections": []} and len(batch[0]["detections"]) == 2
