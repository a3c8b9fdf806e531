"""The real yolov3-tiny (COCO, Darknet weights) through the compiler: our converter's graph and the PyTorch
exporter's graphs (explicit zero Pad before the stride-1 MaxPool, Resize with scales or sizes, opsets 11-21).

Exact passes must preserve the heads to 1e-5 relative (onnxruntime, optimizer off) on random inputs and real
photos; with percentile 100 the rate-limit ANN equals the ANN on the calibration photos.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from snnc.ir import lavafile
from snnc.apps.outputs import write_output
from snnc.compiler.api import compile_model
from snnc.compiler.darknet import darknet_to_onnx
from snnc.compiler.frontend import prepare
from snnc.compiler.graph import run_model
from snnc.compiler.images import letterbox
from models import apply_pass  # the classic choices: max-pool trees (exact)
from snnc.compiler.split import split_model
from snnc.compiler.zoo import fetch_yolov3_tiny

ROOT = Path(__file__).resolve().parent.parent
SIZE = 416
EXACT = ("fold_batchnorm", "upsample_to_deconv", "maxpool_to_strided_conv")
CALIB = ("astronaut", "coffee", "chelsea")


def _torch_export():
    spec = importlib.util.spec_from_file_location("torch_export", ROOT / "examples/yolov3_tiny/torch_export.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["torch_export"] = mod
    spec.loader.exec_module(mod)
    return mod


def _photo(name: str) -> np.ndarray:
    from skimage import data

    img = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    return np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("yolov3_tiny")


@pytest.fixture(scope="module")
def calib_dir(workdir) -> Path:
    d = workdir / "calib"
    d.mkdir()
    for name in CALIB:
        Image.fromarray(_photo(name)).save(d / f"{name}.png")
    return d


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    return np.stack([letterbox(_photo(n), (SIZE, SIZE))[0] for n in ("rocket", "motorcycle")])


@pytest.fixture(scope="module")
def ours(workdir) -> Path:
    cfg, weights = fetch_yolov3_tiny()
    path = workdir / "yolov3-tiny.onnx"
    onnx.save(darknet_to_onnx(cfg, weights, input_size=SIZE, decode=True), path)
    return path


def max_rel(a: dict, b: dict) -> float:
    return max(float(np.abs(a[k] - b[k]).max() / np.abs(a[k]).max()) for k in a)


def assert_exact_passes(path: Path, photos: np.ndarray) -> None:
    spiking = split_model(prepare(path)).spiking
    rewritten = spiking
    for name in EXACT:
        rewritten = apply_pass(rewritten, name)
    ops = {n.op_type for n in rewritten.graph.node}
    assert not ops & {"BatchNormalization", "MaxPool", "Resize", "Upsample"}, ops
    rng = np.random.default_rng(0)
    inputs = [rng.random((1, 3, SIZE, SIZE), dtype=np.float32) for _ in range(3)] + [p[None] for p in photos]
    for x in inputs:
        feeds = {"images": x}
        err = max_rel(run_model(spiking, feeds), run_model(rewritten, feeds))
        assert err <= 1e-5, err


def test_exact_passes_preserve_heads(ours, photos):
    assert_exact_passes(ours, photos)


def test_default_pipeline_compiles(ours, calib_dir, workdir):
    result = compile_model(ours, calib_dir=calib_dir, progress=False)
    net = result.network
    assert [net.output_names[o] for o in net.outputs] == ["head_0", "head_1"]
    # the defaults: each of the 11 leaky layers one graded signed neuron per channel, the 6 max-pools count
    # max-pools (no neurons)
    assert [l.neuron.kind for l in net.neuron_layers] == ["SignedIF"] * 11
    assert all(l.neuron.graded for l in net.neuron_layers)
    assert sum(l.op == "maxpool" for l in net.layers) == 6 and "split_leaky_relu" not in result.stats
    assert len(net.meta["class_names"]) == 80 and net.host_onnx is not None
    clip = result.stats["clipping_error"]
    assert set(clip) == {"head_0", "head_1"} and all(0 < v < 10 for v in clip.values())
    out = write_output(result, workdir / "yolov3-tiny.lava")
    again = lavafile.load(out)
    assert [layer.name for layer in again.layers] == [layer.name for layer in net.layers]


def test_percentile_100_rate_limit_equals_ann_on_calibration(ours, calib_dir):
    result = compile_model(ours, calib_dir=calib_dir, percentile=100.0, norm="channel", progress=False,
                           include_ann=False)
    x = np.stack([letterbox(_photo(n), (SIZE, SIZE))[0] for n in CALIB])
    assert max(result.stats["clipping_error"].values()) <= 1e-5
    feeds = {"images": x}
    assert max_rel(run_model(result.ann, feeds), run_model(result.ratelimit, feeds)) <= 1e-5


@pytest.mark.parametrize("opset,resize", [(11, "scales"), (13, "sizes"), (17, "scales"), (20, "scales"),
                                          (21, "scales")])
def test_pytorch_export_compiles(workdir, calib_dir, photos, opset, resize):
    tex = _torch_export()
    path = tex.export(workdir / f"torch_{opset}_{resize}.onnx", opset=opset, resize=resize)
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert "Pad" in ops and "Resize" in ops
    assert_exact_passes(path, photos)
    result = compile_model(path, calib_dir=calib_dir, progress=False, include_ann=False)
    pads = [layer for layer in result.network.layers if layer.op == "pad"]
    assert pads and all(layer.attrs["mode"] == "constant" for layer in pads)  # ZeroPad2d keeps zero padding
