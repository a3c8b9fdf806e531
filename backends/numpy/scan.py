"""The neuron update: a scan over the time steps of one chunk, vectorized over neurons (docs/neurons.md).

Per step t, on every neuron (float32 in float mode, int64 in fixed-point mode, the same code):

    V += z(t)                      # z already holds the bias
    pos = V >= theta ;  V -= theta where pos
    neg = V <= -theta_neg ;  V += theta_neg where neg       # SignedIF only; theta_neg = theta / alpha
    s(t) = pos - neg               # int8 in {-1, 0, 1}

Memory IF (`count` given, theta_neg None): a -1 spike takes back an earlier +1 where V < 0 and the neuron's
count of emitted spikes (+1s minus -1s) is positive, then V += theta; count += s. After a +1 spike V >= 0, so the
two never coincide.

Signed memory neuron (`count` and theta_neg both given; SignedIF with memory, docs/neurons.md): spikes of either
sign first take back what the count shows was emitted. With n = count, all four tests read the same integrated V
and exclude each other:

    up = V >= theta and n >= 0  (V -= theta)       back_up = V < 0 and n > 0  (V += theta, s = -1)
    dn = V <= -theta_neg and n <= 0  (V += theta_neg)   back_dn = V > 0 and n < 0  (V -= theta_neg, s = +1)

A graded neuron (`neg_level` r given) measures its negative side from r instead of 0: dn = V <= r - theta_neg and
n <= 0 and not up, back_dn = V > r and n < 0 (r = v_init (theta + theta_neg), Neuron.neg_level).

pos and neg are computed from the same integrated V (they exclude each other since theta > 0), so the order of
the two resets does not matter. The neurons are processed in tiles of about 64k values (all steps of a tile
before the next tile, so the tile's membrane stays in cache) and the tiles are shared out over threads: numpy
releases the GIL inside ufuncs.
"""

from __future__ import annotations

from concurrent.futures import Executor

import numpy as np

TILE_VALUES = 65536


def scan(V: np.ndarray, z: np.ndarray, z_const: bool, spikes: np.ndarray, theta: np.ndarray,
         theta_neg: np.ndarray | None, pool: Executor | None = None, tile_values: int = TILE_VALUES,
         count: np.ndarray | None = None, neg_level: np.ndarray | None = None) -> None:
    """Run the neuron update for spikes.shape[0] steps.

    V (B, N) membrane, updated in place. z (Tc, B, N), or (B, N) the same at every step when z_const.
    spikes (Tc, B, N) int8, written. theta, theta_neg (N,) of V's dtype (theta_neg None: IF neuron).
    count (B, N) int32, updated in place: the memory IF's emitted count (None: no memory).
    neg_level (N,) of V's dtype: a graded neuron's negative-side level r (None: 0).
    """
    steps, batch, n = spikes.shape
    width = max(1024, tile_values // max(1, batch))
    minus_neg = None if theta_neg is None else -theta_neg

    def run(a: int, b: int) -> None:
        v = V[:, a:b]
        th = theta[a:b]
        if theta_neg is not None:
            tn, mtn = theta_neg[a:b], minus_neg[a:b]
            neg = np.empty(v.shape, dtype=np.bool_)
        if count is not None:
            cnt = count[:, a:b]
            neg = np.empty(v.shape, dtype=np.bool_)
            below = np.empty(v.shape, dtype=np.bool_)
            zero = np.zeros((), v.dtype)
            level = None
            if neg_level is not None and theta_neg is not None:
                level, mtn = neg_level[a:b], neg_level[a:b] - tn
        for t in range(steps):
            np.add(v, z[:, a:b] if z_const else z[t, :, a:b], out=v)
            s = spikes[t, :, a:b]
            pos = s.view(np.bool_)
            if theta_neg is not None and count is not None:
                _signed_memory(v, th, tn, mtn, cnt, s, pos, neg, below, zero, level)
                continue
            np.greater_equal(v, th, out=pos)
            np.subtract(v, th, out=v, where=pos)
            if theta_neg is not None:
                np.less_equal(v, mtn, out=neg)
                np.add(v, tn, out=v, where=neg)
                np.subtract(s, neg, out=s, casting="unsafe")
            elif count is not None:
                np.less(v, zero, out=below)
                np.greater(cnt, 0, out=neg)
                np.logical_and(neg, below, out=neg)
                np.add(v, th, out=v, where=neg)
                np.subtract(s, neg, out=s, casting="unsafe")
                np.add(cnt, s, out=cnt, casting="unsafe")

    bounds = [(a, min(n, a + width)) for a in range(0, n, width)]
    if pool is None or len(bounds) == 1:
        for a, b in bounds:
            run(a, b)
    else:
        for fut in [pool.submit(run, a, b) for a, b in bounds]:
            fut.result()


def _signed_memory(v: np.ndarray, th: np.ndarray, tn: np.ndarray, mtn: np.ndarray, cnt: np.ndarray, s: np.ndarray,
                   pos: np.ndarray, neg: np.ndarray, below: np.ndarray, zero: np.ndarray,
                   level: np.ndarray | None = None) -> None:
    """One step of the signed memory neuron on a tile (V already integrated); pos is s's bool view. `level`: a
    graded neuron's negative-side level r per neuron (None: 0), with mtn = r - theta_neg."""
    # positive side (n >= 0): +1 at theta, take back a +1 below 0
    np.greater_equal(cnt, 0, out=below)
    np.greater_equal(v, th, out=pos)
    np.logical_and(pos, below, out=pos)
    np.subtract(v, th, out=v, where=pos)
    np.greater(cnt, 0, out=below)
    np.less(v, zero, out=neg)
    np.logical_and(neg, below, out=neg)
    np.add(v, th, out=v, where=neg)
    np.subtract(s, neg, out=s, casting="unsafe")
    # negative side (n <= 0): -1 at -theta_neg, take back a -1 above 0. V was not changed above where n <= 0
    # (n = 0 and V >= theta gave a +1: V - theta >= 0 > -theta_neg, so no -1 follows in the same step)
    np.less_equal(cnt, 0, out=below)
    if level is not None:  # a level r > 0 can lie above V - theta after an up at n = 0: no dn after an up
        np.logical_and(below, s != 1, out=below)
    np.less_equal(v, mtn, out=neg)
    np.logical_and(neg, below, out=neg)
    np.add(v, tn, out=v, where=neg)
    np.subtract(s, neg, out=s, casting="unsafe")
    np.less(cnt, 0, out=below)
    np.greater(v, zero if level is None else level, out=neg)
    np.logical_and(neg, below, out=neg)
    np.subtract(v, tn, out=v, where=neg)
    np.add(s, neg, out=s, casting="unsafe")
    np.add(cnt, s, out=cnt, casting="unsafe")
