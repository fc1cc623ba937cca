"""This module is part of the 'docker' extra and needs to be explicitly installed before it is safe to use!

``pip install 'elefast[docker]'``. :func:`postgres` starts (or reuses) a
PostgreSQL container tuned for tests and returns its URL::

    url = postgres("psycopg")
    server = DatabaseServer(url)

Compared with upstream elefast: the port is bound to 127.0.0.1 only; the
container is matched by name *and* by a label holding a hash of the image and
settings, so a changed configuration replaces a container elefast created
(and refuses to touch one it did not); a stopped container is restarted and
its new port re-read; readiness is awaited; a cross-process lock guards the
start; tmpfs is mounted where the image keeps its data.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from sqlalchemy import URL

from elefast.errors import ConfigurationError, DatabaseNotReadyError, DockerUnavailableError
from elefast.extras.docker.configuration import Configuration, Container, Credentials, Optimizations

try:
    import docker as docker_sdk
    from filelock import FileLock
except ImportError as error:  # pragma: no cover - only without the extra
    raise ImportError(
        "elefast.extras.docker needs the Docker SDK: pip install 'elefast[docker]'"
    ) from error

if TYPE_CHECKING:
    from docker import DockerClient

__all__ = ["Configuration", "Container", "Credentials", "Optimizations", "postgres"]

#: Label marking containers elefast created.
MANAGED_LABEL = "org.elefast.managed"
#: Label holding the hash of the image and settings a container was created with.
CONFIG_LABEL = "org.elefast.config"


def config_hash(config: Configuration) -> str:
    """The hash of everything that shapes the container, stored in its label."""
    return hashlib.sha256(config.describe().encode()).hexdigest()[:16]


def _data_mount(client: DockerClient, image: str, tmpfs: Any) -> Dict[str, str]:
    """tmpfs mounted where the image keeps its data: the volume holding PGDATA."""
    if tmpfs is False:
        return {}
    attrs = client.images.get(image).attrs.get("Config") or {}
    env = dict(item.split("=", 1) for item in attrs.get("Env") or [] if "=" in item)
    pgdata = env.get("PGDATA", "/var/lib/postgresql/data")
    volumes = sorted(attrs.get("Volumes") or {}, key=len, reverse=True)
    target = next((v for v in volumes if pgdata == v or pgdata.startswith(v.rstrip("/") + "/")), None)
    if target is None:
        target = str(Path(pgdata).parent) if Path(pgdata).parent != Path("/") else pgdata
    options = ["rw", "mode=1777"]
    if tmpfs is not True:
        options.append(f"size={int(tmpfs)}m")
    # An image that runs as a numeric non-root user gets a tmpfs it owns; root entrypoints
    # (the official image's) create and chown PGDATA themselves.
    user, _, group = str(attrs.get("User") or "").partition(":")
    if user.isdigit() and user != "0":
        options += [f"uid={user}", f"gid={group if group.isdigit() else user}"]
    return {target: ",".join(options)}


def _ensure_image(client: DockerClient, image: str) -> None:
    try:
        client.images.get(image)
    except docker_sdk.errors.ImageNotFound:
        try:
            client.images.pull(image)
        except docker_sdk.errors.APIError as error:
            raise ConfigurationError(
                f"The image {image!r} is not on this machine and could not be pulled ({error}). "
                f"Pull or build it first (docker pull {image}), or set Container(image=..., version=...)."
            ) from None


def _host_port(container: Any, container_port: int) -> int:
    deadline = time.monotonic() + 30
    container.reload()
    while container.status == "created" and time.monotonic() < deadline:
        time.sleep(0.05)
        container.reload()
    if container.status != "running":
        logs = container.logs(tail=20).decode(errors="replace").strip()
        raise DatabaseNotReadyError(
            f"The PostgreSQL container {container.name!r} is {container.status}, not running. "
            f"Its log ends with:\n{logs}"
        )
    bindings = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
    for binding in bindings.get(f"{container_port}/tcp") or []:
        if binding.get("HostPort"):
            return int(binding["HostPort"])
    raise RuntimeError(f"container {container.name} publishes no port for {container_port}/tcp")


#: Publish the container's PostgreSQL on this host port (upstream's variable), when the config names none.
ENV_HOST_PORT = "ELEFAST_HOST_PORT"


def _ports(config: Configuration) -> Tuple[int, Optional[int]]:
    """(container port, host port or None for any free one): the config's, else ``ELEFAST_HOST_PORT``."""
    container_port, host_port = config.container.database_port or (5432, None)
    value = os.environ.get(ENV_HOST_PORT, "").strip()
    if host_port is None and value:
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise ConfigurationError(f"{ENV_HOST_PORT}={value!r} is not a port number: set it to one, e.g. 5432.")
        host_port = int(value)
    return container_port, host_port


def _start(client: DockerClient, config: Configuration, digest: str) -> Any:
    image = f"{config.container.image}:{config.container.version}"
    _ensure_image(client, image)
    container_port, host_port = _ports(config)
    command: List[str] = []
    for setting in config.optimizations.settings():
        command += ["-c", setting]
    if container_port != 5432:
        command += ["-c", f"port={container_port}"]
    return client.containers.run(
        image,
        command=command,
        name=config.container.name,
        detach=True,
        environment={
            "POSTGRES_USER": config.credentials.user,
            "POSTGRES_PASSWORD": config.credentials.password,
            "POSTGRES_DB": "postgres",
        },
        ports={f"{container_port}/tcp": ("127.0.0.1", host_port)},
        tmpfs=_data_mount(client, image, config.optimizations.tmpfs),
        labels={MANAGED_LABEL: "1", CONFIG_LABEL: digest},
    )


def _wait_ready(url: URL, timeout: float) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(
                host=url.host, port=url.port, user=url.username, password=url.password,
                dbname="postgres", connect_timeout=2,
            ).close()
            return
        except psycopg.OperationalError as error:
            if time.monotonic() > deadline:
                raise DatabaseNotReadyError(
                    f"The PostgreSQL container at {url.host}:{url.port} was not ready within {timeout:g} s "
                    f"(last error: {str(error).splitlines()[0] if str(error) else error!r})."
                ) from None
            time.sleep(0.05)


def postgres(
    driver: str,
    docker: Optional[DockerClient] = None,
    config: Optional[Configuration] = None,
    keep_container_around: bool = True,
) -> URL:
    """Start or reuse a PostgreSQL container and return ``URL("postgresql+<driver>", ...)``.

    Args:
        driver: the SQLAlchemy driver of the returned URL (``psycopg``, ``asyncpg``).
        docker: a Docker client (default ``docker.from_env()``).
        config: what to start (default ``Configuration()``).
        keep_container_around: leave the container running after this process
            exits, for the next run to reuse (default). False removes it at exit.

    A container with the configured name is reused only if elefast created it
    with the same image and settings; one elefast created with other settings
    is replaced; one elefast did not create is never touched (a clear error).
    """
    config = config or Configuration()
    config.optimizations.validate()  # a bad configuration is said before Docker is asked anything
    client = _client(docker)
    container_port, host_port = _ports(config)
    digest = config_hash(config) + (f"-port{host_port}" if host_port and not config.container.database_port else "")
    name = config.container.name
    lock_name = f"elefast-docker-{hashlib.sha256(name.encode()).hexdigest()[:8]}.lock"
    lock = Path(tempfile.gettempdir()) / lock_name
    with FileLock(str(lock), timeout=120):
        container = _existing(client, name, digest)
        if container is None:
            container = _start(client, config, digest)
        elif container.status != "running":
            container.start()
        port = _host_port(container, container_port)
        url = URL.create(
            f"postgresql+{driver}", username=config.credentials.user, password=config.credentials.password,
            host=config.credentials.host, port=port, database="postgres",
        )
        _wait_ready(url, timeout=60)
    if not keep_container_around:
        atexit.register(_remove_quietly, client, container.id)
    return url


def _client(given: Optional[DockerClient]) -> DockerClient:
    """``given``, or ``docker.from_env()``, once a daemon answers it (:class:`DockerUnavailableError` if none)."""
    try:
        client = given or docker_sdk.from_env()
        client.ping()
    except (docker_sdk.errors.DockerException, OSError) as error:  # requests' ConnectionError is an OSError
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise DockerUnavailableError(
            f"No Docker daemon answers ({type(error).__name__}: {reason}). Start Docker, or set DOCKER_HOST to "
            "where its daemon listens; or use another server: ELEFAST_DATABASE_URL, or a local PostgreSQL "
            "(pip install 'elefast[server]')."
        ) from error
    return client


def _existing(client: DockerClient, name: str, digest: str) -> Optional[Any]:
    try:
        container = client.containers.get(name)
    except docker_sdk.errors.NotFound:
        return None
    labels = container.labels or {}
    if labels.get(MANAGED_LABEL) != "1":
        raise ConfigurationError(
            f"A container named {name!r} exists that elefast did not create (upstream elefast's is named "
            f"'elefast' too); elefast will not touch it. Remove it: docker rm -f {name} (its data goes with "
            "it), or give elefast another name: postgres(driver, config=Configuration(container="
            "Container(name='elefast-tests')))."
        )
    if labels.get(CONFIG_LABEL) != digest:
        container.remove(force=True)  # ours, with an older image or settings: replace it
        return None
    return container


def _remove_quietly(client: DockerClient, container_id: str) -> None:
    try:
        client.containers.get(container_id).remove(force=True)
    except Exception:
        pass

