"""The docker extra's configuration: frozen, keyword-only dataclasses (upstream's defaults)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from typing import Any, Callable, List, Optional, Tuple, TypeVar, Union

__all__ = ["Configuration", "Container", "Credentials", "Optimizations"]

T = TypeVar("T")


def _frozen_kw_only(cls: type) -> Any:
    """``@dataclass(frozen=True, kw_only=True, slots=True)``, also on Python 3.9."""
    if sys.version_info >= (3, 10):
        return dataclass(frozen=True, kw_only=True, slots=True)(cls)
    built = dataclass(frozen=True)(cls)
    init: Callable[..., None] = built.__init__  # type: ignore[misc,unused-ignore]  # needed when mypy targets 3.9

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if args:
            raise TypeError(f"{cls.__name__}() takes keyword arguments only")
        init(self, **kwargs)

    built.__init__ = __init__  # type: ignore[misc,unused-ignore]  # needed when mypy targets 3.9
    return built


@_frozen_kw_only
class Optimizations:
    """Server settings that make PostgreSQL faster for throwaway test data.

    Each becomes a ``-c`` setting of the server (``tmpfs`` a tmpfs mount of the
    data directory). They trade durability, which tests do not need, for speed.
    """

    tmpfs: Union[int, bool] = True
    """tmpfs for the data directory: True (Docker's default size), False (disk), or a size in MB."""
    fsync_off: bool = True
    synchronous_commit_off: bool = True
    full_page_writes_off: bool = True
    wal_level_minimal: bool = True
    """Needs ``disable_wal_senders`` (PostgreSQL refuses wal_level=minimal with WAL senders)."""
    disable_wal_senders: bool = True
    disable_archiving: bool = True
    autovacuum_off: bool = False
    jit_off: bool = True
    shared_buffers_mb: Optional[int] = 128
    work_mem_mb: Optional[int] = None
    maintenance_work_mem_mb: Optional[int] = None
    checkpoint_timeout_seconds: Optional[int] = 1800
    disable_statement_logging: bool = True

    def settings(self) -> List[str]:
        """The ``name=value`` server settings these optimizations stand for."""
        out: List[str] = []
        flags = [
            (self.fsync_off, "fsync=off"),
            (self.synchronous_commit_off, "synchronous_commit=off"),
            (self.full_page_writes_off, "full_page_writes=off"),
            (self.wal_level_minimal, "wal_level=minimal"),
            (self.disable_wal_senders, "max_wal_senders=0"),
            (self.disable_archiving, "archive_mode=off"),
            (self.autovacuum_off, "autovacuum=off"),
            (self.jit_off, "jit=off"),
        ]
        out += [setting for enabled, setting in flags if enabled]
        sizes = [
            (self.shared_buffers_mb, "shared_buffers", "MB"),
            (self.work_mem_mb, "work_mem", "MB"),
            (self.maintenance_work_mem_mb, "maintenance_work_mem", "MB"),
            (self.checkpoint_timeout_seconds, "checkpoint_timeout", "s"),
        ]
        out += [f"{name}={value}{unit}" for value, name, unit in sizes if value is not None]
        if self.disable_statement_logging:
            out += ["log_statement=none", "log_min_duration_statement=-1"]
        return out

    def validate(self) -> None:
        """Refuse combinations PostgreSQL would refuse at start, with the fix."""
        from elefast.errors import ConfigurationError

        if self.wal_level_minimal and not self.disable_wal_senders:
            raise ConfigurationError(
                "Optimizations(wal_level_minimal=True) needs disable_wal_senders=True: PostgreSQL "
                "refuses wal_level=minimal while max_wal_senders > 0. Set both, or neither."
            )
        if self.tmpfs is not True and self.tmpfs is not False and (
            not isinstance(self.tmpfs, int) or self.tmpfs <= 0
        ):
            raise ConfigurationError(
                f"Optimizations(tmpfs={self.tmpfs!r}): use True, False or a size in MB above 0."
            )


@_frozen_kw_only
class Container:
    """The Docker container running PostgreSQL."""

    name: str = "elefast"
    """Name of the container; reused across runs while its configuration is unchanged."""
    image: str = "postgres"
    """Image name."""
    version: str = "latest"
    """Image tag."""
    database_port: Optional[Tuple[int, Optional[int]]] = None
    """(container port, host port or None for a free one); None means (5432, None)."""


@_frozen_kw_only
class Credentials:
    """The superuser the container is created with and the host to reach it on."""

    user: str = "postgres"
    password: str = "elefast"
    host: str = "127.0.0.1"


@_frozen_kw_only
class Configuration:
    """Everything :func:`elefast.extras.docker.postgres` needs to start or reuse a container."""

    container: Container = field(default_factory=Container)
    credentials: Credentials = field(default_factory=Credentials)
    optimizations: Optimizations = field(default_factory=Optimizations)

    def describe(self) -> str:
        """A stable text of every field, hashed into the container's label."""
        parts = []
        for part in (self.container, self.credentials, self.optimizations):
            parts += [f"{type(part).__name__}.{f.name}={getattr(part, f.name)!r}" for f in fields(part)]  # type: ignore[arg-type]
        return "|".join(parts)
