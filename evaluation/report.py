"""The report folder: report.html (one page, no scripts, no network: opens offline), its PNG plots, metrics.json.

Written into a temporary folder beside the target and renamed into place only when complete, so a failed or
interrupted evaluation leaves no half-written report. A target that exists is replaced only when it is empty or
is an earlier snnc report (it holds metrics.json); anything else is refused before the evaluation starts.
`referenced_files(html)` lists every src / href of a page; `check_report(folder)` raises if one is missing (the
writer runs it before the rename, the tests run it too).
"""

from __future__ import annotations

import html
import json
import math
import os
import shutil
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from snnc.ir.errors import SnncError
from snnc.compiler.energy import ENERGY_PJ

ENERGY_ASSUMPTIONS = (
    "Estimate, not a measurement. Per operation (Horowitz, ISSCC 2014, 45 nm, as Spiking-YOLO and Spiking YOLOv3 "
    "use): 32-bit float MAC {fm} pJ, accumulate (AC) {fa} pJ; 32-bit integer MAC {im} pJ, AC {ia} pJ. ANN = MACs "
    "of the original ANN's convolutions x E_MAC. SNN = SOPs x E_AC + analog MACs x E_MAC, where a SOP is one "
    "spike reaching one synapse (spikes x fan-out, padding taps excluded) and the analog MACs are the layers fed "
    "real values at every step (under direct encoding the first convolution, T x its MACs). Not counted: memory "
    "access, membrane updates and leak, routing, the host's box decoding and NMS, idle power."
).format(fm=ENERGY_PJ["float"]["mac"], fa=ENERGY_PJ["float"]["ac"], im=ENERGY_PJ["int"]["mac"],
         ia=ENERGY_PJ["int"]["ac"])

ERROR_MEASURE = (
    "Per neuron layer, over all its neurons and images: sum |error| / sum |a_RL|, a_RL the rate-limit ANN's "
    "output of the layer, the same denominator for every part so they stack. Clipping: f(z) - clip(f(z)) on the "
    "rate-limit ANN's inputs to the layer (does not depend on T). Quantization and unevenness: phi(T) - "
    "clip(f(z_bar)) on the SNN's own mean inputs z_bar over T; a neuron whose final potential V(T) lies in "
    "[0, theta) (IF, plain or memory), or on the side of 0 of its spikes inside (-theta/alpha, theta) with spikes "
    "of one sign only (SignedIF), has a pure quantization error (|e| < theta/T); every other neuron's error is "
    "unevenness. "
    "Quantization + unevenness = the layer's own temporal error exactly. Accumulated: sum |phi(T) - a_RL| / "
    "sum |a_RL|, including all error inherited from earlier layers.")


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href") and v:
                self.refs.append(v)


def referenced_files(page: str) -> list[str]:
    """Every src / href of an HTML page (in-page anchors '#...' left out)."""
    p = _Refs()
    p.feed(page)
    return [r for r in p.refs if not r.startswith("#")]


def check_report(folder: str | Path) -> list[str]:
    """The files report.html refers to; SnncError if one does not exist or points outside the folder."""
    folder = Path(folder)
    page = (folder / "report.html").read_text()
    refs = referenced_files(page)
    for r in refs:
        if "://" in r or r.startswith("/") or ".." in Path(r).parts:
            raise SnncError(f"{folder}/report.html refers to {r!r}, outside the report folder")
        if not (folder / r).is_file():
            raise SnncError(f"{folder}/report.html refers to {r!r}, which does not exist")
    return refs


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN / inf -> null, numpy scalars -> Python, tuple -> list."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        try:
            obj = obj.item()
        except (TypeError, ValueError):
            return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ---- formatting --------------------------------------------------------------------------------------------------

def _f(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 10 ** -digits):
            return f"{v:.3g}"
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


CSS = """body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1200px;color:#222;line-height:1.4}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse;margin:8px 0;font-size:0.85em}td,th{border:1px solid #ddd;padding:3px 7px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:6px 0}.note{color:#555;font-size:0.9em}
code{background:#f5f5f5;padding:0 3px}"""


def render_html(m: dict[str, Any], files: dict[str, Any]) -> str:
    """The page; `files` maps plot keys to the file names actually written ("examples" to a list)."""
    model, data, st, acc = m["model"], m["data"], m["settings"], m["accuracy"]
    labelled = data["kind"] == "labelled"
    title = html.escape(str(model["source"]))
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>snnc eval: {title}</title>"
           + f"<style>{CSS}</style></head><body>"]
    out.append(f"<h1>snnc eval: {html.escape(str(model['source']))}</h1>")
    opts = model.get("options") or {}
    out.append("<p>" + "<br>".join([
        (f"network <code>{html.escape(str(model['file']))}</code>: {model['layers']} layers, "
         f"{model['neuron_layers']} neuron layers, {model['neurons']:,} neurons per image "
         f"({', '.join(model['neuron_kinds'])}), {html.escape(str(model['encoding']))} input "
         f"{model.get('input_shape')}"),
        "compiled with " + ", ".join(f"{html.escape(str(k))}={html.escape(str(v))}" for k, v in opts.items()),
        f"data <code>{html.escape(data['source'])}</code> ({data['layout'] or 'photos'}): {data['images']} images, "
        + (f"{data['ground_truth_boxes']} labelled boxes" if labelled else
           f"no labels: fidelity mode, {data['ann_reference_boxes']} ANN detections scoring >= "
           f"{st['fidelity_score_thr']} are the ground truth"),
        (f"simulation: {st['simulator']} ({st['mode']}), T = {', '.join(map(str, st['T']))} from one run, "
         f"{st['batch']} images per batch; detections: NMS IoU {st['iou_thr']}, score >= {st['score_thr']}, at "
         f"most {st['max_det']} per image; evaluator {html.escape(st['evaluator'])}"),
        (f"command: <code>{html.escape(str(m.get('command') or '-'))}</code>, snnc {m['snnc_version']}, "
         f"{m['created']}, {m['timing']['total']:.0f} s")]) + "</p>")

    out.append("<h2 id='accuracy'>Accuracy</h2>")
    head = ["", "mAP@0.5", "mAP@0.5:0.95", "fidelity mAP@0.5", "fidelity mAP@0.5:0.95", "detections"]
    rows = [["ANN (onnxruntime)", _f(acc["ann"].get("mAP50")), _f(acc["ann"].get("mAP50_95")), "(reference)",
             "(reference)", _f(acc["ann"]["detections"])],
            ["rate limit (T -> infinity)", _f(acc["rate_limit"].get("mAP50")), _f(acc["rate_limit"].get("mAP50_95")),
             _f(acc["rate_limit"].get("fidelity_mAP50")), _f(acc["rate_limit"].get("fidelity_mAP50_95")),
             _f(acc["rate_limit"]["detections"])]]
    for r in acc["snn"]:
        rows.append([f"SNN T={r['T']}", _f(r.get("mAP50")), _f(r.get("mAP50_95")), _f(r.get("fidelity_mAP50")),
                     _f(r.get("fidelity_mAP50_95")), _f(r["detections"])])
    if not labelled:
        head, rows = [head[0]] + head[3:], [[r[0]] + r[3:] for r in rows]
    out.append(_table(head, rows))
    out.append("<p class='note'>The rate limit is the SNN's T -> infinity limit (each neuron replaced by its clipped "
               "activation): its distance to the ANN is the clipping error, the SNN's distance to it the temporal "
               "error. Fidelity: the ANN's detections scoring >= "
               f"{st['fidelity_score_thr']} are the ground truth.</p>")
    if files.get("map"):
        out.append(f"<img src='{files['map']}' alt='mAP vs T'>")

    act = m["activity"]
    out.append("<h2 id='activity'>Activity and cost</h2>")
    rows = []
    for r in act["T"]:
        e = r.get("energy_pj")
        rows.append([str(r["T"]), _pct(r["overall_rate"]), _f(r["spikes_per_image"], 0), _f(r.get("sops"), 0),
                     _f(r.get("analog_macs"), 0), _f(r.get("ann_macs"), 0),
                     _f(e["float"]["snn"] / 1e6 if e else None, 3), _f(e["float"]["ann"] / 1e6 if e else None, 3),
                     _f(e["float"]["ratio"] if e else None, 3), _f(e["int"]["ratio"] if e else None, 3)])
    out.append(_table(["T", "firing rate", "spikes / image", "SOPs / image", "analog MACs / image", "ANN MACs",
                       "SNN uJ (float)", "ANN uJ (float)", "SNN/ANN float", "SNN/ANN int"], rows))
    exact = all(r.get("sops_exact") for r in act["T"])
    out.append(f"<p class='note'>{html.escape(ENERGY_ASSUMPTIONS)} SOPs "
               + ("counted per neuron (exact)." if exact else "from per-layer spike totals x mean fan-out.") + "</p>")
    if files.get("cost"):
        out.append(f"<img src='{files['cost']}' alt='SOPs and energy vs T'>")
    from snnc.evaluation.plots import pareto_points

    front = [p for p in pareto_points(m) if p["front"]]
    if front:
        out.append("<p>Pareto-optimal T (accuracy against int energy): " + ", ".join(
            f"T={p['T']} ({_f(p['accuracy'])} at {_f(p['energy_int'], 3)}x the ANN)" for p in front) + "</p>")
    if files.get("pareto"):
        out.append(f"<img src='{files['pareto']}' alt='accuracy against energy'>")
    layers = list(act["T"][0]["layer_rates"]) if act["T"] else []
    ch = act.get("channels") or {}
    head = ["layer", "neurons"] + [f"T={r['T']}" for r in act["T"]]
    if ch:
        head += [f"channels at T={act['channels_at_T']}: min / median / max", f"quiet (< {_pct(act['quiet_rate'])})"]
    rows = []
    for l in layers:
        row = [html.escape(l), _f(act["neurons"][l])] + [_pct(r["layer_rates"][l]) for r in act["T"]]
        if ch:
            c = ch[l]
            row += [f"{_pct(c['min'])} / {_pct(c['median'])} / {_pct(c['max'])}", _pct(c["quiet_fraction"])]
        rows.append(row)
    out.append("<p>Firing rate per layer (spikes of either sign per neuron per step):</p>" + _table(head, rows))
    if files.get("rates"):
        out.append(f"<img src='{files['rates']}' alt='firing rate per layer'>")

    err = m.get("errors")
    out.append("<h2 id='errors'>Error analysis per layer</h2>")
    if err:
        out.append(f"<p class='note'>{html.escape(ERROR_MEASURE)}</p>")
        ts = [r["T"] for r in err["layers"][0]["T"]] if err["layers"] else []
        head = ["layer", "kind", "clipping", "clipped"] + [f"T={T}: quant / uneven / accum." for T in ts]
        rows = []
        for l in err["layers"]:
            rows.append([html.escape(l["layer"]), l["kind"], _f(l["clipping"]), _pct(l["clipped_fraction"])] +
                        [f"{_f(r['quantization'])} / {_f(r['unevenness'])} / {_f(r['accumulated'])}" for r in l["T"]])
        out.append(_table(head, rows))
        out.append(f"<p class='note'>Quantization-class neurons within their bound theta/T "
                   f"(theta (1 + alpha v_init)/T for SignedIF): {_f(err['quantization_bound_holds'])}.</p>")
        head = ["head", "rate limit vs ANN (clipping at the output)"] + [f"T={T}: SNN vs RL / vs ANN" for T in ts]
        rows = [[html.escape(h["layer"]), _f(h["rate_limit_vs_ann"])] +
                [f"{_f(r['snn_vs_rate_limit'])} / {_f(r['snn_vs_ann'])}" for r in h["T"]] for h in err["heads"]]
        out.append("<p>Linear heads (membrane-decoded), sum |difference| / sum |reference|:</p>" + _table(head, rows))
        if files.get("errors"):
            out.append(f"<img src='{files['errors']}' alt='error per layer'>")
    else:
        out.append("<p>Not measured (--no-errors).</p>")

    ab = m.get("ablation")
    if ab:
        out.append("<h2 id='ablation'>Ablations</h2>")
        out.append(f"<p class='note'>{html.escape(ab['note'])}</p>")
        ts = [r["T"] for r in ab["variants"][0]["snn"]] if ab["variants"] else []
        rows = [[html.escape(v["name"]), html.escape(v["change"]), _f(v["rate_limit"].get(ab["key"]))] +
                [_f(r.get(ab["key"])) for r in v["snn"]] + [_pct(v.get("overall_rate")), _f(v.get("sops"), 0)]
                for v in ab["variants"]]
        out.append(_table(["variant", "change", "rate limit"] + [f"T={T}" for T in ts] +
                          [f"firing rate T={ts[-1] if ts else ''}", "SOPs / image"], rows))
        if ab.get("skipped"):
            out.append("<p class='note'>Not run: " + "; ".join(html.escape(s) for s in ab["skipped"]) + "</p>")
        if files.get("ablation"):
            out.append(f"<img src='{files['ablation']}' alt='ablations'>")

    if files.get("examples"):
        out.append("<h2 id='examples'>Example detections</h2><p class='note'>Detections scoring >= 0.25; the mAP "
                   "uses every detection >= the evaluation threshold.</p>")
        for p in files["examples"]:
            out.append(f"<img src='{p}' alt='{p}'>")
    out.append("<h2>Files</h2><p><a href='metrics.json'>metrics.json</a>: every number on this page and more "
               "(per-class AP, per-layer SOPs, timings).</p>")
    t = m["timing"]
    out.append("<p class='note'>time (s): " + ", ".join(f"{k} {v:.3g}" for k, v in t.items()) + "</p>")
    out.append("</body></html>\n")
    return "\n".join(out)


# ---- the writer ------------------------------------------------------------------------------------------------

class ReportWriter:
    """Checks the target folder up front; writes into a temporary sibling and renames it into place."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        parent = self.folder.resolve().parent
        if not parent.is_dir():
            raise SnncError(f"--report {folder}: the parent folder {parent} does not exist")
        if self.folder.exists():
            if not self.folder.is_dir():
                raise SnncError(f"--report {folder}: exists and is not a folder")
            if any(self.folder.iterdir()) and not (self.folder / "metrics.json").is_file():
                raise SnncError(f"--report {folder}: the folder exists and is not an snnc report; pass a new folder")
        self.tmp: Path | None = None

    def write(self, metrics: dict[str, Any], run: Any) -> Path:
        from snnc.evaluation import plots

        self.tmp = Path(tempfile.mkdtemp(prefix=".snnc-report-", dir=self.folder.resolve().parent))
        files: dict[str, Any] = {}
        for key, fn, name in (("map", plots.map_vs_T, "map_vs_T.png"), ("rates", plots.firing_rates, "firing_rates.png"),
                              ("errors", plots.errors_per_layer, "errors_per_layer.png"),
                              ("cost", plots.cost_vs_T, "cost_vs_T.png"), ("ablation", plots.ablation, "ablation.png"),
                              ("pareto", plots.accuracy_vs_energy, "accuracy_vs_energy.png")):
            p = fn(metrics, self.tmp / name)
            if p is not None:
                files[key] = p.name
        files["examples"] = [p.name for p in plots.detection_examples(run.examples, self.tmp)]
        metrics["files"] = sorted(["report.html", "metrics.json"] + [v for k, v in files.items() if k != "examples"]
                                  + files["examples"])
        (self.tmp / "metrics.json").write_text(json.dumps(_clean(metrics), indent=1) + "\n")
        (self.tmp / "report.html").write_text(render_html(metrics, files))
        check_report(self.tmp)
        old = None
        if self.folder.exists():
            old = Path(tempfile.mkdtemp(prefix=".snnc-old-", dir=self.tmp.parent))
            os.replace(self.folder, old / "r")
        os.replace(self.tmp, self.folder)
        self.tmp = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.folder

    def cleanup(self) -> None:
        if self.tmp is not None and self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None
