"""snnc compiler: frontend, pass manager, lowering. `snnc.compiler.api.compile_model` is the entry point."""

from snnc.ir import __version__  # noqa: F401
