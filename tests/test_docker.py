"""Tests of elefast.extras.docker against a real Docker engine and a locally built image.

Skipped, with the reason printed, where no engine can be had (see tests/docker_support.py).
"""

import dataclasses
import os
import subprocess
import sys
import unittest
import uuid
from unittest import mock

import psycopg

from elefast import provision
from elefast.errors import ConfigurationError
from tests import docker_support, support

try:
    import docker

    from elefast.extras.docker import (
        CONFIG_LABEL,
        Configuration,
        Container,
        Credentials,
        Optimizations,
        postgres,
    )
except ImportError:  # the extra is missing: the tests skip in setUpModule
    docker = None

HOST = ""


def setUpModule():
    global HOST
    HOST = docker_support.engine()
    docker_support.image(HOST)


def tearDownModule():
    docker_support.stop_engine()


class ConfigurationTests(unittest.TestCase):
    def test_upstream_defaults(self):
        """The dataclasses carry upstream elefast's defaults."""
        config = Configuration()
        self.assertEqual((config.container.name, config.container.image, config.container.version,
                          config.container.database_port), ("elefast", "postgres", "latest", None))
        self.assertEqual(config.credentials, Credentials(user="postgres", password="elefast", host="127.0.0.1"))
        self.assertTrue(config.optimizations.fsync_off and config.optimizations.tmpfs)
        self.assertEqual(config.optimizations.shared_buffers_mb, 128)
        self.assertEqual(config.optimizations.checkpoint_timeout_seconds, 1800)

    def test_frozen_and_keyword_only(self):
        """They are frozen and take keyword arguments only."""
        with self.assertRaises(dataclasses.FrozenInstanceError):
            Container().name = "x"  # type: ignore[misc]
        with self.assertRaises(TypeError):
            Container("x")  # type: ignore[misc]

    def test_wal_level_minimal_needs_no_wal_senders(self):
        """wal_level_minimal with WAL senders is refused before Docker is touched."""
        bad = Optimizations(wal_level_minimal=True, disable_wal_senders=False)
        with self.assertRaises(ConfigurationError) as caught:
            postgres("psycopg", docker=object(), config=Configuration(optimizations=bad))  # type: ignore[arg-type]
        self.assertIn("disable_wal_senders", str(caught.exception))

    def test_settings(self):
        """Each optimization becomes a -c server setting."""
        settings = Optimizations(autovacuum_off=True, work_mem_mb=8).settings()
        for expected in ("fsync=off", "wal_level=minimal", "max_wal_senders=0", "autovacuum=off",
                         "work_mem=8MB", "shared_buffers=128MB", "checkpoint_timeout=1800s"):
            self.assertIn(expected, settings)


class PostgresContainerTests(unittest.TestCase):
    def setUp(self):
        self.client = docker.DockerClient(base_url=HOST)
        self.addCleanup(self.client.close)
        self.name = f"eft-{uuid.uuid4().hex[:8]}"
        self.addCleanup(self.remove, self.name)

    def remove(self, name):
        try:
            self.client.containers.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass

    def config(self, **optimizations):
        return Configuration(container=Container(name=self.name, image="postgres", version="elefast-test"),
                             optimizations=Optimizations(**optimizations))

    def connect(self, url):
        return psycopg.connect(host=url.host, port=url.port, user=url.username, password=url.password,
                               dbname=url.database, connect_timeout=5)

    def test_starts_a_tuned_container_on_localhost(self):
        """A new container: port on 127.0.0.1 only, tmpfs on the image's data volume, settings applied."""
        url = postgres("asyncpg", docker=self.client, config=self.config())
        self.assertEqual(url.drivername, "postgresql+asyncpg")
        self.assertEqual(url.host, "127.0.0.1")
        container = self.client.containers.get(self.name)
        bindings = container.attrs["HostConfig"]["PortBindings"]["5432/tcp"]
        self.assertEqual({b["HostIp"] for b in bindings}, {"127.0.0.1"})
        self.assertIn("/var/lib/postgresql", container.attrs["HostConfig"]["Tmpfs"])
        self.assertEqual(container.labels["org.elefast.managed"], "1")
        with self.connect(url) as connection:
            self.assertEqual(connection.execute("show fsync").fetchone()[0], "off")
            self.assertEqual(connection.execute("show wal_level").fetchone()[0], "minimal")
            data = connection.execute("show data_directory").fetchone()[0]
        self.assertTrue(data.startswith("/var/lib/postgresql"))

    def test_reuses_a_matching_container(self):
        """The same configuration twice: the same container, not restarted."""
        first = postgres("psycopg", docker=self.client, config=self.config())
        started = self.client.containers.get(self.name).attrs["State"]["StartedAt"]
        second = postgres("psycopg", docker=self.client, config=self.config())
        self.assertEqual(first.port, second.port)
        self.assertEqual(self.client.containers.get(self.name).attrs["State"]["StartedAt"], started)

    def test_restarts_a_stopped_container_and_rereads_its_port(self):
        """A stopped container is started again and its (new) host port read back."""
        postgres("psycopg", docker=self.client, config=self.config())
        container = self.client.containers.get(self.name)
        identity = container.id
        container.stop(timeout=10)
        url = postgres("psycopg", docker=self.client, config=self.config())
        self.assertEqual(self.client.containers.get(self.name).id, identity)
        with self.connect(url) as connection:
            self.assertEqual(connection.execute("select 1").fetchone()[0], 1)

    def test_changed_settings_replace_our_container(self):
        """Other settings: elefast's own container is replaced, never silently reused."""
        postgres("psycopg", docker=self.client, config=self.config())
        old = self.client.containers.get(self.name)
        url = postgres("psycopg", docker=self.client, config=self.config(autovacuum_off=True))
        new = self.client.containers.get(self.name)
        self.assertNotEqual(old.id, new.id)
        self.assertNotEqual(old.labels[CONFIG_LABEL], new.labels[CONFIG_LABEL])
        with self.connect(url) as connection:
            self.assertEqual(connection.execute("show autovacuum").fetchone()[0], "off")

    def test_foreign_container_is_never_touched(self):
        """A container of the same name that elefast did not create: a clear error, left as it was."""
        foreign = self.client.containers.create("postgres:elefast-test", name=self.name)
        with self.assertRaises(ConfigurationError) as caught:
            postgres("psycopg", docker=self.client, config=self.config())
        self.assertIn("did not create", str(caught.exception))
        self.assertIn(f"docker rm -f {self.name}", str(caught.exception))  # the one line to write
        self.assertEqual(self.client.containers.get(self.name).id, foreign.id)

    def test_host_port_from_the_environment(self):
        """Upstream's ELEFAST_HOST_PORT fixes the host port; a bad value is refused with the fix."""
        port = support.free_port()
        with mock.patch.dict(os.environ, {"ELEFAST_HOST_PORT": str(port)}):
            url = postgres("psycopg", docker=self.client, config=self.config())
        self.assertEqual(url.port, port)
        with self.connect(url) as connection:
            self.assertEqual(connection.execute("select 1").fetchone()[0], 1)
        with mock.patch.dict(os.environ, {"ELEFAST_HOST_PORT": "fifty"}):
            with self.assertRaisesRegex(ConfigurationError, "ELEFAST_HOST_PORT='fifty' is not a port"):
                postgres("psycopg", docker=self.client, config=self.config())

    def test_concurrent_processes_share_one_container(self):
        """Two processes asking at once (cross-process lock): one container, one port."""
        code = (
            "import docker, sys\n"
            "from elefast.extras.docker import postgres, Configuration, Container\n"
            f"c = docker.DockerClient(base_url={HOST!r})\n"
            f"cfg = Configuration(container=Container(name={self.name!r}, version='elefast-test'))\n"
            "print(postgres('psycopg', docker=c, config=cfg).port)\n"
        )
        processes = [subprocess.Popen([sys.executable, "-c", code], cwd=str(support.ROOT),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(2)]
        outputs = [p.communicate(timeout=120) for p in processes]
        for process, (_out, err) in zip(processes, outputs):
            self.assertEqual(process.returncode, 0, err[-2000:])
        self.assertEqual(outputs[0][0], outputs[1][0])
        self.assertEqual(len(self.client.containers.list(all=True, filters={"name": self.name})), 1)

    def test_container_removed_at_exit_unless_kept(self):
        """keep_container_around=False removes the container when the process exits."""
        code = (
            "import docker\n"
            "from elefast.extras.docker import postgres, Configuration, Container\n"
            f"c = docker.DockerClient(base_url={HOST!r})\n"
            f"cfg = Configuration(container=Container(name={self.name!r}, version='elefast-test'))\n"
            "postgres('psycopg', docker=c, config=cfg, keep_container_around=False)\n"
        )
        result = support.run_python(code)
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        self.assertEqual(self.client.containers.list(all=True, filters={"name": self.name}), [])


class DockerProvisioningTests(unittest.TestCase):
    def test_docker_way_through_resolve(self):
        """ELEFAST_SERVER=docker: resolve() starts the default container and returns its URL."""
        client = docker.DockerClient(base_url=HOST)
        self.addCleanup(client.close)
        if HOST.endswith(str(docker_support.SOCKET)):  # our private engine: the default tag may be ours
            client.images.get(docker_support.TAG).tag("postgres", "latest")
        else:
            self.skipTest("DOCKER_HOST is someone else's engine; not tagging postgres:latest there")

        def remove():
            try:
                client.containers.get("elefast").remove(force=True)
            except docker.errors.NotFound:
                pass

        remove()
        self.addCleanup(remove)
        environ = {k: v for k, v in os.environ.items() if k != "ELEFAST_DATABASE_URL"}
        environ.update(ELEFAST_SERVER="docker", DOCKER_HOST=HOST)
        with mock.patch.dict(os.environ, environ, clear=True):
            url = provision.resolve(None, is_async=True)
        self.assertEqual(url.drivername, "postgresql+asyncpg")
        self.assertEqual(url.host, "127.0.0.1")
        self.assertEqual(client.containers.get("elefast").status, "running")


if __name__ == "__main__":
    unittest.main()
