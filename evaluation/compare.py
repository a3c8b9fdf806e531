"""`snnc eval a.lava b.lava ...`: several networks on the same images and T, one comparison report.

Each network is evaluated as `snnc eval` evaluates one (run.evaluate, its own full report in a subfolder named
after the file); the comparison adds accuracy_vs_T.png and accuracy_vs_energy.png with one line per network,
compare.html (the table of every network's accuracy, firing rate and energy per T, links to the single reports)
and compare.json. The folder is written into a temporary sibling and renamed into place, so a failure leaves no
half-written report.
"""

from __future__ import annotations

import html
import json
import logging
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from snnc.evaluation.report import _clean, referenced_files
from snnc.evaluation.run import EvalConfig, evaluate
from snnc.ir.errors import SnncError

log = logging.getLogger(__name__)
MARKER = "compare.json"


def compare_labels(files: Sequence[str | Path]) -> list[str]:
    """Each file's stem, made unique with its position when two stems are the same."""
    stems = [Path(f).stem for f in files]
    return [s if stems.count(s) == 1 else f"{i + 1}_{s}" for i, s in enumerate(stems)]


def _check_folder(folder: Path) -> None:
    if not folder.resolve().parent.is_dir():
        raise SnncError(f"--report {folder}: the parent folder {folder.resolve().parent} does not exist")
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not (folder / MARKER).is_file())):
        raise SnncError(f"--report {folder}: exists and is not an snnc comparison report; pass a new folder")


def rows(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per network and T: accuracy, firing rate, energy ratios."""
    out = []
    for label, m in runs.items():
        labelled = m["data"]["kind"] == "labelled"
        act = {r["T"]: r for r in m["activity"]["T"]}
        for r in m["accuracy"]["snn"]:
            a = act.get(r["T"], {})
            e = a.get("energy_pj") or {}
            out.append({"model": label, "T": r["T"],
                        "mAP50": r.get("mAP50" if labelled else "fidelity_mAP50"),
                        "mAP50_95": r.get("mAP50_95" if labelled else "fidelity_mAP50_95"),
                        "ann_mAP50": m["accuracy"]["ann"].get("mAP50") if labelled else None,
                        "rate": a.get("overall_rate"), "energy_int": (e.get("int") or {}).get("ratio"),
                        "energy_float": (e.get("float") or {}).get("ratio")})
    return out


def _html(table: list[dict[str, Any]], labelled: bool, files: dict[str, str], reports: dict[str, str]) -> str:
    def f(v: Any, d: int = 4) -> str:
        return "-" if v is None else f"{v:.{d}f}"

    acc = "mAP" if labelled else "fidelity mAP"
    head = ["model", "T", f"{acc}@0.5", f"{acc}@0.5:0.95", "ANN mAP@0.5", "firing rate", "E int", "E float"]
    body = "".join(
        "<tr>" + "".join(f"<td>{c}</td>" for c in (
            f"<a href='{html.escape(reports[r['model']])}/report.html'>{html.escape(r['model'])}</a>", r["T"],
            f(r["mAP50"]), f(r["mAP50_95"]), f(r["ann_mAP50"]), f(r["rate"]), f(r["energy_int"], 3),
            f(r["energy_float"], 3))) + "</tr>" for r in table)
    imgs = "".join(f"<img src='{html.escape(n)}' alt='{html.escape(k)}'>" for k, n in files.items())
    return ("<!doctype html><html><head><meta charset='utf-8'><title>snnc comparison</title></head><body>"
            "<h1>snnc eval: comparison</h1>" + imgs + "<table border='1'><thead><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>" + body
            + "</tbody></table><p>Energy: SNN / ANN estimate (see each model's report for its assumptions). "
              "<a href='compare.json'>compare.json</a> holds every number.</p></body></html>\n")


def compare(files: Sequence[str | Path], cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate every file with `cfg` (its report folder, if any, becomes the comparison folder); returns
    {"models": {label: metrics}, "rows": [...]} and, with cfg.report, writes the comparison report."""
    from snnc.evaluation import plots

    names = compare_labels(files)
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise SnncError(f"{missing[0]}: no such file")
    folder = Path(cfg.report) if cfg.report is not None else None
    tmp = None
    if folder is not None:
        _check_folder(folder)
        tmp = Path(tempfile.mkdtemp(prefix=".snnc-compare-", dir=folder.resolve().parent))
    try:
        runs = {}
        for label, f in zip(names, files):
            log.info("evaluating %s", f)
            runs[label] = evaluate(f, replace(cfg, report=None if tmp is None else tmp / label))
        kinds = {m["data"]["kind"] for m in runs.values()}
        table = rows(runs)
        result = {"models": {k: {"file": str(f)} for k, f in zip(names, files)}, "rows": table}
        if tmp is None:
            return {**result, "metrics": runs}
        written = {}
        for key, fn, name in (("accuracy vs T", plots.compare_accuracy_vs_T, "accuracy_vs_T.png"),
                              ("accuracy vs energy", plots.compare_accuracy_vs_energy, "accuracy_vs_energy.png")):
            if fn(runs, tmp / name) is not None:
                written[key] = name
        (tmp / MARKER).write_text(json.dumps(_clean(result), indent=1) + "\n")
        (tmp / "compare.html").write_text(_html(table, kinds == {"labelled"}, written, {k: k for k in names}))
        _install(tmp, folder)
        tmp = None
        return {**result, "metrics": runs, "files": sorted(written.values())}
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _install(tmp: Path, folder: Path) -> None:
    """Rename the finished folder into place (an older comparison report there is replaced)."""
    for ref in referenced_files((tmp / "compare.html").read_text()):
        if not (tmp / ref).is_file():
            raise SnncError(f"comparison report: compare.html refers to {ref!r}, which was not written")
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(prefix=".snnc-old-", dir=tmp.parent))
        os.replace(folder, old / "r")
    os.replace(tmp, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def print_table(result: dict[str, Any]) -> str:
    """The comparison as plain text: one line per network and T."""
    def f(v: Any, d: int = 4) -> str:
        return "-" if v is None else f"{v:.{d}f}"

    width = max(len(r["model"]) for r in result["rows"]) if result["rows"] else 5
    lines = [f"{'model':{width}} {'T':>5} {'mAP50':>7} {'mAP50-95':>8} {'rate':>7} {'E int':>6} {'E flt':>6}"]
    for r in result["rows"]:
        lines.append(f"{r['model']:{width}} {r['T']:5d} {f(r['mAP50']):>7} {f(r['mAP50_95']):>8} {f(r['rate']):>7} "
                     f"{f(r['energy_int'], 3):>6} {f(r['energy_float'], 3):>6}")
    return "\n".join(lines)
