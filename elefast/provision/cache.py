"""Where elefast keeps what outlives a run: the cache directory.

:func:`cache_dir` is ``ELEFAST_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/elefast`` (or
``~/.cache/elefast``); as root, ``/var/tmp/elefast-0``. It holds the cached ``initdb`` output,
the remembered program lookups (:mod:`elefast.provision.binaries`) and the local server's
data directories kept between runs (:mod:`elefast.provision.layout`).
"""

from __future__ import annotations

import os
from pathlib import Path

from elefast.provision.private import private_dir

__all__ = ["cache_dir", "private_cache"]


def cache_dir() -> Path:
    """The persistent cache directory (see the module docstring)."""
    configured = os.environ.get("ELEFAST_CACHE_DIR", "").strip()
    if configured:
        return Path(configured)
    if os.name == "posix" and os.geteuid() == 0:
        return Path("/var/tmp/elefast-0")
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "elefast"


def private_cache() -> Path:
    """:func:`cache_dir`, made or checked private to this user (:func:`~elefast.provision.private.private_dir`).

    As root it is ``0711``: the server user enters it to copy the cached cluster and binaries,
    and lists nothing; as anyone else ``0700``.
    """
    root = os.name == "posix" and os.geteuid() == 0
    return private_dir(cache_dir(), "the cache directory", 0o711 if root else 0o700)
