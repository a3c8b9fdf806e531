"""`write_output`: save a compile result as a .lava file, spiking ONNX, the rate-limit ANN, a C project or NIR."""

from __future__ import annotations

from pathlib import Path

from snnc.compiler.api import CompileResult
from snnc.ir import lavafile
from snnc.ir.errors import SnncError
from snnc.ir.files import atomic_write_bytes

EMIT_KINDS = ("lava", "onnx", "ratelimit", "c", "nir")


def check_output(output: str | Path, emit: str = "lava") -> Path:
    """Refuse an output path that cannot be written, before any work: empty, a folder where a file is written,
    a file where the C project's folder goes, or a parent folder that does not exist."""
    if emit not in EMIT_KINDS:
        raise SnncError(f"--emit {emit!r}: expected one of {', '.join(EMIT_KINDS)}")
    if not str(output).strip():
        raise SnncError("-o '': expected an output path")
    output = Path(output)
    parent = output.resolve().parent
    if emit == "c":
        if output.exists() and not output.is_dir():
            raise SnncError(f"-o {output}: exists and is not a folder; the C project is written into a folder")
        above = next((p for p in output.resolve().parents if p.exists()), None)
        if above is not None and not above.is_dir():
            raise SnncError(f"-o {output}: {above} is a file, not a folder")
    elif output.is_dir():
        raise SnncError(f"-o {output}: is a folder; give a file name, e.g. {output / ('net.' + _SUFFIX[emit])}")
    if emit != "c" and not parent.is_dir():  # the C project's folder is created with its parents
        raise SnncError(f"-o {output}: folder {parent} does not exist")
    return output


_SUFFIX = {"lava": "lava", "onnx": "onnx", "ratelimit": "onnx", "c": ""}


def write_output(result: CompileResult, output: str | Path, emit: str = "lava", embed_ann: bool = False) -> Path:
    """Save one artifact: the .lava file, the spiking ONNX, the rate-limit ANN, or a C project folder. A .lava file
    keeps the original ANN by reference to its source ONNX unless embed_ann (snnc.ir.annref)."""
    output = check_output(output, emit)
    if emit == "lava":
        lavafile.save(result.network, output, embed_ann=embed_ann)
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
