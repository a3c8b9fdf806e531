"""The values a graded signed memory neuron layer sends (`--leaky graded`, docs/neurons.md).

The scan emits s in {-1, 0, 1} as for the signed memory neuron; what a spike carries depends on the side of the
count n it moves: up (n >= 0 -> n + 1) and back_up (n > 0 -> n - 1) carry s * theta, dn (n <= 0 -> n - 1) and
back_dn (n < 0 -> n + 1) carry s * alpha * theta_n. With n_after = n_before + s, a spike is on the negative side
exactly when n_before + n_after = 2 n_after - s < 0.
"""

from __future__ import annotations

import numpy as np


def graded_values(spikes: np.ndarray, n_start: np.ndarray, payload_pos: float,
                  payload_neg: np.ndarray) -> np.ndarray:
    """spikes (Tc, B, N) in {-1, 0, 1}, n_start (B, N) the count before the first of these steps, payload_neg
    (N,): float32 (Tc, B, N) values s * payload_pos on the positive side, s * payload_neg on the negative side."""
    after = np.cumsum(spikes, axis=0, dtype=np.int32)
    after += n_start[None]
    negative = (2 * after - spikes) < 0
    out = spikes.astype(np.float32)
    out *= np.where(negative, payload_neg, np.float32(payload_pos))
    return out
