"""Tandem fine-tuning (`snnc finetune --tandem N`): the last N epochs train on the spiking network's own values.

QCFS makes the ANN equal to its SNN for a constant input current, but inside the SNN no current is constant: a
layer receives spike trains whose order is uneven, and at T = 8 that order error, not quantization, is what is
left between a fine-tuned QCFS ANN and its SNN (docs/results.md). The dual error model adds noise of that size;
tandem learning (Wu et al., "Progressive tandem learning", IEEE TNNLS 2021) uses the real thing:

1. Run the student as the spiking network snnc compiles from it, T steps, no gradient (`spiking_rates`): every
   QCFS activation is the memory IF neuron with theta = lambda and V(0) = theta / 2, every signed QCFS the graded
   signed memory neuron with theta = lambda+, theta_n = lambda-, r = (theta + theta_n) / 2 (docs/neurons.md, the
   defaults `--leaky graded`), every MaxPool the count max-pool out(t) = M(t) - M(t-1), M the window max of the
   running input sums (`--maxpool count`, the default); the image is the input current at every step (direct
   encoding). Each activation's mean output over the T steps is its SNN rate.
2. The ordinary forward pass, with every activation's output replaced by that rate (`OnnxModule(snap=...)`) and
   its gradient kept the QCFS's (straight-through). Everything between activations is linear or a max of rates,
   so the heads of this pass are the SNN's T-step heads exactly (up to float32 summation order): the loss is the
   SNN's own, and the gradient moves weights and lambdas so the network works with the rates its spikes give.

Cost per batch: T forward passes without gradient + one with (yolov3-tiny at T = 8: 4.6x a QCFS batch). The
SNN modelled is the default compile's; with `--leaky split`, `--maxpool exact` or `--neuron plain` the compiled
network differs from it (still a better model of it than the constant-current ANN).
"""

from __future__ import annotations

from typing import Callable

import torch

from snnc.training.importer import ACTIVATIONS, OnnxModule
from snnc.training.qcfs import QCFS, SignedQCFS


def _memory_if(theta: torch.Tensor, state: dict, key: str) -> Callable:
    """One step of the memory IF neuron (threshold theta, V(0) = theta / 2): z -> s * theta."""
    def step(z: torch.Tensor) -> torch.Tensor:
        if key not in state:
            state[key] = (torch.full_like(z, 0.5) * theta, torch.zeros_like(z))
        v, n = state[key]
        v = v + z
        s = (v >= theta).to(z.dtype) - ((v < 0) & (n > 0)).to(z.dtype)
        v = v - s * theta
        state[key] = (v, n + s)
        return s * theta
    return step


def _graded(theta: torch.Tensor, theta_n: torch.Tensor, alpha: float, state: dict, key: str) -> Callable:
    """One step of the graded signed memory neuron (docs/neurons.md): z -> what it sends."""
    r = 0.5 * (theta + theta_n)

    def step(z: torch.Tensor) -> torch.Tensor:
        if key not in state:
            state[key] = (torch.full_like(z, 0.5) * theta, torch.zeros_like(z))
        v, n = state[key]
        v = v + z
        up = (v >= theta) & (n >= 0)
        back_up = (v < 0) & (n > 0)
        dn = (v <= r - theta_n) & (n <= 0) & ~up
        back_dn = (v > r) & (n < 0)
        f = lambda m: m.to(z.dtype)  # noqa: E731
        v = v - theta * f(up) + theta * f(back_up) + theta_n * f(dn) - theta_n * f(back_dn)
        state[key] = (v, n + f(up) + f(back_dn) - f(back_up) - f(dn))
        return theta * (f(up) - f(back_up)) + alpha * theta_n * (f(back_dn) - f(dn))
    return step


def _count_maxpool(pool: Callable, state: dict, key: str) -> Callable:
    """out(t) = M(t) - M(t-1), M = pool(running sum of the input): its sum over T is the max of the input sums."""
    def step(x: torch.Tensor) -> torch.Tensor:
        s = state[key][0] + x if key in state else x
        m = pool(s)
        out = m - state[key][1] if key in state else m
        state[key] = (s, m)
        return out
    return step


def spiking_rates(student: OnnxModule, x: torch.Tensor, T: int) -> tuple[dict[str, torch.Tensor],
                                                                          tuple[torch.Tensor, ...]]:
    """The student run as its spiking network for T steps, no gradient: per activation node its mean output (the
    SNN rate times theta), and the heads' mean over the T steps."""
    state: dict = {}
    sums: dict[str, torch.Tensor] = {}
    overrides: dict[str, Callable] = {}

    def summed(name: str, step: Callable) -> Callable:
        def run(z: torch.Tensor) -> torch.Tensor:
            out = step(z)
            sums[name] = sums[name] + out if name in sums else out
            return out
        return run

    for node in student.nodes:
        if node.op_type == "MaxPool":
            overrides[node.name] = _count_maxpool(student.node_function(node.name), state, node.name)
        elif node.op_type in ACTIVATIONS:
            act = student.activation(node.name)
            if isinstance(act, QCFS):
                step = _memory_if(act.lam_value(), state, node.name)
            elif isinstance(act, SignedQCFS):
                step = _graded(act.pos.lam_value(), act.neg.lam_value(), act.alpha, state, node.name)
            else:
                raise TypeError(f"activation {node.name}: tandem needs the QCFS student (got {type(act).__name__})")
            overrides[node.name] = summed(node.name, step)
    heads = None
    with torch.no_grad():
        for _ in range(T):
            out = student(x, overrides=overrides)
            heads = out if heads is None else tuple(a + b for a, b in zip(heads, out))
    return {k: v / T for k, v in sums.items()}, tuple(h / T for h in heads)


def tandem_forward(student: OnnxModule, x: torch.Tensor, T: int) -> tuple[torch.Tensor, ...]:
    """The heads of the student's SNN at T steps, with the QCFS ANN's gradient (step 2 of the module docstring)."""
    rates, _ = spiking_rates(student, x, T)
    return student(x, snap=rates)
