"""snnc compiler core: frontend, pass manager, lowering, the `.lava` format. `compile_model` is the entry point."""

__version__ = "0.1.0"


def compile_model(*args, **kwargs):
    """See `snnc.compiler.api.compile_model` (imported lazily to keep `import snnc.compiler` light)."""
    from .api import compile_model as _compile

    return _compile(*args, **kwargs)
