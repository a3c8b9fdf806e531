"""The Darknet reader (compiler/darknet.py) against OpenCV's Darknet importer, the yolov3-tiny fetcher, and the
PyTorch export of yolov3-tiny (examples/yolov3_tiny/torch_export.py) at several opsets.

All onnxruntime sessions run with graph optimizations off (docs/frontends.md: the pad semantics of the graph).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch  # CI installs torch==2.13.0 (CPU)

from snnc.compiler.darknet import COCO_CLASSES, DARKNET_BN_EPS, darknet_to_onnx, parse_cfg
from snnc.ir.errors import SnncError
from snnc.compiler.zoo import fetch_yolov3_tiny, md5sum

ROOT = Path(__file__).resolve().parent.parent
torch.set_num_threads(2)

# --------------------------------------------------------------------------------------------------- helpers


def session(model) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 2
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-12))


def opencv_heads(cfg: Path, weights: Path, x: np.ndarray) -> list[np.ndarray]:
    """OpenCV's outputs of the layers feeding each [yolo] layer (its yolo layers decode, the raw heads do not)."""
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    names = list(net.getLayerNames())
    feeds = [names[names.index(y) - 2] for y in names if y.startswith("yolo_")]  # conv_k, permute_k+1, yolo_k+1
    assert all(f.startswith("conv_") for f in feeds), feeds
    net.setInput(x)
    return list(net.forward(feeds))


def photo_blob(name: str, size) -> np.ndarray:
    """A real photo from skimage.data, letterboxed (gray 0.5 bars) to size (int or (h, w)): (1, 3, h, w) RGB [0, 1]."""
    from skimage import data

    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    img = img[..., :3].astype(np.float32) / 255.0
    h, w = img.shape[:2]
    sh, sw = (size, size) if isinstance(size, int) else size
    r = min(sh / h, sw / w)
    nh, nw = round(h * r), round(w * r)
    out = np.full((sh, sw, 3), 0.5, np.float32)
    top, left = (sh - nh) // 2, (sw - nw) // 2
    out[top:top + nh, left:left + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(out.transpose(2, 0, 1)[None])


def load_example(name: str):
    path = ROOT / "examples" / "yolov3_tiny" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"yolov3_tiny_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------------------------- a synthetic network

# Every layer kind the reader supports, in yolov3-tiny's arrangement, on a small non-square input (W=44, H=36).
TINY_CFG = """\
[net]
width=44
height=36
channels=3

# 0
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

# 1: stride-2 conv -> 18x22
[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

# 2 -> 9x11
[maxpool]
size=2
stride=2

# 3
[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=relu

# 4
[shortcut]
from=-2
activation=linear

# 5: Darknet pads 1 at right/bottom with -inf
[maxpool]
size=2
stride=1

# 6
[convolutional]
batch_normalize=1
filters=16
size=1
stride=1
pad=1
activation=leaky

# 7: head_0
[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

# 8
[yolo]
mask = 3,4,5
anchors = 4,5,  8,9,  12,16,  20,18,  30,26,  40,34
classes=2
num=6

# 9
[route]
layers = -4

# 10
[convolutional]
batch_normalize=1
filters=8
size=1
stride=1
pad=1
activation=leaky

# 11 -> 18x22
[upsample]
stride=2

# 12
[route]
layers = -1, 1

# 13
[convolutional]
filters=16
size=3
stride=1
pad=1
activation=leaky

# 14: head_1
[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

# 15
[yolo]
mask = 0,1,2
anchors = 4,5,  8,9,  12,16,  20,18,  30,26,  40,34
classes=2
num=6
"""
# (input channels, filters, size, batch_normalize) of each [convolutional], in file order
TINY_CONVS = [(3, 8, 3, 1), (8, 16, 3, 1), (16, 16, 3, 1), (16, 16, 1, 1), (16, 21, 1, 0), (16, 8, 1, 1),
              (24, 16, 3, 0), (16, 21, 1, 0)]
TINY_HW = (36, 44)

# Odd sizes through Darknet's general max-pool padding (size-1 split floor/ceil), one head.
ODD_CFG = """\
[net]
width=27
height=21
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[maxpool]
size=3
stride=1

[maxpool]
size=3
stride=2

[convolutional]
size=1
stride=1
pad=1
filters=14
activation=linear

[yolo]
mask = 0,1
anchors = 5,6,  9,12
classes=2
num=2
"""
ODD_CONVS = [(3, 8, 3, 1), (8, 14, 1, 0)]
ODD_HW = (21, 27)


def write_darknet(tmp: Path, name: str, cfg_text: str, convs, seed: int = 0, version=(0, 2, 0)):
    """cfg + random Darknet weights; BN variances include tiny ones, where the BN epsilon matters."""
    rng = np.random.default_rng(seed)
    cfg = tmp / f"{name}.cfg"
    cfg.write_text(cfg_text)
    weights = tmp / f"{name}.weights"
    major, minor, revision = version
    seen = np.array([12345], np.int64 if major * 10 + minor >= 2 else np.int32)
    parts = [np.array(version, np.int32).tobytes(), seen.tobytes()]
    for c, n, k, bn in convs:
        parts.append(rng.normal(0, 0.5, n).astype(np.float32).tobytes())  # biases (BN beta)
        if bn:
            var = rng.uniform(0.2, 2.0, n)
            var[::4] = rng.uniform(1e-5, 1e-4, var[::4].size)
            gamma = rng.uniform(0.5, 1.5, n) * np.sqrt(var)  # keeps the activations O(1)
            parts += [gamma.astype(np.float32).tobytes(),  # scales
                      rng.normal(0, 0.3, n).astype(np.float32).tobytes(),  # rolling mean
                      var.astype(np.float32).tobytes()]  # rolling variance
        fan_in = c * k * k
        parts.append(rng.normal(0, 1.5 / np.sqrt(fan_in), n * c * k * k).astype(np.float32).tobytes())
    weights.write_bytes(b"".join(parts))
    return cfg, weights


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_darknet(tmp_path_factory.mktemp("darknet"), "tiny", TINY_CFG, TINY_CONVS)


def rand_input(hw, seed=1):
    return np.random.default_rng(seed).random((1, 3, *hw), dtype=np.float32)


# ------------------------------------------------------------------------------------------------ synthetic


@pytest.mark.parametrize("version", [(0, 2, 0), (0, 1, 0)], ids=["seen64", "seen32"])
def test_synthetic_heads_equal_opencv(tmp_path, version):
    cfg, weights = write_darknet(tmp_path, "tiny", TINY_CFG, TINY_CONVS, seed=3, version=version)
    model = darknet_to_onnx(cfg, weights, input_size=TINY_HW, decode=False)
    assert [o.name for o in model.graph.output] == ["head_0", "head_1"]
    x = rand_input(TINY_HW)
    ours = session(model).run(None, {"images": x})
    ref = opencv_heads(cfg, weights, x)
    assert [o.shape for o in ours] == [(1, 21, 9, 11), (1, 21, 18, 22)]
    for got, want in zip(ours, ref):
        assert rel_err(got, want) <= 1e-4


def test_synthetic_odd_sizes_maxpool_padding(tmp_path):
    cfg, weights = write_darknet(tmp_path, "odd", ODD_CFG, ODD_CONVS, seed=5)
    model = darknet_to_onnx(cfg, weights, input_size=ODD_HW, decode=False)
    x = rand_input(ODD_HW, seed=2)
    (got,), (want,) = session(model).run(None, {"images": x}), opencv_heads(cfg, weights, x)
    assert got.shape == (1, 14, 6, 7)  # 21x27 -> 11x14 (2/2) -> 11x14 (3/1) -> 6x7 (3/2): Darknet's sizes
    assert rel_err(got, want) <= 1e-4


def test_bn_epsilon_is_the_one_opencv_uses(tiny):
    """Tiny variances make epsilon visible: Darknet's 1e-6 matches OpenCV, PyTorch's default 1e-5 would not."""
    cfg, weights = tiny
    model = darknet_to_onnx(cfg, weights, input_size=TINY_HW, decode=False)
    assert {a.f for n in model.graph.node if n.op_type == "BatchNormalization" for a in n.attribute
            if a.name == "epsilon"} == {np.float32(DARKNET_BN_EPS)}
    for node in model.graph.node:
        if node.op_type == "BatchNormalization":
            node.attribute[0].f = 1e-5
    x = rand_input(TINY_HW)
    wrong = session(model).run(None, {"images": x})
    assert max(rel_err(g, w) for g, w in zip(wrong, opencv_heads(cfg, weights, x))) > 1e-3


@pytest.mark.parametrize("opset", [11, 13, 17, 21])
@pytest.mark.parametrize("decode", [False, True])
def test_synthetic_checker_and_names(tiny, opset, decode):
    cfg, weights = tiny
    model = darknet_to_onnx(cfg, weights, input_size=TINY_HW, opset=opset, decode=decode)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == opset
    assert [i.name for i in model.graph.input] == ["images"]
    names = {n.name for n in model.graph.node}
    assert {"conv_0", "bn_0", "leaky_0", "maxpool_2", "relu_3", "shortcut_4", "maxpool_5", "upsample_11",
            "route_12"} <= names
    pool = next(n for n in model.graph.node if n.name == "maxpool_5")
    assert {a.name: list(a.ints) for a in pool.attribute}["pads"] == [0, 0, 1, 1]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["snnc.num_classes"] == "2" and "snnc.class_names" not in meta
    assert [h["name"] for h in json.loads(meta["snnc.yolo_heads"])] == ["head_0", "head_1"]


def decode_numpy(heads, anchors, classes, hw):
    """Darknet's box coding, independently: (N, 4) x1y1x2y2 pixels and (N, C) scores, (head, anchor, y, x)."""
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    boxes, scores = [], []
    for head, anc in zip(heads, anchors):
        a = len(anc)
        _, _, h, w = head.shape
        t = head.reshape(a, 5 + classes, h, w).astype(np.float64)
        gy, gx = np.mgrid[0:h, 0:w]
        cx = (sig(t[:, 0]) + gx) / w * hw[1]
        cy = (sig(t[:, 1]) + gy) / h * hw[0]
        bw = np.exp(t[:, 2]) * np.array(anc)[:, 0, None, None]
        bh = np.exp(t[:, 3]) * np.array(anc)[:, 1, None, None]
        boxes.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1).reshape(-1, 4))
        scores.append((sig(t[:, 4:5]) * sig(t[:, 5:])).transpose(0, 2, 3, 1).reshape(-1, classes))
    return np.concatenate(boxes)[None], np.concatenate(scores)[None]


def test_synthetic_decode(tiny):
    cfg, weights = tiny
    x = rand_input(TINY_HW)
    raw = session(darknet_to_onnx(cfg, weights, input_size=TINY_HW, decode=False)).run(None, {"images": x})
    model = darknet_to_onnx(cfg, weights, input_size=TINY_HW, decode=True)
    assert [o.name for o in model.graph.output] == ["boxes", "scores"]
    sess = session(model)
    n = 3 * (9 * 11 + 18 * 22)
    assert [tuple(d.dim_value for d in o.type.tensor_type.shape.dim) for o in model.graph.output] == \
        [(1, n, 4), (1, n, 2)]
    boxes, scores = sess.run(None, {"images": x})
    assert boxes.shape == (1, n, 4) and scores.shape == (1, n, 2)
    want_boxes, want_scores = decode_numpy(raw, [[[20, 18], [30, 26], [40, 34]], [[4, 5], [8, 9], [12, 16]]], 2,
                                           TINY_HW)
    assert rel_err(boxes, want_boxes) <= 1e-5
    assert np.abs(scores - want_scores).max() <= 1e-5
    # and OpenCV's own yolo layers (cx, cy, w, h relative to the input; rows (y, x, anchor); scores below its
    # threshold zeroed)
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setInput(x)
    off = 0
    for cv, (h, w) in zip(net.forward(["yolo_8", "yolo_15"]), ((9, 11), (18, 22))):
        b = boxes[0, off:off + 3 * h * w].reshape(3, h, w, 4).transpose(1, 2, 0, 3).reshape(-1, 4)
        s = scores[0, off:off + 3 * h * w].reshape(3, h, w, 2).transpose(1, 2, 0, 3).reshape(-1, 2)
        off += 3 * h * w
        size = np.array([TINY_HW[1], TINY_HW[0]], np.float32)
        assert np.abs((b[:, :2] + b[:, 2:]) / 2 / size - cv[:, :2]).max() <= 1e-5
        assert np.abs((b[:, 2:] - b[:, :2]) / size - cv[:, 2:4]).max() <= 1e-4 * max(1, np.abs(cv[:, 2:4]).max())
        nz = cv[:, 5:] > 0
        assert nz.any() and np.abs(s[nz] - cv[:, 5:][nz]).max() <= 1e-5


def yolov3_cfg(div: int = 16, size: int = 64, classes: int = 2) -> str:
    """YOLOv3's topology (Darknet-53 with 23 shortcuts, three heads, routes to absolute layers 61 and 36),
    every width divided by `div`."""

    def conv(f, s, k, bn=True, act="leaky"):
        return (f"[convolutional]\n{'batch_normalize=1' if bn else ''}\nfilters={f}\nsize={k}\nstride={s}\n"
                f"pad=1\nactivation={act}\n\n")

    anchors = "10,13, 16,30, 33,23, 30,61, 62,45, 59,119, 116,90, 156,198, 373,326"

    def head(f, mask):
        return ((conv(f // 2, 1, 1) + conv(f, 1, 3)) * 3 + conv(3 * (classes + 5), 1, 1, False, "linear")
                + f"[yolo]\nmask={mask}\nanchors={anchors}\nclasses={classes}\nnum=9\n\n")

    text = f"[net]\nwidth={size}\nheight={size}\nchannels=3\n\n" + conv(32 // div, 1, 3)
    for f, n in ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4)):
        text += conv(f // div, 2, 3) + (conv(f // div // 2, 1, 1) + conv(f // div, 1, 3)
                                        + "[shortcut]\nfrom=-3\nactivation=linear\n\n") * n
    text += head(1024 // div, "6,7,8") + "[route]\nlayers=-4\n\n" + conv(256 // div, 1, 1)
    text += "[upsample]\nstride=2\n\n[route]\nlayers=-1, 61\n\n" + head(512 // div, "3,4,5")
    text += "[route]\nlayers=-4\n\n" + conv(128 // div, 1, 1) + "[upsample]\nstride=2\n\n[route]\nlayers=-1, 36\n\n"
    return text + head(256 // div, "0,1,2")


def conv_specs(cfg: Path):
    """(input channels, filters, size, batch_normalize) per [convolutional], tracking route concatenations."""
    specs, out_c, c = [], [], 3
    for sec in parse_cfg(cfg)[1:]:
        o = sec.options
        if sec.kind == "convolutional":
            specs.append((c, int(o["filters"]), int(o["size"]), int(o.get("batch_normalize", 0))))
            c = int(o["filters"])
        elif sec.kind == "route":
            c = sum(out_c[j + sec.index if j < 0 else j] for j in map(int, o["layers"].split(",")))
        out_c.append(c)
    return specs


def test_yolov3_topology_equals_opencv(tmp_path):
    cfg = tmp_path / "y3.cfg"
    cfg.write_text(yolov3_cfg())
    cfg, weights = write_darknet(tmp_path, "y3", cfg.read_text(), conv_specs(cfg), seed=7)
    model = darknet_to_onnx(cfg, weights, 64, decode=False)
    assert sum(n.op_type == "Add" for n in model.graph.node) == 23
    x = rand_input((64, 64), seed=4)
    ours = session(model).run(None, {"images": x})
    assert [o.shape for o in ours] == [(1, 21, 2, 2), (1, 21, 4, 4), (1, 21, 8, 8)]
    for got, want in zip(ours, opencv_heads(cfg, weights, x)):
        assert rel_err(got, want) <= 1e-4


# ------------------------------------------------------------------------------------------------ bad input


def test_unknown_section(tmp_path, tiny):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(TINY_CFG.replace("# 2 -> 9x11\n[maxpool]", "[maxpoool]"))
    with pytest.raises(SnncError, match=r"bad\.cfg: layer 2 \[maxpoool\] \(line \d+\): unknown section"):
        darknet_to_onnx(cfg, tiny[1], TINY_HW)
    cfg.write_text(TINY_CFG.replace("# 2 -> 9x11\n[maxpool]", "[reorg]"))
    with pytest.raises(SnncError, match=r"bad\.cfg: layer 2 \[reorg\].*does not support"):
        darknet_to_onnx(cfg, tiny[1], TINY_HW)


def test_weights_too_short_or_too_long(tmp_path, tiny):
    cfg, weights = tiny
    data = weights.read_bytes()
    short, long = tmp_path / "short.weights", tmp_path / "long.weights"
    short.write_bytes(data[:-40])
    long.write_bytes(data + b"\0" * 8)
    with pytest.raises(SnncError, match=r"short\.weights: too short: layer 14 \[convolutional\]") as exc:
        darknet_to_onnx(cfg, short, TINY_HW)
    assert "\n" not in str(exc.value)
    with pytest.raises(SnncError, match=r"long\.weights: too long: 2 floats left"):
        darknet_to_onnx(cfg, long, TINY_HW)
    (tmp_path / "stub.weights").write_bytes(b"\0" * 6)
    with pytest.raises(SnncError, match=r"stub\.weights: too short for a Darknet weights header"):
        darknet_to_onnx(cfg, tmp_path / "stub.weights", TINY_HW)


def test_missing_files_and_bad_options(tmp_path, tiny):
    cfg, weights = tiny
    with pytest.raises(SnncError, match=r"nope\.cfg: no such cfg file"):
        darknet_to_onnx(tmp_path / "nope.cfg", weights)
    with pytest.raises(SnncError, match=r"nope\.weights: no such weights file"):
        darknet_to_onnx(cfg, tmp_path / "nope.weights")
    bad = tmp_path / "act.cfg"
    bad.write_text(TINY_CFG.replace("activation=relu", "activation=mish"))
    with pytest.raises(SnncError, match=r"act\.cfg: layer 3 \[convolutional\].*activation=mish"):
        darknet_to_onnx(bad, weights, TINY_HW)
    bad.write_text(TINY_CFG.replace("filters=21\nactivation=linear\n\n# 8", "filters=20\nactivation=linear\n\n# 8"))
    with pytest.raises(SnncError, match=r"layer 8 \[yolo\].*20 channels"):
        darknet_to_onnx(bad, weights, TINY_HW)
    with pytest.raises(SnncError, match=r"opset 9"):
        darknet_to_onnx(cfg, weights, TINY_HW, opset=9)
    assert [s.kind for s in parse_cfg(cfg)][:3] == ["net", "convolutional", "convolutional"]
    alias = tmp_path / "alias.cfg"  # Darknet's short names ([conv], [max]) and its whitespace rules
    alias.write_text(TINY_CFG.replace("# 1: stride-2 conv -> 18x22\n[convolutional]", "[conv]")
                     .replace("# 2 -> 9x11\n[maxpool]", "[max]").replace("filters=8\n", "filters = 8 \n"))
    a = darknet_to_onnx(alias, weights, TINY_HW, decode=False)
    b = darknet_to_onnx(cfg, weights, TINY_HW, decode=False)
    assert [n.op_type for n in a.graph.node] == [n.op_type for n in b.graph.node]


# ----------------------------------------------------------------------------------------- real yolov3-tiny

PHOTOS = ("astronaut", "coffee", "chelsea")


@pytest.fixture(scope="module")
def yolov3_tiny():
    cfg, weights = fetch_yolov3_tiny()
    assert md5sum(weights) == "3bcd6b390912c18924b46b26a9e7ff53"
    return cfg, weights


def test_yolov3_tiny_heads_equal_opencv(yolov3_tiny):
    cfg, weights = yolov3_tiny
    model = darknet_to_onnx(cfg, weights, 416, decode=False)
    onnx.checker.check_model(model, full_check=True)
    sess = session(model)
    x = np.concatenate([photo_blob(p, 416) for p in PHOTOS])
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setInput(x)
    refs = net.forward(["conv_15", "conv_22"])  # batched: OpenCV runs the 3 photos in one pass
    for k, name in enumerate(PHOTOS):
        ours = sess.run(None, {"images": x[k:k + 1]})
        assert [o.shape for o in ours] == [(1, 255, 13, 13), (1, 255, 26, 26)]
        for got, ref in zip(ours, refs):
            assert rel_err(got, ref[k:k + 1]) <= 1e-3, name


def test_yolov3_tiny_decoded_metadata(yolov3_tiny):
    cfg, weights = yolov3_tiny
    model = darknet_to_onnx(cfg, weights, (320, 416))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["snnc.class_names"]) == COCO_CLASSES and len(COCO_CLASSES) == 80
    boxes, scores = session(model).run(None, {"images": photo_blob("coffee", (320, 416))})
    assert boxes.shape == (1, 3 * (10 * 13 + 20 * 26), 4) and scores.shape == (1, boxes.shape[1], 80)
    best = int(np.argmax(scores[0].max(1)))  # the cup in the middle of skimage's coffee photo
    assert COCO_CLASSES[int(np.argmax(scores[0, best]))] == "cup" and scores[0, best].max() > 0.3
    x1, y1, x2, y2 = boxes[0, best]
    assert 100 < (x1 + x2) / 2 < 316 and 60 < (y1 + y2) / 2 < 260 and x2 - x1 > 100


def test_fetch_reuses_cache(yolov3_tiny, monkeypatch):
    import snnc.compiler.zoo as zoo

    monkeypatch.setattr(zoo, "_download_sdist", lambda dest: pytest.fail("downloaded despite a valid cache"))
    assert fetch_yolov3_tiny(yolov3_tiny[0].parent) == yolov3_tiny


# ------------------------------------------------------------------------------------------------ torch export

TORCH_SIZE = 128


@pytest.fixture(scope="module")
def te():
    return load_example("torch_export")


@pytest.fixture(scope="module")
def torch_models(te, yolov3_tiny):
    return {resize: te.build(*yolov3_tiny, resize=resize) for resize in ("scales", "sizes")}


@pytest.fixture(scope="module")
def photo_small():
    return photo_blob("coffee", TORCH_SIZE)


@pytest.mark.parametrize("opset,resize", [(11, "scales"), (13, "scales"), (17, "scales"), (21, "scales"),
                                          (13, "sizes")])
def test_torch_export(te, torch_models, photo_small, tmp_path, opset, resize):
    model = torch_models[resize]
    path = te.export(tmp_path / "m.onnx", opset, resize, model=model, size=TORCH_SIZE)
    m = onnx.load(str(path))
    assert m.opset_import[0].version == opset
    onnx.checker.check_model(m, full_check=True)
    nodes = list(m.graph.node)
    pad = next(n for n in nodes if n.op_type == "Pad")
    assert [n.op_type for n in nodes if pad.output[0] in n.input] == ["MaxPool"]  # an explicit Pad before the pool
    resize_node = next(n for n in nodes if n.op_type == "Resize")
    used = [i for i in resize_node.input[2:] if i]
    assert len(used) == 1 and list(resize_node.input).index(used[0]) == (2 if resize == "scales" else 3)
    heads = session(m).run(None, {"images": photo_small})
    want = te.run_torch(model, photo_small)
    assert [o.name for o in m.graph.output] == ["head_0", "head_1"]
    for got, ref in zip(heads, want):
        assert rel_err(got, ref) <= 1e-4


def test_torch_pad_semantics_vs_converter(te, torch_models, yolov3_tiny, photo_small):
    """Our converter = Darknet = the torch model with a replicate (-inf-equivalent) pad; the usual ZeroPad2d
    port differs at the heads by several percent (docs/frontends.md)."""
    ours = session(darknet_to_onnx(*yolov3_tiny, TORCH_SIZE, decode=False)).run(None, {"images": photo_small})
    for pad in ("replicate", "neginf"):
        same = te.run_torch(te.build(*yolov3_tiny, pad=pad), photo_small)
        assert max(rel_err(g, r) for g, r in zip(ours, same)) <= 1e-4, pad
    zero = te.run_torch(torch_models["scales"], photo_small)
    assert min(rel_err(g, r) for g, r in zip(ours, zero)) > 1e-2
