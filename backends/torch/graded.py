"""The values a graded signed memory neuron layer sends, in torch: `snnc.backends.numpy.graded` (the rule and its
reason are there), on the device."""

from __future__ import annotations

import torch

from snnc.backends.torch.running import running_sum_


def graded_values(spikes: torch.Tensor, n_start: torch.Tensor, payload_pos: float,
                  payload_neg: torch.Tensor) -> torch.Tensor:
    """spikes (Tc, B, N) int8, n_start (B, N) the count before these steps, payload_neg (N,): the values, in
    payload_neg's dtype: s * payload_pos where the spike moves the count on its positive side, else
    s * payload_neg."""
    after = spikes.to(torch.int32)
    after[0] += n_start
    running_sum_(after)
    negative = (2 * after - spikes) < 0
    scale = torch.where(negative, payload_neg, torch.full_like(payload_neg, payload_pos))
    return spikes.to(payload_neg.dtype) * scale
