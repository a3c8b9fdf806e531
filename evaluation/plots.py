"""The report's PNG plots (matplotlib's Agg canvas, no pyplot: no display, no global state to disturb a caller).

Each function takes the metrics dict that run.evaluate builds (the same numbers as metrics.json) and a path, and
returns the path it wrote, or None when there is nothing to plot (e.g. no labels and no ANN reference).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

DPI = 110


def _figure(w: float = 7.0, h: float = 4.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _log2_axis(ax, ts: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(ts))
    ax.set_xticklabels([str(t) for t in ts])
    ax.minorticks_off()


def _ylim(ax, values: Sequence[Any]) -> None:
    """0..1 scale, zoomed in to the data (with a margin) when every value is high, so close curves separate."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    low = min(finite) if finite else 0.0
    ax.set_ylim(max(0.0, low - 0.05) if low > 0.5 else 0.0, 1.01)


def _short(name: str, width: int = 22) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]


def map_vs_T(metrics: dict[str, Any], path: Path) -> Path | None:
    """mAP of the SNN against T, the ANN and the rate limit (T -> infinity) as horizontal lines."""
    acc = metrics["accuracy"]
    rows = acc["snn"]
    ts = [r["T"] for r in rows]
    labelled = metrics["data"]["kind"] == "labelled"
    keys = [("mAP50", "mAP@0.5"), ("mAP50_95", "mAP@0.5:0.95")] if labelled else \
        [("fidelity_mAP50", "fidelity mAP@0.5"), ("fidelity_mAP50_95", "fidelity mAP@0.5:0.95")]
    if not all(rows[0].get(k) is not None for k, _ in keys):
        return None
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for (key, label), color in zip(keys, ("C0", "C1")):
        ax.plot(ts, [r[key] for r in rows], "o-", color=color, label=f"SNN {label}")
        ref = acc["ann"].get(key) if labelled else 1.0
        if ref is not None:
            ax.axhline(ref, color=color, ls="-", lw=1, alpha=0.6, label=f"ANN {label}")
        rl = acc["rate_limit"].get(key)
        if rl is not None:
            ax.axhline(rl, color=color, ls="--", lw=1, alpha=0.6, label=f"rate limit (T->inf) {label}")
    _log2_axis(ax, ts)
    ax.set_xlabel("time steps T")
    ax.set_ylabel("mAP" if labelled else "fidelity mAP (ANN detections as ground truth)")
    _ylim(ax, [r[k] for r in rows for k, _ in keys])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"{metrics['model'].get('source')}: {metrics['data']['images']} images")
    return _save(fig, path)


def firing_rates(metrics: dict[str, Any], path: Path) -> Path | None:
    """Firing rate (spikes per neuron per step) per layer, one line per T."""
    rows = metrics["activity"]["T"]
    if not rows or not rows[0]["layer_rates"]:
        return None
    layers = list(rows[0]["layer_rates"])
    fig = _figure(max(7.0, 0.32 * len(layers) + 2), 4.6)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(layers))
    for r in rows:
        ax.plot(x, [100 * r["layer_rates"][l] for l in layers], "o-", ms=3, lw=1,
                label=f"T={r['T']} (overall {100 * r['overall_rate']:.2f}%)")
    ax.set_xticks(x)
    ax.set_xticklabels([_short(l) for l in layers], rotation=75, fontsize=6)
    ax.set_ylabel("firing rate (% of steps)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("firing rate per neuron layer")
    return _save(fig, path)


def errors_per_layer(metrics: dict[str, Any], path: Path, max_panels: int = 4) -> Path | None:
    """Stacked clipping / quantization / unevenness per neuron layer at a few T; accumulated error as dots."""
    err = metrics.get("errors")
    if not err or not err["layers"]:
        return None
    ts = [r["T"] for r in err["layers"][0]["T"]]
    if len(ts) > max_panels:
        pick = np.unique(np.round(np.linspace(0, len(ts) - 1, max_panels)).astype(int))
        ts = [ts[i] for i in pick]
    layers = err["layers"]
    fig = _figure(max(7.0, 0.3 * len(layers) + 2), 2.6 * len(ts) + 0.8)
    x = np.arange(len(layers))
    for k, T in enumerate(ts):
        ax = fig.add_subplot(len(ts), 1, k + 1)
        clip = np.array([l["clipping"] for l in layers])
        row = [next(r for r in l["T"] if r["T"] == T) for l in layers]
        q = np.array([r["quantization"] for r in row])
        u = np.array([r["unevenness"] for r in row])
        acc = np.array([r["accumulated"] for r in row])
        ax.bar(x, clip, color="C3", label="clipping (T-independent)")
        ax.bar(x, q, bottom=clip, color="C0", label="quantization")
        ax.bar(x, u, bottom=clip + q, color="C2", label="unevenness")
        ax.plot(x, acc, "k.", label="accumulated (vs rate-limit ANN)")
        ax.set_ylabel(f"T={T}\n|error| / |a_RL|", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        ax.set_xticks(x)
        ax.set_xticklabels([_short(l["layer"]) for l in layers] if k == len(ts) - 1 else [], rotation=75, fontsize=6)
        if k == 0:
            ax.legend(fontsize=7, ncol=2)
            ax.set_title("per-layer error with equal inputs (docs/evaluation.md)")
    return _save(fig, path)


def cost_vs_T(metrics: dict[str, Any], path: Path) -> Path | None:
    """SOPs per image and the SNN / ANN energy ratio against T."""
    rows = [r for r in metrics["activity"]["T"] if "sops" in r]
    if not rows:
        return None
    ts = [r["T"] for r in rows]
    fig = _figure(9.0, 3.8)
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(ts, [r["sops"] for r in rows], "o-", label="SNN SOPs (accumulates)")
    if any(r["analog_macs"] for r in rows):
        ax.plot(ts, [r["analog_macs"] for r in rows], "s-", label="SNN MACs (analog input layer)")
    ax.axhline(rows[0]["ann_macs"], color="k", lw=1, label="ANN MACs")
    _log_log_panel(ax, ts, "operations per image")
    ax = fig.add_subplot(1, 2, 2)
    for kind, marker in (("float", "o-"), ("int", "s-")):
        ax.plot(ts, [r["energy_pj"][kind]["ratio"] for r in rows], marker, label=f"32-bit {kind}")
    ax.axhline(1.0, color="k", lw=1)
    _log_log_panel(ax, ts, "energy SNN / ANN (estimate)")
    return _save(fig, path)


def pareto_points(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Per T that has both: the accuracy (mAP@0.5 with labels, else fidelity mAP@0.5) and the SNN / ANN energy
    ratio (32-bit int and float), and whether that T is on the Pareto front (no other T is at least as accurate
    for less int energy, or more accurate for no more)."""
    key = "mAP50" if metrics["data"]["kind"] == "labelled" else "fidelity_mAP50"
    acc = {r["T"]: r.get(key) for r in metrics["accuracy"]["snn"]}
    pts = []
    for r in metrics["activity"]["T"]:
        e, a = r.get("energy_pj"), acc.get(r["T"])
        if e and a is not None:
            pts.append({"T": r["T"], "accuracy": float(a), "key": key, "energy_int": e["int"]["ratio"],
                        "energy_float": e["float"]["ratio"]})
    for p in pts:
        p["front"] = not any((q["energy_int"] <= p["energy_int"] and q["accuracy"] > p["accuracy"]) or
                             (q["energy_int"] < p["energy_int"] and q["accuracy"] >= p["accuracy"]) for q in pts)
    return pts


def accuracy_vs_energy(metrics: dict[str, Any], path: Path) -> Path | None:
    """The trade-off a user picks T from: accuracy against the energy estimate (SNN / ANN), one point per T, the
    Pareto front joined; the ANN is the point (1, its mAP)."""
    pts = pareto_points(metrics)
    if not pts:
        return None
    key = pts[0]["key"]
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    for kind, color in (("int", "C0"), ("float", "C1")):
        xs = [p[f"energy_{kind}"] for p in pts]
        ax.scatter(xs, [p["accuracy"] for p in pts], color=color, label=f"SNN, 32-bit {kind} energy", zorder=3)
        front = sorted((p for p in pts if p["front"]), key=lambda p: p[f"energy_{kind}"])
        ax.plot([p[f"energy_{kind}"] for p in front], [p["accuracy"] for p in front], "-", color=color, alpha=0.6)
        for p in pts:
            ax.annotate(f"T={p['T']}", (p[f"energy_{kind}"], p["accuracy"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ann = metrics["accuracy"]["ann"].get(key) if key == "mAP50" else 1.0
    if ann is not None:
        ax.scatter([1.0], [ann], marker="*", s=120, color="k", label="ANN", zorder=4)
    from matplotlib.ticker import FormatStrFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("energy per image, SNN / ANN (estimate)")
    ax.set_ylabel("mAP@0.5" if key == "mAP50" else "fidelity mAP@0.5")
    _ylim(ax, [p["accuracy"] for p in pts] + ([ann] if ann is not None else []))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("accuracy against energy (Pareto front joined)")
    return _save(fig, path)


def _log_log_panel(ax, ts: list[int], ylabel: str) -> None:
    ax.set_yscale("log")
    _log2_axis(ax, ts)
    ax.set_xlabel("T")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def ablation(metrics: dict[str, Any], path: Path) -> Path | None:
    """mAP (or fidelity mAP) against T, one line per ablation variant."""
    ab = metrics.get("ablation")
    if not ab or not ab.get("variants"):
        return None
    key = ab["key"]
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    ts = None
    for k, v in enumerate(ab["variants"]):
        rows = v["snn"]
        ts = [r["T"] for r in rows]
        ax.plot(ts, [r.get(key) for r in rows], "o-", color=f"C{k}", label=v["name"])
    ref = ab.get("ann")
    if ref is not None:
        ax.axhline(ref, color="k", lw=1, label="ANN")
    _log2_axis(ax, ts)
    ax.set_xlabel("time steps T")
    ax.set_ylabel(key)
    _ylim(ax, [r.get(key) for v in ab["variants"] for r in v["snn"]] + [ref])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("ablations (each row changes one thing from the reference)")
    return _save(fig, path)


def detection_examples(examples: Sequence[Any], folder: Path, min_side: int = 256) -> list[Path]:
    """One PNG per example image: ground truth (if any) | ANN | SNN at the smallest and largest T, side by side.

    Small images are scaled up (nearest) so boxes and labels stay legible; detections scoring below 0.25 are not
    drawn (the mAP uses them all).
    """
    from PIL import Image, ImageDraw

    from snnc.runtime.host import SCORE_THR, Detection, draw_detections

    paths = []
    for k, ex in enumerate(examples):
        h, w = ex.rgb.shape[:2]
        s = max(1, int(np.ceil(min_side / min(h, w))))
        big = np.asarray(Image.fromarray(ex.rgb).resize((w * s, h * s), Image.NEAREST)) if s > 1 else ex.rgb

        def scaled(dets, s=s):
            return [Detection(d.cls, d.name, d.score, tuple(v * s for v in d.box)) for d in dets
                    if d.score >= SCORE_THR]

        panels = []
        if ex.truth is not None:
            panels.append(("ground truth", [Detection(d.cls, d.name, 1.0, tuple(v * s for v in d.box))
                                            for d in ex.truth]))
        panels.append(("ANN", scaled(ex.ann)))
        for T, dets in ex.snn.items():
            panels.append((f"SNN T={T}", scaled(dets)))
        imgs = [draw_detections(big, dets) for _, dets in panels]
        strip = 16
        out = Image.new("RGB", (sum(i.width for i in imgs) + 4 * (len(imgs) - 1), imgs[0].height + strip), "white")
        draw = ImageDraw.Draw(out)
        x = 0
        for (title, dets), img in zip(panels, imgs):
            out.paste(img, (x, strip))
            draw.text((x + 3, 2), f"{title} ({len(dets)})", fill=(0, 0, 0))
            x += img.width + 4
        p = folder / f"detections_{k}.png"
        out.save(p, format="PNG")
        paths.append(p)
    return paths


# ---- several models (snnc eval a.lava b.lava ...) -----------------------------------------------------------------

def compare_accuracy_vs_T(runs: dict[str, dict[str, Any]], path: Path) -> Path | None:
    """One line per model: its SNN accuracy (mAP@0.5 with labels, else fidelity mAP@0.5) against T; each model's
    ANN as a dotted line of the same colour."""
    key = "mAP50" if next(iter(runs.values()))["data"]["kind"] == "labelled" else "fidelity_mAP50"
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    ts, values = set(), []
    for i, (label, m) in enumerate(runs.items()):
        rows = [r for r in m["accuracy"]["snn"] if r.get(key) is not None]
        if not rows:
            continue
        color = f"C{i % 10}"
        ax.plot([r["T"] for r in rows], [r[key] for r in rows], "o-", color=color, label=_short(label, 30))
        ann = m["accuracy"]["ann"].get(key) if key == "mAP50" else None
        if ann is not None:
            ax.axhline(ann, color=color, ls=":", lw=1, alpha=0.7)
            values.append(ann)
        ts.update(r["T"] for r in rows)
        values += [r[key] for r in rows]
    if not ts:
        return None
    _log2_axis(ax, sorted(ts))
    ax.set_xlabel("time steps T")
    ax.set_ylabel("mAP@0.5" if key == "mAP50" else "fidelity mAP@0.5")
    _ylim(ax, values)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("accuracy against T (dotted: each model's ANN)")
    return _save(fig, path)


def compare_accuracy_vs_energy(runs: dict[str, dict[str, Any]], path: Path, kind: str = "int") -> Path | None:
    """One line per model through its points (T annotated): accuracy against the SNN / ANN energy estimate."""
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    values, key = [], None
    for i, (label, m) in enumerate(runs.items()):
        pts = sorted(pareto_points(m), key=lambda p: p["T"])
        if not pts:
            continue
        key = pts[0]["key"]
        xs, ys = [p[f"energy_{kind}"] for p in pts], [p["accuracy"] for p in pts]
        ax.plot(xs, ys, "o-", color=f"C{i % 10}", label=_short(label, 30))
        for p, x, y in zip(pts, xs, ys):
            ax.annotate(f"T={p['T']}", (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        values += ys
    if key is None:
        return None
    from matplotlib.ticker import FormatStrFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.axvline(1.0, color="k", lw=1, alpha=0.5)
    ax.set_xlabel(f"energy per image, SNN / ANN (estimate, 32-bit {kind})")
    ax.set_ylabel("mAP@0.5" if key == "mAP50" else "fidelity mAP@0.5")
    _ylim(ax, values)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("accuracy against energy, one line per model")
    return _save(fig, path)
