"""Flask-Migrate projects under :class:`~elefast.extras.alembic.AlembicMigrator` (``app=``): their
``env.py`` runs inside the app's context, on the template, unchanged."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["flask_app_on"]


@contextmanager
def flask_app_on(app: Any, url: str) -> Iterator[None]:
    """Inside the app's context, with Flask-SQLAlchemy's default engine on ``url`` (no app: nothing)."""
    if app is None:
        yield
        return
    from sqlalchemy import NullPool, create_engine

    with app.app_context():
        extension = app.extensions.get("sqlalchemy")
        engines = extension.engines if extension is not None else None  # Flask-SQLAlchemy 3's mapping
        if not isinstance(engines, dict) or None not in engines:
            yield
            return
        original, stand_in = engines[None], create_engine(url, poolclass=NullPool)
        engines[None] = stand_in
        # An older Flask-Migrate env.py sets sqlalchemy.url from the app's config: point that too.
        had_uri, uri = "SQLALCHEMY_DATABASE_URI" in app.config, app.config.get("SQLALCHEMY_DATABASE_URI")
        app.config["SQLALCHEMY_DATABASE_URI"] = _without_percent(url)  # it may pass it to set_main_option
        try:
            yield
        finally:
            engines[None] = original
            if had_uri:
                app.config["SQLALCHEMY_DATABASE_URI"] = uri
            else:
                app.config.pop("SQLALCHEMY_DATABASE_URI", None)
            stand_in.dispose()


def _without_percent(url: str) -> str:
    """``url`` with its query (a socket directory: ``?host=%2Ftmp``) unquoted when that means the same
    URL: an env.py that hands it to ``config.set_main_option`` unescaped would fail on the ``%``."""
    from urllib.parse import unquote

    from sqlalchemy.engine import make_url

    base, question, query = url.partition("?")
    plain = base + question + unquote(query)
    if "%" in plain:
        return url
    try:
        return plain if make_url(plain) == make_url(url) else url
    except Exception:
        return url
