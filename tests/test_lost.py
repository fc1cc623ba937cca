"""Tests of elefast.provision.lost: telling a test that its server went away."""

import unittest

from sqlalchemy.engine import make_url

from elefast.provision.lost import explain_lost
from tests import support


class ExplainLostTests(unittest.TestCase):
    def test_server_that_answers_is_not_lost(self):
        """A server that accepts connections gets no explanation (the test's own error stands)."""
        self.assertIsNone(explain_lost(make_url(support.server_url())))

    def test_server_that_is_gone_is_named_without_password(self):
        """Nothing listening where the URL points: the message names the server, not its password."""
        url = make_url(f"postgresql+psycopg://u:hunter2@127.0.0.1:{support.free_port()}/db")
        message = explain_lost(url)
        self.assertIsNotNone(message)
        self.assertIn("stopped answering during the run", str(message))
        self.assertIn("127.0.0.1", str(message))
        self.assertNotIn("hunter2", str(message))

    def test_unix_socket_that_is_gone(self):
        """A socket directory with no server in it counts as gone too."""
        url = make_url("postgresql+psycopg://postgres@/postgres?host=/nonexistent-elefast-dir")
        self.assertIn("stopped answering", str(explain_lost(url)))


if __name__ == "__main__":
    unittest.main()
