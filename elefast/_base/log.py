"""The ``elefast`` logger, and ``ELEFAST_LOG`` to see it without configuring logging.

elefast logs what it decided and why: which server it chose, whether a template was
built or reused (with its fingerprint and how long it took), what a sweep dropped, and the
clone pool's counts at exit (DEBUG). Nothing is printed on a green run unless asked:
``ELEFAST_LOG=info`` (or ``debug``) adds a handler writing to stderr, which stands aside
once the application configures logging itself (its handlers then print elefast's lines,
once). Applications can use the ``elefast`` logger like any other. Under pytest, whose
handlers take the records (shown with a failing test's output, or live with
``--log-cli-level=INFO``), elefast's pytest plugin also prints them in a section at the end.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Set

__all__ = ["ENV_LOG", "configure_from_env", "logger"]

#: Set to ``debug``, ``info``, ``warning`` or ``error`` to print elefast's log on stderr.
ENV_LOG = "ELEFAST_LOG"

#: The values ``ELEFAST_LOG`` accepts (any case); another value is warned about once, and shows INFO.
ACCEPTED = ("DEBUG", "INFO", "WARNING", "ERROR")

logger = logging.getLogger("elefast")
_HANDLER_NAME = "elefast-env"
_WARNED: Set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn_explicit(message, UserWarning, filename=ENV_LOG, lineno=0, module="elefast")


def _unless_the_app_logs(record: logging.LogRecord) -> bool:
    """Print a record only while the root logger has no handler: once the app configured
    logging, elefast's records reach the app's handlers and would otherwise show twice."""
    return not logging.getLogger().handlers


def configure_from_env() -> None:
    """Attach a stderr handler at the level ``ELEFAST_LOG`` names (once; no-op when unset)."""
    wanted = os.environ.get(ENV_LOG, "").strip().upper()
    if not wanted:
        return
    level = logging.getLevelName(wanted) if wanted in ACCEPTED else None
    if not isinstance(level, int):
        _warn_once(f"{ENV_LOG}={wanted.lower()!r} is not a level elefast knows: use one of "
                   f"{', '.join(name.lower() for name in ACCEPTED)}. Showing INFO meanwhile.")
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
