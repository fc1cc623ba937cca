"""Helpers of :mod:`elefast.extras.alembic`: where the scripts are, and logging kept as it was."""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

__all__ = ["is_package_location", "logging_kept", "package_folder"]


def package_folder(value: str) -> Optional[Path]:
    """The folder of the importable package ``value`` names (``mlflow.store.db_migrations``), if it
    holds an ``env.py``."""
    import importlib.util

    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", value) or value.endswith((".ini", ".toml")):
        return None
    try:
        spec = importlib.util.find_spec(value)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / "env.py").is_file():
            return Path(folder)
    return None


def is_package_location(value: str) -> bool:
    """``package:folder``, Alembic's form for migrations shipped inside a package."""
    package, sep, folder = value.partition(":")
    return bool(sep and folder and package.replace(".", "").replace("_", "").isalnum() and len(package) > 1)


@contextmanager
def logging_kept() -> Iterator[None]:
    """Undo what ``fileConfig`` in an ``env.py`` does to the test process's logging.

    The ``env.py`` of ``alembic init`` calls ``logging.config.fileConfig``, which replaces the
    root logger's handlers and disables every logger that exists: fine for the ``alembic``
    command, not inside a test run. Every logger's level, handlers, propagation and state are
    put back afterwards; loggers the migration created are reset to the defaults.
    """
    manager = logging.Logger.manager
    root = logging.getLogger()
    before = {id(logger) for logger in manager.loggerDict.values()}
    saved = [(logger, logger.level, list(logger.handlers), logger.propagate, logger.disabled)
             for logger in [root, *manager.loggerDict.values()] if isinstance(logger, logging.Logger)]
    try:
        yield
    finally:
        for logger, level, handlers, propagate, disabled in saved:
            logger.setLevel(level)
            logger.handlers[:] = handlers
            logger.propagate, logger.disabled = propagate, disabled
        for created in list(manager.loggerDict.values()):
            if isinstance(created, logging.Logger) and id(created) not in before:
                created.setLevel(logging.NOTSET)
                created.handlers[:] = []
                created.propagate, created.disabled = True, False
