"""User-facing errors: one line, names the node or file and what to do. The CLI exits 2 on these."""


class SnncError(Exception):
    """A mistake in the user's input (model, file, option): printed as one line, exit code 2."""


class UnsupportedOpError(SnncError):
    """A node the compiler cannot convert; the message names the node and the options."""


class FormatError(SnncError):
    """A `.lava` file that is corrupt, foreign or from an unsupported format version."""
