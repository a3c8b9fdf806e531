"""The `snnc` command line: a thin layer over the Python API. User mistakes exit 2 with one line."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from snnc.ir.errors import SnncError

log = logging.getLogger("snnc")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def compile_options_from(args: argparse.Namespace):
    """The CompileOptions the command line asks for (its defaults are CompileOptions' own)."""
    from snnc.ir.options import V_INIT, compile_options

    return compile_options(percentile=args.percentile, norm=args.norm, leaky=args.leaky, neuron=args.neuron,
                           maxpool=args.maxpool, v_init=V_INIT[args.v_init], target_T=args.target_T,
                           passes=_csv(args.passes) if args.passes else None,
                           skip=_csv(args.skip) if args.skip else ())


def cmd_compile(args: argparse.Namespace) -> int:
    from snnc.apps.outputs import check_output, write_output
    from snnc.compiler.api import compile_model
    from snnc.compiler.frontend import parse_shape
    from snnc.compiler.heads import head_spec

    if args.backend == "c":
        args.emit = "c"
    check_output(args.output, args.emit)  # before any work
    head = head_spec(args.head, args.anchors, args.darknet_cfg, args.names)
    result = compile_model(
        args.model, compile_options_from(args),
        input_shape=parse_shape(args.input_shape) if args.input_shape else None, calib_dir=args.calib,
        calib_random=args.calib_random, progress=not args.quiet, include_ann=not args.no_ann, head=head)
    out = write_output(result, args.output, args.emit, embed_ann=args.embed_ann)
    net = result.network
    print(f"wrote {out} ({args.emit}): {len(net.layers)} layers, {len(net.neuron_layers)} spiking populations, "
          f"passes {', '.join(net.meta['passes'])}")
    clip = result.stats.get("clipping_error")
    if clip:
        print("clipping error (rate-limit ANN vs ANN on calibration data, max |diff| / max |ANN|): " +
              ", ".join(f"{k} {v:.4f}" for k, v in clip.items()))
    if net.meta.get("cost"):
        from snnc.compiler.cost import format_cost

        print(format_cost(net.meta["cost"]))
    return 0


def cmd_passes(args: argparse.Namespace) -> int:
    from snnc.compiler.pipeline import DEFAULT_PIPELINE
    from snnc.compiler.registry import registered_passes

    passes = registered_passes()
    order = list(DEFAULT_PIPELINE) + sorted(set(passes) - set(DEFAULT_PIPELINE))
    width = max(len(n) for n in order)
    for name in order:
        p = passes[name]
        flag = "exact" if p.exact else "approximate"
        default = "default" if name in DEFAULT_PIPELINE else "       "
        print(f"{name.ljust(width)}  {flag:<11}  {default}  {p.summary}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from snnc.ir import lavafile
    from snnc.ir.options import MAX_WEIGHT_BITS
    from snnc.compiler.inspect import format_table

    if not 2 <= args.weight_bits <= MAX_WEIGHT_BITS:
        raise SnncError(f"--weight-bits {args.weight_bits}: expected an integer from 2 to {MAX_WEIGHT_BITS}")
    from snnc.compiler.cost import cost_report, format_cost, format_dominant

    net = lavafile.load(args.file)
    print(format_table(net))
    print()
    print(format_cost(cost_report(net)))
    if args.target == "loihi2":
        from snnc.compiler.loihi import fit_report

        print()
        print(fit_report(net, weight_bits=args.weight_bits))
        print()
        print(format_dominant(net))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from snnc.ir import __version__
    from snnc.ir.options import LEAKY, MAXPOOLS, NEURONS, NORMS, V_INIT, CompileOptions

    d = CompileOptions()

    parser = argparse.ArgumentParser(prog="snnc", description="Compile YOLO detectors (ONNX) to spiking networks.")
    parser.add_argument("--version", action="version", version=f"snnc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step (passes, calibration)")
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compile", help="ONNX model -> spiking network (.lava, spiking ONNX, C)")
    c.add_argument("model", help="ONNX file of the trained detector")
    c.add_argument("-o", "--output", required=True, help="output file (.lava / .onnx) or folder (--backend c)")
    c.add_argument("--emit", choices=["lava", "onnx", "ratelimit", "c", "nir"], default="lava",
                   help="lava: the .lava artifact; onnx: spiking ONNX (snnc domain); ratelimit: the rate-limit ANN; "
                        "nir: NIR graph (docs/nir.md)")
    c.add_argument("--backend", choices=["c"], help="c: write C99 sources and a Makefile into the output folder")
    c.add_argument("--calib", metavar="DIR", help="folder of jpg/png calibration images (letterboxed)")
    c.add_argument("--calib-random", type=int, metavar="N", help="calibrate on N random inputs (not recommended)")
    c.add_argument("--input-shape", metavar="N,C,H,W", help="fix a dynamic input shape, e.g. 1,3,416,416")
    c.add_argument("--percentile", type=float, default=d.percentile,
                   help="activation percentile mapped to threshold (default %(default)s)")
    c.add_argument("--norm", choices=NORMS, default=d.norm,
                   help="channel- or layer-wise normalization, or auto: chosen per layer (default %(default)s)")
    c.add_argument("--passes", help="comma-separated passes to run (default: the whole pipeline)")
    c.add_argument("--skip", help="comma-separated passes to leave out of the pipeline")
    c.add_argument("--maxpool", choices=MAXPOOLS, default=d.maxpool,
                   help="max-pool as a routing layer over spike counts (count, default), a tree of IF neurons "
                        "(exact) or a window mean (approximate)")
    c.add_argument("--neuron", choices=NEURONS, default=d.neuron,
                   help="IF neurons that take back excess spikes with -1 spikes (memory, default) or plain IF")
    c.add_argument("--leaky", choices=LEAKY, default=d.leaky,
                   help="LeakyReLU as one signed memory neuron with its own negative threshold and graded -1 spikes "
                        "(graded, default), two IF neurons (split), one signed IBT neuron (ibt, Spiking-YOLO's) or "
                        "one signed memory neuron (signed)")
    c.add_argument("--v-init", choices=list(V_INIT), default={v: k for k, v in V_INIT.items()}[d.v_init],
                   help="initial membrane potential: 0 or theta/2 (default %(default)s)")
    c.add_argument("--target-T", type=int, metavar="T",
                   help="calibrate every layer so the SNN at T steps matches the rate-limit ANN (calibrate_to_T)")
    ann = c.add_mutually_exclusive_group()
    ann.add_argument("--no-ann", action="store_true", help="keep no original ANN in the .lava file (then `snnc run --ann` "
                     "and `snnc eval`, which compare against it, refuse the file)")
    ann.add_argument("--embed-ann", action="store_true", help="embed the original ANN whole (by default its graph is "
                     "embedded and its weights are read back from the source ONNX when the .lava file is loaded)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    c.add_argument("--head", choices=["yolo", "yolov5", "yolov8-output", "yolov5-output"],
                   help="the model ends at raw YOLO heads (yolo, yolov5) or one candidate tensor (yolov8-output "
                        "(1,4+C,N), yolov5-output (1,N,5+C)): attach this decoding + NMS on the host")
    c.add_argument("--anchors", metavar="W,H,...", help="--head anchors in input pixels, smallest stride first")
    c.add_argument("--darknet-cfg", metavar="CFG", help="--head anchors and masks from a Darknet cfg's [yolo] layers")
    c.add_argument("--names", metavar="FILE", help="--head class names, one per line (e.g. coco.names)")
    c.set_defaults(func=cmd_compile)

    p = sub.add_parser("passes", help="list the passes: name, exact or approximate, in the default pipeline")
    p.set_defaults(func=cmd_passes)

    i = sub.add_parser("inspect", help="per-layer table of a .lava file")
    i.add_argument("file")
    i.add_argument("--target", choices=["loihi2"], help="add a hardware fit report (neurons, synapses, cores)")
    i.add_argument("--weight-bits", type=int, default=8, help="weight width assumed by the fit report")
    i.set_defaults(func=cmd_inspect)
    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands():
    """Subcommands that live with their features (`snnc run`, `snnc eval`), each module exposing register(sub)."""
    from snnc.apps import eval_cli, export_cli, finetune_cli, run_cli

    return [run_cli.register, eval_cli.register, finetune_cli.register, export_cli.register]


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at emit time: main() may run many times in one process (tests, notebooks)
    with stderr redirected in between, and a handler bound to the first stderr would write to a closed stream."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="snnc: %(levelname)s: %(message)s", handlers=[_CurrentStderr()])
    try:
        return int(args.func(args) or 0)
    except SnncError as exc:
        print(f"snnc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("snnc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
