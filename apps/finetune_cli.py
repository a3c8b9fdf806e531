"""`snnc finetune`: a detector -> the same detector with QCFS activations, fine-tuned for T steps (snnc[train])."""

from __future__ import annotations

import argparse
from pathlib import Path

from snnc.ir.errors import SnncError


def _import_training():
    try:
        import torch  # noqa: F401
    except ImportError:
        raise SnncError("snnc finetune needs torch: pip install 'snnc[train]'") from None
    from snnc.training import finetune

    return finetune


def cmd_finetune(args: argparse.Namespace) -> int:
    ft = _import_training()
    opts = ft.FinetuneOptions(T=args.T, epochs=args.epochs, lr=args.lr, batch=args.batch, size=args.size,
                              dual_error=not args.no_dual_error, unevenness=args.unevenness,
                              augment=not args.no_augment, seed=args.seed,
                              label_weight=args.label_weight, crop=args.crop,
                              object_weight=args.object_weight, tandem=args.tandem,
                              lambda_per=args.lambda_per).validate()
    if not Path(args.model).is_file():
        raise SnncError(f"{args.model}: no such file")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    result = ft.finetune(args.model, args.images, opts, data=args.data, noise_from=args.noise_from,
                         progress=not args.quiet)
    out = ft.write_result(result, args.output, args.log)
    h = result.log["history"][-1]
    print(f"wrote {out} (QCFS, L = T = {args.T}) and its training log {args.log or out.with_suffix('.json')}: "
          f"{len(result.log['history'])} epochs on {result.log['photos']} photos, distillation loss "
          f"{h['eval_loss_qcfs']:.4f}"
          + (f" (its SNN at T = {args.T}: {h['eval_loss_snn']:.4f})" if "eval_loss_snn" in h else "")
          + (f", label loss {h['train_label_loss']:.3f}" if "train_label_loss" in h else "")
          + f", {result.log['seconds']:.0f} s")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser("finetune", help="fine-tune a detector for T time steps (QCFS + dual error, needs torch)")
    f.add_argument("model", help="ONNX file of the trained detector")
    f.add_argument("--images", metavar="DIR", help="folder of unlabelled jpg/png photos (distillation only)")
    f.add_argument("--data", metavar="JSON", help="labelled images: a COCO json, images beside it; adds the YOLO "
                   "loss on their labels (anchor-based heads)")
    f.add_argument("--label-weight", type=float, default=0.01,
                   help="weight of the label loss (per image) against the distillation loss (default %(default)s)")
    f.add_argument("--object-weight", type=float, default=0.0,
                   help="distillation: weigh each grid cell 1 + W x the teacher's objectness there, so the cells "
                   "with objects count more than the background (anchor-based heads; default %(default)s: all alike)")
    f.add_argument("-T", type=int, required=True, help="target time steps (QCFS levels L = T)")
    f.add_argument("-o", "--output", required=True, help="output ONNX file")
    f.add_argument("--epochs", type=int, default=10, help="passes over the photos (default %(default)s)")
    f.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate, cosine decay (default %(default)s)")
    f.add_argument("--batch", type=int, default=8, help="photos per step (default %(default)s)")
    f.add_argument("--size", type=int, help="train at this square input size (default: the model's)")
    f.add_argument("--crop", action="store_true", help="with --size: train on random SIZE x SIZE crops of the "
                   "photos at the model's input size (objects keep their test-time scale)")
    f.add_argument("--no-dual-error", action="store_true", help="plain QCFS, without the dual error model")
    f.add_argument("--unevenness", type=float, default=0.5,
                   help="dual error model: order-dependent error as a fraction of one spike (default %(default)s)")
    f.add_argument("--noise-from", metavar="METRICS", help="dual error model: the unevenness per layer from an snnc "
                   "eval metrics.json of the converted model (default: --unevenness everywhere)")
    f.add_argument("--tandem", type=int, default=0, metavar="N",
                   help="train the last N epochs on the spiking network's own values at T (tandem learning; "
                        "an epoch costs T + 1 forward passes: 4.6x on yolov3-tiny at T = 8; default 0)")
    f.add_argument("--lambda-per", default="layer", metavar="layer|channel",
                   help="one trainable QCFS lambda per layer (default) or per channel; snnc compile keeps either "
                        "as the neurons' thresholds")
    f.add_argument("--no-augment", action="store_true", help="no flips, scale or colour jitter")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    f.add_argument("--log", help="JSON training log (default: OUTPUT with .json)")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=cmd_finetune)
