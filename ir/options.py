"""The one source of option defaults: `CompileOptions` (conversion choices) and `SimOptions` (simulation).

The CLI's defaults, `compile_model`'s, the passes' and the ablation's recompiles all read these dataclasses;
nothing else states a default. Both validate themselves (`validate()`), so a bad value is refused with one
line naming the option before any work starts. The measurements behind the defaults: docs/results.md.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from snnc.ir.errors import SnncError

NORMS = ("channel", "layer", "auto")
LEAKY = ("split", "ibt", "signed", "graded")
NEURONS = ("memory", "plain")
MAXPOOLS = ("exact", "approximate", "count")
MODES = ("float", "fixed")
ENCODINGS = ("direct", "rate", "explicit")
DECODES = ("membrane", "spikes")
V_INIT = {"zero": 0.0, "half": 0.5}  # the --v-init choices: V(0) as a fraction of the threshold
MAX_WEIGHT_BITS = 24  # fixed point keeps products of weights and 8-bit-range inputs exact in int64 sums


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SnncError(f"--{name.replace('_', '-')} {value!r}: expected one of {', '.join(allowed)}")


def _finite(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SnncError(f"--{name.replace('_', '-')} {value!r}: expected a number") from None
    if not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
        bound = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
        raise SnncError(f"--{name.replace('_', '-')} {value!r}: expected a finite number in {bound}")
    return v


@dataclass(frozen=True)
class CompileOptions:
    """How an ANN becomes a spiking network (docs/passes.md explains each choice and its measured effect).

    percentile  activation percentile mapped to the neuron threshold (100 = the maximum)
    norm        channel: one threshold per output channel; layer: one per layer; auto: chosen per layer
    leaky       split: LeakyReLU as two IF neurons (exact in the rate limit); ibt: one signed IBT neuron;
                signed: one signed memory neuron (SignedIF with memory: spikes take back the other sign's)
                graded: the signed memory neuron with its own negative threshold theta_n and graded -1 spikes
                worth alpha * theta_n (docs/neurons.md)
    neuron      memory: IF neurons take back excess spikes with -1 spikes; plain: classic IF
    maxpool     exact: max-pool as a tree of strided convolutions and ReLUs; approximate: average pooling;
                count: a routing layer passing the running maximum of spike counts (no neurons, docs/passes.md)
    v_init      initial membrane potential as a fraction of the threshold (0.5: theta/2)
    passes      the passes to run (None: the default pipeline); skip: passes left out
    calib_samples / calib_batch  activations kept per layer for the percentile, images per calibration batch
    target_T    calibrate_to_T corrects every neuron layer for this many time steps (None: no such pass)
    """

    percentile: float = 99.99
    norm: str = "auto"
    leaky: str = "graded"
    neuron: str = "memory"
    maxpool: str = "count"
    v_init: float = 0.5
    passes: tuple[str, ...] | None = None
    skip: tuple[str, ...] = ()
    calib_samples: int = 16384
    calib_batch: int = 4
    target_T: int | None = None

    def __post_init__(self) -> None:
        if self.passes is not None:
            object.__setattr__(self, "passes", tuple(self.passes))
        object.__setattr__(self, "skip", tuple(self.skip))

    def validate(self) -> "CompileOptions":
        _finite("percentile", self.percentile, 0.0, 100.0, lo_open=True)
        _choice("norm", self.norm, NORMS)
        _choice("leaky", self.leaky, LEAKY)
        _choice("neuron", self.neuron, NEURONS)
        _choice("maxpool", self.maxpool, MAXPOOLS)
        _finite("v_init", self.v_init, 0.0, 1.0)
        for name in ("calib_samples", "calib_batch"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SnncError(f"{name} {v!r}: expected a positive integer")
        if self.target_T is not None and (not isinstance(self.target_T, int) or isinstance(self.target_T, bool)
                                          or not 1 <= self.target_T <= MAX_T):
            raise SnncError(f"--target-T {self.target_T!r}: expected an integer from 1 to {MAX_T}")
        return self

    def replace(self, **changes: Any) -> "CompileOptions":
        return dataclasses.replace(self, **changes)

    def record(self) -> dict[str, Any]:
        """The choices as stored in a .lava file's provenance (meta["options"])."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("passes", "skip")}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "CompileOptions":
        """Options from a .lava file's provenance. A file from before an option existed was compiled the old
        way (99.9th percentile, V(0) = 0, plain IF), so missing entries take those values, not today's."""
        old = {"percentile": 99.9, "v_init": 0.0, "neuron": "plain"}
        known = {f.name for f in fields(cls)} - {"passes", "skip"}
        values = {**old, **{k: v for k, v in record.items() if k in known}}
        return cls(**values)


def compile_options(options: CompileOptions | None = None, **overrides: Any) -> CompileOptions:
    """`options` (default: CompileOptions()) with keyword overrides; unknown names are refused."""
    base = options or CompileOptions()
    known = {f.name for f in fields(CompileOptions)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SnncError(f"unknown compile option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return dataclasses.replace(base, **overrides).validate()


@dataclass(frozen=True)
class SimOptions:
    """What every backend's `simulate` accepts, in full (docs/backends.md).

    mode        float: float32; fixed: integer weights and thresholds, bit-exact across backends
    v_init      override V(0) of every neuron as a fraction of its threshold (None: as compiled)
    decode      membrane: heads read as accumulated potential / T; spikes: as spike count x theta / T
    seed        random seed (rate encoding)
    encoding    direct (analog input every step), rate (Bernoulli spikes) or explicit (x has a time axis);
                None: as compiled
    weight_bits fixed point weight width (None: the backend's default)
    progress    a progress bar (None: only on a terminal)
    threads     CPU threads (None: all this process may use)
    max_bytes   memory budget for time-chunked buffers (None: the backend's default)
    device      where a backend runs (cpu, cuda, cuda:N); backends without devices accept only cpu
    """

    mode: str = "float"
    v_init: float | None = None
    decode: str = "membrane"
    seed: int = 0
    encoding: str | None = None
    weight_bits: int | None = None
    progress: bool | None = None
    threads: int | None = None
    max_bytes: int | None = None
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)  # backend-specific, e.g. numpy's record_layers

    def validate(self) -> "SimOptions":
        _choice("mode", self.mode, MODES)
        _choice("decode", self.decode, DECODES)
        if self.encoding is not None:
            _choice("encoding", self.encoding, ENCODINGS)
        if self.v_init is not None:
            _finite("v_init", self.v_init, 0.0, 1.0)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 1 << 63:
            raise SnncError(f"--seed {self.seed!r}: expected an integer from 0 to 2^63 - 1")
        if self.weight_bits is not None and not (isinstance(self.weight_bits, int)
                                                 and 2 <= self.weight_bits <= MAX_WEIGHT_BITS):
            raise SnncError(f"--weight-bits {self.weight_bits!r}: expected an integer from 2 to {MAX_WEIGHT_BITS}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise SnncError(f"threads {self.threads!r}: expected a positive integer")
        if self.max_bytes is not None and (not isinstance(self.max_bytes, int) or self.max_bytes < 1 << 20):
            raise SnncError(f"max_bytes {self.max_bytes!r}: expected at least 1 MiB")
        if not isinstance(self.device, str) or not (self.device == "cpu" or self.device.startswith("cuda")):
            raise SnncError(f"--device {self.device!r}: expected cpu, cuda or cuda:N")
        return self


def sim_options(options: SimOptions | None = None, **overrides: Any) -> SimOptions:
    """`options` (default: SimOptions()) with keyword overrides; names that are not SimOptions fields go into
    `extra` (backend-specific switches), None values of fields leave the default."""
    base = options or SimOptions()
    known = {f.name for f in fields(SimOptions)} - {"extra"}
    changes = {k: v for k, v in overrides.items() if k in known}
    extra = {**base.extra, **{k: v for k, v in overrides.items() if k not in known}}
    return dataclasses.replace(base, **changes, extra=extra).validate()


MAX_T = 1 << 20  # a sanity bound: more steps than this is a typo, not an experiment


def checkpoints(T: Any) -> list[int]:
    """Sorted unique checkpoints from an int, a sequence of ints or a comma-separated string ('32,64,128');
    SnncError for anything else (the -T of every command)."""
    msg = f"-T {T!r}: expected positive integers, e.g. -T 64 or -T 32,64,128"
    if isinstance(T, str):
        parts = [p.strip() for p in T.split(",") if p.strip()]
    elif isinstance(T, (int,)) or hasattr(T, "dtype"):
        parts = [T]
    else:
        try:
            parts = list(T)
        except TypeError:
            raise SnncError(msg) from None
    try:
        ts = sorted({int(p) for p in parts})
    except (TypeError, ValueError, OverflowError):
        raise SnncError(msg) from None
    if not ts or ts[0] < 1:
        raise SnncError(msg)
    if ts[-1] > MAX_T:
        raise SnncError(f"-T {ts[-1]}: more than {MAX_T} time steps; use a smaller T")
    return ts
