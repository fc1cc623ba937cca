"""The ``elefast`` logger, and ``ELEFAST_LOG`` to see it without configuring logging.

elefast logs what it decided and why: which server it chose, whether a template was
built or reused (with its fingerprint and how long it took), what a sweep dropped, and the
clone pool's counts at exit (DEBUG). Nothing is printed on a green run unless asked:
``ELEFAST_LOG=info`` (or ``debug``) adds a handler writing to stderr, which stands aside
once the application configures logging itself (its handlers then print elefast's lines,
once). Applications can use the ``elefast`` logger like any other.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["ENV_LOG", "configure_from_env", "logger"]

#: Set to ``debug``, ``info`` or ``warning`` to print elefast's log on stderr.
ENV_LOG = "ELEFAST_LOG"

logger = logging.getLogger("elefast")
_HANDLER_NAME = "elefast-env"


def _unless_the_app_logs(record: logging.LogRecord) -> bool:
    """Print a record only while the root logger has no handler: once the app configured
    logging, elefast's records reach the app's handlers and would otherwise show twice."""
    return not logging.getLogger().handlers


def configure_from_env() -> None:
    """Attach a stderr handler at the level ``ELEFAST_LOG`` names (once; no-op when unset)."""
    wanted = os.environ.get(ENV_LOG, "").strip().upper()
    if not wanted:
        return
    level = logging.getLevelName(wanted)
    if not isinstance(level, int):
        level = logging.INFO
    if any(handler.get_name() == _HANDLER_NAME for handler in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(_unless_the_app_logs)
    handler.setFormatter(logging.Formatter("elefast %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)


configure_from_env()
