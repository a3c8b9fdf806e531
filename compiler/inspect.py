"""`snnc inspect`: a per-layer table of a compiled network (what each layer is and what it costs)."""

from __future__ import annotations

import numpy as np

from snnc.ir import annref
from snnc.ir.network import Layer, Network


def layer_params(layer: Layer) -> int:
    return sum(int(a.size) for a in (layer.weight, layer.bias) if a is not None)


def layer_macs(layer: Layer, net: Network) -> int:
    """Multiply-accumulates of one ANN forward pass of this layer, per sample (a count max-pool: one per tap)."""
    if layer.op == "maxpool":
        return int(np.prod(layer.shape)) * int(np.prod(layer.attrs["kernel_shape"]))
    if layer.weight is None:
        return 0
    if layer.op == "conv":
        return int(np.prod(layer.shape)) * int(np.prod(layer.weight.shape[1:]))
    if layer.op == "deconv":
        src = net.layer(layer.inputs[0])
        return int(np.prod(src.shape)) * int(np.prod(layer.weight.shape[1:]))
    return int(layer.weight.size)


def layer_rows(net: Network) -> list[dict]:
    rows = []
    for layer in net.layers:
        n = layer.neuron
        theta = "-"
        if n is not None:
            lo, hi = float(n.threshold.min()), float(n.threshold.max())
            theta = f"{lo:.3g}" if lo == hi else f"{lo:.3g}..{hi:.3g}"
            if n.graded:  # its own negative thresholds theta_n per channel
                tn = n.neg_threshold
                theta += f" / -{float(tn.min()):.3g}..{float(tn.max()):.3g}"
            elif n.kind == "SignedIF":
                theta += f" / -{hi / n.alpha:.3g}"
        attrs = layer.attrs
        detail = ""
        if layer.op in ("conv", "deconv"):
            k = "x".join(str(d) for d in layer.weight.shape[2:])
            detail = f"k{k} s{attrs['strides'][0]}" + (f" g{attrs['group']}" if attrs.get("group", 1) > 1 else "")
        elif layer.op == "pad":
            detail = f"{attrs['mode']} {attrs['pads']}"
        elif layer.op == "maxpool":
            detail = f"count k{'x'.join(map(str, attrs['kernel_shape']))} s{attrs['strides'][0]}"
        rows.append({"layer": layer.name, "op": layer.op, "detail": detail,
                     "shape": "x".join(str(d) for d in layer.shape),
                     "neuron": ((n.kind + ("+graded" if n.graded else "+mem" if n.memory else "")) if n
                                else ("linear" if layer.weight is not None else "-")),
                     "threshold": theta, "params": layer_params(layer), "macs": layer_macs(layer, net),
                     "output": layer.name in net.outputs})
    return rows


def format_table(net: Network) -> str:
    rows = layer_rows(net)
    cols = ["layer", "op", "detail", "shape", "neuron", "threshold", "params", "macs"]
    cells = [[str(r[c]) + ("  <- output" if c == "macs" and r["output"] else "") for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    neurons = sum(int(np.prod(layer.shape)) for layer in net.neuron_layers)
    lines.append("")
    lines.append(f"{len(net.layers)} layers, {len(net.neuron_layers)} spiking populations, {neurons:,} neurons, "
                 f"{sum(r['params'] for r in rows):,} parameters, {sum(r['macs'] for r in rows):,} MACs per ANN pass")
    meta = net.meta or {}
    if meta.get("source"):
        opts = meta.get("options", {})
        lines.append(f"source {meta['source']} (sha256 {meta.get('source_sha256', '?')[:12]}), passes "
                     f"{', '.join(meta.get('passes', []))}; norm {opts.get('norm')} p{opts.get('percentile')} on "
                     f"{opts.get('calibration_images')} images")
        lines += _auto_norm_lines(meta.get("stats", {}).get("channel_norm", {}))
        calT = meta.get("stats", {}).get("calibrate_to_T")
        if calT:
            lines.append(f"calibrated to T = {calT['T']} on {calT['images']} images (calibrate_to_T)")
        clip = meta.get("stats", {}).get("clipping_error")
        if clip:
            lines.append("clipping error (rate-limit ANN vs ANN): " +
                         ", ".join(f"{k} {v:.4f}" for k, v in clip.items()))
    lines.append(annref.describe(net.ann_onnx, net.ann_note))
    return "\n".join(lines)


def _auto_norm_lines(stats: dict) -> list[str]:
    """--norm auto: the normalization and percentile chosen for each neuron layer."""
    chosen = {name: (v["norm"], v["percentile"]) for name, v in stats.get("layers", {}).items() if "norm" in v}
    if not chosen:
        return []
    counts: dict[str, int] = {}
    for norm, p in chosen.values():
        counts[f"{norm} p{p:g}"] = counts.get(f"{norm} p{p:g}", 0) + 1
    lines = ["norm auto chose: " + ", ".join(f"{k} on {v} layers" for k, v in sorted(counts.items()))]
    lines += [f"  {name}: {norm} p{p:g}" for name, (norm, p) in chosen.items()]
    return lines
