"""snnc eval with several networks: one comparison report (accuracy vs T and accuracy vs energy, one line per
network), a report per network, compare.json; a missing file is one line, exit 2, and no folder."""

from __future__ import annotations

import json

import pytest
from models import tiny_detector

from snnc.apps.cli import main
from snnc.evaluation import plots
from snnc.evaluation.compare import compare_labels


@pytest.fixture(scope="module")
def two_networks(tmp_path_factory):
    """A tiny detector compiled two ways (V(0) = theta/2 and 0), and two photos."""
    tmp = tmp_path_factory.mktemp("compare")
    model, photos = tiny_detector(tmp, photos=2)
    nets = []
    for name, v0 in (("half", "half"), ("zero", "zero")):
        nets.append(tmp / f"{name}.lava")
        assert main(["compile", str(model), "--calib", str(photos), "--v-init", v0, "-o", str(nets[-1]), "-q"]) == 0
    return nets, photos


def test_eval_several_networks_one_comparison(tmp_path, two_networks, monkeypatch, capsys):
    nets, photos = two_networks
    figures = {}
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.__setitem__(path.name, fig) or save(fig, path))  # the last: the comparison
    rep = tmp_path / "cmp"
    assert main(["eval", *map(str, nets), "--images", str(photos), "-T", "2,4", "--report", str(rep),
                 "--examples", "0", "--no-errors", "-q"]) == 0
    out = capsys.readouterr().out
    assert "half" in out and "zero" in out
    data = json.loads((rep / "compare.json").read_text())
    pairs = sorted({(r["model"], r["T"]) for r in data["rows"]})
    assert pairs == [(m, t) for m in ("half", "zero") for t in (2, 4)]
    for name in ("accuracy_vs_T.png", "accuracy_vs_energy.png"):
        assert (rep / name).stat().st_size > 1000
        lines = [ln for ln in figures[name].axes[0].lines if not ln.get_label().startswith("_")]
        assert [ln.get_label() for ln in lines] == ["half", "zero"]  # one line per network
        assert all(len(ln.get_xdata()) == 2 for ln in lines)  # through its two T
    for m in ("half", "zero"):
        single = json.loads((rep / m / "metrics.json").read_text())
        rows = {r["T"]: r["fidelity_mAP50"] for r in single["accuracy"]["snn"]}
        assert rows == {r["T"]: r["mAP50"] for r in data["rows"] if r["model"] == m}
    page = (rep / "compare.html").read_text()
    assert "half/report.html" in page and "accuracy_vs_T.png" in page


def test_eval_several_networks_missing_file(tmp_path, two_networks, capsys):
    nets, photos = two_networks
    rep = tmp_path / "cmp"
    rc = main(["eval", str(nets[0]), str(tmp_path / "nope.lava"), "--images", str(photos), "-T", "2",
               "--report", str(rep), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("snnc: error: ") and "nope.lava" in err[0], err
    assert not rep.exists() and not list(tmp_path.glob(".snnc-*"))


def test_labels_are_unique():
    assert compare_labels(["a/m.lava", "b/m.lava", "c/n.lava"]) == ["1_m", "2_m", "n"]
