"""The C backend as a simulator: generate C, build it once per network layout (cached), run the driver.

`get_backend("c").simulate(net, x, T, mode="fixed")` returns the same `SimResult` as the NumPy reference, bit
for bit in fixed point. Builds are cached under $SNNC_CACHE_DIR (default ~/.cache/snnc)/c/<hash of the generated
sources, compiler and flags>; the weights travel in a blob (written once per network under <cache>/weights), so
retrained or re-quantized weights of the same architecture reuse the compiled driver. The rendered project of the
last two networks stays in memory, so a repeated call on the same network skips quantizing and rendering.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from snnc.backends import Backend, SimResult, lru_cached, register_backend
from snnc.backends.numpy.sim import _fingerprint, default_threads
from snnc.ir.errors import SnncError
from snnc.ir.files import atomic_path
from snnc.ir.network import Network
from snnc.ir.options import SimOptions

from snnc.backends.c.generate import Project, render

log = logging.getLogger(__name__)

# The backend builds for the machine it runs on: -march=native is ~30% faster than plain -O2 on yolov3-tiny;
# -ffp-contract=off keeps float mode free of fused multiply-adds (the NumPy reference does not fuse);
# -fno-trapping-math lets GCC turn the float neuron update's selects into vector blends (no value changes: nothing
# here reads floating-point exception flags); -fopenmp
# runs each layer on all cores (results do not depend on the thread count, see generate._emit_connection). Where
# the compiler refuses these flags the build retries without OpenMP, then with FALLBACK_CFLAGS. The generated
# Makefile uses plain -O2.
DEFAULT_CFLAGS = "-O3 -march=native -ffp-contract=off -fno-trapping-math -fopenmp"
FALLBACK_CFLAGS = ("-O3 -march=native -ffp-contract=off -fno-trapping-math", "-O2")
_BUILD_LOG = "build.log"
# Rendered projects of the last few networks (quantizing and rendering yolov3-tiny takes seconds), with their weight
# blob written once under the cache folder; each entry holds the blob (about 2 bytes per weight in fixed point).
_RENDER_CACHE: "OrderedDict[tuple, tuple[Project, Path]]" = OrderedDict()
_RENDER_CACHE_SIZE = 2
_BLOBS_KEPT = 4


def find_compiler() -> list[str]:
    """The C compiler command: $CC, else cc, gcc or clang on PATH; SnncError when there is none."""
    env = os.environ.get("CC")
    if env:
        cmd = shlex.split(env)
        if cmd and shutil.which(cmd[0]):
            return cmd
        raise SnncError(f"C backend: the compiler in $CC ({env!r}) was not found")
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return [path]
    raise SnncError("C backend: no C compiler found (install cc, gcc or clang, or set $CC)")


def cache_root() -> Path:
    """Where compiled drivers are kept: $SNNC_CACHE_DIR/c, else ~/.cache/snnc/c, else a temp folder."""
    base = os.environ.get("SNNC_CACHE_DIR")
    root = Path(base) if base else Path.home() / ".cache" / "snnc"
    root = root / "c"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if os.access(root, os.W_OK):
            return root
    except OSError:
        pass
    root = Path(tempfile.gettempdir()) / f"snnc-cache-{os.getuid() if hasattr(os, 'getuid') else 0}" / "c"
    root.mkdir(parents=True, exist_ok=True)
    return root


def build(project: Project, *, cc: list[str] | None = None, cflags: str | None = None,
          root: Path | None = None) -> Path:
    """Compile `project`'s driver (snn_run) once; returns the build folder (cached by source hash)."""
    cc = cc or find_compiler()
    chosen = cflags if cflags is not None else os.environ.get("SNNC_C_CFLAGS")
    if chosen is None:
        tried = DEFAULT_CFLAGS
        for fallback in FALLBACK_CFLAGS:
            try:
                return _build(project, cc, shlex.split(tried), root)
            except SnncError as exc:
                log.warning("C backend: build with %s failed, retrying with %s (%s)", tried, fallback,
                            str(exc).splitlines()[-1])
                tried = fallback
        chosen = tried
    return _build(project, cc, shlex.split(chosen), root)


def _build(project: Project, cc: list[str], flags: list[str], root: Path | None) -> Path:
    key = hashlib.sha256()
    key.update(repr((cc, flags)).encode())
    for name in sorted(project.files):
        if name != "weights.bin":
            key.update(name.encode() + b"\0" + project.files[name] + b"\0")
    root = root or cache_root()
    final = root / key.hexdigest()[:24]
    exe = final / "snn_run"
    if exe.exists():
        return final
    tmp = Path(tempfile.mkdtemp(prefix="build-", dir=root))
    try:
        for name, data in project.files.items():
            if name != "weights.bin":
                (tmp / name).write_bytes(data)
        cmd = [*cc, *flags, "-std=c99", "-o", "snn_run", "main.c", "snn_model.c"]
        log.info("C backend: building %s", final)
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        (tmp / _BUILD_LOG).write_text(" ".join(cmd) + "\n" + proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise SnncError(f"C backend: compiling the generated model failed ({' '.join(cmd)}):\n"
                            + proc.stderr.strip()[-4000:])
        try:
            os.rename(tmp, final)
        except OSError:  # built concurrently by someone else: use theirs
            if not exe.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _write_blob(project: Project, root: Path | None) -> Path:
    """The project's weight blob as a file in the cache folder, named by its content hash (written once)."""
    data = project.files["weights.bin"]
    folder = (root or cache_root()) / "weights"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha1(data).hexdigest()[:24]}.bin"
    if not path.exists():
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(data)
        old = sorted(folder.glob("*.bin"), key=lambda p: p.stat().st_mtime)[:-_BLOBS_KEPT]
        for stale in old:  # blobs are about 2 bytes per weight: keep the newest few only
            stale.unlink(missing_ok=True)
    return path


def _render_with_blob(net: Network, mode: str, bits: int | None, float_type: str, v_init: float | None,
                      constant_input: bool, root: Path | None) -> tuple[Project, Path]:
    project = render(net, mode, weight_bits=bits, float_type=float_type, v_init=v_init,
                     constant_input=constant_input)
    return project, _write_blob(project, root)


def with_encoding(net: Network, encoding: str | None) -> Network:
    """`net` with its input encoding overridden as the NumPy reference does (direct on a rate network: unit 1)."""
    if encoding is None:
        return net
    if encoding not in ("direct", "rate"):
        raise SnncError(f"C backend: input encoding must be 'direct' or 'rate', got {encoding!r}")
    enc = dict(net.input_encoding)
    if encoding == "rate":
        enc["kind"] = "rate"
    elif enc.get("kind") == "rate":
        enc = {"kind": "direct", "scale": 1.0, **{k: v for k, v in enc.items() if k not in ("kind", "scale")}}
    return net if enc == net.input_encoding else dataclasses.replace(net, input_encoding=enc)


def input_file_array(net: Network, project: Project, x: np.ndarray) -> np.ndarray:
    """The batch `x` as snn_run reads it: round(x / scale) for fixed direct, probabilities for rate, else x."""
    enc = net.input_encoding
    if enc.get("kind") == "rate":
        return np.ascontiguousarray(x, dtype=np.float64)
    if project.mode == "fixed":
        scale = float(enc.get("scale", 1.0))
        x_int = np.round(np.asarray(x, dtype=np.float64) / scale)  # as the NumPy reference: half to even
        lim = np.iinfo(np.int32)
        if x_int.size and (x_int.min() < lim.min or x_int.max() > lim.max):
            raise SnncError("C backend: the quantized input does not fit int32")
        return x_int.astype(np.int32)
    return np.ascontiguousarray(x, dtype=project.input_file_dtype)


def decode(project: Project, name: str, sums: np.ndarray, t: int) -> np.ndarray:
    """Mean over t steps of an output layer from its raw sum (batch, *shape), as the NumPy reference decodes."""
    unit = project.out_units[name].reshape((-1,) + (1,) * (sums.ndim - 2))
    return (sums.astype(np.float64) * unit) / t


@register_backend("c")
class CBackend(Backend):
    """Generated C99, compiled with the system compiler and run as a subprocess, one process per call.

    Options (constructor or environment): cc ($CC), cflags ($SNNC_C_CFLAGS, default DEFAULT_CFLAGS), cache_dir
    ($SNNC_CACHE_DIR), float_type ("float32"; float-mode arithmetic), weight_bits (None: quantize's default).
    SimOptions.extra: constant_input (default True: layers fed by the image alone compute their input current
    once per image; False: every step, the per-step path).
    """

    extra_options = frozenset({"constant_input"})

    def __init__(self, *, cc: str | None = None, cflags: str | None = None, cache_dir: str | Path | None = None,
                 float_type: str = "float32", weight_bits: int | None = None):
        self.cc = shlex.split(cc) if cc else None
        self.cflags = cflags
        self.cache_dir = Path(cache_dir) / "c" if cache_dir else None
        self.float_type = float_type
        self.weight_bits = weight_bits

    def run(self, net: Network, x: np.ndarray, ts: list[int], options: SimOptions) -> SimResult:
        """As the NumPy reference (`encoding` "direct" or "rate" overrides the network's; "explicit" is not
        supported here). decode "membrane" and "spikes" give the same values (docs/neurons.md). `threads` sets the
        driver's OpenMP threads (default: every core this process may use; outputs do not depend on it); the
        program streams its state, so `max_bytes` and `progress` have nothing to bound or show."""
        self.require_cpu(self.name, options)
        mode, v_init, seed, weight_bits = options.mode, options.v_init, options.seed, options.weight_bits
        net = with_encoding(net, options.encoding)
        bits = self.weight_bits if weight_bits is None else weight_bits
        constant_input = bool(options.extra.get("constant_input", True))
        root = self.cache_dir
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)
        key = (_fingerprint(net), mode, bits, self.float_type, v_init, constant_input, str(root))
        project, weights_path = lru_cached(
            _RENDER_CACHE, key, lambda: _render_with_blob(net, mode, bits, self.float_type, v_init, constant_input,
                                                          root), _RENDER_CACHE_SIZE)
        x = np.asarray(x)
        in_layer = net.input_layers[0]
        if x.shape[1:] != tuple(in_layer.shape):
            raise SnncError(f"C backend: input batch has shape {x.shape}, expected (B, {tuple(in_layer.shape)})")
        batch = x.shape[0]
        if batch == 0:
            raise SnncError("C backend: empty input batch")
        build_dir = build(project, cc=self.cc, cflags=self.cflags, root=root)
        with tempfile.TemporaryDirectory(prefix="snnc-c-run-") as tmp:
            tmpd = Path(tmp)
            if not weights_path.exists():  # removed from the cache folder since it was written
                weights_path = _write_blob(project, root)
            input_file_array(net, project, x).tofile(tmpd / "input.bin")
            cmd = [str(build_dir / "snn_run"), "-w", str(weights_path), "-i", str(tmpd / "input.bin"),
                   "-o", str(tmpd / "out.bin"), "-T", ",".join(map(str, ts)), "--raw",
                   "--seed", str(int(seed)), "--rng-batch", str(batch)]
            threads = default_threads() if options.threads is None else max(1, int(options.threads))
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise SnncError(f"C backend: the driver failed (exit {proc.returncode}): {proc.stderr.strip()}")
            raw = (tmpd / "out.bin").read_bytes()
        ms = re.search(r"([0-9.]+) ms/step", proc.stderr)
        return self._parse(project, raw, ts, batch, build_dir, float(ms.group(1)) if ms else None)

    @staticmethod
    def _parse(project: Project, raw: bytes, ts: list[int], batch: int, build_dir: Path,
               ms_per_step: float | None) -> SimResult:
        sizes = [int(np.prod(shape)) for _, shape in project.outputs]
        per_ckpt = sum(sizes)
        n_nl = len(project.neuron_layers)
        sum_bytes = project.sum_dtype.itemsize
        per_sample = len(ts) * per_ckpt * sum_bytes + 8 * n_nl
        if len(raw) != batch * per_sample:
            raise SnncError(f"C backend: driver output has {len(raw)} bytes, expected {batch * per_sample}")
        sums = {t: {name: np.empty((batch, *shape), project.sum_dtype) for name, shape in project.outputs}
                for t in ts}
        counts = np.empty((batch, n_nl), np.int64)
        for b in range(batch):
            base = b * per_sample
            vals = np.frombuffer(raw, project.sum_dtype.newbyteorder("<"), len(ts) * per_ckpt, base)
            pos = 0
            for t in ts:
                for (name, shape), n in zip(project.outputs, sizes):
                    sums[t][name][b] = vals[pos:pos + n].reshape(shape)
                    pos += n
            counts[b] = np.frombuffer(raw, "<i8", n_nl, base + len(ts) * per_ckpt * sum_bytes)
        outputs = {t: {name: decode(project, name, sums[t][name], t) for name, _ in project.outputs} for t in ts}
        return SimResult(
            outputs=outputs,
            spike_counts={name: counts[:, j].copy() for j, (name, _) in enumerate(project.neuron_layers)},
            neurons=dict(project.neuron_layers),
            steps=ts[-1],
            extra={"backend": "c", "build_dir": str(build_dir), "ms_per_step": ms_per_step,
                   "raw_sums": sums},
        )
