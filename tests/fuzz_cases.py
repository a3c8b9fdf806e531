"""Bad inputs for the fuzz test (test_fuzz.py): each case is an argv for `snnc` plus the files it reads, all
derived from a few valid artifacts (a small ONNX model, a compiled digits .lava, photos) by one seeded mutation.

`make_case(base, i, seed, folder)` writes case i's files into `folder` and returns (kind, argv). Kinds:
onnx (a mutated model compiled), lava (a corrupted .lava inspected or run), image (bad photos), args (bad options).
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

WEIRD = [None, -1, 0, 1, 2.5, -7.0, 1e30, float("nan"), float("inf"), "x", "", [], {}, [1, 2], [-1, -1, -1, -1],
         True, [0, 0], [[1]], {"a": 1}, 10 ** 12]
T_SMALL = "4"


# ---- .lava corruption ---------------------------------------------------------------------------------------------

def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _edit_json(rng: np.random.Generator, obj, depth: int = 0):
    """Replace, delete or retype one randomly chosen value somewhere in the JSON tree."""
    if isinstance(obj, dict) and obj and (depth < 1 or rng.random() < 0.7):
        key = list(obj)[rng.integers(len(obj))]
        r = rng.random()
        if r < 0.15:
            del obj[key]
        elif r < 0.55 and isinstance(obj[key], (dict, list)) and obj[key]:
            _edit_json(rng, obj[key], depth + 1)
        else:
            obj[key] = WEIRD[rng.integers(len(WEIRD))]
    elif isinstance(obj, list) and obj:
        j = int(rng.integers(len(obj)))
        if isinstance(obj[j], (dict, list)) and obj[j] and rng.random() < 0.6:
            _edit_json(rng, obj[j], depth + 1)
        elif rng.random() < 0.2:
            del obj[j]
        else:
            obj[j] = WEIRD[rng.integers(len(WEIRD))]


def plain_member(holder: dict, key: str, members: dict[str, bytes]) -> str:
    """The archive member holding `holder[key]`: a version-2 reference (fill, pattern, copies) is decoded and
    stored as a plain .npy member first, so a test can edit the array in place."""
    from snnc.ir.lavafile import decode_array

    ref = holder[key]
    if isinstance(ref, str):
        return ref
    if "npy" in ref and set(ref) <= {"npy", "dtype"}:
        arr = np.load(io.BytesIO(members[ref["npy"]])).astype(ref.get("dtype", "float32"))
    else:
        arr = decode_array(ref, lambda name: np.load(io.BytesIO(members[name])))
    name = f"arrays/plain_{len(members)}.npy"
    members[name] = _npy(np.asarray(arr, np.float32))
    holder[key] = name
    return name


def _targeted(rng: np.random.Generator, m: dict, arrays: dict[str, bytes]) -> None:
    """Edits a user might make by hand: negative pads, zero strides, NaN/zero/negative thresholds, wrong shapes."""
    layers = [e for e in m["layers"] if e.get("op") in ("conv", "deconv")]
    e = layers[rng.integers(len(layers))]
    r = int(rng.integers(12))
    if r == 0:
        e["attrs"]["pads"] = [int(v) for v in rng.integers(-3, 2, 4)]
    elif r == 1:
        e["attrs"]["strides"] = [int(v) for v in rng.integers(-1, 2, 2)]
    elif r == 2:
        e["attrs"]["dilations"] = [0, int(rng.integers(-2, 3))]
    elif r == 3:
        e["attrs"]["group"] = int(rng.choice([0, -1, 2, 3, 1000]))
    elif r == 4:
        e["shape"] = [int(v) for v in rng.integers(0, 20, rng.integers(0, 5))]
    elif r in (5, 6) and e.get("neuron"):
        th = np.load(io.BytesIO(arrays[plain_member(e["neuron"], "threshold", arrays)]))
        th[rng.integers(th.size)] = rng.choice([np.nan, 0.0, -1.0, np.inf, -np.inf])
        arrays[e["neuron"]["threshold"]] = _npy(th)
    elif r == 7 and e.get("neuron"):
        e["neuron"][str(rng.choice(["alpha", "v_init"]))] = float(rng.choice([np.nan, -1.0, 2.0, np.inf, 0.0]))
    elif r == 8:
        w = np.load(io.BytesIO(arrays[plain_member(e, "weight", arrays)]))
        shapes = [w.shape[:-1], w.shape[1:], (w.shape[0] + 1,) + w.shape[1:], (w.size,)]
        arrays[e["weight"]] = _npy(np.ones(shapes[rng.integers(len(shapes))], np.float32))
    elif r == 9:
        w = np.load(io.BytesIO(arrays[plain_member(e, "weight", arrays)]))
        w.flat[rng.integers(w.size)] = rng.choice([np.nan, np.inf])
        arrays[e["weight"]] = _npy(w)
    elif r == 10:
        name = plain_member(e, "bias" if e.get("bias") else "weight", arrays)
        arrays[name] = rng.choice([b"", b"\x93NUMPY", arrays[name][: len(arrays[name]) // 2],
                                   _npy(np.array(["a", "b"])), _npy(np.zeros(3, np.complex64)),
                                   _npy(np.zeros((2, 2), np.int64))])
    else:
        key = str(rng.choice(["ann.onnx", "host.onnx"]))
        arrays[key] = bytes(rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8))


def corrupt_lava(rng: np.random.Generator, src: bytes) -> bytes:
    r = rng.random()
    if r < 0.12:  # bit flips anywhere in the archive (bad deflate data, CRC errors, broken headers)
        b = bytearray(src)
        for _ in range(int(rng.integers(1, 8))):
            k = int(rng.integers(len(b) * 8))
            b[k // 8] ^= 1 << (k % 8)
        return bytes(b)
    if r < 0.2:
        return src[: int(rng.integers(0, len(src)))]
    with zipfile.ZipFile(io.BytesIO(src)) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    m = json.loads(members.pop("manifest.json"))
    if r < 0.55:
        for _ in range(int(rng.integers(1, 3))):
            _edit_json(rng, m)
    elif r < 0.9:
        _targeted(rng, m, members)
    else:  # a member deleted or replaced by garbage
        names = sorted(members)
        name = names[rng.integers(len(names))]
        if rng.random() < 0.5:
            del members[name]
        else:
            members[name] = bytes(rng.integers(0, 256, int(rng.integers(0, 500)), dtype=np.uint8))
    out = io.BytesIO()

    def member(name: str) -> zipfile.ZipInfo:  # a fixed timestamp: the same case gives the same bytes at any time
        return zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))

    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(member(name), data, compress_type=zipfile.ZIP_DEFLATED)
        text = json.dumps(m)
        if rng.random() < 0.05:
            text = text[: int(rng.integers(len(text)))]
        zf.writestr(member("manifest.json"), text, compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


# ---- ONNX mutation --------------------------------------------------------------------------------------------------

def _set_init(t: TensorProto, arr: np.ndarray) -> None:
    t.CopyFrom(numpy_helper.from_array(arr, t.name))


def mutate_model(rng: np.random.Generator, m: onnx.ModelProto, folder: Path, in_memory: bool = False) -> bytes:
    """One mutation of a valid model; returns the serialized bytes (sometimes with external data in `folder`).
    in_memory: only mutations of the ModelProto itself (no files, no byte edits)."""
    g = m.graph
    r = int(rng.integers(10 if in_memory else 15))
    floats = [t for t in g.initializer if t.data_type == TensorProto.FLOAT]
    if r == 0:  # NaN / Inf / huge weights
        t = floats[rng.integers(len(floats))]
        a = numpy_helper.to_array(t).copy()
        a.flat[rng.integers(a.size)] = rng.choice([np.nan, np.inf, -np.inf, 3e38])
        _set_init(t, a)
    elif r == 1:  # float16 / float64 / int model parts
        t = floats[rng.integers(len(floats))]
        _set_init(t, numpy_helper.to_array(t).astype(rng.choice([np.float16, np.float64, np.int32])))
    elif r == 2:  # wrong length / shape of a weight or bias
        t = floats[rng.integers(len(floats))]
        a = numpy_helper.to_array(t)
        _set_init(t, np.ones(([a.shape[0] + int(rng.choice([-1, 1, 5]))] + list(a.shape[1:])) if a.shape[0] > 1
                             else [3], np.float32))
    elif r == 3:  # BatchNormalization statistics and epsilon
        bns = [n for n in g.node if n.op_type == "BatchNormalization"]
        if bns:
            bn = bns[rng.integers(len(bns))]
            var = next(t for t in g.initializer if t.name == bn.input[4])
            a = numpy_helper.to_array(var).copy()
            a[rng.integers(a.size)] = rng.choice([np.nan, -1.0, 0.0])
            _set_init(var, a)
            for at in bn.attribute:
                if at.name == "epsilon" and rng.random() < 0.6:
                    at.f = float(rng.choice([0.0, np.nan, -1e-3]))
    elif r == 4:  # an attribute of a node set to a strange value
        node = g.node[rng.integers(len(g.node))]
        if node.attribute:
            at = node.attribute[rng.integers(len(node.attribute))]
            if at.type == onnx.AttributeProto.FLOAT:
                at.f = float(rng.choice([np.nan, np.inf, -1.0, 0.0, 1e9]))
            elif at.type == onnx.AttributeProto.INT:
                at.i = int(rng.choice([-1, 0, 2, 7, 1 << 40]))
            elif at.type == onnx.AttributeProto.INTS:
                vals = [int(v) for v in rng.choice([-2, -1, 0, 1, 3, 100], len(at.ints) + int(rng.integers(-1, 2)))]
                del at.ints[:]
                at.ints.extend(vals)
    elif r == 5:  # input dimensions and element type
        dims = g.input[0].type.tensor_type.shape.dim
        k = int(rng.integers(len(dims)))
        choice = rng.integers(4)
        if choice == 0:
            dims[k].dim_value = int(rng.choice([0, 1, 2, 7, 99999]))
        elif choice == 1:
            dims[k].dim_param = "n"
        elif choice == 2:
            g.input[0].type.tensor_type.elem_type = int(rng.choice([TensorProto.FLOAT16, TensorProto.DOUBLE,
                                                                    TensorProto.INT64, TensorProto.UINT8]))
        else:
            dims.add().dim_value = 1
    elif r == 6:  # opset / IR version
        if rng.random() < 0.6:
            m.opset_import[0].version = int(rng.choice([1, 7, 11, 13, 21, 30, 99]))
        else:
            m.ir_version = int(rng.choice([1, 3, 11, 99]))
    elif r == 7:  # the op of a node replaced
        node = g.node[rng.integers(len(g.node))]
        node.op_type = str(rng.choice(["Relu", "Sigmoid", "Conv", "MaxPool", "Gemm", "LSTM", "Foo", "Softmax"]))
    elif r == 8:  # a node removed or an input rewired
        k = int(rng.integers(len(g.node)))
        if rng.random() < 0.5:
            del g.node[k]
        elif g.node[k].input:
            g.node[k].input[0] = str(rng.choice([g.input[0].name, g.node[rng.integers(len(g.node))].output[0],
                                                 "missing"]))
    elif r == 9:  # LeakyRelu alpha
        for node in g.node:
            if node.op_type == "LeakyRelu":
                for at in node.attribute:
                    at.f = float(rng.choice([np.nan, np.inf, -0.5, 1.0, 2.0]))
    elif r in (10, 11):  # external data: missing, or pointing outside the folder
        onnx.save_model(m, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="weights.bin", size_threshold=0)
        m2 = onnx.load(str(folder / "model.onnx"), load_external_data=False)
        how = int(rng.integers(4))
        if how == 0:
            (folder / "weights.bin").unlink()
        elif how == 1:
            (folder / "weights.bin").write_bytes((folder / "weights.bin").read_bytes()[:100])
        else:
            for t in m2.graph.initializer:
                for e in t.external_data:
                    if e.key == "location":
                        e.value = "../weights.bin" if how == 2 else "/etc/hostname"
        return m2.SerializeToString()
    elif r == 12:  # bytes of the file flipped or cut
        b = bytearray(m.SerializeToString())
        if rng.random() < 0.5:
            return bytes(b[: int(rng.integers(len(b)))])
        for _ in range(int(rng.integers(1, 10))):
            k = int(rng.integers(len(b)))
            b[k] = int(rng.integers(256))
        return bytes(b)
    elif r == 13:  # Constant nodes with NaN, or an initializer dropped
        if rng.random() < 0.5 and g.initializer:
            del g.initializer[int(rng.integers(len(g.initializer)))]
        else:
            t = floats[rng.integers(len(floats))]
            const = onnx.helper.make_node("Constant", [], [t.name], value=numpy_helper.from_array(
                np.full(numpy_helper.to_array(t).shape, np.nan, np.float32)))
            g.initializer.remove(t)
            g.node.insert(0, const)
    else:  # two mutations
        mutate_model(rng, m, folder, in_memory=True)
        return mutate_model(rng, m, folder, in_memory=True)
    return m.SerializeToString()


# ---- images -------------------------------------------------------------------------------------------------------

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels with a tiny (invalid) body: a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def bad_image(rng: np.random.Generator, good: bytes) -> tuple[str, bytes]:
    r = int(rng.integers(7))
    if r == 0:
        return "bomb.png", bomb_png(int(rng.choice([20000, 100000, 1 << 30])), int(rng.choice([20000, 70000])))
    if r == 1:
        return "cut.png", good[: int(rng.integers(len(good)))]
    if r == 2:
        b = bytearray(good)
        for _ in range(int(rng.integers(1, 20))):
            b[rng.integers(8, len(b))] = int(rng.integers(256))
        return "flipped.png", bytes(b)
    if r == 3:
        return "empty.jpg", b""
    if r == 4:
        return "text.png", b"not an image at all\n" * int(rng.integers(1, 50))
    if r == 5:
        return "tiny.png", _tiny_png(rng)
    return "random.jpg", bytes(rng.integers(0, 256, int(rng.integers(1, 2000)), dtype=np.uint8))


def _tiny_png(rng: np.random.Generator) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    mode = str(rng.choice(["L", "1", "RGBA", "I", "F", "P", "LA"]))
    Image.new(mode, (int(rng.integers(1, 4)), int(rng.integers(1, 4)))).save(
        buf, format="TIFF" if mode in ("F", "I") else "PNG")
    return buf.getvalue()


# ---- the cases ------------------------------------------------------------------------------------------------------

BAD_ARGS_COMPILE = [["--calib-random", "-1"], ["--calib-random", "0"], ["--calib-random", "1000000000"],
                    ["--calib-random", "x"], ["--input-shape", "1,3,99999,99999"], ["--input-shape", "0,3,16,16"],
                    ["--input-shape", "1,3,16"], ["--input-shape", "a,b"], ["--input-shape", "1,3,-16,16"],
                    ["--input-shape", "1,3,99999999999999999999,1"], ["--percentile", "nan"], ["--percentile", "inf"],
                    ["--percentile", "0"], ["--percentile", "101"], ["--percentile", "-5"], ["--passes", "nope"],
                    ["--skip", "fold_batchnorm,zzz"], ["--passes", ""], ["--norm", "x"], ["--emit", "c"],
                    ["--calib", "/no/such/dir"]]
BAD_ARGS_RUN = [["-T", "0"], ["-T", "-1"], ["-T", "100000000"], ["-T", "x"], ["-T", ""], ["-T", "1,,2"],
                ["-T", "1e3"], ["-T", "99999"], ["--seed", "-1", "--encoding", "rate"], ["--seed", "99999999999999999999"],
                ["--score-thr", "nan"], ["--score-thr", "2"], ["--iou-thr", "nan"], ["--iou-thr", "-0.1"],
                ["--backend", "nope"], ["--device", "tpu"], ["--mode", "fixed"], ["--encoding", "rate"],
                ["--v-init", "half"], ["--decode", "spikes"], ["--ann"], ["--device", "cuda:0"]]


def make_case(base: dict[str, Path], i: int, seed: int, folder: Path) -> tuple[str, list[str]]:
    rng = np.random.default_rng([seed, i])
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "out"
    out.mkdir()
    kind = str(rng.choice(["onnx", "lava", "image", "args"], p=[0.3, 0.4, 0.12, 0.18]))
    if kind == "onnx":
        src = base["onnx"] if rng.random() < 0.8 else base["onnx_big"]
        data = mutate_model(rng, onnx.load(str(src)), out)
        model = out / "model.onnx"
        model.write_bytes(data)
        argv = ["compile", str(model), "-o", str(out / "net.lava"), "-q"]
        argv += ["--calib", str(base["calib"])] if rng.random() < 0.3 else ["--calib-random", "2"]
        if rng.random() < 0.15:
            argv += ["--emit", str(rng.choice(["onnx", "ratelimit"]))]
            argv[3] = str(out / "net.onnx")
        elif rng.random() < 0.1:
            argv += ["--leaky", "ibt"]
        return kind, argv
    if kind == "lava":
        lava = out / "net.lava"
        lava.write_bytes(corrupt_lava(rng, base["lava"].read_bytes()))
        r = rng.random()
        if r < 0.35:
            return kind, ["inspect", str(lava)] + (["--target", "loihi2"] if rng.random() < 0.3 else [])
        if r < 0.9:
            argv = ["run", str(lava), "--image", str(base["photo"]), "-T", T_SMALL, "-q"]
            if rng.random() < 0.3:
                argv += ["--json", str(out / "det.json"), "--out", str(out / "det.png")]
            if rng.random() < 0.3:
                argv += list(BAD_ARGS_RUN[rng.integers(len(BAD_ARGS_RUN))])
            return kind, argv
        return kind, ["eval", str(lava), "--images", str(base["photos"]), "-T", T_SMALL, "-q", "--no-errors",
                      "--examples", "0"]
    if kind == "image":
        name, data = bad_image(rng, base["photo"].read_bytes())
        imgs = out / "imgs"
        imgs.mkdir()
        (imgs / name).write_bytes(data)
        if rng.random() < 0.5:
            return kind, ["compile", str(base["onnx_big"]), "-o", str(out / "net.lava"), "--calib", str(imgs), "-q"]
        return kind, ["run", str(base["lava"]), "--image", str(imgs / name), "-T", T_SMALL, "-q"]
    r = rng.random()
    if r < 0.4:
        argv = ["compile", str(base["onnx"]), "-o", str(out / "net.lava"), "-q"]
        bad = list(BAD_ARGS_COMPILE[rng.integers(len(BAD_ARGS_COMPILE))])
        if "--calib" not in bad and "--calib-random" not in bad:
            argv += ["--calib-random", "2"]
        o = int(rng.integers(6))  # the output path
        if o == 1:
            argv[3] = ""
        elif o == 2:
            argv[3] = str(out)  # an existing folder
        elif o == 3:
            argv[3] = str(out / "missing" / "net.lava")
        elif o == 4:
            (out / "file").write_bytes(b"x")
            argv[3] = str(out / "file")
            bad = ["--backend", "c"]
        return kind, argv + bad
    if r < 0.8:
        argv = ["run", str(base["lava"]), "--image", str(base["photo"]), "-T", T_SMALL, "-q"]
        argv += list(BAD_ARGS_RUN[rng.integers(len(BAD_ARGS_RUN))])
        if rng.random() < 0.25:
            (out / "plain").write_bytes(b"x")  # an existing file without a suffix
            argv += [str(rng.choice(["--out", "--json"])),
                     str(rng.choice(["", str(out), str(out / "no" / "x.png"), str(out / "plain"), str(out / "new")]))]
        return kind, argv
    if r < 0.9:
        return kind, ["inspect", str(base["lava"]), "--target", "loihi2", "--weight-bits",
                      str(rng.choice(["0", "-1", "1", "99", "8"]))]
    argv = ["eval", str(base["lava"]), "--images", str(base["photos"]), "-q", "--no-errors", "--examples", "0"]
    argv += list([["-T", "0"], ["--fidelity-thr", "nan"], ["-n", "0"], ["--batch", "0"], ["--report", ""],
                  ["--report", str(base["photo"])], ["-T", "4", "--backend", "nope"], ["--examples", "-1"],
                  ["-T", "4", "--report", str(out / "no" / "r")]][rng.integers(9)])
    return kind, argv
