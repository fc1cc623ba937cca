"""Provisioning through Docker: used when no URL is set and no local binaries exist."""

from __future__ import annotations

from typing import TYPE_CHECKING

from elefast.errors import DockerUnavailableError

if TYPE_CHECKING:
    from sqlalchemy import URL

__all__ = ["DockerUnavailableError", "docker_server"]


def docker_server(driver: str) -> URL:
    """A PostgreSQL container's URL via :func:`elefast.extras.docker.postgres`."""
    try:
        import docker
    except ImportError:
        raise DockerUnavailableError(
            "The docker extra is not installed: pip install 'elefast[docker]'"
        ) from None
    try:
        client = docker.from_env(timeout=5)
        client.ping()
    except Exception as error:
        raise DockerUnavailableError(
            f"No Docker daemon answers ({type(error).__name__}: {str(error)[:200]}). "
            "Start Docker, or set DOCKER_HOST."
        ) from None
    from elefast.extras.docker import postgres

    return postgres(driver, docker=client)
