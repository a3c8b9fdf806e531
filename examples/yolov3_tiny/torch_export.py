"""yolov3-tiny as a PyTorch module built from the Darknet cfg + weights, and its ONNX export.

This is the model the way people usually write it in PyTorch, so the compiler sees what such exports look like:
the stride-1 max-pool is `nn.ZeroPad2d((0, 1, 0, 1))` + `nn.MaxPool2d(2, 1)` (zero padding, where Darknet pads
with -inf: the heads differ by a few percent, docs/frontends.md), and the upsample is `nn.Upsample(scale_factor=2)`
(ONNX Resize with scales) or `F.interpolate(size=...)` (Resize with sizes).

    python examples/yolov3_tiny/torch_export.py -o yolov3-tiny-torch.onnx --opset 17 --resize sizes

The graph has the input `images` (1, 3, H, W), RGB in [0, 1], and the raw heads `head_0` (1, 255, H/32, W/32) and
`head_1` (1, 255, H/16, W/16) as outputs. torch is imported only here.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from snnc.compiler.darknet import DARKNET_BN_EPS, LEAKY_ALPHA, _Opts, _Weights, parse_cfg
from snnc.ir.errors import SnncError
from snnc.compiler.zoo import fetch_yolov3_tiny

log = logging.getLogger(__name__)

# The TorchScript exporter (dynamo=False) of torch 2.13 writes opsets up to 20; above that it only warns and
# stamps the requested number on an opset-20 graph, so we export at 20 and let onnx's version converter step up.
TORCHSCRIPT_MAX_OPSET = 20
PADS = ("zero", "replicate", "neginf")


class Upsample2x(nn.Module):
    """F.interpolate with an explicit output size (exports as Resize with `sizes`)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=(x.shape[2] * self.stride, x.shape[3] * self.stride), mode="nearest")


def _pad(kind: str, pads: tuple[int, int, int, int]) -> nn.Module:
    if kind == "zero":
        return nn.ZeroPad2d(pads)  # what PyTorch ports of yolov3-tiny write
    if kind == "replicate":
        return nn.ReplicationPad2d(pads)  # max over a replicated edge = Darknet's -inf padding
    if kind == "neginf":
        return nn.ConstantPad2d(pads, float("-inf"))
    raise ValueError(f"pad={kind!r}: expected one of {PADS}")


class DarknetTorch(nn.Module):
    """A Darknet YOLO cfg (conv/maxpool/upsample/route/shortcut/yolo) as nn.Modules, weights loaded.

    pad: how the stride-1 max-pool pads ("zero" as usually written, "replicate"/"neginf" = Darknet semantics).
    resize: "scales" (nn.Upsample(scale_factor)) or "sizes" (F.interpolate(size=...)).
    bn_eps: BatchNorm2d eps; Darknet's (the same as snnc's reader) by default.
    """

    def __init__(self, cfg: str | Path, weights: str | Path, pad: str = "zero", resize: str = "scales",
                 bn_eps: float = DARKNET_BN_EPS):
        super().__init__()
        if resize not in ("scales", "sizes"):
            raise ValueError(f"resize={resize!r}: expected 'scales' or 'sizes'")
        sections = parse_cfg(cfg)
        wf = _Weights(weights)
        channels = _Opts(Path(cfg), sections[0]).integer("channels", 3)
        self.layers = nn.ModuleList()
        self.kinds: list[str] = []
        self.refs: list[list[int]] = []  # route/shortcut sources (absolute layer indices)
        self.head_layers: list[int] = []
        out_c: list[int] = []
        c = channels
        for sec in sections[1:]:
            opts, i, kind = _Opts(Path(cfg), sec), sec.index, sec.kind
            refs: list[int] = []
            if kind == "convolutional":
                n, k = opts.integer("filters"), opts.integer("size", 1)
                s, bn = opts.integer("stride", 1), opts.integer("batch_normalize", 0)
                p = k // 2 if opts.integer("pad", 0) else opts.integer("padding", 0)
                act = opts.text("activation", "linear")
                block = nn.Sequential()
                conv = nn.Conv2d(c, n, k, s, p, bias=not bn)
                block.add_module("conv", conv)
                where = f"layer {i} of {Path(cfg).name}"
                bias = wf.take(n, where, "biases")
                if bn:
                    norm = nn.BatchNorm2d(n, eps=bn_eps)
                    norm.bias.data = torch.from_numpy(bias.copy())
                    norm.weight.data = torch.from_numpy(wf.take(n, where, "scales").copy())
                    norm.running_mean.data = torch.from_numpy(wf.take(n, where, "means").copy())
                    norm.running_var.data = torch.from_numpy(wf.take(n, where, "variances").copy())
                    block.add_module("bn", norm)
                else:
                    conv.bias.data = torch.from_numpy(bias.copy())
                conv.weight.data = torch.from_numpy(wf.take(n * c * k * k, where, "weights").reshape(n, c, k, k).copy())
                if act == "leaky":
                    block.add_module("act", nn.LeakyReLU(LEAKY_ALPHA))
                elif act == "relu":
                    block.add_module("act", nn.ReLU())
                elif act != "linear":
                    raise opts.error(f"activation={act} not supported by this example")
                c = n
            elif kind == "maxpool":
                s = opts.integer("stride", 1)
                k = opts.integer("size", s)
                if k == 2 and s == 1:
                    block = nn.Sequential(_pad(pad, (0, 1, 0, 1)), nn.MaxPool2d(2, 1))
                elif k == s:
                    block = nn.MaxPool2d(k, s)
                else:
                    raise opts.error(f"maxpool size={k} stride={s} not supported by this example")
            elif kind == "upsample":
                s = opts.integer("stride", 2)
                block = nn.Upsample(scale_factor=s, mode="nearest") if resize == "scales" else Upsample2x(s)
            elif kind in ("route", "shortcut"):
                key = "layers" if kind == "route" else "from"
                refs = [j + i if j < 0 else j for j in opts.integers(key)]
                if kind == "shortcut":
                    refs = [i - 1] + refs
                c = sum(out_c[j] for j in refs) if kind == "route" else c
                if kind == "shortcut" and opts.text("activation", "linear") != "linear":
                    raise opts.error("only linear shortcuts in this example")
                block = nn.Identity()
            elif kind == "yolo":
                self.head_layers.append(i - 1)
                block = nn.Identity()
            else:
                raise opts.error(f"[{kind}] not supported by this example")
            self.layers.append(block)
            self.kinds.append(kind)
            self.refs.append(refs)
            out_c.append(c)
        wf.finish()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs: list[torch.Tensor] = []
        for layer, kind, refs in zip(self.layers, self.kinds, self.refs):
            if kind == "route":
                x = outs[refs[0]] if len(refs) == 1 else torch.cat([outs[j] for j in refs], 1)
            elif kind == "shortcut":
                x = sum(outs[j] for j in refs[1:]) + outs[refs[0]]
            elif kind != "yolo":
                x = layer(x)
            outs.append(x)
        return tuple(outs[j] for j in self.head_layers)


def build(cfg: str | Path | None = None, weights: str | Path | None = None, pad: str = "zero",
          resize: str = "scales", bn_eps: float = DARKNET_BN_EPS) -> DarknetTorch:
    """The module in eval mode; cfg/weights default to the fetched original yolov3-tiny."""
    if cfg is None or weights is None:
        cfg, weights = fetch_yolov3_tiny()
    return DarknetTorch(cfg, weights, pad=pad, resize=resize, bn_eps=bn_eps).eval()


def export(path: str | Path, opset: int = 13, resize: str = "scales", *, pad: str = "zero", size: int = 416,
           model: DarknetTorch | None = None) -> Path:
    """Export with torch.onnx.export(dynamo=False) (the TorchScript exporter); raw heads as outputs.

    resize: "scales" or "sizes" (ignored when `model` is given: the model's own upsample is exported).
    Opsets above 20 (the TorchScript exporter's maximum) are exported at 20 and converted with onnx.
    """
    path = Path(path)
    model = model if model is not None else build(pad=pad, resize=resize)
    model.eval()
    n_heads = len(model.head_layers)
    x = torch.zeros(1, 3, size, size)
    torch_opset = min(int(opset), TORCHSCRIPT_MAX_OPSET)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*Constant folding.*")
        torch.onnx.export(model, (x,), str(path), opset_version=torch_opset, dynamo=False,
                          input_names=["images"], output_names=[f"head_{k}" for k in range(n_heads)],
                          do_constant_folding=True)
    if torch_opset != opset:
        converted = onnx.version_converter.convert_version(onnx.load(str(path)), int(opset))
        converted.ir_version = max(converted.ir_version, onnx.helper.find_min_ir_version_for(converted.opset_import))
        onnx.save(converted, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    log.info("wrote %s (opset %d, resize %s, pad %s)", path, opset, resize, pad)
    return path


def run_torch(model: DarknetTorch, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.numpy() for t in model(torch.from_numpy(np.ascontiguousarray(x, np.float32)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default="yolov3-tiny-torch.onnx")
    ap.add_argument("--opset", type=int, default=13)
    ap.add_argument("--resize", choices=("scales", "sizes"), default="scales")
    ap.add_argument("--pad", choices=PADS, default="zero", help="stride-1 max-pool padding (zero = the usual port)")
    ap.add_argument("--size", type=int, default=416)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = export(args.output, args.opset, args.resize, pad=args.pad, size=args.size)
    except SnncError as exc:
        print(f"error: {exc}")
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
