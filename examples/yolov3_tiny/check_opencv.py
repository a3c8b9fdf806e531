"""Compare snnc's Darknet reader with OpenCV's (cv2.dnn.readNetFromDarknet) on real photos.

    python examples/yolov3_tiny/check_opencv.py [--size 416] [--cfg X.cfg --weights X.weights]

Both get the same (1, 3, S, S) blob (a letterboxed skimage photo, RGB in [0, 1]). OpenCV's [yolo] layers decode
their input, so the comparison reads the raw heads: the outputs of the convolutions that feed the [yolo] layers.
onnxruntime runs with graph optimizations off. Prints the max relative error per head (max |ours - OpenCV| /
max |OpenCV|) and exits 1 if any exceeds --tol (default 1e-3).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from snnc.compiler.darknet import darknet_to_onnx
from snnc.ir.errors import SnncError
from snnc.compiler.zoo import fetch_yolov3_tiny

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle")


def photo(name: str) -> np.ndarray:
    from skimage import data

    img = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return img[..., :3]


def letterbox_blob(rgb: np.ndarray, size: int) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> (1, 3, size, size) float32 in [0, 1], aspect kept, gray (0.5) bars."""
    h, w = rgb.shape[:2]
    r = size / max(h, w)
    nh, nw = round(h * r), round(w * r)
    out = np.full((size, size, 3), 0.5, np.float32)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR) / 255.0
    return np.ascontiguousarray(out.transpose(2, 0, 1)[None])


def opencv_head_layers(net) -> list[str]:
    names = list(net.getLayerNames())
    return [names[names.index(y) - 2] for y in names if y.startswith("yolo_")]  # conv_k, permute_k+1, yolo_k+1


def compare(cfg: Path, weights: Path, size: int = 416, photos=PHOTOS) -> dict[str, list[float]]:
    model = darknet_to_onnx(cfg, weights, size, decode=False)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    layers = opencv_head_layers(net)
    errors = {}
    for name in photos:
        x = letterbox_blob(photo(name), size)
        ours = sess.run(None, {"images": x})
        net.setInput(x)
        ref = net.forward(layers)
        errors[name] = [float(np.abs(o - r).max() / np.abs(r).max()) for o, r in zip(ours, ref)]
    return errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="snnc's Darknet reader vs OpenCV, per head")
    ap.add_argument("--cfg", type=Path)
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--size", type=int, default=416)
    ap.add_argument("--tol", type=float, default=1e-3)
    args = ap.parse_args(argv)
    try:
        cfg, weights = (args.cfg, args.weights) if args.cfg and args.weights else fetch_yolov3_tiny()
        errors = compare(cfg, weights, args.size)
    except SnncError as exc:
        print(f"check_opencv: error: {exc}", file=sys.stderr)
        return 2
    worst = 0.0
    for name, errs in errors.items():
        print(f"{name:12s} " + "  ".join(f"head_{k}: {e:.2e}" for k, e in enumerate(errs)))
        worst = max(worst, *errs)
    ok = worst <= args.tol
    print(f"max relative error {worst:.2e} ({'<=' if ok else '>'} {args.tol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
