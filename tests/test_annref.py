"""The original ANN kept by reference in a .lava file (snnc.ir.annref): smaller file, the same ANN back on load,
one clear line when the source ONNX is gone or changed."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from models import tiny_yolo
from onnx import numpy_helper

from snnc.apps import cli
from snnc.apps.outputs import write_output
from snnc.compiler.api import compile_model
from snnc.ir import annref, lavafile


@pytest.fixture()
def compiled(tmp_path):
    src = tmp_path / "tiny.onnx"
    onnx.save(tiny_yolo(), src)
    res = compile_model(src, calib_random=2, progress=False)
    by_ref = write_output(res, tmp_path / "ref.lava")  # the default
    whole = write_output(res, tmp_path / "whole.lava", embed_ann=True)
    return src, res, by_ref, whole


def test_reference_is_smaller_and_loads_the_same_ann(compiled):
    src, res, by_ref, whole = compiled
    record = res.network.meta["ann_source"]
    assert record["tensors"] and all(len(d) == 64 for d in record["tensors"].values())
    saved = by_ref.stat().st_size
    assert saved < whole.stat().st_size - 0.5 * src.stat().st_size  # most of the ANN's bytes are its weights
    loaded = lavafile.load(by_ref)
    assert loaded.ann_onnx == lavafile.load(whole).ann_onnx == res.network.ann_onnx
    from snnc.compiler.inspect import format_table

    assert f"by reference, its weights read from {src}" in format_table(loaded)
    assert "original ANN: embedded" in format_table(lavafile.load(whole))
    # a stripped initializer keeps its dims and type, not its values
    import zipfile

    stripped = onnx.load_from_string(zipfile.ZipFile(by_ref).read("ann.onnx"))
    name = next(iter(record["tensors"]))
    t = next(t for t in stripped.graph.initializer if t.name == name)
    assert not t.raw_data and not t.float_data and list(t.dims)


def test_source_next_to_the_moved_file_is_found(compiled, tmp_path):
    src, res, by_ref, _ = compiled
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copy(by_ref, moved / "ref.lava")
    shutil.copy(src, moved / src.name)
    src.unlink()  # the recorded path is gone; the copy next to the .lava serves
    assert lavafile.load(moved / "ref.lava").ann_onnx == res.network.ann_onnx


def test_missing_or_changed_source_says_what_to_do(compiled, tmp_path, capsys):
    src, _, by_ref, whole = compiled
    model = onnx.load(src)
    t = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) + 1, t.name))
    onnx.save(model, src)  # same path, other weights
    net = lavafile.load(by_ref)
    assert net.ann_onnx is None and "changed" in annref.missing_reason(net.ann_note)
    src.unlink()
    net = lavafile.load(by_ref)
    assert net.ann_onnx is None and "not found" in net.ann_note
    assert lavafile.load(whole).ann_onnx is not None  # embedded whole: needs no source
    photos = tmp_path / "photos"
    photos.mkdir()
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(photos / "a.png")
    rc = cli.main(["eval", str(by_ref), "--images", str(photos), "-T", "4", "-q", "--no-errors"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--embed-ann" in err[0] and "Traceback" not in err[0], err
    from snnc.compiler.inspect import format_table

    assert "original ANN: not available (its original ANN is stored by reference" in format_table(net)


def test_no_ann_and_embed_ann_exclude_each_other(compiled, tmp_path, capsys):
    src = compiled[0]
    with pytest.raises(SystemExit) as exc:
        cli.main(["compile", str(src), "-o", str(tmp_path / "x.lava"), "--no-ann", "--embed-ann"])
    assert exc.value.code == 2 and not (tmp_path / "x.lava").exists()


def test_damaged_stripped_ann_loads_without_it(compiled, tmp_path):
    import zipfile

    by_ref = compiled[2]
    bad = tmp_path / "bad.lava"
    with zipfile.ZipFile(by_ref) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            dst.writestr(item, b"\x08\xff\xff garbage" if item.filename == "ann.onnx" else data)
    net = lavafile.load(bad)
    assert net.ann_onnx is None and "damaged" in net.ann_note
