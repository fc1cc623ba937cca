"""How elefast makes clones on a given server: the ``CREATE DATABASE ... STRATEGY`` it picks from
the server's settings (read once per server with :data:`elefast._base.sql.SERVER_SETTINGS`), and the
INFO line that says so."""

from __future__ import annotations

from typing import Optional

__all__ = ["choose_strategy", "describe_strategy"]


def choose_strategy(server_version_num: int, fsync: str, file_copy_method: str = "") -> Optional[str]:
    """``CREATE DATABASE ... STRATEGY``: FILE_COPY when fsync is off on PostgreSQL 15+, or when
    the server clones files (PostgreSQL 18's ``file_copy_method = clone``: reflinks).

    Measured here (20-table template): with fsync off FILE_COPY clones in 16.5 ms against
    WAL_LOG's 25 ms; with fsync on FILE_COPY is slower (244 vs 151 ms), so the server's
    default (WAL_LOG) is kept. With ``clone`` a FILE_COPY clone shares the template's blocks,
    so its cost does not grow with the template's size (benchmarks/clone_curve.py).
    """
    if server_version_num >= 150000 and (fsync.lower() == "off" or file_copy_method.lower() == "clone"):
        return "FILE_COPY"
    return None


def describe_strategy(strategy: Optional[str], file_copy_method: str) -> str:
    """How clones are made on a server, for the INFO line."""
    if strategy != "FILE_COPY":
        return "clones are made with the server's default CREATE DATABASE strategy (WAL_LOG on 15+)"
    if file_copy_method.lower() == "clone":
        return "clones share the template's blocks (STRATEGY FILE_COPY, file_copy_method = clone: reflinks)"
    if file_copy_method:
        return ("clones are copied (STRATEGY FILE_COPY, file_copy_method = copy; with a data directory on a "
                "filesystem with reflinks, such as XFS or btrfs, PostgreSQL 18 can clone instead)")
    return "clones are copied (STRATEGY FILE_COPY)"
