"""The QCFS activation (quantization-clip-floor-shift, Bu et al. 2022) and the dual error model (docs/training.md).

QCFS with L levels and a trainable threshold lambda (one per layer, or one per channel: `--lambda-per channel`):

    y = lambda * clip(floor(z * L / lambda + 1/2) / L, 0, 1)

An IF neuron with threshold lambda, reset by subtraction and V(0) = lambda / 2 outputs exactly this mean over
T = L steps for a constant input z, and its expected error is zero at any T for uniformly spread inputs: the
network trained with QCFS converts with no threshold search (activations_to_neurons recognises its ONNX chain
and sets theta = lambda). The floor has the straight-through gradient (1); lambda gets the gradient of y.

Signed form (leaky layers): y = QCFS_lambda+(z) - alpha * QCFS_lambda-(-z), the two IF neurons snnc's default
`split_leaky_relu` gives a LeakyReLU, each quantized in its own units.

Dual error model (DE-SNN): during training the activation also sees the SNN's error at the target T,
    y = lambda * clip(floor(z * T / lambda + 1/2) / T, 0, 1)       the deterministic part (T steps of a rate)
        + u * lambda / T                                           the order-dependent part (unevenness)
with u uniform in [-s, s] where the neuron is active (0 < y < lambda): the spike order can move a neuron's
count by at most one spike, and `s` (<= 1, the `unevenness` option) is the fraction of that bound one expects.
In evaluation mode the noise is off. Per layer the level can instead be a measured mean order error per neuron,
`mean_error` spikes (from snnc eval, training/noise.py): then s = 2 mean_error / (fraction of active neurons) in
each batch, at most 1, so the noise's mean |u| over the whole layer is the measured one.
"""

from __future__ import annotations

from typing import Sequence

import torch

EPS = 1e-6


class _FloorSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # noqa: D102
        return torch.floor(x)

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        return g


def quantize(z: torch.Tensor, lam: torch.Tensor, levels: int) -> torch.Tensor:
    """lam * clip(floor(z * levels / lam + 0.5) / levels, 0, 1)."""
    return lam * torch.clamp(_FloorSTE.apply(z * levels / lam + 0.5) / levels, 0.0, 1.0)


class QCFS(torch.nn.Module):
    """QCFS with `levels` steps and a trainable lambda per layer (a number) or per channel (a sequence, one per
    channel of NCHW input); optional dual error model at T steps."""

    def __init__(self, levels: int, lam: float | Sequence[float], dual_T: int | None = None,
                 unevenness: float = 0.0, mean_error: float | None = None) -> None:
        super().__init__()
        self.levels = int(levels)
        self.lam = torch.nn.Parameter(torch.tensor(lam, dtype=torch.float32).clamp_min(EPS))
        self.dual_T = dual_T
        self.unevenness = float(unevenness)
        self.mean_error = mean_error

    def lam_value(self) -> torch.Tensor:
        """lambda, shaped to broadcast over NCHW activations: () per layer, (1, C, 1, 1) per channel."""
        lam = self.lam.clamp_min(EPS)
        return lam.view(1, -1, 1, 1) if lam.ndim == 1 else lam

    def lam_list(self) -> float | list[float]:
        """lambda as plain numbers (the JSON log, the ONNX export)."""
        lam = self.lam.detach().clamp_min(EPS)
        return lam.tolist() if lam.ndim else float(lam)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lam = self.lam_value()
        if self.training and self.dual_T:
            y = quantize(z, lam, self.dual_T)
            s = self.unevenness
            if self.mean_error is not None or s > 0:
                active = ((y > 0) & (y < lam)).to(z.dtype)
                if self.mean_error is not None:
                    s = min(1.0, 2.0 * self.mean_error / max(float(active.mean()), 1e-6))
                u = (torch.rand_like(z) * 2 - 1) * s
                y = y + active * u * lam.detach() / self.dual_T
            return y
        return quantize(z, lam, self.levels)


class SignedQCFS(torch.nn.Module):
    """QCFS_lam_pos(z) - alpha * QCFS_lam_neg(-z): a LeakyReLU(alpha) as snnc's two split IF neurons."""

    def __init__(self, levels: int, lam_pos: float | Sequence[float], lam_neg: float | Sequence[float], alpha: float,
                 dual_T: int | None = None, unevenness: float = 0.0, mean_error: float | None = None) -> None:
        super().__init__()
        self.alpha = float(alpha)
        self.pos = QCFS(levels, lam_pos, dual_T, unevenness, mean_error)
        self.neg = QCFS(levels, lam_neg, dual_T, unevenness, mean_error)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.pos(z) - self.alpha * self.neg(-z)
