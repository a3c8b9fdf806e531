"""snnc's bottom layer: the lowered spiking network, the `.lava` file, fixed point, options and errors.

Everything else imports from here; nothing here imports from the compiler, the backends or the apps.
"""

__version__ = "0.1.0"
