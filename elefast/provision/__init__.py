"""Where the PostgreSQL server comes from.

:func:`resolve` applies one order, the first that applies wins:

1. the test class's ``database_url``;
2. the ``ELEFAST_DATABASE_URL`` environment variable.

Otherwise it raises :class:`~elefast.errors.ServerNotConfiguredError` saying
how to configure one.
"""

from __future__ import annotations

import os
from typing import Optional, Union

from sqlalchemy import URL

from elefast.errors import ServerNotConfiguredError

__all__ = ["ENV_URL", "resolve"]

#: The environment variable holding the URL of an existing server.
ENV_URL = "ELEFAST_DATABASE_URL"


def resolve(database_url: Optional[Union[str, URL]] = None) -> Union[str, URL]:
    """Return the URL of the server to use for a test class with ``database_url``."""
    if database_url:
        return database_url
    from_env = os.environ.get(ENV_URL, "").strip()
    if from_env:
        return from_env
    raise ServerNotConfiguredError(
        "elefast has no PostgreSQL server to use. To fix this, either:\n"
        "  - set database_url = 'postgresql://user:password@host:5432/postgres' on your test class, or\n"
        f"  - export {ENV_URL}=postgresql://user:password@host:5432/postgres before running the tests."
    )
