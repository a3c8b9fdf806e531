"""Fuzz test of the one-line-error contract: generated bad ONNX models, corrupted .lava files, bad photos and bad
arguments go through `snnc` (tests/fuzz_cases.py); every case must exit 0 or 2 without a traceback, refuse with
one `snnc: error:` line, leave no file behind and finish in time (tests/fuzz_worker.py checks each case).

SNNC_FUZZ_CASES=N runs N cases (default 300, about half a minute); SNNC_FUZZ_SEED picks another set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from models import Builder, tiny_yolo
from PIL import Image

from snnc.apps.outputs import write_output
from snnc.compiler.api import compile_model
from snnc.evaluation.digits import make_digits

CASES = int(os.environ.get("SNNC_FUZZ_CASES", "300"))
SEED = int(os.environ.get("SNNC_FUZZ_SEED", "12"))
WORKER = Path(__file__).parent / "fuzz_worker.py"


def small_model() -> onnx.ModelProto:
    """conv + BN + leaky ReLU, max-pool, conv + ReLU, a linear head: the fastest model that exercises the passes."""
    b = Builder(seed=1)
    x = b.node("LeakyRelu", [b.bn(b.conv("images", 3, 4, bias=False), 4)], alpha=0.1)
    x = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = b.node("Relu", [b.conv(x, 4, 4)])
    return b.model([1, 3, 8, 8], [b.conv(x, 4, 6, k=1)])


def det_model() -> onnx.ModelProto:
    """A 16 px detector whose host graph gives boxes and scores, so `snnc run` goes all the way to detections."""
    b = Builder(seed=2)
    x = b.node("LeakyRelu", [b.bn(b.conv("images", 3, 4, bias=False), 4)], alpha=0.1)
    x = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = b.node("Relu", [b.conv(x, 4, 8)])
    head = b.conv(x, 8, 7, k=1)  # 4 box coordinates + 3 class scores per position
    flat = b.node("Transpose", [b.node("Reshape", [head, b.const(np.array([1, 7, -1], np.int64))])], perm=[0, 2, 1])
    boxes = b.node("Mul", [b.node("Sigmoid", [b.node("Slice", [flat, b.const(np.array([0], np.int64)),
                                                                b.const(np.array([4], np.int64)),
                                                                b.const(np.array([2], np.int64))])]),
                           b.const(np.array(16.0, np.float32))])
    scores = b.node("Sigmoid", [b.node("Slice", [flat, b.const(np.array([4], np.int64)),
                                                 b.const(np.array([7], np.int64)), b.const(np.array([2], np.int64))])])
    b.nodes.append(onnx.helper.make_node("Identity", [boxes], ["boxes"]))
    b.nodes.append(onnx.helper.make_node("Identity", [scores], ["scores"]))
    return b.model([1, 3, 16, 16], ["boxes", "scores"])


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz_base")
    calib, photos = root / "calib", root / "photos"
    calib.mkdir()
    photos.mkdir()
    for i, img in enumerate(make_digits("train", 4, seed=3).images):
        Image.fromarray(img).save(calib / f"c{i}.png")
    for i, img in enumerate(make_digits("test", 2, seed=5).images):
        Image.fromarray(img).save(photos / f"t{i}.png")
    onnx.save(small_model(), root / "small.onnx")
    onnx.save(tiny_yolo(size=16), root / "tiny.onnx")
    onnx.save(det_model(), root / "det.onnx")
    write_output(compile_model(root / "det.onnx", calib_dir=calib, progress=False), root / "det.lava")
    return {"onnx": root / "small.onnx", "onnx_big": root / "tiny.onnx", "lava": root / "det.lava",
            "calib": calib, "photos": photos, "photo": photos / "t0.png"}


def run_cases(base: dict[str, Path], folder: Path, n: int, seed: int) -> list[dict]:
    """Cases 0..n-1 through workers; a worker killed by a signal is replaced, its case recorded as a crash."""
    (folder / "base.json").write_text(json.dumps({k: str(v) for k, v in base.items()}))
    results = folder / "results.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SNNC_MAX_WORK": "3000000000", "PYTHONFAULTHANDLER": "1"}
    done: dict[int, dict] = {}
    start = 0
    while start < n:
        proc = subprocess.run([sys.executable, str(WORKER), str(folder / "base.json"), str(results), str(seed),
                               str(start), str(n)], env=env, capture_output=True, text=True,
                              timeout=120 + 90 * (n - start))
        started = None
        for line in results.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("start"):
                started = rec["i"]
            else:
                done[rec["i"]] = rec
        if started is not None and started not in done:  # the worker died inside this case
            done[started] = {"i": started, "ok": False, "why": f"worker died (exit {proc.returncode}): "
                                                            f"{proc.stderr[-800:]}", "argv": None}
        elif proc.returncode != 0:
            raise AssertionError(f"fuzz worker failed outside a case: {proc.stderr[-2000:]}")
        start = max(done) + 1 if done else n
    return [done[i] for i in sorted(done)]


def test_fuzz_one_line_errors(base, tmp_path):
    results = run_cases(base, tmp_path, CASES, SEED)
    assert len(results) == CASES
    kinds = {k: sum(r.get("kind") == k for r in results) for k in ("onnx", "lava", "image", "args")}
    refused = sum(r.get("rc") == 2 for r in results)
    failures = [r for r in results if not r["ok"]]
    print(f"fuzz: {CASES} cases {kinds}, {refused} refused with exit 2, {CASES - refused - len(failures)} accepted, "
          f"{len(failures)} failures")
    report = "\n\n".join(f"case {r['i']} {r.get('argv')}: {r['why']}\n{r.get('stderr', '')}" for r in failures[:10])
    assert not failures, f"{len(failures)} of {CASES} cases broke the one-line-error contract:\n{report}"
    # The generator must reach every kind, and both outcomes: refusals and inputs that still work.
    assert all(kinds.values()) and refused > CASES // 4 and refused < CASES


def test_fuzz_cases_are_deterministic(base, tmp_path):
    from fuzz_cases import make_case

    for i in range(12):
        a = make_case(base, i, SEED, tmp_path / f"a{i}")
        b = make_case(base, i, SEED, tmp_path / f"b{i}")
        assert a[0] == b[0] and [s.replace(f"/a{i}/", "/") for s in a[1]] == [s.replace(f"/b{i}/", "/") for s in b[1]]
        fa = sorted(p.relative_to(tmp_path / f"a{i}") for p in (tmp_path / f"a{i}").rglob("*") if p.is_file())
        assert fa == sorted(p.relative_to(tmp_path / f"b{i}") for p in (tmp_path / f"b{i}").rglob("*") if p.is_file())
        for p in fa:
            assert (tmp_path / f"a{i}" / p).read_bytes() == (tmp_path / f"b{i}" / p).read_bytes()


def test_bomb_png_is_refused_before_decoding(tmp_path):
    from fuzz_cases import bomb_png

    from snnc.compiler.images import read_image
    from snnc.ir.errors import SnncError

    p = tmp_path / "bomb.png"
    p.write_bytes(bomb_png(100000, 70000))
    with pytest.raises(SnncError, match="larger than the limit"):
        read_image(p)
    ok = tmp_path / "ok.png"
    Image.fromarray(np.zeros((3, 5, 3), np.uint8)).save(ok)
    assert read_image(ok).shape == (3, 5, 3)
