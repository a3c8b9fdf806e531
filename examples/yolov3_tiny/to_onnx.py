"""Fetch the original Darknet yolov3-tiny (COCO) and convert it to ONNX with snnc's Darknet reader.

    python examples/yolov3_tiny/to_onnx.py                       # -> yolov3-tiny.onnx, 416x416, boxes + scores
    python examples/yolov3_tiny/to_onnx.py --raw-heads -o heads.onnx --size 320 --opset 17

The model takes `images` (1, 3, H, W), RGB in [0, 1]. Default outputs: `boxes` (1, N, 4) x1,y1,x2,y2 in input
pixels and `scores` (1, N, 80); with --raw-heads the outputs are the raw heads `head_0`, `head_1`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import onnx

from snnc.compiler.darknet import darknet_to_onnx
from snnc.ir.errors import SnncError
from snnc.compiler.zoo import fetch_yolov3_tiny


def size_arg(text: str):
    parts = [int(p) for p in text.replace("x", ",").split(",")]
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return tuple(parts)
    raise argparse.ArgumentTypeError(f"{text!r}: expected N or H,W")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Darknet yolov3-tiny -> ONNX")
    ap.add_argument("-o", "--output", type=Path, default=Path("yolov3-tiny.onnx"))
    ap.add_argument("--size", type=size_arg, default=416, help="input size: N (square) or H,W; multiples of 32")
    ap.add_argument("--opset", type=int, default=13)
    ap.add_argument("--raw-heads", action="store_true", help="outputs are the raw heads (no box decoding)")
    ap.add_argument("--cache", type=Path, default=None, help="download cache (default $SNNC_CACHE or ~/.cache/snnc)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg, weights = fetch_yolov3_tiny(args.cache)
        model = darknet_to_onnx(cfg, weights, input_size=args.size, opset=args.opset, decode=not args.raw_heads)
    except SnncError as exc:
        print(f"to_onnx: error: {exc}", file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(args.output))
    outs = ", ".join(f"{o.name} {[d.dim_value for d in o.type.tensor_type.shape.dim]}" for o in model.graph.output)
    print(f"wrote {args.output} ({len(model.graph.node)} nodes, opset {args.opset}): {outs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
