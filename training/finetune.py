"""`snnc finetune`: an ONNX detector -> the same detector with QCFS activations, fine-tuned for T time steps.

The target is the original ANN itself: the student (QCFS activations, L = T levels) learns the teacher's raw head
outputs on unlabelled photos with augmentation (flips, scale jitter, brightness/contrast), so no labels and no
detection loss are needed. Every ReLU becomes a QCFS with lambda initialised from the calibration percentile of
its activations; every LeakyReLU a signed QCFS (two IF neurons, as `split_leaky_relu` converts it). With the
dual error model the activations also see the SNN's error at T during training (training/qcfs.py); with
`tandem` the last epochs train on the SNN's own values at T (training/tandem.py).

The result is the prepared ONNX (the whole detector, host part included) with the trained weights written back
and each ReLU replaced by the QCFS chain Mul(L/lam) -> Add(0.5) -> Floor -> Div(L) -> Clip(0, 1) -> Mul(lam)
that `activations_to_neurons` turns into an IF neuron with theta = lambda; each LeakyReLU by the signed QCFS
QCFS_lam+(z) - alpha QCFS_lam-(-z) (compiler/qcfs.py), which `split_leaky_relu` makes two IF neurons with
theta = lam+ and lam-.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from tqdm import tqdm

from snnc.compiler.frontend import prepare
from snnc.compiler.images import letterbox, list_images, read_image
from snnc.compiler.split import split_model
from snnc.ir.errors import SnncError
from snnc.ir.files import atomic_path
from snnc.training.detloss import load_labels, probe_heads, yolo_loss
from snnc.training.importer import OnnxModule, import_onnx
from snnc.training.noise import layer_of, unevenness_from_metrics
from snnc.training.qcfs import QCFS, SignedQCFS
from snnc.training.tandem import spiking_rates, tandem_forward

log = logging.getLogger(__name__)
SNN_EVAL_PHOTOS = 64  # tandem epochs: the SNN's loss on the first 64 evaluation photos (T forward passes each)


@dataclass(frozen=True)
class FinetuneOptions:
    """T: target time steps (= QCFS levels L); dual_error: train with the dual error model at T; unevenness:
    its order-dependent noise as a fraction of one spike (theta / T); size: training input size (None: the
    model's); percentile: lambda initialisation."""

    T: int = 8
    epochs: int = 10
    lr: float = 1e-4  # 1e-3 wrecked yolov3-tiny's pretrained weights within 80 steps (docs/results.md)
    batch: int = 8
    size: int | None = None
    dual_error: bool = True
    unevenness: float = 0.5
    percentile: float = 99.9
    augment: bool = True
    seed: int = 0
    label_weight: float = 0.01
    crop: bool = False  # with size: random size x size crops of the photos at the model's input size
    object_weight: float = 0.0  # distillation: cells weigh 1 + object_weight x the teacher's objectness there
    tandem: int = 0  # the last `tandem` epochs train on the SNN's own values at T (training/tandem.py)
    lambda_per: str = "layer"  # one QCFS lambda per "layer" or per "channel"

    def validate(self) -> "FinetuneOptions":
        if not isinstance(self.T, int) or self.T < 1:
            raise SnncError(f"-T {self.T!r}: expected an integer >= 1 (the target time steps)")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise SnncError(f"--epochs {self.epochs!r}: expected an integer >= 1")
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise SnncError(f"--lr {self.lr!r}: expected a positive number")
        if not isinstance(self.batch, int) or self.batch < 1:
            raise SnncError(f"--batch {self.batch!r}: expected an integer >= 1")
        if self.size is not None and (not isinstance(self.size, int) or self.size < 8):
            raise SnncError(f"--size {self.size!r}: expected an integer >= 8 (pixels)")
        if not 0 <= self.unevenness <= 1:
            raise SnncError(f"--unevenness {self.unevenness!r}: expected a fraction of one spike in [0, 1]")
        if not (self.label_weight >= 0 and np.isfinite(self.label_weight)):
            raise SnncError(f"--label-weight {self.label_weight!r}: expected a number >= 0")
        if not (self.object_weight >= 0 and np.isfinite(self.object_weight)):
            raise SnncError(f"--object-weight {self.object_weight!r}: expected a number >= 0")
        if self.crop and self.size is None:
            raise SnncError("--crop needs --size (the side of the random crops, smaller than the model's input)")
        if not isinstance(self.tandem, int) or not 0 <= self.tandem <= self.epochs:
            raise SnncError(f"--tandem {self.tandem!r}: expected a number of epochs in [0, --epochs]")
        if self.lambda_per not in ("layer", "channel"):
            raise SnncError(f"--lambda-per {self.lambda_per!r}: expected 'layer' or 'channel'")
        if not 0 < self.percentile <= 100:
            raise SnncError(f"percentile {self.percentile!r}: expected (0, 100]")
        return self


@dataclass
class FinetuneResult:
    model: onnx.ModelProto
    log: dict[str, Any] = field(default_factory=dict)


def load_photos(folder: str | Path, hw: tuple[int, int]) -> np.ndarray:
    """(N, 3, h, w) letterboxed photos of a folder; SnncError when there are none."""
    files = list_images(folder, missing="no such folder; --images needs a folder of jpg/png photos",
                        empty="no jpg/png photos; snnc finetune learns from unlabelled photos, add some")
    return np.stack([letterbox(read_image(f), hw)[0] for f in files])


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips, scale jitter (zoom in up to 1.3x, random crop), brightness and contrast."""
    return augment_boxes(x, gen)[0]


def augment_boxes(x: torch.Tensor, gen: torch.Generator, targets: list | None = None) -> tuple[torch.Tensor, list]:
    """`augment`, and the labels (boxes xyxy px, classes) per image moved with the flips and the zoom; boxes
    cut to under a quarter of their area by the crop are dropped."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    s, top, left = float(1 + 0.3 * torch.rand(1, generator=gen)), 0, 0
    if s > 1.02:
        big = torch.nn.functional.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        top = int(torch.randint(0, big.shape[2] - h + 1, (1,), generator=gen))
        left = int(torch.randint(0, big.shape[3] - w + 1, (1,), generator=gen))
        x = big[:, :, top:top + h, left:left + w]
    else:
        s = 1.0
    gain = 0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen)
    shift = 0.1 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * gain + mean + shift).clamp(0, 1)
    moved = []
    for i, (boxes, classes) in enumerate(targets or []):
        b = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
        if flip[i]:
            b[:, [0, 2]] = w - b[:, [2, 0]]
        b = b * s - np.array([left, top, left, top])
        cut = b.copy()
        cut[:, [0, 2]] = cut[:, [0, 2]].clip(0, w)
        cut[:, [1, 3]] = cut[:, [1, 3]].clip(0, h)
        area = lambda v: (v[:, 2] - v[:, 0]).clip(0) * (v[:, 3] - v[:, 1]).clip(0)  # noqa: E731
        keep = area(cut) >= 0.25 * area(b)
        moved.append((cut[keep].astype(np.float32), np.asarray(classes)[keep]))
    return x, moved


def random_crop(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """One random size x size window per image (an image no larger than size is kept whole)."""
    n, _, h, w = x.shape
    if h <= size and w <= size:
        return x
    size_h, size_w = min(size, h), min(size, w)
    tops = torch.randint(0, h - size_h + 1, (n,), generator=gen).tolist()
    lefts = torch.randint(0, w - size_w + 1, (n,), generator=gen).tolist()
    return torch.stack([x[i, :, t:t + size_h, l:l + size_w] for i, (t, l) in enumerate(zip(tops, lefts))])


def _init_lambdas(teacher: OnnxModule, x: torch.Tensor, percentile: float, batch: int,
                  per_channel: bool = False) -> dict[str, tuple]:
    """Per activation node: the percentile of relu(z) and of relu(-z) over the photos (the QCFS lambdas), one
    number each, or with per_channel one list each (per channel of the activation)."""
    pre: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for i in range(0, len(x), batch):
            rec: dict = {}
            teacher(x[i:i + batch], record=rec)
            for name, (_, z) in rec.items():
                flat = z.transpose(0, 1).flatten(1).numpy()  # (C, values)
                if flat.shape[1] > 20_000:  # a sample keeps the percentile cheap on big maps
                    flat = flat[:, np.random.default_rng(i).choice(flat.shape[1], 20_000, replace=False)]
                pre.setdefault(name, []).append(flat)
    out = {}
    for name, parts in pre.items():
        z = np.concatenate(parts, axis=1)
        z = z if per_channel else z.reshape(1, -1)
        pos = np.maximum(np.percentile(np.maximum(z, 0), percentile, axis=1), 1e-3)
        neg = np.maximum(np.percentile(np.maximum(-z, 0), percentile, axis=1), 1e-3)
        out[name] = (pos.tolist(), neg.tolist()) if per_channel else (float(pos[0]), float(neg[0]))
    return out


def qcfs_student(spiking: onnx.ModelProto, x: torch.Tensor, opts: FinetuneOptions,
                 noise: dict[str, float] | None = None) -> tuple[OnnxModule, dict]:
    """The spiking part as a torch module with every activation a (signed) QCFS; and the lambdas it started from.
    `noise`: the dual error model's measured mean order error per neuron (spikes) per layer (convolution name);
    layers it does not name use opts.unevenness."""
    student = import_onnx(spiking)
    lams = _init_lambdas(student, x, opts.percentile, opts.batch, opts.lambda_per == "channel")
    dual = opts.T if opts.dual_error else None
    for node in student.activation_nodes():
        pos, neg = lams[node.name]
        e = (noise or {}).get(layer_of(spiking, node))
        if node.op_type == "Relu":
            student.replace_activation(node.name, QCFS(opts.T, pos, dual, opts.unevenness, e))
        else:
            alpha = next((a.f for a in node.attribute if a.name == "alpha"), 0.01)
            student.replace_activation(node.name, SignedQCFS(opts.T, pos, neg, alpha, dual, opts.unevenness, e))
    return student, lams


def qcfs_nodes(name: str, x: str, y: str, lam: float | list[float], levels: int,
               sign: float = 1.0) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The ONNX chain activations_to_neurons recognises: Mul(L/lam), Add(0.5), Floor, Div(L), Clip(0, 1), Mul(lam)
    (sign -1: the chain of -x, Mul(-L/lam) first); a per-channel lam as (1, C, 1, 1) constants."""
    lam = np.array(lam, np.float32)
    lam = lam.reshape(1, -1, 1, 1) if lam.ndim else lam
    c = {k: numpy_helper.from_array(np.asarray(v, np.float32), f"{name}_qcfs_{k}")
         for k, v in (("scale", sign * levels / lam), ("half", 0.5), ("levels", float(levels)), ("zero", 0.0),
                      ("one", 1.0), ("lam", lam))}
    t = [f"{name}_qcfs_t{i}" for i in range(5)]
    nodes = [helper.make_node("Mul", [x, c["scale"].name], [t[0]], name=f"{name}_qcfs_mul"),
             helper.make_node("Add", [t[0], c["half"].name], [t[1]], name=f"{name}_qcfs_add"),
             helper.make_node("Floor", [t[1]], [t[2]], name=f"{name}_qcfs_floor"),
             helper.make_node("Div", [t[2], c["levels"].name], [t[3]], name=f"{name}_qcfs_div"),
             helper.make_node("Clip", [t[3], c["zero"].name, c["one"].name], [t[4]], name=f"{name}_qcfs_clip"),
             helper.make_node("Mul", [t[4], c["lam"].name], [y], name=f"{name}_qcfs_lam")]
    return nodes, list(c.values())


def signed_qcfs_nodes(name: str, x: str, y: str, lam_pos: float | list[float], lam_neg: float | list[float],
                      alpha: float, levels: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """A signed QCFS as ONNX (compiler/qcfs.py): QCFS_lam+(x) - alpha QCFS_lam-(-x), which split_leaky_relu turns
    into two IF neurons per channel with theta = lam+ and lam-."""
    pos, c_pos = qcfs_nodes(f"{name}_pos", x, f"{name}_pos_y", lam_pos, levels)
    neg, c_neg = qcfs_nodes(f"{name}_neg", x, f"{name}_neg_y", lam_neg, levels, sign=-1.0)
    a = numpy_helper.from_array(np.array(alpha, np.float32), f"{name}_alpha")
    tail = [helper.make_node("Mul", [f"{name}_neg_y", a.name], [f"{name}_neg_scaled"], name=f"{name}_alpha_mul"),
            helper.make_node("Sub", [f"{name}_pos_y", f"{name}_neg_scaled"], [y], name=f"{name}_signed_sub")]
    return pos + neg + tail, c_pos + c_neg + [a]


def export_qcfs(prepared: onnx.ModelProto, student: OnnxModule) -> onnx.ModelProto:
    """`prepared` with the student's trained initializers, each ReLU replaced by its QCFS chain and each LeakyReLU
    by its signed QCFS (both lambdas kept)."""
    out = onnx.ModelProto()
    out.CopyFrom(prepared)
    trained = student.trained_initializers()
    for init in out.graph.initializer:
        if init.name in trained:
            init.CopyFrom(numpy_helper.from_array(trained[init.name].astype(numpy_helper.to_array(init).dtype),
                                                  init.name))
    acts = {n.name: student.activation(n.name) for n in student.activation_nodes()}
    nodes = []
    for node in out.graph.node:
        act = acts.get(node.name)
        if isinstance(act, QCFS):
            chain, consts = qcfs_nodes(node.name, node.input[0], node.output[0], act.lam_list(), act.levels)
            nodes += chain
            out.graph.initializer.extend(consts)
        elif isinstance(act, SignedQCFS):
            chain, consts = signed_qcfs_nodes(node.name, node.input[0], node.output[0],
                                              act.pos.lam_list(), act.neg.lam_list(), act.alpha, act.pos.levels)
            nodes += chain
            out.graph.initializer.extend(consts)
        else:
            nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.metadata_props.add(key="snnc.qcfs_levels", value=str(next(
        (a.levels if isinstance(a, QCFS) else a.pos.levels for a in acts.values()), 0)))
    onnx.checker.check_model(out)
    return out


def _head_loss(got: tuple[torch.Tensor, ...], ref: tuple[torch.Tensor, ...],
               objectness: list[list[int]] | None = None, object_weight: float = 0.0) -> torch.Tensor:
    """Mean squared error per head, relative to the teacher's mean square (heads of any scale weigh the same).
    With `objectness` (per head, its objectness logit channels) and object_weight k, each cell weighs
    1 + k max_a sigmoid(teacher objectness): the few cells where the teacher sees an object count more than the
    background, which otherwise dominates the mean."""
    total = 0
    for i, (g, r) in enumerate(zip(got, ref)):
        w = 1.0
        if objectness and object_weight > 0:
            w = 1 + object_weight * torch.sigmoid(r[:, objectness[i]]).amax(dim=1, keepdim=True)
        total = total + torch.mean(w * (g - r) ** 2) / (torch.mean(w * r ** 2) + 1e-8)
    return total / len(ref)


def _snn_loss(student: OnnxModule, x: torch.Tensor, ref: tuple[torch.Tensor, ...], opts: FinetuneOptions) -> float:
    """The distillation loss of the student's SNN at T on x against the teacher's heads `ref` (in batches: T steps
    hold every layer's state)."""
    got = [spiking_rates(student, x[i:i + opts.batch], opts.T)[1] for i in range(0, len(x), opts.batch)]
    return float(_head_loss(tuple(torch.cat(h) for h in zip(*got)), ref))


def finetune(model_path: str | Path, images: str | Path | None, options: FinetuneOptions | None = None, *,
             data: str | Path | None = None, noise_from: str | Path | None = None,
             progress: bool = True) -> FinetuneResult:
    """Fine-tune `model_path` for T steps by distillation from itself on the photos in `images` and, with `data`
    (a COCO json, images beside it), on those images too with the YOLO loss on their labels added. `noise_from`:
    an snnc eval metrics.json whose per-layer unevenness sets the dual error model's noise per layer."""
    opts = (options or FinetuneOptions()).validate()
    if images is None and data is None:
        raise SnncError("snnc finetune needs photos: --images DIR, --data annotations.json, or both")
    if noise_from is not None and not opts.dual_error:
        raise SnncError("--noise-from sets the dual error model's noise; it cannot go with --no-dual-error")
    noise = unevenness_from_metrics(noise_from, opts.T) if noise_from is not None else None
    torch.manual_seed(opts.seed)
    prepared = prepare(model_path)
    parts = split_model(prepared, source=str(model_path))
    c, h, w = [d.dim_value for d in parts.spiking.graph.input[0].type.tensor_type.shape.dim][1:]
    # crop: photos at the model's size, trained on random windows: the objects keep the scale they have at test
    hw = (opts.size, opts.size) if opts.size and not opts.crop else (h, w)
    geoms, targets, sets = None, [], []
    if data is not None and opts.crop:
        raise SnncError("--crop works with --images only (the label loss needs whole images)")
    heads = [o.name for o in parts.spiking.graph.output]
    if data is not None or opts.object_weight > 0:
        geoms = probe_heads(parts.host, heads, Path(model_path).name,
                            why="--data needs" if data is not None else "--object-weight needs")
    objectness = [[a * (5 + g.classes) + 4 for a in range(len(g.anchors))] for g in geoms] if geoms else None
    if data is not None:
        labelled, targets = load_labels(data, hw)
        sets.append(labelled)
    if images is not None:
        sets.append(load_photos(images, hw))
    x = torch.from_numpy(np.concatenate(sets))
    n_lab = len(targets)
    teacher = import_onnx(parts.spiking).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student, lams = qcfs_student(parts.spiking, x, opts, noise)
    optim = torch.optim.Adam(student.parameters(), lr=opts.lr)
    gen = torch.Generator().manual_seed(opts.seed)
    steps = opts.epochs * ((len(x) + opts.batch - 1) // opts.batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, steps)
    # the end-of-epoch loss on fixed windows when cropping (whole photos at the model's size cost ~10x a step)
    x_eval = random_crop(x, opts.size, torch.Generator().manual_seed(opts.seed + 1)) if opts.crop else x
    with torch.no_grad():  # the frozen teacher on the fixed evaluation photos: once, not every epoch
        ref_eval = teacher(x_eval)
    history, start = [], time.time()
    bar = tqdm(total=steps, desc=f"finetune T={opts.T}", unit="batch", disable=not progress)
    for epoch in range(opts.epochs):
        perm = torch.randperm(len(x), generator=gen)
        tandem = epoch >= opts.epochs - opts.tandem
        student.train()
        total, det_total, count, det_count = 0.0, 0.0, 0, 0
        for i in range(0, len(x), opts.batch):
            idx = perm[i:i + opts.batch]
            xb, lab = x[idx], [int(k) for k in idx if k < n_lab]
            tb = [targets[k] for k in lab]
            if opts.crop:
                xb = random_crop(xb, opts.size, gen)
            if opts.augment:
                xb, tb = augment_boxes(xb, gen, tb)
            with torch.no_grad():
                ref = teacher(xb)
            out = tandem_forward(student, xb, opts.T) if tandem else student(xb)
            loss = _head_loss(out, ref, objectness, opts.object_weight)
            if tb and opts.label_weight > 0:  # labelled images come first in x: their rows in the batch
                rows = (idx < n_lab).nonzero().flatten()
                det = yolo_loss(tuple(o[rows] for o in out), geoms, tb, hw)
                loss = loss + opts.label_weight * det
                det_total, det_count = det_total + float(det.detach()) * len(tb), det_count + len(tb)
            optim.zero_grad()
            loss.backward()
            optim.step()
            sched.step()
            total, count = total + float(loss.detach()) * len(xb), count + len(xb)
            bar.update()
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        student.eval()
        with torch.no_grad():
            ev = float(_head_loss(student(x_eval), ref_eval))
            snn = (_snn_loss(student, x_eval[:SNN_EVAL_PHOTOS], tuple(r[:SNN_EVAL_PHOTOS] for r in ref_eval), opts)
                   if tandem else None)
        entry = {"epoch": epoch + 1, "train_loss": total / count, "eval_loss_qcfs": ev,
                 "seconds": round(time.time() - start, 1)}
        if snn is not None:  # tandem epochs: the loss of the SNN at T on the same windows
            entry["eval_loss_snn"] = snn
        if det_count:
            entry["train_label_loss"] = det_total / det_count
        history.append(entry)
        log.info("epoch %d: train %.5f, QCFS (no noise) on the photos %.5f", epoch + 1, total / count, ev)
    bar.close()
    model = export_qcfs(prepared, student)
    final = {n.name: a.lam_list() if isinstance(a, QCFS) else [a.pos.lam_list(), a.neg.lam_list()]
             for n, a in ((n, student.activation(n.name)) for n in student.activation_nodes())}
    record = {"source": Path(model_path).name, "photos": int(len(x)), "labelled": n_lab, "input_size": list(hw),
              "options": asdict(opts), "order_error_per_layer": noise,
              "history": history, "lambda_init": lams, "lambda_final": final,
              "seconds": round(time.time() - start, 1)}
    return FinetuneResult(model, record)


def write_result(result: FinetuneResult, output: str | Path, log_path: str | Path | None = None) -> Path:
    """The ONNX file and its JSON training log (default: beside it, .json), each written atomically."""
    output = Path(output)
    log_path = Path(log_path) if log_path else output.with_suffix(".json")
    with atomic_path(output) as tmp:
        onnx.save(result.model, tmp)
        with atomic_path(log_path) as tmp_log:
            tmp_log.write_text(json.dumps(result.log, indent=1))
    return output
