"""Darknet frontend: a `.cfg` + `.weights` pair (YOLOv3, YOLOv3-tiny) -> a standard ONNX model.

    model = darknet_to_onnx("yolov3-tiny.cfg", "yolov3-tiny.weights", input_size=416)

The graph takes `images` (1, 3, H, W), RGB in [0, 1], and mirrors Darknet layer by layer with readable names
(`conv_0`, `bn_0`, `leaky_0`, `maxpool_1`, `route_13`, `upsample_18`, ...; the number is the Darknet layer index).
The input of every [yolo] layer (the raw head, (1, A*(5+C), H/s, W/s)) is the tensor `head_k`, k counting the
[yolo] layers in file order. With `decode=False` the heads are the graph outputs; with `decode=True` they feed
a host decoding subgraph of standard ONNX ops with the outputs `boxes` (1, N, 4), x1,y1,x2,y2 in input pixels,
and `scores` (1, N, C) = objectness * class probability, N = sum over heads of A*H*W in (head, anchor, y, x)
order.

Semantics that matter for exactness:
- BatchNormalization uses epsilon `DARKNET_BN_EPS` (what OpenCV's Darknet importer uses; the reference for the
  tests).
- [maxpool] pads like Darknet: `padding` (default size-1) split as floor(padding/2) before, the rest after;
  padded cells never win (ONNX MaxPool pads are -inf). For yolov3-tiny's size=2 stride=1 pool that is pads
  [0, 0, 1, 1]. A PyTorch export with ZeroPad2d pads with 0 instead (docs/frontends.md).
- [upsample] is Resize nearest, asymmetric, floor (exact integer-factor replication).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from snnc.ir.errors import SnncError

log = logging.getLogger(__name__)

# Darknet's coco.names, in class-index order (the names the original yolov3-tiny was trained with).
COCO_CLASSES = [
    "person", "bicycle", "car", "motorbike", "aeroplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "sofa",
    "pottedplant", "bed", "diningtable", "toilet", "tvmonitor", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]

DARKNET_BN_EPS = 1e-6  # OpenCV's readNetFromDarknet (and pjreddie Darknet, up to where the eps is added)
LEAKY_ALPHA = 0.1
MIN_OPSET = 11  # Resize with coordinate_transformation_mode / nearest_mode
INPUT_NAME = "images"

# Section names Darknet knows that this reader does not convert (a clear "unsupported" instead of "unknown").
_DARKNET_OTHER = {
    "crop", "cost", "detection", "region", "local", "activation", "crnn", "gru", "lstm", "rnn", "conn",
    "connected", "reorg", "reorg3d", "avg", "avgpool", "dropout", "lrn", "normalization", "batchnorm", "soft",
    "softmax", "sam", "scale_channels", "gaussian_yolo", "contrastive", "implicit", "empty", "silence",
    "conv_lstm", "history", "deconvolutional", "deconv", "local_avgpool",
}
_ALIASES = {"conv": "convolutional", "max": "maxpool", "network": "net"}
_ACTIVATIONS = {"leaky": "LeakyRelu", "relu": "Relu", "logistic": "Sigmoid", "linear": None}

PathLike = Union[str, Path]


@dataclass
class Section:
    """One `[name]` block of a cfg file. `index` is the Darknet layer index ([net] is -1)."""

    kind: str
    index: int
    line: int
    options: dict = field(default_factory=dict)


@dataclass
class YoloHead:
    tensor: str  # the head tensor name, head_k
    layer: int  # Darknet index of the [yolo] layer
    anchors: list  # [[w, h], ...] in input pixels, the masked anchors
    classes: int
    shape: tuple  # (C, H, W) of the head
    scale_x_y: float = 1.0


# ----------------------------------------------------------------------------------------------------------- cfg


def parse_cfg(path: PathLike) -> list[Section]:
    """Read a Darknet cfg like Darknet does: whitespace removed everywhere, '#' and ';' start comments."""
    path = Path(path)
    if not path.is_file():
        raise SnncError(f"{path}: no such cfg file")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise SnncError(f"{path}: cannot read the cfg file ({exc.strerror})") from None
    sections: list[Section] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = "".join(raw.split())
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            if not line.endswith("]") or len(line) < 3:
                raise SnncError(f"{path}: line {lineno}: malformed section header {raw.strip()!r}")
            kind = line[1:-1].lower()
            kind = _ALIASES.get(kind, kind)
            index = len(sections) - 1 if sections else -1
            sections.append(Section(kind, index, lineno))
            continue
        if not sections:
            raise SnncError(f"{path}: line {lineno}: option {raw.strip()!r} before the first section")
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise SnncError(f"{path}: line {lineno}: expected key=value, got {raw.strip()!r}")
        sections[-1].options[key] = value
    if not sections or sections[0].kind != "net":
        raise SnncError(f"{path}: the first section must be [net]")
    for sec in sections[1:]:
        if sec.kind == "net":
            raise SnncError(f"{path}: layer {sec.index} [net] (line {sec.line}): [net] may only come first")
    return sections


class _Opts:
    """Typed option access with errors that name the file, layer and line."""

    def __init__(self, cfg: Path, sec: Section):
        self.cfg, self.sec = cfg, sec

    def where(self) -> str:
        s = self.sec
        label = "[net]" if s.kind == "net" else f"layer {s.index} [{s.kind}]"
        return f"{self.cfg}: {label} (line {s.line})"

    def error(self, msg: str) -> SnncError:
        return SnncError(f"{self.where()}: {msg}")

    def has(self, key: str) -> bool:
        return key in self.sec.options

    def text(self, key: str, default: str | None = None) -> str:
        if key not in self.sec.options:
            if default is None:
                raise self.error(f"missing option {key}=")
            return default
        return self.sec.options[key]

    def integer(self, key: str, default: int | None = None) -> int:
        if key not in self.sec.options:
            if default is None:
                raise self.error(f"missing option {key}=")
            return default
        try:
            return int(self.sec.options[key])
        except ValueError:
            raise self.error(f"{key}={self.sec.options[key]}: expected an integer") from None

    def number(self, key: str, default: float) -> float:
        if key not in self.sec.options:
            return default
        try:
            return float(self.sec.options[key])
        except ValueError:
            raise self.error(f"{key}={self.sec.options[key]}: expected a number") from None

    def integers(self, key: str, default: list | None = None) -> list:
        if key not in self.sec.options:
            if default is None:
                raise self.error(f"missing option {key}=")
            return list(default)
        try:
            return [int(v) for v in self.sec.options[key].split(",") if v != ""]
        except ValueError:
            raise self.error(f"{key}={self.sec.options[key]}: expected integers separated by commas") from None

    def numbers(self, key: str) -> list:
        try:
            return [float(v) for v in self.sec.options.get(key, "").split(",") if v != ""]
        except ValueError:
            raise self.error(f"{key}={self.sec.options[key]}: expected numbers separated by commas") from None


# ------------------------------------------------------------------------------------------------------- weights


class _Weights:
    """Sequential float32 reader over a Darknet .weights file (after its header)."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise SnncError(f"{self.path}: no such weights file")
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise SnncError(f"{self.path}: cannot read the weights file ({exc.strerror})") from None
        if len(data) < 12:
            raise SnncError(f"{self.path}: too short for a Darknet weights header ({len(data)} bytes)")
        major, minor, revision = (int(v) for v in np.frombuffer(data, "<i4", 3))
        seen_bytes = 8 if (major * 10 + minor) >= 2 and major < 1000 and minor < 1000 else 4
        head = 12 + seen_bytes
        if len(data) < head:
            raise SnncError(f"{self.path}: too short for a Darknet weights header ({len(data)} bytes)")
        self.version = (major, minor, revision)
        self.seen = int(np.frombuffer(data, "<i8" if seen_bytes == 8 else "<i4", 1, 12)[0])
        if (len(data) - head) % 4:
            raise SnncError(f"{self.path}: {len(data) - head} bytes after the header, not a whole number of floats")
        self.values = np.frombuffer(data, "<f4", offset=head)
        self.pos = 0

    def take(self, n: int, where: str, what: str) -> np.ndarray:
        left = self.values.size - self.pos
        if n > left:
            raise SnncError(f"{self.path}: too short: {where} needs {n} floats for its {what}, "
                            f"only {left} left (cfg and weights do not match)")
        out = self.values[self.pos:self.pos + n].astype(np.float32)
        self.pos += n
        return out

    def finish(self) -> None:
        left = self.values.size - self.pos
        if left:
            raise SnncError(f"{self.path}: too long: {left} floats left after the last layer "
                            f"(read {self.pos}; cfg and weights do not match)")


# --------------------------------------------------------------------------------------------------- the graph


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._const_names: set[str] = set()

    def const(self, name: str, value: np.ndarray) -> str:
        if name in self._const_names:
            raise AssertionError(f"duplicate initializer {name}")
        self._const_names.add(name)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: Sequence[str], name: str, output: str | None = None, **attrs) -> str:
        out = output or name
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=name, **attrs))
        return out


@dataclass
class _Out:
    tensor: str | None  # None: the output of a [yolo] layer (not referenceable here)
    c: int
    h: int
    w: int


def _size_hw(input_size) -> tuple[int, int]:
    if isinstance(input_size, (int, np.integer)):
        h = w = int(input_size)
    else:
        try:
            h, w = (int(v) for v in input_size)
        except (TypeError, ValueError):
            raise SnncError(f"input_size={input_size!r}: expected an int or (height, width)") from None
    if h <= 0 or w <= 0:
        raise SnncError(f"input_size={input_size!r}: must be positive")
    return h, w


def darknet_to_onnx(cfg: PathLike, weights: PathLike, input_size: int | tuple[int, int] = 416, opset: int = 13,
                    decode: bool = True) -> onnx.ModelProto:
    """Convert a Darknet cfg + weights into an ONNX model (see the module docstring for the graph's contract).

    input_size: an int (square) or (height, width); None takes [net] height/width.
    """
    cfg, weights = Path(cfg), Path(weights)
    max_opset = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= int(opset) <= max_opset:
        raise SnncError(f"opset {opset}: the Darknet reader writes opsets {MIN_OPSET}..{max_opset}")
    opset = int(opset)
    sections = parse_cfg(cfg)
    wf = _Weights(weights)
    net = _Opts(cfg, sections[0])
    if input_size is None:
        h, w = net.integer("height", 416), net.integer("width", 416)
    else:
        h, w = _size_hw(input_size)
    channels = net.integer("channels", 3)

    g = _Graph()
    outs: list[_Out] = []
    heads: list[YoloHead] = []
    prev = _Out(INPUT_NAME, channels, h, w)
    for sec in sections[1:]:
        opts = _Opts(cfg, sec)
        i = sec.index
        if sec.kind in _DARKNET_OTHER:
            raise opts.error(f"the Darknet reader does not support [{sec.kind}] layers "
                             "(supported: convolutional, maxpool, route, upsample, shortcut, yolo)")
        if sec.kind not in ("convolutional", "maxpool", "upsample", "route", "shortcut", "yolo"):
            raise opts.error(f"unknown section [{sec.kind}]")
        if prev.tensor is None and sec.kind != "route":
            raise opts.error("reads the output of a [yolo] layer; only [route] may follow [yolo]")
        if sec.kind == "convolutional":
            out = _conv(g, opts, prev, wf, i)
        elif sec.kind == "maxpool":
            out = _maxpool(g, opts, prev, i)
        elif sec.kind == "upsample":
            out = _upsample(g, opts, prev, i, opset)
        elif sec.kind == "route":
            out = _route(g, opts, outs, i)
        elif sec.kind == "shortcut":
            out = _shortcut(g, opts, prev, outs, i)
        elif sec.kind == "yolo":
            heads.append(_yolo(opts, prev, len(heads)))
            out = _Out(None, prev.c, prev.h, prev.w)
        if out.h <= 0 or out.w <= 0:
            raise opts.error(f"output would be {out.h}x{out.w} for input {h}x{w}; use a larger input_size")
        outs.append(out)
        prev = out
    wf.finish()
    if not heads:
        raise SnncError(f"{cfg}: no [yolo] layer; the Darknet reader converts YOLO detectors")

    _rename_heads(g, heads)
    if decode:
        outputs = _decode(g, heads, h, w)
    else:
        outputs = [helper.make_tensor_value_info(hd.tensor, TensorProto.FLOAT, [1, *hd.shape]) for hd in heads]

    graph = helper.make_graph(
        g.nodes, cfg.stem.replace("-", "_") or "darknet",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, channels, h, w])], outputs, g.inits)
    opset_ids = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opset_ids, producer_name="snnc.darknet",
                              doc_string=f"converted from {cfg.name} + {weights.name} by snnc's Darknet reader")
    model.ir_version = helper.find_min_ir_version_for(opset_ids)
    classes = heads[0].classes
    meta = {
        "snnc.source": "darknet",
        "snnc.darknet_cfg": cfg.name,
        "snnc.num_classes": str(classes),
        "snnc.input": json.dumps({"name": INPUT_NAME, "shape": [1, channels, h, w], "color": "RGB",
                                  "range": [0.0, 1.0]}),
        "snnc.yolo_heads": json.dumps([{"name": hd.tensor, "anchors": hd.anchors, "classes": hd.classes,
                                        "stride": [h / hd.shape[1], w / hd.shape[2]], "scale_x_y": hd.scale_x_y}
                                       for hd in heads]),
    }
    if classes == len(COCO_CLASSES):
        meta["snnc.class_names"] = json.dumps(COCO_CLASSES)
    helper.set_model_props(model, meta)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:  # a bug here, or a cfg whose shapes do not fit together
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise SnncError(f"{cfg}: the converted graph is not valid ONNX: {first}") from None
    log.info("%s: %d layers, %d heads, %dx%d input, opset %d, weights v%d.%d.%d (seen %d)", cfg.name,
             len(sections) - 1, len(heads), h, w, opset, *wf.version, wf.seen)
    return model


# -------------------------------------------------------------------------------------------------------- layers


def _activation(g: _Graph, opts: _Opts, x: str, i: int, default: str = "linear") -> str:
    act = opts.text("activation", default)
    if act not in _ACTIVATIONS:
        raise opts.error(f"activation={act} is not supported (supported: {', '.join(_ACTIVATIONS)})")
    op = _ACTIVATIONS[act]
    if op is None:
        return x
    attrs = {"alpha": LEAKY_ALPHA} if op == "LeakyRelu" else {}
    return g.node(op, [x], f"{act}_{i}", **attrs)


def _conv(g: _Graph, opts: _Opts, prev: _Out, wf: _Weights, i: int) -> _Out:
    n = opts.integer("filters", 1)
    k = opts.integer("size", 1)
    stride = opts.integer("stride", 1)
    sy, sx = opts.integer("stride_y", stride), opts.integer("stride_x", stride)
    pad = opts.integer("padding", 0)
    if opts.integer("pad", 0):
        pad = k // 2
    groups = opts.integer("groups", 1)
    bn = opts.integer("batch_normalize", 0)
    if opts.integer("dilation", 1) != 1:
        raise opts.error("dilation != 1 is not supported")
    if opts.integer("binary", 0) or opts.integer("xnor", 0):
        raise opts.error("binary/xnor convolutions are not supported")
    if n <= 0 or k <= 0 or sy <= 0 or sx <= 0 or groups <= 0 or pad < 0:
        raise opts.error("filters, size, stride and groups must be positive, padding >= 0")
    if prev.c % groups or n % groups:
        raise opts.error(f"groups={groups} does not divide the {prev.c} input channels and {n} filters")
    where = f"layer {i} [convolutional] of {opts.cfg.name}"
    bias = wf.take(n, where, "biases")
    if bn:
        scale = wf.take(n, where, "BN scales")
        mean = wf.take(n, where, "BN rolling means")
        var = wf.take(n, where, "BN rolling variances")
    kernel = wf.take(n * (prev.c // groups) * k * k, where, "weights").reshape(n, prev.c // groups, k, k)
    name = f"conv_{i}"
    inputs = [prev.tensor, g.const(f"{name}.weight", kernel)]
    if not bn:
        inputs.append(g.const(f"{name}.bias", bias))
    x = g.node("Conv", inputs, name, kernel_shape=[k, k], strides=[sy, sx], pads=[pad, pad, pad, pad],
               dilations=[1, 1], group=groups)
    if bn:
        x = g.node("BatchNormalization",
                   [x, g.const(f"bn_{i}.scale", scale), g.const(f"bn_{i}.bias", bias),
                    g.const(f"bn_{i}.mean", mean), g.const(f"bn_{i}.var", var)], f"bn_{i}", epsilon=DARKNET_BN_EPS)
    x = _activation(g, opts, x, i)
    return _Out(x, n, (prev.h + 2 * pad - k) // sy + 1, (prev.w + 2 * pad - k) // sx + 1)


def _maxpool(g: _Graph, opts: _Opts, prev: _Out, i: int) -> _Out:
    stride = opts.integer("stride", 1)
    sy, sx = opts.integer("stride_y", stride), opts.integer("stride_x", stride)
    k = opts.integer("size", stride)
    padding = opts.integer("padding", k - 1)
    if opts.integer("maxpool_depth", 0) or opts.has("out_channels"):
        raise opts.error("maxpool_depth / out_channels are not supported")
    if k <= 0 or sy <= 0 or sx <= 0 or padding < 0:
        raise opts.error("size and stride must be positive, padding >= 0")
    begin, end = padding // 2, padding - padding // 2
    if end >= k:
        raise opts.error(f"padding={padding} with size={k}: ONNX MaxPool needs each pad smaller than the kernel")
    # Darknet starts the windows at -padding/2 and skips cells outside the image, so the output is
    # (size + padding - k) / stride + 1, and padded cells never win: exactly ONNX MaxPool's -inf pads.
    x = g.node("MaxPool", [prev.tensor], f"maxpool_{i}", kernel_shape=[k, k], strides=[sy, sx],
               pads=[begin, begin, end, end])
    return _Out(x, prev.c, (prev.h + padding - k) // sy + 1, (prev.w + padding - k) // sx + 1)


def _upsample(g: _Graph, opts: _Opts, prev: _Out, i: int, opset: int) -> _Out:
    s = opts.integer("stride", 2)
    scale = opts.number("scale", 1.0)
    if s <= 0:
        raise opts.error(f"stride={s}: only upsampling (a positive stride) is supported")
    name = f"upsample_{i}"
    roi = "" if opset >= 13 else g.const(f"{name}.roi", np.zeros(0, np.float32))
    scales = g.const(f"{name}.scales", np.array([1, 1, s, s], np.float32))
    x = g.node("Resize", [prev.tensor, roi, scales], name, mode="nearest",
               coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    if scale != 1.0:
        x = g.node("Mul", [x, g.const(f"{name}.scale", np.array(scale, np.float32))], f"{name}_scale")
    return _Out(x, prev.c, prev.h * s, prev.w * s)


def _ref(opts: _Opts, outs: list, i: int, idx: int, what: str) -> _Out:
    j = idx + i if idx < 0 else idx
    if not 0 <= j < i:
        raise opts.error(f"{what}={idx} refers to layer {j}, not an earlier layer")
    if outs[j].tensor is None:
        raise opts.error(f"{what}={idx} refers to layer {j}, a [yolo] layer; this is not supported")
    return outs[j]


def _route(g: _Graph, opts: _Opts, outs: list, i: int) -> _Out:
    srcs = [_ref(opts, outs, i, idx, "layers") for idx in opts.integers("layers")]
    if not srcs:
        raise opts.error("layers= is empty")
    if any((s.h, s.w) != (srcs[0].h, srcs[0].w) for s in srcs):
        raise opts.error("layers= of different sizes: " + ", ".join(f"{s.h}x{s.w}" for s in srcs))
    groups, group_id = opts.integer("groups", 1), opts.integer("group_id", 0)
    if len(srcs) == 1:
        out = srcs[0]
    else:
        x = g.node("Concat", [s.tensor for s in srcs], f"route_{i}", axis=1)
        out = _Out(x, sum(s.c for s in srcs), srcs[0].h, srcs[0].w)
    if groups != 1:
        if groups <= 0 or out.c % groups or not 0 <= group_id < groups:
            raise opts.error(f"groups={groups} group_id={group_id} do not split {out.c} channels")
        part = out.c // groups
        name = f"route_{i}_group"
        x = g.node("Slice", [out.tensor, g.const(f"{name}.starts", np.array([group_id * part], np.int64)),
                             g.const(f"{name}.ends", np.array([(group_id + 1) * part], np.int64)),
                             g.const(f"{name}.axes", np.array([1], np.int64))], name)
        out = _Out(x, part, out.h, out.w)
    return out


def _shortcut(g: _Graph, opts: _Opts, prev: _Out, outs: list, i: int) -> _Out:
    if opts.text("weights_type", "none") != "none":
        raise opts.error("weighted shortcuts (weights_type) are not supported")
    x = prev.tensor
    for n, idx in enumerate(opts.integers("from")):
        src = _ref(opts, outs, i, idx, "from")
        if (src.c, src.h, src.w) != (prev.c, prev.h, prev.w):
            raise opts.error(f"from={idx}: shape {src.c}x{src.h}x{src.w} differs from the previous layer's "
                             f"{prev.c}x{prev.h}x{prev.w}; only same-shape shortcuts are supported")
        x = g.node("Add", [x, src.tensor], f"shortcut_{i}" if n == 0 else f"shortcut_{i}_{n}")
    if x == prev.tensor:
        raise opts.error("from= is empty")
    return _Out(_activation(g, opts, x, i), prev.c, prev.h, prev.w)


def _yolo(opts: _Opts, prev: _Out, k: int) -> YoloHead:
    classes = opts.integer("classes", 20)
    anchors = opts.numbers("anchors")
    if len(anchors) % 2:
        raise opts.error("anchors= needs an even number of values (w,h pairs)")
    pairs = [anchors[j:j + 2] for j in range(0, len(anchors), 2)]
    mask = opts.integers("mask", list(range(opts.integer("num", len(pairs)))))
    if any(not 0 <= m < len(pairs) for m in mask):
        raise opts.error(f"mask={mask} refers to anchors beyond the {len(pairs)} given")
    if opts.integer("new_coords", 0):
        raise opts.error("new_coords=1 (scaled-YOLOv4 box coding) is not supported")
    if prev.tensor is None or prev.tensor == INPUT_NAME:
        raise opts.error("needs a convolution before it")
    expected = len(mask) * (classes + 5)
    if prev.c != expected:
        raise opts.error(f"the layer before has {prev.c} channels; {len(mask)} anchors x ({classes} classes + 5) "
                         f"= {expected} expected")
    return YoloHead(prev.tensor, opts.sec.index, [pairs[m] for m in mask], classes, (prev.c, prev.h, prev.w),
                    opts.number("scale_x_y", 1.0))


def _rename_heads(g: _Graph, heads: list[YoloHead]) -> None:
    rename = {}
    for k, hd in enumerate(heads):
        if hd.tensor in rename:
            raise SnncError(f"[yolo] layers {heads[k - 1].layer} and {hd.layer} read the same tensor")
        rename[hd.tensor] = f"head_{k}"
        hd.tensor = f"head_{k}"
    for node in g.nodes:
        for lst in (node.input, node.output):
            for j, name in enumerate(lst):
                if name in rename:
                    lst[j] = rename[name]


# -------------------------------------------------------------------------------------------------- host decode


def _decode(g: _Graph, heads: list[YoloHead], in_h: int, in_w: int) -> list[onnx.ValueInfoProto]:
    """Raw heads -> boxes (1, N, 4) x1y1x2y2 in input pixels and scores (1, N, C), Darknet's box coding."""
    classes = heads[0].classes
    if any(hd.classes != classes for hd in heads):
        raise SnncError("[yolo] layers with different class counts cannot share one scores output; "
                        "use decode=False")
    boxes, scores = [], []
    for k, hd in enumerate(heads):
        p = f"decode_{k}"
        a, (_, h, w) = len(hd.anchors), hd.shape
        no = classes + 5
        n = a * h * w

        def const(name, value):
            return g.const(f"{p}.{name}", value)

        x = g.node("Reshape", [hd.tensor, const("shape0", np.array([1, a, no, h * w], np.int64))], f"{p}_reshape0")
        x = g.node("Transpose", [x], f"{p}_transpose", perm=[0, 1, 3, 2])
        x = g.node("Reshape", [x, const("shape1", np.array([1, n, no], np.int64))], f"{p}_reshape1")

        def part(name, lo, hi):
            return g.node("Slice", [x, const(f"{name}.starts", np.array([lo], np.int64)),
                                    const(f"{name}.ends", np.array([hi], np.int64)),
                                    const(f"{name}.axes", np.array([2], np.int64))], f"{p}_{name}")

        txy, twh, tobj, tcls = part("txy", 0, 2), part("twh", 2, 4), part("tobj", 4, 5), part("tcls", 5, no)
        gy, gx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
        grid = np.stack([gx.ravel(), gy.ravel()], -1)  # (h*w, 2) as (x, y)
        grid = np.broadcast_to(grid, (a, h * w, 2)).reshape(1, n, 2)
        anchors = np.repeat(np.asarray(hd.anchors, np.float32), h * w, axis=0).reshape(1, n, 2)
        stride = np.array([in_w / w, in_h / h], np.float32)

        xy = g.node("Sigmoid", [txy], f"{p}_sigmoid_xy")
        if hd.scale_x_y != 1.0:
            xy = g.node("Mul", [xy, const("scale_x_y", np.array(hd.scale_x_y, np.float32))], f"{p}_scale_xy")
            xy = g.node("Add", [xy, const("shift_x_y", np.array(-(hd.scale_x_y - 1) / 2, np.float32))],
                        f"{p}_shift_xy")
        xy = g.node("Add", [xy, const("grid", grid)], f"{p}_grid")
        xy = g.node("Mul", [xy, const("stride", stride)], f"{p}_xy")
        wh = g.node("Exp", [twh], f"{p}_exp_wh")
        wh = g.node("Mul", [wh, const("anchors", anchors)], f"{p}_wh")
        half = g.node("Mul", [wh, const("half", np.array(0.5, np.float32))], f"{p}_half_wh")
        x1y1 = g.node("Sub", [xy, half], f"{p}_x1y1")
        x2y2 = g.node("Add", [xy, half], f"{p}_x2y2")
        boxes.append(g.node("Concat", [x1y1, x2y2], f"{p}_boxes", axis=2))
        obj = g.node("Sigmoid", [tobj], f"{p}_objectness")
        cls = g.node("Sigmoid", [tcls], f"{p}_class_prob")
        scores.append(g.node("Mul", [obj, cls], f"{p}_scores"))
    total = sum(len(hd.anchors) * hd.shape[1] * hd.shape[2] for hd in heads)
    g.node("Concat", boxes, "boxes", axis=1)
    g.node("Concat", scores, "scores", axis=1)
    return [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, total, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, total, classes])]
