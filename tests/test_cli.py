"""The CLI end to end: compile / passes / inspect work; bad input gives one line, exit 2, no output file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from models import Builder, tiny_yolo
from PIL import Image

from snnc.compiler.pipeline import DEFAULT_PIPELINE
from snnc.ir import lavafile
from snnc.ir.errors import FormatError


def snnc(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snnc.apps.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("calib")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((40, 50, 3)) * 255).astype(np.uint8)).save(d / f"img{i}.png")
    return d


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("model") / "tiny.onnx"
    onnx.save(tiny_yolo(), p)
    return p


def assert_user_error(res: subprocess.CompletedProcess, out: Path, pattern: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("calibrating")]
    assert len(lines) == 1 and lines[0].startswith("snnc: error: "), res.stderr
    assert "Traceback" not in res.stderr
    assert pattern in lines[0], lines[0]
    assert not out.exists()
    assert not list(out.parent.glob(".snnc-*")), "temporary file left behind"


def test_compile_inspect_passes(tmp_path, tiny_onnx, calib_dir):
    out = tmp_path / "net.lava"
    res = snnc("compile", str(tiny_onnx), "-o", str(out), "--calib", str(calib_dir), "-q")
    assert res.returncode == 0, res.stderr
    assert "clipping error" in res.stdout
    net = lavafile.load(out)
    assert net.outputs and net.host_onnx and net.ann_onnx
    # the defaults: a leaky-ReLU is one graded signed neuron, max-pools route spike counts (no neurons)
    assert {layer.neuron.kind for layer in net.neuron_layers} == {"SignedIF"}
    assert all(layer.neuron.graded for layer in net.neuron_layers) and any(l.op == "maxpool" for l in net.layers)
    res = snnc("compile", str(tiny_onnx), "-o", str(tmp_path / "split.lava"), "--calib", str(calib_dir), "-q",
               "--leaky", "split", "--maxpool", "exact")
    assert res.returncode == 0, res.stderr
    assert {layer.neuron.kind for layer in lavafile.load(tmp_path / "split.lava").neuron_layers} == {"IF"}
    res = snnc("compile", str(tiny_onnx), "-o", str(tmp_path / "ibt.lava"), "--calib", str(calib_dir), "-q",
               "--leaky", "ibt", "--maxpool", "exact")
    assert res.returncode == 0, res.stderr
    assert {layer.neuron.kind for layer in lavafile.load(tmp_path / "ibt.lava").neuron_layers} == {"IF", "SignedIF"}
    res = snnc("inspect", str(tmp_path / "ibt.lava"))
    assert res.returncode == 0 and "SignedIF" in res.stdout and "<- output" in res.stdout
    res = snnc("passes")
    names = [ln.split()[0] for ln in res.stdout.splitlines()]
    assert names[:len(DEFAULT_PIPELINE)] == list(DEFAULT_PIPELINE)
    assert names.index("maxpool_to_strided_conv") < names.index("split_leaky_relu") \
        < names.index("activations_to_neurons") < names.index("channel_norm")
    assert all(("exact" in ln) or ("approximate" in ln) for ln in res.stdout.splitlines())


def test_emit_onnx_and_ratelimit(tmp_path, tiny_onnx, calib_dir):
    for emit in ("onnx", "ratelimit"):
        out = tmp_path / f"{emit}.onnx"
        res = snnc("compile", str(tiny_onnx), "-o", str(out), "--calib", str(calib_dir), "--emit", emit, "-q")
        assert res.returncode == 0, res.stderr
        m = onnx.load(out)
        onnx.checker.check_model(m)
        has_snnc = any(n.domain == "snnc" for n in m.graph.node)
        assert has_snnc == (emit == "onnx")


def test_passes_subset_without_calibration(tmp_path, tiny_onnx):
    out = tmp_path / "partial.onnx"
    res = snnc("compile", str(tiny_onnx), "-o", str(out), "--skip", "channel_norm", "--emit", "onnx")
    assert res.returncode == 0, res.stderr
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert "BatchNormalization" not in ops and "SignedIF" in ops  # graded neurons, theta_n = 1 / alpha
    res = snnc("compile", str(tiny_onnx), "-o", str(out), "--skip", "channel_norm", "--emit", "onnx",
               "--leaky", "split", "--maxpool", "exact")
    assert res.returncode == 0, res.stderr
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert "MaxPool" not in ops and "BatchNormalization" not in ops and "IF" in ops


def test_calib_random_warns(tmp_path, tiny_onnx):
    out = tmp_path / "r.lava"
    res = snnc("compile", str(tiny_onnx), "-o", str(out), "--calib-random", "2", "-q")
    assert res.returncode == 0 and "random" in res.stderr


def test_bad_not_onnx(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_text("this is not a model\n" * 10)
    out = tmp_path / "net.lava"
    assert_user_error(snnc("compile", str(bad), "-o", str(out), "--skip", "channel_norm"), out, str(bad))


def test_bad_truncated_onnx(tmp_path, tiny_onnx):
    data = tiny_onnx.read_bytes()
    bad = tmp_path / "trunc.onnx"
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "net.lava"
    assert_user_error(snnc("compile", str(bad), "-o", str(out), "--skip", "channel_norm"), out, str(bad))


def test_bad_unsupported_activation(tmp_path):
    b = Builder(0)
    y = b.node("Sigmoid", [b.conv("images", 3, 4)])
    p = tmp_path / "sig.onnx"
    onnx.save(b.model([1, 3, 8, 8], [b.conv(y, 4, 2, k=1)]), p)
    out = tmp_path / "net.lava"
    assert_user_error(snnc("compile", str(p), "-o", str(out), "--skip", "channel_norm"), out, "Sigmoid node 'sigmoid_")


def test_bad_dynamic_shape(tmp_path):
    b = Builder(0)
    y = b.conv(b.node("Relu", [b.conv("images", 3, 4)]), 4, 2, k=1)
    p = tmp_path / "dyn.onnx"
    onnx.save(b.model([1, 3, "H", "W"], [y]), p)
    out = tmp_path / "net.lava"
    assert_user_error(snnc("compile", str(p), "-o", str(out), "--skip", "channel_norm"), out, "--input-shape")
    res = snnc("compile", str(p), "-o", str(out), "--calib-random", "1", "--input-shape", "1,3,16,16", "-q")
    assert res.returncode == 0, res.stderr
    assert lavafile.load(out).layers[0].shape == (3, 16, 16)


def test_bad_empty_calibration_folder(tmp_path, tiny_onnx):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "net.lava"
    assert_user_error(snnc("compile", str(tiny_onnx), "-o", str(out), "--calib", str(empty)), out, str(empty))


def test_bad_missing_file_and_unknown_pass(tmp_path, tiny_onnx):
    out = tmp_path / "net.lava"
    assert_user_error(snnc("compile", str(tmp_path / "nope.onnx"), "-o", str(out)), out, "no such file")
    assert_user_error(snnc("compile", str(tiny_onnx), "-o", str(out), "--passes", "fold_bn"), out, "unknown pass")


def test_inspect_corrupt_and_foreign_files(tmp_path, tiny_onnx, calib_dir):
    junk = tmp_path / "junk.lava"
    junk.write_bytes(b"PK\x03\x04 definitely not a zip")
    res = snnc("inspect", str(junk))
    assert res.returncode == 2 and "not a snnc .lava file" in res.stderr and "Traceback" not in res.stderr
    good = tmp_path / "good.lava"
    assert snnc("compile", str(tiny_onnx), "-o", str(good), "--calib", str(calib_dir), "-q").returncode == 0
    import json
    import zipfile
    newer = tmp_path / "newer.lava"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(newer, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "manifest.json":
                m = json.loads(data)
                m["version"] = 99
                data = json.dumps(m).encode()
            zout.writestr(item, data)
    with pytest.raises(FormatError, match="version 99"):
        lavafile.load(newer)
    res = snnc("inspect", str(newer))
    assert res.returncode == 2 and "version 99" in res.stderr


def test_lava_round_trip(tmp_path, tiny_onnx, calib_dir):
    out = tmp_path / "rt.lava"
    assert snnc("compile", str(tiny_onnx), "-o", str(out), "--calib", str(calib_dir), "-q").returncode == 0
    net = lavafile.load(out)
    again = tmp_path / "rt2.lava"
    lavafile.save(net, again)
    net2 = lavafile.load(again)
    for a, b in zip(net.layers, net2.layers):
        assert (a.name, a.op, a.inputs, a.shape, a.attrs) == (b.name, b.op, b.inputs, b.shape, b.attrs)
        for f in ("weight", "bias"):
            x, y = getattr(a, f), getattr(b, f)
            assert (x is None and y is None) or np.array_equal(x, y)
        if a.neuron:
            assert np.array_equal(a.neuron.threshold, b.neuron.threshold) and a.neuron.alpha == b.neuron.alpha
    assert net2.meta == net.meta and net2.host_onnx == net.host_onnx


def test_inspect_loihi2_fit_report(tmp_path, tiny_onnx, calib_dir):
    out = tmp_path / "fit.lava"
    assert snnc("compile", str(tiny_onnx), "-o", str(out), "--calib", str(calib_dir), "-q").returncode == 0
    res = snnc("inspect", str(out), "--target", "loihi2")
    assert res.returncode == 0, res.stderr
    assert "Loihi 2" in res.stdout and "fits on one Loihi 2 chip" in res.stdout
