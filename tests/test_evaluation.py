"""snnc.evaluation: COCO mAP on hand-made cases, the three dataset layouts, SOP counting by hand, and the
committed digits detectors' ANN mAP on the test split."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from snnc.evaluation.datasets import Sample, detect_layout, load_dataset, write_dataset
from snnc.ir.network import Layer, Network, Neuron

from snnc.evaluation.metrics import evaluate_detections, evaluate_fidelity


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


needs_coco = pytest.mark.skipif(not (_has("faster_coco_eval") or _has("pycocotools")),
                                reason="mAP needs faster-coco-eval (or pycocotools)")
needs_sklearn = pytest.mark.skipif(not _has("sklearn"), reason="the digits set needs scikit-learn")

MODELS = Path(__file__).resolve().parent.parent / "examples" / "digits" / "models"
NAMES = ["a", "b"]


def _gt():
    return [Sample(None, [[10, 10, 30, 30], [40, 40, 60, 60]], [0, 0], 64, 64),
            Sample(None, [[5, 5, 25, 35]], [1], 64, 64)]


# ---- metrics ----------------------------------------------------------------------------------------------------

@needs_coco
def test_perfect_detections_give_one():
    gt = _gt()
    dets = [[(0, 0.9, 10, 10, 30, 30), (0, 0.8, 40, 40, 60, 60)], [(1, 0.7, 5, 5, 25, 35)]]
    res = evaluate_detections(gt, dets, NAMES)
    assert res["mAP50"] == pytest.approx(1.0)
    assert res["mAP50_95"] == pytest.approx(1.0)
    assert res["AP50_per_class"] == {"a": pytest.approx(1.0), "b": pytest.approx(1.0)}


@needs_coco
def test_one_of_two_missed():
    # class a: one of its two boxes found (precision 1 up to recall 0.5): 101-point AP = 51/101; class b perfect
    gt = _gt()
    dets = [[(0, 0.9, 10, 10, 30, 30)], [(1, 0.7, 5, 5, 25, 35)]]
    res = evaluate_detections(gt, dets, NAMES)
    assert res["AP50_per_class"]["a"] == pytest.approx(51 / 101)
    assert res["mAP50"] == pytest.approx((51 / 101 + 1) / 2)


@needs_coco
def test_false_positive_ranked_first_and_box_quality():
    gt = [Sample(None, [[0, 0, 20, 20]], [0], 64, 64)]
    # a false positive above the true one: precision 1/2 at recall 1 -> AP 0.5
    res = evaluate_detections(gt, [[(0, 0.9, 40, 40, 60, 60), (0, 0.5, 0, 0, 20, 20)]], NAMES)
    assert res["mAP50"] == pytest.approx(0.5)
    # IoU 0.8 (box 0..20 x 0..16): a hit at 0.50..0.80 (7 of the 10 thresholds), a miss above
    res = evaluate_detections(gt, [[(0, 0.9, 0, 0, 20, 16)]], NAMES)
    assert res["mAP50"] == pytest.approx(1.0)
    assert res["mAP50_95"] == pytest.approx(0.7)
    # the wrong class is a miss
    assert evaluate_detections(gt, [[(1, 0.9, 0, 0, 20, 20)]], NAMES)["mAP50"] == pytest.approx(0.0)


@needs_coco
def test_empty_and_detection_forms():
    gt = _gt()
    assert evaluate_detections(gt, [[], []], NAMES)["mAP50"] == 0.0
    assert math.isnan(evaluate_detections([Sample(None, np.zeros((0, 4)), [])], [[]], NAMES)["mAP50"])

    class Det:  # the shape of snnc.runtime.host.Detection
        def __init__(self, cls, score, box):
            self.cls, self.score, self.box = cls, score, box

    dets = [[Det(0, 0.9, (10, 10, 30, 30)), (0, 0.8, np.array([40, 40, 60, 60]))], [(1, 0.7, 5, 5, 25, 35)]]
    assert evaluate_detections(gt, dets, NAMES)["mAP50"] == pytest.approx(1.0)


@needs_coco
def test_fidelity_mode():
    ann = [[(0, 0.9, 10, 10, 30, 30), (0, 0.1, 40, 40, 60, 60)], [(1, 0.7, 5, 5, 25, 35)]]
    assert evaluate_fidelity(ann, ann, NAMES)["mAP50"] == pytest.approx(1.0)  # the 0.1 box is not reference
    snn = [[(0, 0.5, 10, 10, 30, 30)], []]
    res = evaluate_fidelity(ann, snn, NAMES, score_thr=0.25)
    assert res["ground_truth"] == 2
    assert res["mAP50"] == pytest.approx(0.5)  # class a found, class b missed


# ---- dataset layouts --------------------------------------------------------------------------------------------

@needs_sklearn
def test_three_layouts_load_the_same_boxes(tmp_path):
    from snnc.evaluation.digits import CLASS_NAMES, make_digits, write_digits

    ds = make_digits("val", 6, seed=3)
    loaded = {}
    for layout in ("coco", "voc", "yolo"):
        path = write_digits(tmp_path / layout, "val", 6, seed=3, layout=layout)
        assert detect_layout(path) == layout
        samples, names = load_dataset(path)
        assert names == CLASS_NAMES
        assert len(samples) == 6
        loaded[layout] = samples
    for i in range(6):
        for layout, samples in loaded.items():
            s = samples[i]
            assert s.image_path.is_file()
            np.testing.assert_allclose(s.boxes_xyxy, ds.boxes[i], atol=1e-3, err_msg=layout)
            np.testing.assert_array_equal(s.classes, ds.classes[i])
            assert (s.width, s.height) == (64, 64)
            from PIL import Image

            np.testing.assert_array_equal(np.asarray(Image.open(s.image_path).convert("RGB")), ds.images[i])
    # folder of the coco layout is detected too; VOC split listing works
    assert detect_layout(tmp_path / "coco") == "coco"
    assert len(load_dataset(tmp_path / "voc", split="val")[0]) == 6
    # converting: a loaded set written again from its image files (copied) in another layout
    samples, names = loaded["voc"], CLASS_NAMES
    out = write_dataset(tmp_path / "conv", [s.image_path for s in samples], [s.boxes_xyxy for s in samples],
                        [s.classes for s in samples], names, layout="coco")
    again, _ = load_dataset(out)
    for s, t in zip(samples, again):
        np.testing.assert_allclose(t.boxes_xyxy, s.boxes_xyxy)
        assert t.image_path.read_bytes() == s.image_path.read_bytes()


def test_layout_errors(tmp_path):
    from snnc.ir.errors import SnncError

    with pytest.raises(SnncError, match="no dataset layout"):
        detect_layout(tmp_path)
    img = np.zeros((8, 10, 3), np.uint8)
    path = write_dataset(tmp_path / "y", [img], [np.array([[1, 2, 5, 6]])], [np.array([1])], ["x", "y"], "yolo")
    (path / "labels" / "000000.txt").write_text("1 0.5 0.5\n")
    with pytest.raises(SnncError, match="class cx cy w h"):
        load_dataset(path)


@needs_sklearn
def test_digits_deterministic_and_disjoint():
    from snnc.evaluation.digits import make_digits, split_indices

    a, b = make_digits("test", 5, seed=1), make_digits("test", 5, seed=1)
    np.testing.assert_array_equal(a.images, b.images)
    c = make_digits("test", 3, seed=1, start=2)  # image i is the same whatever n and start are
    np.testing.assert_array_equal(a.images[2:], c.images)
    assert not np.array_equal(make_digits("test", 5, seed=2).images, a.images)
    tr, va, te = (set(split_indices(s)) for s in ("train", "val", "test"))
    assert not (tr & va) and not (tr & te) and not (va & te) and len(tr | va | te) == 1797
    for boxes, classes in zip(a.boxes, a.classes):
        assert 1 <= len(boxes) <= 4 and boxes.min() >= 0 and boxes.max() <= 64
        assert set(classes.tolist()) <= set(range(10))


# ---- SOPs and energy --------------------------------------------------------------------------------------------

def _neuron(c):
    return Neuron("IF", np.ones(c))


def _tiny_net() -> Network:
    """input 1x4x4 -> a: conv3x3 p1, 2 ch, IF -> b: conv3x3 s2 p1, 1 ch, IF (2x2) -> up: copy deconv k2 s2 ->
    cat(up, a) 3x4x4 -> head: conv1x1, 5 ch, linear."""
    conv = {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1}
    layers = [
        Layer("x", "input", [], (1, 4, 4)),
        Layer("a", "conv", ["x"], (2, 4, 4), np.ones((2, 1, 3, 3), np.float32), np.zeros(2, np.float32), conv,
              _neuron(2)),
        Layer("b", "conv", ["a"], (1, 2, 2), np.ones((1, 2, 3, 3), np.float32), None,
              dict(conv, strides=[2, 2]), _neuron(1)),
        Layer("up", "deconv", ["b"], (1, 4, 4), np.ones((1, 1, 2, 2), np.float32), None,
              {"strides": [2, 2], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1, "output_padding": [0, 0]}),
        Layer("cat", "concat", ["up", "a"], (3, 4, 4), attrs={"axis": 0}),
        Layer("head", "conv", ["cat"], (5, 4, 4), np.ones((5, 3, 1, 1), np.float32), np.zeros(5, np.float32),
              dict(conv, pads=[0, 0, 0, 0])),
    ]
    return Network(layers, ["head"])


def test_sops_by_hand():
    from snnc.compiler.energy import energy_report, fanout_maps

    net = _tiny_net()
    maps = fanout_maps(net)
    # b: each spike is copied to 4 positions of `up`, each read by the 5 head channels: 20
    np.testing.assert_array_equal(maps["b"], np.full((1, 2, 2), 20.0))
    # a -> b (3x3, stride 2, pad 1, 1 output channel): rows/cols 0..3 are read by 1, 2, 1, 1 (output, tap) pairs;
    # a -> cat -> head: 5 synapses everywhere
    taps = np.array([1, 2, 1, 1.0])
    np.testing.assert_array_equal(maps["a"], np.outer(taps, taps)[None].repeat(2, 0) + 5)
    # totals: 16 spikes of a, 4 of b -> 16 * (25/16 + 5) + 4 * 20 = 185 SOPs
    rep = energy_report(net, {"a": 16, "b": 4}, T=4)
    assert rep["snn_sops"] == pytest.approx(185)
    # per-neuron counts: one spike per neuron -> 2 * 25 + 32 * 5 and 4 * 20
    rep_exact = energy_report(net, {"a": np.ones((2, 4, 4)), "b": np.ones((1, 2, 2))}, T=4)
    assert rep_exact["snn_sops"] == pytest.approx(2 * 25 + 32 * 5 + 80)
    # direct encoding: a gets the same image every step: its 2*16*9 MACs once (a constant current), T x as a
    # per-step computation; ANN MACs exclude the copy layer
    assert rep["snn_macs"] == pytest.approx(288)
    assert energy_report(net, {"a": 16, "b": 4}, T=4, constant_input=False)["snn_macs"] == pytest.approx(4 * 288)
    assert rep["ann_macs"] == 288 + 72 + 240 and rep["ann_macs_from"] == "network layers"
    f = rep["energy_pj"]["float"]
    assert f["snn"] == pytest.approx(185 * 0.9 + 288 * 4.6)
    assert f["ratio"] == pytest.approx(f["snn"] / (600 * 4.6))
    i = rep["energy_pj"]["int"]
    assert i["snn"] == pytest.approx(185 * 0.1 + 288 * 3.2) and i["ann"] == pytest.approx(600 * 3.2)
    # (batch,) totals as SimResult.spike_counts holds them are averaged per image
    assert energy_report(net, {"a": np.array([10, 22]), "b": np.array([4, 4])}, T=4)["snn_sops"] == pytest.approx(185)


def test_sops_edge_pad_and_rate_input():
    from snnc.ir.errors import SnncError
    from snnc.compiler.energy import energy_report, fanout_maps

    layers = [
        Layer("x", "input", [], (1, 2, 2)),
        Layer("a", "conv", ["x"], (1, 2, 2), np.ones((1, 1, 1, 1), np.float32), None,
              {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1}, _neuron(1)),
        Layer("p", "pad", ["a"], (1, 4, 4), attrs={"pads": [1, 1, 1, 1], "mode": "edge"}),
        Layer("c", "conv", ["p"], (3, 2, 2), np.ones((3, 1, 3, 3), np.float32), None,
              {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1}),
    ]
    net = Network(layers, ["c"], input_encoding={"kind": "rate"})
    # each of a's 4 neurons is replicated over a 2x2 corner of the padded map, which the 3x3 conv reads 9 times
    np.testing.assert_array_equal(fanout_maps(net)["a"], np.full((1, 2, 2), 27.0))
    with pytest.raises(SnncError, match="input spikes"):
        energy_report(net, {"a": 3}, T=8)
    rep = energy_report(net, {"x": 10, "a": 3}, T=8)
    assert rep["snn_macs"] == 0  # rate-coded input: no analog MACs
    assert rep["snn_sops"] == pytest.approx(10 * 1 + 3 * 27)


# ---- the committed digits detectors -----------------------------------------------------------------------------

DIGITS_FLOOR = {"digits_relu.onnx": 0.95, "digits_leaky.onnx": 0.95}  # mAP@0.5 on 200 test images (~0.99)


@needs_coco
@needs_sklearn
@pytest.mark.parametrize("name", sorted(DIGITS_FLOOR))
def test_digits_ann_map(name):
    from snnc.evaluation.ann import evaluate_onnx
    from snnc.evaluation.digits import make_digits

    import onnx

    model = onnx.load(str(MODELS / name))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["snnc.class_names"]) == [str(i) for i in range(10)]
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["boxes", "scores"]
    res = evaluate_onnx(MODELS / name, make_digits("test", 200, seed=0))
    assert res["mAP50"] >= DIGITS_FLOOR[name], res
    recorded = json.loads((MODELS / "metrics.json").read_text())[name]
    assert recorded["mAP50"] >= DIGITS_FLOOR[name]


def test_digits_model_splits_into_spiking_and_host():
    import onnx

    from snnc.compiler.split import split_model

    parts = split_model(onnx.load(str(MODELS / "digits_relu.onnx")))
    ops = {n.op_type for n in parts.spiking.graph.node}
    assert ops <= {"Conv", "Relu", "MaxPool", "Resize", "Concat", "BatchNormalization", "Constant"}, ops
    host_ops = {n.op_type for n in parts.host.graph.node}
    assert "Sigmoid" in host_ops and "Exp" in host_ops and "Conv" not in host_ops
    assert len(parts.heads) == 2


@needs_coco
@needs_sklearn
def test_train_script_smoke(tmp_path):
    """examples/digits/train.py end to end on a few images: trains, exports ONNX with boxes/scores, records mAP."""
    pytest.importorskip("torch")
    import importlib.util

    import onnx

    path = MODELS.parent / "train.py"
    spec = importlib.util.spec_from_file_location("digits_train", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "m.onnx"
    assert mod.main(["--act", "leaky", "-o", str(out), "--epochs", "1", "--train-images", "64", "--val-images", "8",
                     "--test-images", "8", "--anchor-images", "100", "--width", "4"]) == 0
    model = onnx.load(str(out))
    assert [o.name for o in model.graph.output] == ["boxes", "scores"]
    shapes = [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output]
    assert shapes == [[1, 960, 4], [1, 960, 10]]
    rec = json.loads((tmp_path / "metrics.json").read_text())["m.onnx"]
    assert 0.0 <= rec["mAP50"] <= 1.0 and rec["act"] == "leaky"
