"""Admin connections belong to the server, not to the calling thread: event loops come and go, the count stays.

Each ``asyncio.run`` below is a new event loop with a new default executor, so every round calls
the server from threads it never saw before (as pytest-asyncio's function-scoped loops do).
The connections are counted where they are: in the server's ``pg_stat_activity``.
"""

import asyncio
import os
import threading
import unittest

import psycopg
from sqlalchemy import text

from elefast import AsyncDatabaseServer, DatabaseServer
from tests import support

ROUNDS = 50


def elefast_connections() -> int:
    """This process's connections on the server (elefast names its admin connections 'elefast:<pid>')."""
    with psycopg.connect(support.libpq_dsn(), autocommit=True) as connection:
        row = connection.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                                 (f"elefast:{os.getpid()}",)).fetchone()
    return int(row[0]) if row else 0


class AdminConnectionsTests(unittest.TestCase):
    def setUp(self):
        self.prefix = support.unique_prefix("adm")
        self.addCleanup(support.drop_templates, self.prefix)

    def test_fifty_event_loops_share_a_few_admin_connections(self):
        server = AsyncDatabaseServer(support.server_url())
        peaks = []

        async def one_round() -> None:
            database = await server.create_database(prefix=self.prefix)
            async with database.engine.connect() as connection:
                self.assertEqual((await connection.execute(text("SELECT 1"))).scalar(), 1)
            await database.engine.dispose()
            await database.drop()
            peaks.append(elefast_connections())

        try:
            for _ in range(ROUNDS):
                asyncio.run(one_round())
            # before: one more admin connection per loop (each loop's executor thread kept its own)
            self.assertLessEqual(max(peaks), 12, peaks)
            self.assertLessEqual(peaks[-1], peaks[ROUNDS // 5] + 1, peaks)  # flat, not growing with the loops
        finally:
            asyncio.run(server.close())
        self.assertEqual(elefast_connections(), 0)
        self.assertEqual(support.databases(self.prefix + "%"), [])

    def test_threads_that_come_and_go_share_them_too(self):
        server = DatabaseServer(support.server_url())
        counts = []

        def one_thread() -> None:
            database = server.create_database(prefix=self.prefix)
            database.drop()
            counts.append(elefast_connections())

        try:
            for _ in range(30):
                worker = threading.Thread(target=one_thread)
                worker.start()
                worker.join()
            self.assertLessEqual(max(counts), 12, counts)
            self.assertLessEqual(counts[-1], counts[5] + 1, counts)
        finally:
            server.close()
        self.assertEqual(elefast_connections(), 0)


if __name__ == "__main__":
    unittest.main()
