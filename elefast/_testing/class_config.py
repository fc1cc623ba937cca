"""A test class's elefast attributes, read and checked once (when the class is created, and again in
``setUpClass``, so attributes set later still count), with the fix in every error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, Union

from sqlalchemy import URL

from elefast._base import settings as _settings
from elefast._base import sql as _sql
from elefast._testing import app_engines as _app_engines
from elefast._testing import extra_databases as _extra_databases
from elefast._testing import guard as _guard
from elefast._testing import matrix as _matrix
from elefast._testing.isolation import Isolation, isolation_named
from elefast.errors import ConfigurationError
from elefast.extensions import with_extensions
from elefast.migrators import check_schema

__all__ = ["ATTRIBUTES", "ClassConfig", "check_spelling"]

#: The class attributes (and the classmethod) the test case mixins read.
ATTRIBUTES = ("schema", "database_url", "isolation", "database_prefix", "connect_timeout", "sessionmaker_factory",
              "app_engines", "extensions", "postgres_versions", "extra_databases", "database_url_env", "guard",
              "setUpTestData")


def check_spelling(owner: type) -> None:
    """Fail for an attribute of ``owner`` that looks like a misspelt elefast one (``isolaton``).

    Such a name would be silently ignored (every test running in the default mode, say). A name
    a base class also defines is the hierarchy's own, and is left alone."""
    for name in vars(owner):
        if name.startswith("_") or name in ATTRIBUTES:
            continue
        meant = _settings.near_miss(name, ATTRIBUTES)
        if meant is None or any(name in vars(base) for base in owner.__mro__[1:]):
            continue
        raise ConfigurationError(f"{owner.__name__}.{name} is not an elefast attribute: did you mean `{meant}`? "
                                 f"As it is, elefast ignores it. (If it is your own, give it a name further "
                                 f"from `{meant}`.)")


@dataclass(frozen=True)
class ClassConfig:
    """A test class's elefast attributes, checked."""

    schema: Any
    database_url: Optional[Union[str, URL]]
    isolation: Isolation
    prefix: str
    connect_timeout: float
    sessionmaker_factory: Optional[Callable[..., Any]]
    app_engines: Tuple[Any, ...] = ()
    database_url_env: Optional[str] = None
    guard: bool = False
    postgres_version: Optional[int] = None  # a version matrix's copy of the class
    extra_databases: Tuple[Tuple[str, Any], ...] = ()
    extra_app_engines: Optional[Dict[str, Tuple[Any, ...]]] = None

    @classmethod
    def of(cls, owner: type, *, is_async: bool) -> ClassConfig:
        """Read and check ``owner``'s attributes; raise :class:`ConfigurationError` with the fix."""
        name = owner.__name__
        _settings.check_environment()
        check_spelling(owner)
        url = getattr(owner, "database_url", None)
        if url is not None and not isinstance(url, (str, URL)):
            raise ConfigurationError(f"{name}.database_url must be a URL string, a sqlalchemy URL or None, "
                                     f"not {type(url).__name__}.")
        timeout = getattr(owner, "connect_timeout", 10.0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigurationError(f"{name}.connect_timeout must be a positive number of seconds, not {timeout!r}.")
        factory = getattr(owner, "sessionmaker_factory", None)  # read from the class: a lambda stays unbound
        if factory is not None and not callable(factory):
            raise ConfigurationError(f"{name}.sessionmaker_factory must be callable (engine -> sessionmaker), "
                                     f"not {type(factory).__name__}.")
        prefix = _sql.safe_prefix(getattr(owner, "database_prefix", _sql.DEFAULT_PREFIX))
        app_engines = getattr(owner, "app_engines", ())
        _app_engines.check_spec(app_engines, name)
        extras = _extra_databases.check(getattr(owner, "extra_databases", None), name,
                                        lambda extra: check_schema(extra, is_async=is_async))
        app_engines, extra_app_engines = _extra_databases.split_app_engines(app_engines, extras, name)
        url_env = getattr(owner, "database_url_env", None)
        if url_env is not None and (not isinstance(url_env, str) or not url_env):
            raise ConfigurationError(f"{name}.database_url_env must be the name of an environment variable "
                                     f"(a non-empty str, e.g. 'DATABASE_URL') or None, not {url_env!r}.")
        extensions = getattr(owner, "extensions", ())
        if isinstance(extensions, str) or not isinstance(extensions, (tuple, list)):
            raise ConfigurationError(f"{name}.extensions must be a tuple of extension names, e.g. ('vector',), "
                                     f"not {extensions!r}.")
        schema = with_extensions(check_schema(getattr(owner, "schema", None), is_async=is_async), extensions)
        return cls(schema, url,
                   isolation_named(getattr(owner, "isolation", "database"), name), prefix, float(timeout), factory,
                   tuple(app_engines or ()), url_env, _guard.guard_wanted(getattr(owner, "guard", None)),
                   _matrix.pinned(owner), extras, extra_app_engines)
