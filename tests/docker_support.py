"""A real Docker engine and a local PostgreSQL image for the docker extra's tests.

The official image cannot be pulled here, so :func:`image` builds one from this
machine's PostgreSQL 15: a root filesystem with its binaries, the libraries
``ldd`` lists, a passwd entry and a small entrypoint honouring the official
image's contract (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, ``-c``
arguments, runs as ``postgres``), imported with ``docker import``, then a
``docker build`` FROM it for STOPSIGNAL, USER and VOLUME.

:func:`engine` uses ``DOCKER_HOST`` when a daemon answers there, else starts
``dockerd`` itself (root only) with its own data root, exec root and socket.
Anything missing raises ``unittest.SkipTest`` with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import unittest
from pathlib import Path
from typing import Optional, Set

TAG = "postgres:elefast-test"
_STARTED: list = []  # the dockerd this module started, stopped by stop_engine()
BASE = Path("/var/tmp/elefast-test-docker")
SOCKET = BASE / "docker.sock"

ENTRYPOINT = r"""#!/bin/sh
# A small stand-in for the official postgres image's entrypoint.
set -e
: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"
    chmod 700 "$PGDATA"
    printf '%s\n' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" > /tmp/pwfile
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile=/tmp/pwfile --auth-local=trust \
        --auth-host=scram-sha-256 -E UTF8 --locale=C --no-sync > /dev/null
    rm -f /tmp/pwfile
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ -n "$POSTGRES_DB" ] && [ "$POSTGRES_DB" != "postgres" ]; then
        echo "CREATE DATABASE \"$POSTGRES_DB\"" | postgres --single -D "$PGDATA" postgres > /dev/null
    fi
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
"""

DOCKERFILE = """FROM elefast-test-rootfs:latest
ENV PATH=/usr/lib/postgresql/15/bin:/usr/bin:/bin PGDATA=/var/lib/postgresql/data
USER 999:999
VOLUME /var/lib/postgresql
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/docker-entrypoint.sh"]
"""


def _docker(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    env = dict(os.environ, DOCKER_HOST=os.environ.get("DOCKER_HOST") or f"unix://{SOCKET}", DOCKER_BUILDKIT="0")
    return subprocess.run(["docker", *args], env=env, capture_output=True, text=True, check=check,
                          timeout=timeout)


def _answers(host: str) -> bool:
    try:
        import docker

        client = docker.DockerClient(base_url=host, timeout=5)
        client.ping()
        client.close()
        return True
    except Exception:
        return False


def engine() -> str:
    """A DOCKER_HOST with a daemon that answers; starts one if needed, else SkipTest."""
    try:
        import docker  # noqa: F401
    except ImportError:
        raise unittest.SkipTest("the docker extra is not installed (pip install 'elefast[docker]')") from None
    if shutil.which("docker") is None:
        raise unittest.SkipTest("no docker command line client")
    configured = os.environ.get("DOCKER_HOST")
    if configured and _answers(configured):
        return configured
    host = f"unix://{SOCKET}"
    if _answers(host):
        return host
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise unittest.SkipTest("no Docker engine: install one (apt-get install docker.io) or set DOCKER_HOST")
    if os.geteuid() != 0:
        raise unittest.SkipTest("no Docker daemon answers, and only root may start dockerd here")
    for sub in ("data", "exec"):
        (BASE / sub).mkdir(parents=True, exist_ok=True)
    with open(BASE / "dockerd.log", "ab") as log:
        daemon = subprocess.Popen(
            [dockerd, "--iptables=false", "--ip-masq=false", f"--data-root={BASE / 'data'}",
             f"--exec-root={BASE / 'exec'}", f"--pidfile={BASE / 'docker.pid'}", "-H", host],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    _STARTED.append(daemon)
    deadline = time.monotonic() + 60
    while not _answers(host):
        if time.monotonic() > deadline:
            tail = (BASE / "dockerd.log").read_text(errors="replace")[-1500:]
            raise unittest.SkipTest(f"dockerd did not start within 60 s: {tail}")
        time.sleep(0.2)
    return host


def stop_engine() -> None:
    """Stop the dockerd :func:`engine` started, if it started one (its images stay for next time)."""
    while _STARTED:
        daemon = _STARTED.pop()
        daemon.terminate()
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def _libraries(paths: Set[Path]) -> Set[Path]:
    found: Set[Path] = set()
    for path in paths:
        result = subprocess.run(["ldd", str(path)], capture_output=True, text=True)
        for line in result.stdout.splitlines():
            parts = line.split()
            for part in parts:
                if part.startswith("/") and Path(part).exists():
                    found.add(Path(part))
    return found


def _copy(source: Path, root: Path) -> None:
    target = root / source.relative_to("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target, follow_symlinks=True)


def image(host: str, postgres_home: Optional[Path] = None) -> str:
    """Build (once) the local PostgreSQL image and return its tag."""
    os.environ.setdefault("DOCKER_HOST", host)
    if _docker("image", "inspect", TAG, check=False).returncode == 0:
        return TAG
    home = postgres_home or Path("/usr/lib/postgresql/15")
    share = Path("/usr/share/postgresql") / home.name
    if not (home / "bin" / "postgres").is_file() or not share.is_dir():
        raise unittest.SkipTest(f"no PostgreSQL {home.name} server under {home} to build the test image from")
    with tempfile.TemporaryDirectory(prefix="eft-rootfs-") as tmp:
        root = Path(tmp) / "root"
        programs = {Path("/bin/sh").resolve(), Path(shutil.which("mkdir") or "/bin/mkdir"),
                    Path(shutil.which("chmod") or "/bin/chmod"), Path(shutil.which("rm") or "/bin/rm")}
        for item in (home, share, Path("/usr/share/zoneinfo"), *programs):
            _copy(item, root)
        executables = {p for p in (home / "bin").iterdir() if p.is_file()} | set((home / "lib").glob("*.so"))
        for library in _libraries(executables | programs):
            _copy(library, root)
            _copy(library.resolve(), root)
        (root / "bin").mkdir(exist_ok=True)
        if not (root / "bin" / "sh").exists():
            os.symlink(str(Path("/bin/sh").resolve()), root / "bin" / "sh")
        (root / "etc").mkdir(exist_ok=True)
        (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                             "postgres:x:999:999:postgres:/var/lib/postgresql:/bin/sh\n")
        (root / "etc" / "group").write_text("root:x:0:\npostgres:x:999:\n")
        for directory, mode in (("tmp", 0o1777), ("var/run/postgresql", 0o2775), ("var/lib/postgresql", 0o775)):
            (root / directory).mkdir(parents=True, exist_ok=True)
            os.chmod(root / directory, mode)
            if directory != "tmp":
                os.chown(root / directory, 999, 999)
        entry = root / "docker-entrypoint.sh"
        entry.write_text(ENTRYPOINT)
        os.chmod(entry, 0o755)
        archive = Path(tmp) / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(root, arcname=".")
        _docker("import", str(archive), "elefast-test-rootfs:latest")
        (Path(tmp) / "Dockerfile").write_text(DOCKERFILE)
        _docker("build", "-q", "-t", TAG, tmp)
    return TAG
