"""Engines for a server's clones that share one initialized dialect and one statement cache.

Every clone gets an engine of its own (its URL names the clone), and ``create_engine``
makes each one from nothing: a new dialect, whose first connection asks the server four
questions (version, current schema, isolation level, ``standard_conforming_strings``) whose
answers are the same for every clone of the server, and a new compiled-statement cache, so
each test compiles its statements again. An :class:`EngineMaker` asks once: the first
engine is ``create_engine``'s, and before it is handed out a *prototype* of it is kept (its
dialect, a never-connected ``recreate()`` of its pool, so the same pool class, sizes,
pre-ping, recycle and on-connect hooks such as the isolation level, and its statement
cache). Once that engine's first connection has initialized the dialect, each later engine
is SQLAlchemy's :class:`~sqlalchemy.engine.Engine` over a new pool like the prototype's that
connects to its own clone, with the shared dialect and statement cache, as
``Engine.execution_options()`` shares them.

Engine-level and pool-level events a test adds to ``self.engine`` stay on that engine. A
dialect-level event (``do_connect``) added to one would reach the others, since they share
the dialect: the maker notices (the dialect has more hooks than its prototype had), starts a
fresh prototype for the engines it makes next, and swaps the engines made ahead with the old
dialect as they are taken (:meth:`EngineMaker.current`), so it never does. Hooks elefast
adds itself (waiting for a free connection on a full server) are added once, to the first
engine, before its prototype is taken. Anything the maker cannot reproduce (an SQLAlchemy
without these parts) makes plain ``create_engine`` engines, as before. Async engines are made
the same way: the maker works on their ``sync_engine``, and the caller wraps each in an
``AsyncEngine``.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple

from sqlalchemy import URL, Engine, event

__all__ = ["EngineMaker"]


def _signature(url: URL, options: Dict[str, Any], template: str) -> Tuple[str, str, str]:
    """What two engines must have in common to share a dialect: the server, the template their
    databases were cloned from (what the dialect learnt, such as hstore's type oid, is the
    template's) and every option."""
    server = url.set(database="postgres").render_as_string(hide_password=False)
    return server, template, repr(sorted(options.items(), key=lambda item: item[0]))


def _dialect_listeners(dialect: Any) -> int:
    """How many dialect-level ``do_connect`` hooks ``dialect`` has (elefast's own wait included)."""
    return len(list(dialect.dispatch.do_connect))


class _Prototype:
    """What later engines copy from a server's first engine, taken before that engine was handed out."""

    def __init__(self, engine: Engine) -> None:
        self.dialect = engine.dialect  # initialized by the first engine's first connection
        self.pool = engine.pool.recreate()  # never connects: its class, sizes and on-connect hooks only
        self.cache: Optional[Any] = getattr(engine, "_compiled_cache", None)
        self.echo = engine.echo
        self.hide_parameters = engine.hide_parameters
        self.logging_name = getattr(engine, "logging_name", None)
        self.execution_options = dict(engine.get_execution_options())
        self.listeners = _dialect_listeners(engine.dialect)
        self.initialized = False
        # Registered after create_engine's own first-connect listener, so it runs once that one is done.
        event.listen(engine.pool, "connect", self._connected, once=True)

    def _connected(self, dbapi_connection: Any, record: Any) -> None:
        self.initialized = getattr(self.dialect, "server_version_info", None) is not None

    def ready(self) -> bool:
        """Whether the dialect has met the server and no dialect-level event was added since."""
        return self.initialized and _dialect_listeners(self.dialect) == self.listeners

    def of_one_database(self) -> bool:
        """Whether the dialect holds something of its first database's: psycopg's hstore adapter
        carries the type's oid, which a template rebuilt under the same name may change (such
        engines keep dialects of their own)."""
        return bool(getattr(self.dialect, "_has_native_hstore", False))

    def engine(self, url: URL, options: Dict[str, Any]) -> Engine:
        """An engine on ``url`` with this dialect and statement cache and a pool of its own."""
        dialect = self.dialect
        cargs, cparams = dialect.create_connect_args(url)
        arguments = tuple(cargs)
        params = dict(cparams)
        params.update(options.get("connect_args") or {})

        def connect(record: Any = None) -> Any:  # as create_engine's: through the dialect's do_connect hooks,
            mutable_arguments, mutable_params = list(arguments), dict(params)  # which may change the arguments
            for hook in dialect.dispatch.do_connect:
                made = hook(dialect, record, mutable_arguments, mutable_params)
                if made is not None:
                    return made
            return dialect.connect(*mutable_arguments, **mutable_params)

        pool = self.pool.recreate()
        pool._creator = connect
        engine = Engine(pool, dialect, url, logging_name=self.logging_name, echo=self.echo,
                        hide_parameters=self.hide_parameters, execution_options=self.execution_options or None)
        if self.cache is not None:
            engine._compiled_cache = self.cache
        return engine


class EngineMaker:
    """Makes clone engines; from the second engine of a server on, without a dialect of its own."""

    #: Engines made before any of them connected (a pool filling ahead, a server that is full) are
    #: each a candidate prototype: the first to connect is the one later engines copy.
    CANDIDATES = 4

    def __init__(self, make: Callable[[URL, Dict[str, Any]], Engine]) -> None:
        self._make = make  # a new engine of the plain kind (create_engine's, or an async engine's sync_engine)
        self._lock = threading.Lock()
        self._prototypes: Dict[Tuple[str, str, str], Optional[List[_Prototype]]] = {}
        self._made: weakref.WeakKeyDictionary[Engine, _Prototype] = weakref.WeakKeyDictionary()

    def engine(self, url: URL, options: Dict[str, Any], template: Optional[str]) -> Engine:
        """An engine for database ``url``, a clone of ``template``, with ``options`` (``create_engine``
        keyword arguments). A plain one when the template is not known or ``ELEFAST_SHARE_DIALECT=0``."""
        if template is None or os.environ.get("ELEFAST_SHARE_DIALECT", "1") == "0":
            return self._make(url, options)
        key = _signature(url, options, template)
        with self._lock:
            candidates = self._prototypes.setdefault(key, [])
            if candidates is not None and any(c.initialized and c.of_one_database() for c in candidates):
                candidates = self._prototypes[key] = None  # plain engines for this template from now on
            if candidates is not None:  # those whose dialect gained a do_connect hook are done with
                candidates[:] = [c for c in candidates if c.ready() or not c.initialized]
            prototype = next((c for c in candidates or () if c.ready()), None)
        if prototype is not None:
            try:
                shared = prototype.engine(url, options)
                self._made[shared] = prototype
                return shared
            except (AttributeError, TypeError):  # another SQLAlchemy's internals: plain engines from now on
                with self._lock:
                    self._prototypes[key] = candidates = None
        engine = self._make(url, options)
        if candidates is not None:
            try:
                taken = _Prototype(engine)
            except (AttributeError, TypeError):
                return engine
            with self._lock:
                candidates.append(taken)
                del candidates[:-self.CANDIDATES]
            self._made[engine] = taken
        return engine

    def current(self, engine: Engine, remake: Callable[[], Engine]) -> Engine:
        """``engine``, made ahead for a clone, or ``remake()`` if a dialect-level event was added since to
        an engine sharing its dialect (so a hook one test added to its engine never reaches the next)."""
        prototype = self._made.get(engine)
        if prototype is None or not prototype.initialized:
            return engine
        if _dialect_listeners(prototype.dialect) == prototype.listeners:
            return engine
        engine.dispose()
        return remake()
