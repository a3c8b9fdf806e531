"""`write_output`: save a compile result as a .lava file, spiking ONNX, the rate-limit ANN, a C project or NIR."""

from __future__ import annotations

from pathlib import Path

from snnc.compiler.api import CompileResult
from snnc.ir import lavafile
from snnc.ir.errors import SnncError
from snnc.ir.files import atomic_write_bytes

EMIT_KINDS = ("lava", "onnx", "ratelimit", "c", "nir")


def write_output(result: CompileResult, output: str | Path, emit: str = "lava") -> Path:
    """Save one artifact: the .lava file, the spiking ONNX, the rate-limit ANN, or a C project folder."""
    output = Path(output)
    if emit not in EMIT_KINDS:
        raise SnncError(f"--emit {emit!r}: expected one of {', '.join(EMIT_KINDS)}")
    if emit != "c" and not output.parent.exists():
        raise SnncError(f"{output.parent}: output folder does not exist")
    if emit == "lava":
        lavafile.save(result.network, output)
    elif emit == "onnx":
        atomic_write_bytes(output, result.spiking.SerializeToString())
    elif emit == "ratelimit":
        atomic_write_bytes(output, result.ratelimit.SerializeToString())
    elif emit == "nir":
        from snnc.backends.nir import write_nir

        write_nir(result.network, output)
    else:
        from snnc.backends import get_backend

        get_backend("c")  # SnncError with the reason when the C backend cannot load
        from snnc.backends.c import generate

        generate(result.network, output)
    return output
