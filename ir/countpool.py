"""The spike-count max-pool (`maxpool` layers, `--maxpool count`): its one definition in NumPy.

    S(t) = out_src(1) + ... + out_src(t)            running sum of each input (spike counts times theta)
    M(t) = max over the window of S(t)              (no padding: an edge Pad layer in front handles that)
    out(t) = M(t) - M(t-1), M(0) = 0

so the sum of the outputs up to T is M(T): the decoded output is the max-pool of the decoded inputs, exactly,
at every T. When each input emits at most one spike (of one shared theta) per step, M moves by at most one
spike per step and out(t) is a spike train again. The simulators call `count_maxpool` chunk by chunk, carrying
(S, M) between chunks; backends that are not NumPy implement the same recurrence and are tested against it.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def window_max(x: np.ndarray, kernel: tuple[int, int] | list[int], strides: tuple[int, int] | list[int]) -> np.ndarray:
    """Max over (kh, kw) windows with the given strides of the last two axes; no padding."""
    kh, kw = (int(k) for k in kernel)
    sh, sw = (int(s) for s in strides)
    win = sliding_window_view(x, (kh, kw), axis=(-2, -1))[..., ::sh, ::sw, :, :]
    return win.max(axis=(-2, -1))


def count_maxpool(x: np.ndarray, kernel: list[int], strides: list[int], state: dict | None = None
                  ) -> tuple[np.ndarray, dict]:
    """out(t) for a chunk x (Tc, ..., H, W) of consecutive steps, and the state (S, M) after it.

    Integer inputs are summed in int64, others in float64; the outputs have x's dtype. state: the previous
    chunk's returned state, or None before step 1."""
    acc = np.int64 if np.issubdtype(x.dtype, np.integer) else np.float64
    s = np.cumsum(x, axis=0, dtype=acc)
    if state is not None:
        s += state["sum"]
    m = window_max(s, kernel, strides)
    prev = state["max"] if state is not None else np.zeros_like(m[0])
    out = np.diff(m, axis=0, prepend=prev[None]).astype(x.dtype, copy=False)
    return out, {"sum": s[-1].copy(), "max": m[-1].copy()}
