"""`snnc eval`: the per-layer error split (sums to the total, respects its bound, Spiking YOLOv3's example), the simulator's
per-neuron recording (eq. 8), exact SOPs, the report (refers only to files that exist), bad input (one line,
exit 2, no report), the ablations, fidelity mode, and the digits detector end to end through the CLI with its
ANN mAP floor and the SNN's distance to it at T = 256."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from snnc.backends.numpy.sim import layer_forward, rate_limit_forward, simulate
from snnc.apps import cli
from snnc.evaluation.errors import ErrorAnalysis, quantization_mask, rate_limit
from snnc.evaluation.report import check_report, referenced_files
from snnc.ir.network import Layer, Network, Neuron

MODELS = Path(__file__).resolve().parent.parent / "examples" / "digits" / "models"

# The digits ReLU detector, 40 test images, calibrated on 32 train canvases (seed 0), compile defaults (99.99th
# percentile, channel norm, V(0) = theta/2, memory IF), measured (float, numpy): ANN mAP@0.5 0.9938, mAP@0.5:0.95
# 0.6873; SNN mAP@0.5 0.9938 / 0.9946 / 0.9938 at T = 16 / 64 / 256, mAP@0.5:0.95 0.661 / 0.680 / 0.682 (rate
# limit 0.683), fidelity 0.9937 / 0.9997 / 0.9997. (With the papers' recipe, 99.9th percentile, V(0) = 0 and plain
# IF: 0.866 at T = 16, 0.9938 at 256.) Bounds with margin: the ANN above the floor, the SNN at T = 256 within
# SNN_GAP of it at mAP@0.5 and of its rate limit at mAP@0.5:0.95.
ANN_FLOOR = 0.95
SNN_GAP = 0.03
FIDELITY_FLOOR_256 = 0.97


# ---- small networks ---------------------------------------------------------------------------------------------

def _conv(stride=1, pad=1):
    return {"strides": [stride, stride], "pads": [pad] * 4, "dilations": [1, 1], "group": 1}


def tiny_net(kind: str = "IF", v_init: float = 0.0, seed: int = 0, size: int = 10) -> tuple[Network, np.ndarray]:
    """kind IF, memory (memory IF) or SignedIF.

    input 3xHxW -> conv (neuron) -> strided conv (neuron) -> deconv (neuron) -> concat -> 1x1 linear head.

    Thresholds: the 99th percentile of each layer's unclipped activation (so some clipping happens)."""
    rng = np.random.default_rng(seed)

    def w(*s):
        return (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32)

    h = size
    alpha = 0.1 if kind == "SignedIF" else 0.0
    memory = kind == "memory"
    kind = "IF" if memory else kind
    layers = [Layer("x", "input", [], (3, h, h)),
              Layer("a", "conv", ["x"], (6, h, h), w(6, 3, 3, 3), (rng.standard_normal(6) * 0.1).astype(np.float32),
                    _conv()),
              Layer("b", "conv", ["a"], (6, h // 2, h // 2), w(6, 6, 3, 3), None, _conv(2)),
              Layer("u", "deconv", ["b"], (6, h, h), w(6, 6, 2, 2), None,
                    {"strides": [2, 2], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1,
                     "output_padding": [0, 0]}),
              Layer("cat", "concat", ["a", "u"], (12, h, h), attrs={"axis": 0}),
              Layer("head", "conv", ["cat"], (4, h, h), w(4, 12, 1, 1), np.zeros(4, np.float32), _conv(1, 0))]
    x = rng.random((3, 3, h, h)).astype(np.float32)
    net = Network(layers, ["head"], input_encoding={"kind": "direct", "scale": 1 / 255})
    for layer in layers[1:4]:  # thresholds layer by layer on the unclipped activations
        layer.neuron = Neuron(kind, np.full(layer.shape[0], 1e9, np.float32), alpha=alpha, v_init=v_init,
                              memory=memory)
        act = layer_forward(net, x)[0][layer.name]
        act = np.where(act >= 0, act, alpha * act)
        layer.neuron.threshold = np.full(layer.shape[0], np.percentile(np.abs(act), 99), np.float32)
    return net, x


def _analyse(net, x, ts):
    ea = ErrorAnalysis(net, ts)
    ea.add_rate_limit(*layer_forward(net, x))
    states = {}

    def keep(T, state):
        ea.add_checkpoint(T, state)
        states[T] = {k: {f: (a.copy() if isinstance(a, np.ndarray) else a) for f, a in d.items()}
                     for k, d in state.items()}

    res = simulate(net, x, ts, progress=False, record_layers=True, on_checkpoint=keep)
    for T in ts:
        ea.add_heads(T, res.outputs[T], None, first=T == ts[0])
    return ea.result(), states, res


# ---- the simulator's recording ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["IF", "memory", "SignedIF"])
def test_recording_gives_the_mean_input_of_eq_8_and_changes_nothing(kind):
    net, x = tiny_net(kind, v_init=0.5)
    plain = simulate(net, x, [8, 32], progress=False)
    rec = simulate(net, x, [8, 32], progress=False, record_layers=True)
    for T in (8, 32):
        np.testing.assert_array_equal(plain.outputs[T]["head"], rec.outputs[T]["head"])
        st = rec.extra["layers_at"][T]
        phi = {}
        for name, d in st.items():
            neg = 0 if d["neg"] is None else d["neg"].astype(np.float64)
            phi[name] = (d["pos"] - neg) * d["theta"] / T
            # the recorded counts are the simulator's own totals, both signs
            np.testing.assert_array_equal((d["pos"].astype(np.int64) + neg).sum(axis=1),
                                          rec.extra["spike_counts_at"][T][name])
        z, out = layer_forward(net, x, override=phi)
        np.testing.assert_allclose(out["head"], rec.outputs[T]["head"], rtol=1e-4, atol=1e-5)
        for name, d in st.items():
            neg = 0 if d["neg"] is None else d["neg"]
            back = d["theta"] if d["memory"] else (0 if d["theta_neg"] is None else d["theta_neg"])
            # eq. 8: T z_bar = V(T) - V(0) + pos theta - neg r, r what a -1 spike adds back to V
            z_bar = (d["v"] - d["v0"] + d["pos"] * d["theta"] - neg * back) / T
            np.testing.assert_allclose(z_bar, z[name].reshape(z_bar.shape), atol=1e-5 * np.abs(z_bar).max())
    assert "layers_at" not in plain.extra
    if kind == "memory":  # it does take spikes back, and they are counted
        assert sum(int(d["neg"].sum()) for d in rec.extra["layers_at"][32].values()) > 0


def test_recorded_counts_by_sign_over_long_chunks():
    """Counts by sign stay exact beyond the recorder's 127-step int8 blocks (one chunk of 700 steps here)."""
    w = np.array([[1.0], [-1.0], [0.3]], np.float32)
    net = Network([Layer("x", "input", [], (1,)),
                   Layer("n", "dense", ["x"], (3,), weight=w,
                         neuron=Neuron("SignedIF", np.ones(3, np.float32), alpha=0.5))], ["n"])
    z = np.random.default_rng(1).normal(0.0, 0.8, (700, 2, 1)).astype(np.float32)
    res = simulate(net, z, [300, 700], encoding="explicit", progress=False, record_layers=True)
    assert res.extra["chunk_steps"] > 2 * 127
    for T in (300, 700):
        d = res.extra["layers_at"][T]["n"]
        np.testing.assert_array_equal(d["pos"] - d["neg"], np.round(res.outputs[T]["n"] * T).astype(int))
        np.testing.assert_array_equal((d["pos"] + d["neg"]).sum(axis=1), res.extra["spike_counts_at"][T]["n"])
        assert d["neg"].min() > 0 and d["pos"].min() > 0


@pytest.mark.parametrize("kind", ["memory", "SignedIF"])
def test_exact_sops_equal_per_neuron_energy_report(kind):
    from snnc.evaluation.activity import Activity
    from snnc.compiler.energy import energy_report

    net, x = tiny_net(kind)
    act = Activity(net, [16])
    res = simulate(net, x, 16, progress=False, record_layers=True, on_checkpoint=act.add_state)
    act.add_counts(res.extra["spike_counts_at"])
    st = res.extra.get("layers_at")
    assert st is None  # the callback received the state instead
    got = act.result()["T"][0]
    assert got["sops_exact"]
    res2 = simulate(net, x, 16, progress=False, record_layers=True)
    per_neuron = {}
    for name, d in res2.extra["layers_at"][16].items():
        counts = d["pos"].astype(np.float64) + d["neg"]
        per_neuron[name] = counts.mean(axis=0).reshape(net.layer(name).shape)
    ref = energy_report(net, per_neuron, 16)
    assert got["sops"] == pytest.approx(ref["snn_sops"], rel=1e-9)
    assert got["energy_pj"]["int"]["ratio"] == pytest.approx(ref["energy_pj"]["int"]["ratio"], rel=1e-9)
    # rates: spikes / (neurons x T), averaged over the batch
    assert got["layer_rates"]["a"] == pytest.approx(res.firing_rates()["a"])


# ---- the error split --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("memory", [False, True])
def test_unevenness_example_of_methods_section_5_is_classified(memory):
    """W = [2, -1], theta 1, T = 6, both inputs fire 3 times: alternating is exact (0.5), excitation first gives
    4 spikes (V(T) = -1) and inhibition first 2 spikes (V(T) = theta: a spike owed): both unevenness, 1/6 each.
    The memory IF takes the 4th spike back (0.5, exact); inhibition first stays 2 spikes."""
    w = np.array([[2.0, -1.0]], np.float32)
    neuron = Neuron("IF", np.ones(1, np.float32), memory=memory)
    net = Network([Layer("x", "input", [], (2,)), Layer("n", "dense", ["x"], (1,), weight=w, neuron=neuron)], ["n"])
    trains = np.zeros((6, 3, 2), np.float32)
    trains[[0, 2, 4], 0, 0] = trains[[1, 3, 5], 0, 1] = 1
    trains[[0, 1, 2], 1, 0] = trains[[3, 4, 5], 1, 1] = 1
    trains[[3, 4, 5], 2, 0] = trains[[0, 1, 2], 2, 1] = 1
    x = trains.mean(axis=0)  # the rate-limit input: 0.5 each
    ea = ErrorAnalysis(net, [6])
    ea.add_rate_limit(*layer_forward(net, x))
    simulate(net, trains, 6, encoding="explicit", progress=False, record_layers=True,
             on_checkpoint=lambda T, st: ea.add_checkpoint(T, st))
    row = ea.result()["layers"][0]["T"][0]
    uneven = 1 if memory else 2
    assert row["quantization"] == 0.0
    assert row["unevenness"] == pytest.approx(uneven / 6 / 1.5)  # over sum |a_RL| = 3 x 0.5
    assert row["uneven_fraction"] == pytest.approx(uneven / 3)


def test_quantization_mask_by_hand():
    theta, tn = np.ones(1), np.full(1, 10.0)  # SignedIF theta 1, alpha 0.1
    cases = [  # (pos, neg, V(T)) -> quantization?
        (3, 0, 0.5, True), (3, 0, -0.5, False), (0, 2, -4.0, True), (0, 2, 0.5, False), (0, 0, -9.0, True),
        (2, 2, 0.3, False), (0, 0, 1.0, False), (1, 0, 0.0, True)]
    for pos, neg, v, want in cases:
        got = quantization_mask(np.array([[pos]]), np.array([[neg]]), np.array([[v]], np.float32), theta, tn)
        assert bool(got[0, 0]) is want, (pos, neg, v)
    # IF: [0, theta)
    got = quantization_mask(np.array([[1, 1, 1]]), None, np.array([[0.0, 0.999, 1.0]], np.float32), theta, None)
    assert got.tolist() == [[True, True, False]]


@pytest.mark.parametrize("kind,v_init", [("IF", 0.0), ("IF", 0.5), ("memory", 0.5), ("SignedIF", 0.0),
                                         ("SignedIF", 0.5)])
def test_error_split_sums_to_the_total_error(kind, v_init):
    """quantization + unevenness = the local temporal error, computed here independently: the mean inputs z_bar
    from a walk of the network on the SNN's mean outputs (W phi_in + b), not from the recorded V(T) the analysis
    uses; quantization-class neurons within theta/T."""
    from snnc.evaluation.errors import mean_outputs

    net, x = tiny_net(kind, v_init=v_init, seed=3)
    ts = [4, 16, 64]
    res, states, _ = _analyse(net, x, ts)
    assert res["quantization_bound_holds"]
    a_rl = rate_limit_forward(net, x, all_layers=True)
    z_rl = layer_forward(net, x)[0]
    for lrow in res["layers"]:
        layer = net.layer(lrow["layer"])
        den = np.abs(a_rl[layer.name]).sum(dtype=np.float64)
        f = np.where(z_rl[layer.name] >= 0, z_rl[layer.name], layer.neuron.alpha * z_rl[layer.name]) \
            if kind == "SignedIF" else np.maximum(z_rl[layer.name], 0)
        assert lrow["clipping"] == pytest.approx(np.abs(f - a_rl[layer.name]).sum(dtype=np.float64) / den, rel=1e-5)
        assert lrow["clipping"] > 0  # the 99th-percentile thresholds clip
        for r in lrow["T"]:
            T = r["T"]
            phi_all = mean_outputs(states[T], T)
            z_bar = layer_forward(net, x, override=phi_all)[0][layer.name]
            phi = phi_all[layer.name]
            g = rate_limit(layer, z_bar.astype(np.float64)).reshape(phi.shape)
            total = np.abs(phi - g).sum() / den
            assert r["quantization"] + r["unevenness"] == pytest.approx(r["local_total"], rel=1e-12)
            assert r["local_total"] == pytest.approx(total, rel=1e-3, abs=1e-6)
            accumulated = np.abs(phi - a_rl[layer.name].reshape(phi.shape)).sum() / den
            assert r["accumulated"] == pytest.approx(accumulated, rel=1e-6)
    # the split is not trivial: layers fed by spikes have both kinds of error; the first (constant input) only
    # quantization; errors fall with T
    first, deeper = res["layers"][0], res["layers"][1:]
    assert all(r["unevenness"] == 0 for r in first["T"])
    assert all(l["T"][0]["quantization"] > 0 and l["T"][0]["unevenness"] > 0 for l in deeper)
    for l in res["layers"]:
        assert l["T"][-1]["local_total"] < l["T"][0]["local_total"]
    head = res["heads"][0]
    assert head["T"][-1]["snn_vs_rate_limit"] < head["T"][0]["snn_vs_rate_limit"]


# ---- the digits detector end to end -----------------------------------------------------------------------------

def snnc(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snnc.apps.cli", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits ReLU and leaky detectors compiled on 32 train canvases; a 40-image labelled test set (COCO)."""
    from snnc.apps.outputs import write_output
    from snnc.compiler.api import compile_model
    from snnc.evaluation.digits import make_digits, write_digits

    root = tmp_path_factory.mktemp("digits")
    calib = root / "calib"
    calib.mkdir()
    for i, img in enumerate(make_digits("train", 32, seed=0).images):
        Image.fromarray(img).save(calib / f"{i:03d}.png")
    nets = {}
    for act in ("relu", "leaky"):
        nets[act] = write_output(compile_model(MODELS / f"digits_{act}.onnx", calib_dir=calib, progress=False),
                                 root / f"{act}.lava")
    test = write_digits(root / "test", "test", 40, seed=0, layout="coco")
    photos = root / "photos"
    photos.mkdir()
    for i, img in enumerate(make_digits("val", 4, seed=5).images):
        Image.fromarray(img).save(photos / f"p{i}.png")
    return {"root": root, "calib": calib, "test": test, "photos": photos, **nets}


@pytest.fixture(scope="module")
def relu_report(digits):
    out = digits["root"] / "report"
    res = snnc("eval", str(digits["relu"]), "--data", str(digits["test"]), "-T", "16,64,256", "--report", str(out),
               "-q")
    assert res.returncode == 0, res.stderr
    return out, json.loads((out / "metrics.json").read_text()), res.stdout


def test_digits_report_files_exist(relu_report):
    out, m, stdout = relu_report
    refs = check_report(out)
    page = (out / "report.html").read_text()
    assert refs == referenced_files(page) and "metrics.json" in refs
    pngs = [r for r in refs if r.endswith(".png")]
    assert {"map_vs_T.png", "firing_rates.png", "errors_per_layer.png", "cost_vs_T.png"} <= set(pngs)
    assert sum(r.startswith("detections_") for r in pngs) == 4
    for r in pngs:
        assert (out / r).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(m["files"]) == sorted(p.name for p in out.iterdir())
    assert not list(out.parent.glob(".snnc-*")), "temporary folder left behind"
    assert "SNN T=256" in stdout and "report.html" in stdout


def test_digits_snn_reaches_the_ann(relu_report):
    _, m, _ = relu_report
    acc = m["accuracy"]
    assert m["data"]["images"] == 40 and m["data"]["ground_truth_boxes"] > 40
    ann = acc["ann"]["mAP50"]
    snn = {r["T"]: r for r in acc["snn"]}
    assert ann >= ANN_FLOOR, acc["ann"]
    assert snn[256]["mAP50"] >= ann - SNN_GAP, snn
    assert snn[256]["fidelity_mAP50"] >= FIDELITY_FLOOR_256
    assert snn[16]["fidelity_mAP50"] < snn[256]["fidelity_mAP50"]  # fewer steps, further from the ANN
    assert acc["rate_limit"]["mAP50"] >= ann - SNN_GAP
    assert abs(snn[256]["mAP50_95"] - acc["rate_limit"]["mAP50_95"]) <= SNN_GAP


def test_digits_activity_cost_and_errors(relu_report):
    _, m, _ = relu_report
    rows = {r["T"]: r for r in m["activity"]["T"]}
    for r in rows.values():
        assert 0.005 < r["overall_rate"] < 0.5
        assert all(0 < v < 1 for v in r["layer_rates"].values())
        assert r["sops_exact"]
        f = r["energy_pj"]["float"]
        assert f["snn"] == pytest.approx(r["sops"] * 0.9 + r["analog_macs"] * 4.6)
        assert f["ann"] == pytest.approx(r["ann_macs"] * 4.6)
    assert 3 < rows[256]["sops"] / rows[64]["sops"] < 5  # SOPs grow about linearly with T
    assert rows[256]["analog_macs"] == pytest.approx(rows[64]["analog_macs"])  # the constant image: once
    assert rows[64]["analog_macs"] > 0
    err = m["errors"]
    assert err["quantization_bound_holds"]
    assert len(err["layers"]) == m["model"]["neuron_layers"]
    for l in err["layers"]:
        for r in l["T"]:
            assert r["quantization"] + r["unevenness"] == pytest.approx(r["local_total"])
        assert l["T"][-1]["accumulated"] < l["T"][0]["accumulated"]
    for h in err["heads"]:
        assert h["rate_limit_vs_ann"] is not None and h["rate_limit_vs_ann"] < 0.2
        assert h["T"][-1]["snn_vs_ann"] < h["T"][0]["snn_vs_ann"]


def test_ablation_and_fidelity_mode(digits, capsys):
    out = digits["root"] / "ablation"
    rc = cli.main(["eval", str(digits["leaky"]), "--data", str(digits["test"]), "-n", "6", "-T", "8,32",
                   "--report", str(out), "--ablation", "--no-errors", "--examples", "1", "-q"])
    assert rc == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    names = [v["name"] for v in m["ablation"]["variants"]]
    # every comparison a leaky model with max-pools has (the defaults: norm auto, graded neurons, count max-pools,
    # so no IF neuron to flip); the flipped side of each depends on the compile defaults
    assert names[0] == "reference" and len(names) == 8, names
    assert {"layer-norm", "channel-norm", "negatives dropped", "spike-count decoding", "exact max-pool"} <= set(names)
    assert "split leaky" in names
    assert any(n.startswith("V(0)=") for n in names)
    assert m["ablation"]["ann"] == m["accuracy"]["ann"]["mAP50"]  # labelled: the ANN line is the measured mAP
    for v in m["ablation"]["variants"]:
        assert [r["T"] for r in v["snn"]] == [8, 32]
        assert all(0 <= r["mAP50"] <= 1 for r in v["snn"])
    assert m["errors"] is None
    assert "ablation.png" in check_report(out)

    out = digits["root"] / "fidelity"
    rc = cli.main(["eval", str(digits["relu"]), "--images", str(digits["photos"]), "-T", "8,32", "--report",
                   str(out), "-q"])
    assert rc == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["kind"] == "photos" and m["data"]["ann_reference_boxes"] > 0
    rows = m["accuracy"]["snn"]
    assert "mAP50" not in rows[0] and 0 <= rows[0]["fidelity_mAP50"] <= rows[1]["fidelity_mAP50"] <= 1
    check_report(out)
    # a second run replaces an earlier report in place
    rc = cli.main(["eval", str(digits["relu"]), "--images", str(digits["photos"]), "-T", "4", "--report", str(out),
                   "-q", "--examples", "0"])
    assert rc == 0
    assert json.loads((out / "metrics.json").read_text())["settings"]["T"] == [4]
    assert not list(out.glob("detections_*.png"))


# ---- bad input --------------------------------------------------------------------------------------------------

def _user_error(capsys, argv, pattern, report: Path):
    rc = cli.main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("snnc: error: ") and pattern in lines[0], err
    assert not report.exists()
    assert not list(report.parent.glob(".snnc-*")), "temporary folder left behind"


def test_bad_input_one_line_no_report(digits, tmp_path, capsys):
    rep = tmp_path / "rep"
    lava, data = str(digits["relu"]), str(digits["test"])
    _user_error(capsys, ["eval", str(tmp_path / "none.lava"), "--data", data, "-T", "8", "--report", str(rep)],
                "no such .lava file", rep)
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(unlabelled / "a.png")
    _user_error(capsys, ["eval", lava, "--data", str(unlabelled), "-T", "8", "--report", str(rep)],
                "no dataset layout recognised", rep)
    empty = tmp_path / "empty"
    empty.mkdir()
    _user_error(capsys, ["eval", lava, "--images", str(empty), "-T", "8", "--report", str(rep)], "no jpg", rep)
    for bad in ("abc", "0", "8,-4", ","):
        _user_error(capsys, ["eval", lava, "--data", data, "-T", bad, "--report", str(rep)], "-T", rep)
    _user_error(capsys, ["eval", lava, "-T", "8", "--report", str(rep)], "--data", rep)
    _user_error(capsys, ["eval", lava, "--data", data, "-T", "8", "--report", str(tmp_path / "no" / "rep")],
                "does not exist", tmp_path / "no" / "rep")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    rc = cli.main(["eval", lava, "--data", data, "-T", "8", "--report", str(other)])
    assert rc == 2 and "not an snnc report" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_failure_midway_leaves_no_report(digits, tmp_path, capsys, monkeypatch):
    from snnc.ir.errors import SnncError
    from snnc.evaluation import run as run_mod

    def broken(*a, **k):
        raise SnncError("simulated failure in the middle of the run")

    from snnc.evaluation import plots

    rep = tmp_path / "rep"
    argv = ["eval", str(digits["relu"]), "--data", str(digits["test"]), "-n", "2", "-T", "2", "--report", str(rep),
            "-q"]
    with monkeypatch.context() as mp:
        mp.setattr(run_mod, "score", broken)
        _user_error(capsys, argv, "simulated failure", rep)
    with monkeypatch.context() as mp:  # while the report is being written: the temporary folder goes too
        mp.setattr(plots, "cost_vs_T", broken)
        _user_error(capsys, argv, "simulated failure", rep)
    assert cli.main(argv) == 0 and (rep / "report.html").is_file()
    with monkeypatch.context() as mp:  # a failed re-run leaves the earlier report as it was
        mp.setattr(plots, "cost_vs_T", broken)
        before = (rep / "metrics.json").read_text()
        assert cli.main(argv) == 2
        assert (rep / "metrics.json").read_text() == before
        assert not list(tmp_path.glob(".snnc-*"))


def test_eval_through_the_c_backend_matches_numpy_in_fixed_point(digits, tmp_path):
    """`snnc eval --backend c` goes through the backend registry; in fixed point the C backend is bit-exact with
    the NumPy reference, so mAP, detections and firing rates at every T are the same."""
    runs = {}
    for backend in ("numpy", "c"):
        out = tmp_path / backend
        res = snnc("eval", str(digits["relu"]), "--data", str(digits["test"]), "-n", "6", "-T", "4,8",
                   "--mode", "fixed", "--backend", backend, "--no-errors", "--examples", "0", "--report", str(out),
                   "-q")
        assert res.returncode == 0, res.stderr
        runs[backend] = json.loads((out / "metrics.json").read_text())
    a, b = runs["numpy"], runs["c"]
    assert [r["mAP50"] for r in a["accuracy"]["snn"]] == [r["mAP50"] for r in b["accuracy"]["snn"]]
    rates = [[r["overall_rate"] for r in m["activity"]["T"]] for m in (a, b)]
    assert rates[0] == rates[1] and min(rates[0]) > 0
    assert b["settings"]["simulator"] == "c" and a["settings"]["simulator"] == "numpy"
