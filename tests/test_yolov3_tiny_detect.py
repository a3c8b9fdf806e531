"""The compiled real yolov3-tiny detects: on the issue's real photos (scikit-image: astronaut, coffee, chelsea,
motorcycle, rocket), calibrated on other real photos, the SNN at T steps finds the ANN's confident detections
(same class, IoU >= 0.5) and invents no confident detection of its own.

One simulation of the five photos at 416 x 416 (the NumPy reference, float32): a few minutes on two cores.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from snnc.ir import lavafile
from snnc.apps.outputs import write_output
from snnc.compiler.api import compile_model
from snnc.compiler.darknet import darknet_to_onnx
from snnc.runtime.host import iou
from snnc.runtime.run import run_network
from snnc.compiler.samples import write_photos
from snnc.compiler.zoo import fetch_yolov3_tiny

PHOTOS = ("astronaut", "coffee", "chelsea", "motorcycle", "rocket")
CALIB = ("camera", "china", "flower", "grace_hopper", "motorcycle_right")
T = 256
CONFIDENT = 0.3  # a detection that must be reproduced (ANN) or must be real (SNN)
FOUND = 0.1  # the score at which the other side must have it


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    root = tmp_path_factory.mktemp("yolo_detect")
    cfg, weights = fetch_yolov3_tiny()
    model = root / "yolov3-tiny.onnx"
    onnx.save(darknet_to_onnx(cfg, weights, input_size=416), str(model))
    calib = write_photos(root / "calib", CALIB)[0].parent
    photos = write_photos(root / "photos", PHOTOS)
    lava = root / "yolov3-tiny.lava"
    write_output(compile_model(model, calib_dir=calib, progress=False), lava)
    return run_network(lavafile.load(lava), photos, [T], ann=True, score_thr=FOUND, progress=False)


def _matched(d, others) -> bool:
    same = [o for o in others if o.cls == d.cls]
    return bool(same) and float(iou(np.array([d.box]), np.array([o.box for o in same])).max()) >= 0.5


def test_snn_finds_the_anns_confident_detections(result):
    reference = [(name, d) for name, dets in zip(result.images, result.ann_detections) for d in dets
                 if d.score >= CONFIDENT]
    assert len(reference) >= 2, "the photos must give the test something to find"
    missed = [(name, d.name, round(d.score, 2)) for (name, d), snn in
              zip(reference, [result.detections[T][result.images.index(n)] for n, _ in reference])
              if not _matched(d, snn)]
    assert not missed, f"ANN detections the SNN missed at T={T}: {missed}"


def test_snn_invents_no_confident_detection(result):
    invented = [(name, d.name, round(d.score, 2)) for name, snn, ann in
                zip(result.images, result.detections[T], result.ann_detections)
                for d in snn if d.score >= CONFIDENT and not _matched(d, ann)]
    assert not invented, f"confident SNN detections the ANN does not have: {invented}"
