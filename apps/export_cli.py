"""`snnc export net.lava --to nir -o net.nir` and `snnc import net.nir -o net.lava` (docs/nir.md)."""

from __future__ import annotations

import argparse

from snnc.ir.errors import SnncError


def _csv(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def cmd_export(args: argparse.Namespace) -> int:
    from snnc.backends.nir import write_nir
    from snnc.ir import lavafile

    net = lavafile.load(args.file)
    outputs = _csv(args.outputs)
    out = write_nir(net, args.output, outputs)
    print(f"wrote {out} (nir): outputs {', '.join(outputs or net.outputs)}; IF neurons reset by subtraction, "
          "V(0) and the reset rule in each node's metadata (docs/nir.md)")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from snnc.compiler.nir_frontend import read_nir
    from snnc.ir import lavafile

    net = read_nir(args.file)
    if args.like:
        ref = lavafile.load(args.like)
        missing = sorted(set(ref.outputs) - set(net.outputs))
        if missing:
            raise SnncError(f"--like {args.like}: the NIR graph lacks its outputs {', '.join(missing)}; its host "
                            "graph needs them")
        net.outputs = list(ref.outputs)
        net.output_names = dict(ref.output_names)
        net.host_onnx, net.ann_onnx = ref.host_onnx, ref.ann_onnx
        net.preprocess, net.input_encoding = dict(ref.preprocess), dict(ref.input_encoding)
        net.meta = {**ref.meta, "source": str(args.file), "imported_from": "nir"}
    lavafile.save(net, args.output)
    print(f"wrote {args.output} (lava): {len(net.layers)} layers, {len(net.neuron_layers)} spiking populations, "
          f"outputs {', '.join(net.outputs)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("export", help="a .lava file in another format (nir: Neuromorphic Intermediate Representation)")
    e.add_argument("file", help=".lava file")
    e.add_argument("--to", choices=["nir"], required=True, help="target format")
    e.add_argument("-o", "--output", required=True, help="output file (.nir)")
    e.add_argument("--outputs", help="comma-separated output layers to export (default: the network's); only the "
                   "layers they need are written")
    e.set_defaults(func=cmd_export)

    i = sub.add_parser("import", help="a NIR graph (.nir) as a .lava file for snnc's backends, run, eval and C")
    i.add_argument("file", help=".nir file")
    i.add_argument("-o", "--output", required=True, help="output .lava file")
    i.add_argument("--like", metavar="LAVA", help="take the host graph, preprocessing, ANN and class names from this "
                   ".lava file (the one the NIR graph was exported from), so `snnc run` / `snnc eval` work")
    i.set_defaults(func=cmd_import)
