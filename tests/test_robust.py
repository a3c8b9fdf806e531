"""Each bad input the robustness issue listed, refused with one named line (exit 2) and no output file, or, where
the input is still usable, accepted; in-process through `snnc.apps.cli.main`."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from fuzz_cases import bomb_png, plain_member
from models import Builder
from onnx import TensorProto, numpy_helper
from test_fuzz import det_model

from snnc.apps.cli import main


def model_with(edit=None) -> onnx.ModelProto:
    b = Builder(seed=4)
    x = b.node("LeakyRelu", [b.bn(b.conv("images", 3, 4, bias=False), 4)], alpha=0.1)
    m = b.model([1, 3, 8, 8], [b.conv(x, 4, 6, k=1)])
    if edit is not None:
        edit(m)
    return m


def init(m: onnx.ModelProto, name: str) -> TensorProto:
    return next(t for t in m.graph.initializer if t.name == name)


def set_init(m: onnx.ModelProto, name: str, fn) -> None:
    t = init(m, name)
    t.CopyFrom(numpy_helper.from_array(fn(numpy_helper.to_array(t).copy()), name))


def bn_node(m: onnx.ModelProto) -> onnx.NodeProto:
    return next(n for n in m.graph.node if n.op_type == "BatchNormalization")


def cli(capsys, *argv: str) -> tuple[int, str]:
    logging.root.handlers.clear()  # main()'s basicConfig then logs to this test's captured stderr
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return rc, err


def refused(capsys, out: Path, pattern: str, *argv) -> None:
    rc, err = cli(capsys, *argv)
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("snnc: WARNING")]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("snnc: error: "), err
    assert pattern in lines[0], lines[0]
    assert not out.exists() or out.is_dir() and not any(out.iterdir())


def _nan_weight(m):
    set_init(m, m.graph.node[0].input[1], lambda a: np.where(np.arange(a.size).reshape(a.shape) == 3, np.nan, a))


def _bn_var(value, eps=None):
    def edit(m):
        set_init(m, bn_node(m).input[4], lambda a: np.full_like(a, value))
        if eps is not None:
            next(a for a in bn_node(m).attribute if a.name == "epsilon").f = eps
    return edit


def _leaky_alpha(m):
    next(n for n in m.graph.node if n.op_type == "LeakyRelu").attribute[0].f = float("nan")


def _float64(m):
    set_init(m, m.graph.node[0].input[1], lambda a: a.astype(np.float64))


def _float16_input(m):
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16


def _bias_length(m):
    head = m.graph.node[-1]
    set_init(m, head.input[2], lambda a: np.ones(a.size + 2, np.float32))


def _opset(m):
    m.opset_import[0].version = 99


BAD_MODELS = [(_nan_weight, "holds 1 NaN or infinite value(s)"), (_bn_var(np.nan), "NaN or infinite"),
              (_bn_var(0.0, eps=0.0), "variance + epsilon must be > 0"), (_bn_var(-1.0), "variance + epsilon"),
              (_leaky_alpha, "alpha=nan"), (_float64, "float64; snnc converts float32 models"),
              (_float16_input, "is float16"), (_bias_length, "model.onnx"), (_opset, "model.onnx")]


@pytest.mark.parametrize("edit,pattern", BAD_MODELS, ids=[p for _, p in BAD_MODELS])
def test_bad_models_are_refused(tmp_path, capsys, edit, pattern):
    path, out = tmp_path / "model.onnx", tmp_path / "net.lava"
    path.write_bytes(model_with(edit).SerializeToString())
    refused(capsys, out, pattern, "compile", path, "-o", out, "--calib-random", "2", "-q")


@pytest.mark.parametrize("where", ["missing", "outside", "absolute"])
def test_external_data_outside_or_missing(tmp_path, capsys, where):
    folder = tmp_path / "m"
    folder.mkdir()
    onnx.save_model(model_with(), str(folder / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    m = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    if where == "missing":
        (folder / "w.bin").unlink()
    else:
        (tmp_path / "w.bin").write_bytes((folder / "w.bin").read_bytes())
        for t in m.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = "../w.bin" if where == "outside" else str(tmp_path / "w.bin")
        onnx.save_model(m, str(folder / "model.onnx"))
    out = tmp_path / "net.lava"
    refused(capsys, out, "is missing" if where == "missing" else "outside the model's folder",
            "compile", folder / "model.onnx", "-o", out, "--calib-random", "2", "-q")


def test_external_data_beside_the_model_works(tmp_path, capsys):
    onnx.save_model(model_with(), str(tmp_path / "model.onnx"), save_as_external_data=True, location="w.bin",
                    size_threshold=0)
    rc, err = cli(capsys, "compile", tmp_path / "model.onnx", "-o", tmp_path / "net.lava", "--calib-random", "2", "-q")
    assert rc == 0, err


@pytest.fixture(scope="module")
def det(tmp_path_factory) -> dict[str, Path]:
    from PIL import Image

    root = tmp_path_factory.mktemp("robust")
    onnx.save(det_model(), root / "det.onnx")
    photo = root / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8)).save(photo)
    assert main(["compile", str(root / "det.onnx"), "-o", str(root / "det.lava"), "--calib-random", "2", "-q"]) == 0
    dyn = det_model()
    for d in dyn.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_param = "size"
    onnx.save(dyn, root / "dynamic.onnx")
    return {"onnx": root / "det.onnx", "lava": root / "det.lava", "photo": photo, "dynamic": root / "dynamic.onnx"}


COMPILE_ARGS = [(["--calib-random", "-1"], "--calib-random -1"), (["--calib-random", "1000000000"], "from 1 to"),
                (["--input-shape", "1,3,99999,99999"], "more than the limit"),
                (["--percentile", "nan"], "--percentile"), (["--calib-random", "2", "-o", ""], "-o ''"),
                (["--calib-random", "2", "-o", "{tmp}"], "is a folder"),
                (["--calib-random", "2", "-o", "{tmp}/file", "--backend", "c"], "not a folder"),
                (["--calib-random", "2", "-o", "{tmp}/no/net.lava"], "does not exist")]


@pytest.mark.parametrize("args,pattern", COMPILE_ARGS, ids=[p for _, p in COMPILE_ARGS])
def test_bad_compile_arguments(tmp_path, capsys, det, args, pattern):
    (tmp_path / "file").write_bytes(b"keep")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    model = det["dynamic"] if "--input-shape" in args else det["onnx"]
    argv = ["compile", model, "-o", tmp_path / "net.lava", "-q", *args]
    refused(capsys, tmp_path / "net.lava", pattern, *argv)
    assert (tmp_path / "file").read_bytes() == b"keep"


RUN_ARGS = [(["--seed", "-1", "--encoding", "rate"], "--seed -1"), (["--seed", str(1 << 64)], "2^63 - 1"), (["-T", "100000000"], "time steps"),
            (["--score-thr", "nan"], "--score-thr nan"), (["--iou-thr", "nan"], "--iou-thr nan"),
            (["--json", ""], "--json ''"), (["--out", "{tmp}", "--json", "{tmp}"], "--json")]


@pytest.mark.parametrize("args,pattern", RUN_ARGS, ids=[p for _, p in RUN_ARGS])
def test_bad_run_arguments(tmp_path, capsys, det, args, pattern):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    refused(capsys, tmp_path / "none", pattern, "run", det["lava"], "--image", det["photo"], "-T", "4", "-q", *args)


def test_work_budget_refuses_long_runs_up_front(tmp_path, capsys, det, monkeypatch):
    monkeypatch.setenv("SNNC_MAX_WORK", "1000000")
    refused(capsys, tmp_path / "x", "SNNC_MAX_WORK", "run", det["lava"], "--image", det["photo"], "-T", "64", "-q")
    monkeypatch.setenv("SNNC_MAX_WORK", "100000000")
    assert cli(capsys, "run", det["lava"], "--image", det["photo"], "-T", "4", "-q")[0] == 0


def test_inspect_weight_bits(capsys, det):
    refused(capsys, Path("/nonexistent"), "--weight-bits 0", "inspect", det["lava"], "--target", "loihi2",
            "--weight-bits", "0")


def test_decompression_bomb_photo(tmp_path, capsys, det):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png(9000, 9000))  # 81 M pixels: under PIL's own error limit, over snnc's
    refused(capsys, tmp_path / "x", "larger than the limit", "run", det["lava"], "--image", bomb, "-T", "4", "-q")


def rewrite(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    m = json.loads(members.pop("manifest.json"))
    edit(m, members)
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr("manifest.json", json.dumps(m))
    return dst


def _threshold(value):
    def edit(m, members):
        e = next(e for e in m["layers"] if e.get("neuron"))
        buf = io.BytesIO()
        name = plain_member(e["neuron"], "threshold", members)
        th = np.load(io.BytesIO(members[name]))
        np.save(buf, np.full_like(th, value))
        members[name] = buf.getvalue()
    return edit


def _first_conv(key, value):
    def edit(m, members):
        next(e for e in m["layers"] if e["op"] == "conv")["attrs"][key] = value
    return edit


def _weight_shape(m, members):
    e = next(e for e in m["layers"] if e["op"] == "conv")
    buf = io.BytesIO()
    np.save(buf, np.ones((2, 2), np.float32))
    members[plain_member(e, "weight", members)] = buf.getvalue()


BAD_LAVA = [(_threshold(np.nan), "thresholds must be finite and > 0"), (_threshold(0.0), "> 0"),
            (_threshold(-1.0), "> 0"), (_first_conv("pads", [-1, 0, 0, 0]), "pads"),
            (_first_conv("strides", [0, 1]), "strides"), (_weight_shape, "weight of shape [2, 2]"),
            (lambda m, _: m.update(layers=[1, 2]), "layers[0] is 1"), (lambda m, _: m.update(layers=None), "layers"),
            (lambda m, _: m["layers"][1].update(neuron={"kind": "IF"}), "threshold")]


@pytest.mark.parametrize("edit,pattern", BAD_LAVA, ids=[p for _, p in BAD_LAVA])
@pytest.mark.parametrize("command", ["inspect", "run"])
def test_corrupt_lava_is_refused(tmp_path, capsys, det, edit, pattern, command):
    lava = rewrite(det["lava"], tmp_path / "bad.lava", edit)
    extra = ["--image", det["photo"], "-T", "4", "-q"] if command == "run" else []
    refused(capsys, tmp_path / "none", pattern, command, lava, *extra)


def test_bad_deflate_data(tmp_path, capsys, det):
    data = bytearray(det["lava"].read_bytes())
    with zipfile.ZipFile(det["lava"]) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("weight.npy") and i.compress_size > 40)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 5:start + 25] = bytes(range(20))
    (tmp_path / "bad.lava").write_bytes(bytes(data))
    refused(capsys, tmp_path / "none", "corrupt", "inspect", tmp_path / "bad.lava")


def test_garbage_embedded_ann_only_matters_when_used(tmp_path, capsys, det):
    lava = rewrite(det["lava"], tmp_path / "bad.lava", lambda m, members: members.update({"ann.onnx": b"\x08garbage"}))
    rc, err = cli(capsys, "inspect", lava)
    assert rc == 0, err
    rc, err = cli(capsys, "run", lava, "--image", det["photo"], "-T", "4", "-q")
    assert rc == 0 and "Traceback" not in err and "no energy estimate" in err
    refused(capsys, tmp_path / "none", "ann.onnx", "run", lava, "--image", det["photo"], "-T", "4", "-q", "--ann")
