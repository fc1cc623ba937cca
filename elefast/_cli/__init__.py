"""The command line (``python -m elefast``): doctor, init's scaffolds, checkouts, server and sweep commands.

May import: anything public, and the server and engine rooms; nothing imports it but ``__main__``.
"""

from elefast._cli.main import main

__all__ = ["main"]
