"""Every statement elefast sends, identifier quoting, names and error triage.

Pure functions only: no I/O happens here, so the sync and async halves of the
library share exactly the same SQL text and rules.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any, Dict, Iterator, List, Optional, Tuple

from elefast.errors import ConfigurationError, InvalidPrefixError

#: PostgreSQL truncates identifiers longer than this many bytes (NAMEDATALEN - 1).
MAX_IDENTIFIER_BYTES = 63
#: Length of the random part of every generated name; never shortened.
RANDOM_PART_LENGTH = 16
#: Prefix used when none is given.
DEFAULT_PREFIX = "elefast"

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_ENCODING_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_PREPARER: Any = None  # PostgreSQL's identifier quoting, made on first use (the dialect's import is ~30 ms)


def quote_identifier(name: str) -> str:
    """Quote ``name`` as a PostgreSQL identifier, always, whatever it contains."""
    global _PREPARER
    if _PREPARER is None:
        from sqlalchemy.dialects import postgresql

        _PREPARER = postgresql.dialect().identifier_preparer  # type: ignore[no-untyped-call]
    return str(_PREPARER.quote_identifier(name))


def quote_literal(value: str) -> str:
    """Quote ``value`` as a PostgreSQL string literal: every literal elefast sends goes through here.

    Quotes are doubled; a value with a backslash uses the ``E'...'`` form with backslashes
    doubled, which reads the same whatever ``standard_conforming_strings`` says. NUL bytes
    cannot be sent at all and are refused.
    """
    if "\x00" in value:
        raise ValueError("a PostgreSQL string literal cannot hold a NUL byte")
    quoted = value.replace("'", "''")
    if "\\" in quoted:
        return "E'" + quoted.replace("\\", "\\\\") + "'"
    return "'" + quoted + "'"


_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9_-]+")


def safe_prefix(prefix: str) -> str:
    """``prefix`` made safe as the start of a database name: every run of other characters
    than ASCII letters, digits, ``_`` and ``-`` becomes one ``_``.

    A pytest node name (``test_get_posts[1-2]``) becomes ``test_get_posts_1-2``: names elefast
    makes stay recognisable, greppable and free of quotes, and stay unique through their
    random part. A prefix that is not a ``str``, or that has nothing safe in it, is refused
    with :class:`InvalidPrefixError`. Length is not checked here: :func:`database_name`
    shortens long prefixes.
    """
    if not isinstance(prefix, str):
        raise InvalidPrefixError(
            f"The database name prefix must be a str, got {type(prefix).__name__}. "
            "Pass a short name such as prefix='myapp'."
        )
    if _PREFIX_RE.match(prefix):
        return prefix
    safe = _UNSAFE_RUN.sub("_", prefix).strip("_")
    if not safe:
        raise InvalidPrefixError(
            f"The database name prefix {prefix!r} has nothing to build a name from: use ASCII letters, "
            "digits, '_' and '-' (for example prefix='myapp_tests')."
        )
    return safe


def random_part() -> str:
    """A fresh random suffix: 16 lowercase hex digits (64 bits)."""
    return secrets.token_hex(RANDOM_PART_LENGTH // 2)


def database_name(prefix: str = DEFAULT_PREFIX, infix: str = "", suffix: Optional[str] = None) -> str:
    """Build ``<prefix>_<infix><random>`` that fits PostgreSQL's 63-byte limit.

    The prefix is made safe (:func:`safe_prefix`) and shortened when needed; the random part (or the
    given ``suffix``) is always kept whole, so two names never collide because
    of truncation.
    """
    prefix = safe_prefix(prefix)
    tail = f"_{infix}{suffix if suffix is not None else random_part()}"
    room = MAX_IDENTIFIER_BYTES - len(tail.encode())
    if room < 1:
        raise ConfigurationError(f"The name part {tail!r} leaves no room for a prefix.")
    return prefix[:room] + tail


def template_name(prefix: str = DEFAULT_PREFIX, fingerprint: Optional[str] = None) -> str:
    """Name of a template database: ``<prefix>_tpl_<fingerprint or random>``."""
    return database_name(prefix, infix="tpl_", suffix=fingerprint)


def validate_encoding(encoding: str) -> str:
    """Return ``encoding`` if it looks like a PostgreSQL encoding name, else raise."""
    if not isinstance(encoding, str) or not _ENCODING_RE.match(encoding):
        raise ConfigurationError(
            f"The encoding {encoding!r} is not a valid PostgreSQL encoding name; "
            "use a name such as 'utf8' or 'latin1'."
        )
    return encoding


def create_database(name: str, template: Optional[str] = None, encoding: str = "utf8",
                    strategy: Optional[str] = None) -> str:
    """``CREATE DATABASE`` for ``name``, cloned from ``template`` (``template0`` if None).

    Clones of ``template0`` in an encoding other than UTF-8 get the C locale,
    the one locale every encoding accepts; clones of a template inherit its.
    """
    validate_encoding(encoding)
    parts = [f"CREATE DATABASE {quote_identifier(name)}",
             f"TEMPLATE {quote_identifier(template or 'template0')}",
             f"ENCODING {quote_literal(encoding)}"]
    if template is None and encoding.lower().replace("-", "") not in ("utf8", "unicode"):
        # A UTF-8 server locale refuses other encodings; the C locale accepts every one.
        parts.append(f"LC_COLLATE {quote_literal('C')} LC_CTYPE {quote_literal('C')}")
    if strategy is not None:
        if strategy.upper() not in ("WAL_LOG", "FILE_COPY"):
            raise ConfigurationError(f"Unknown CREATE DATABASE strategy {strategy!r}.")
        parts.append(f"STRATEGY {strategy.upper()}")
    return " ".join(parts)


def supports_drop_force(server_version: Optional[Tuple[Any, ...]]) -> bool:
    """``DROP DATABASE ... WITH (FORCE)`` exists from PostgreSQL 13 on."""
    return server_version is not None and server_version >= (13,)


def drop_database(name: str, force: bool) -> str:
    """``DROP DATABASE IF EXISTS``, with ``WITH (FORCE)`` when the server has it."""
    statement = f"DROP DATABASE IF EXISTS {quote_identifier(name)}"
    return statement + " WITH (FORCE)" if force else statement


def drop_steps(name: str, server_version: Optional[Tuple[Any, ...]]) -> List[Tuple[str, Dict[str, Any]]]:
    """The statements (with their parameters) that drop ``name`` whatever still connects to it.

    ``DROP ... WITH (FORCE)`` on PostgreSQL 13 and newer; before that, end the other
    sessions, then a plain drop.
    """
    force = supports_drop_force(server_version)
    steps: List[Tuple[str, Dict[str, Any]]] = [] if force else [(TERMINATE_BACKENDS, {"name": name})]
    steps.append((drop_database(name, force), {}))
    return steps


#: Ends every other session on a database; bind ``:name``. Used before a plain
#: DROP on servers older than 13, which lack ``WITH (FORCE)``.
#: Sessions on database ``:name`` other than ours.
SESSIONS_ON = "SELECT count(*) FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()"


def rename_database(old: str, new: str) -> str:
    """``ALTER DATABASE old RENAME TO new`` (catalog only: instant, but only with no session on it)."""
    return f"ALTER DATABASE {quote_identifier(old)} RENAME TO {quote_identifier(new)}"


TERMINATE_BACKENDS = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE datname = :name AND pid <> pg_backend_pid()"
)

SELECT_ONE = "SELECT 1"
CURRENT_ROLE = "SELECT current_user"

#: The tables where Alembic records revisions: any with its ``version_num`` column.
ALEMBIC_VERSION_TABLES = (
    "SELECT table_schema, table_name FROM information_schema.columns "
    "WHERE column_name = 'version_num' AND table_schema NOT IN ('pg_catalog', 'information_schema')"
)


def select_versions(schema: str, table: str) -> str:
    """The revisions recorded in an Alembic version table."""
    return f"SELECT version_num FROM {quote_identifier(schema)}.{quote_identifier(table)}"

# Error triage --------------------------------------------------------------

#: SQLSTATEs that retrying cannot fix: bad password, unknown role or database,
#: no permission to connect.
FATAL_SQLSTATES = {
    "28P01": "the password was rejected",
    "28000": "the role is unknown or not allowed to connect",
    "3D000": "the database does not exist",
    "42501": "the role lacks a permission it needs",
    "0A000": "the server does not support a needed feature",
}

_FATAL_PATTERNS = (
    (re.compile(r"password authentication failed", re.I), "the password was rejected"),
    (re.compile(r"role \".*\" does not exist", re.I), "the role does not exist"),
    (re.compile(r"database \".*\" does not exist", re.I), "the database does not exist"),
    (re.compile(r"no pg_hba\.conf entry", re.I), "pg_hba.conf has no entry allowing this connection"),
    (re.compile(r"permission denied", re.I), "the role lacks a permission it needs"),
    (re.compile(r"is not permitted to log in", re.I), "the role may not log in"),
    (re.compile(r"password authentication|no password supplied|password is required", re.I),
     "the server requires a password"),
)


def walk_causes(error: BaseException) -> Iterator[BaseException]:
    """``error``, then what caused it (a DBAPI error's ``orig``, ``__cause__``, ``__context__``), once each."""
    seen = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)


def fatal_reason(error: BaseException) -> Optional[str]:
    """Why connecting can never succeed, or ``None`` if the error may be transient.

    Looks at the SQLSTATE where the driver reports one (asyncpg) and at the
    server's message otherwise (psycopg reports connection errors as text).
    """
    for exc in walk_causes(error):
        sqlstate = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate in FATAL_SQLSTATES:
            return FATAL_SQLSTATES[sqlstate]
        message = str(exc)
        for pattern, reason in _FATAL_PATTERNS:
            if pattern.search(message):
                return reason
    return None


_FULL_PATTERN = re.compile(r"too many clients already|remaining connection slots are reserved", re.I)

#: The server's connections, for the full-server message: (client sessions, max_connections).
SERVER_LOAD = ("SELECT count(*) FILTER (WHERE backend_type = 'client backend'), "
               "current_setting('max_connections')::int FROM pg_stat_activity")


_DISK_FULL_PATTERN = re.compile(r"No space left on device|could not extend file|disk full", re.IGNORECASE)


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` says the server's disk is full (SQLSTATE 53100, or ENOSPC in the message)."""
    return _says(error, "53100", _DISK_FULL_PATTERN)


def _says(error: BaseException, sqlstate: str, pattern: Any) -> bool:
    """Whether ``error`` or one of its causes has ``sqlstate`` or a message matching ``pattern``."""
    for exc in walk_causes(error):
        if (getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)) == sqlstate or pattern.search(str(exc)):
            return True
    return False


#: A database's size in bytes (works for templates that take no connections).
DATABASE_SIZE = "SELECT pg_database_size(:name)"


def is_gone(error: BaseException) -> bool:
    """Whether ``error`` says the database is no longer there (SQLSTATE 3D000): dropped by another."""
    return _says(error, "3D000", re.compile(r"database \".*\" does not exist", re.I))


def is_server_full(error: BaseException) -> bool:
    """Whether ``error`` says the server has no free connection slot (SQLSTATE 53300)."""
    return _says(error, "53300", _FULL_PATTERN)


def hide_secret(text: str, secret: Optional[str]) -> str:
    """Replace every occurrence of ``secret`` in ``text`` with ``***``."""
    if secret:
        text = text.replace(secret, "***")
    return text


# Templates ------------------------------------------------------------------

#: Bump when the way templates are built changes: old templates then stop matching.
TEMPLATE_FORMAT_VERSION = "2"  # 2: the name covers the role and the migrator's identity
_COMMENT_MARK = "elefast template"
#: The start of the note on every template elefast marked ready (shared across runs).
TEMPLATE_MARK = _COMMENT_MARK


def template_hash(fingerprint: str, server_version: Optional[Tuple[Any, ...]], encoding: str, role: str = "") -> str:
    """16 hex digits naming a template: migrator identity, server version, encoding, role, format."""
    version = ".".join(str(part) for part in (server_version or ()))
    text = f"{TEMPLATE_FORMAT_VERSION}|{version}|{encoding.lower()}|{fingerprint}|role {role}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def advisory_key(name: str) -> int:
    """A signed 64-bit advisory lock key for ``name`` (stable across processes and hosts)."""
    return int.from_bytes(hashlib.sha256(f"elefast:{name}".encode()).digest()[:8], "big", signed=True)


ADVISORY_LOCK = "SELECT pg_advisory_lock(:key)"
ADVISORY_UNLOCK = "SELECT pg_advisory_unlock(:key)"
ADVISORY_TRY_LOCK = "SELECT pg_try_advisory_lock(:key)"
#: Held by every process using a shared template, so no sweeper drops it meanwhile.
ADVISORY_LOCK_SHARED = "SELECT pg_advisory_lock_shared(:key)"
TEMPLATE_STATE = "SELECT datistemplate FROM pg_database WHERE datname = :name"
SERVER_SETTINGS = (
    "SELECT current_setting('fsync'), current_setting('server_version_num')::int, "
    "coalesce(current_setting('file_copy_method', true), ''), "  # PostgreSQL 18+; '' before
    # the connection budget: slots, and who holds them (elefast's admin connections say 'elefast:<pid>')
    "current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int, "
    "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
    " AND coalesce(application_name, '') NOT LIKE 'elefast:%'), "
    "(SELECT count(DISTINCT application_name) FROM pg_stat_activity WHERE application_name LIKE 'elefast:%')"
)
#: Templates whose name is LIKE ``:pattern`` (escape ``!``), with their notes.
LIST_TEMPLATES = (
    "SELECT d.datname, coalesce(shobj_description(d.oid, 'pg_database'), '') AS note "
    "FROM pg_database d WHERE d.datistemplate AND d.datname LIKE :pattern ESCAPE '!'"
)


def mark_template_ready(name: str, built_at: str, fingerprint: str) -> Tuple[str, ...]:
    """Statements that make ``name`` a read-only template and record when it was built, in one
    transaction: a crash leaves either the owned database the sweep drops, or the marked template."""
    quoted = quote_identifier(name)
    note = f"{_COMMENT_MARK} v{TEMPLATE_FORMAT_VERSION} built {built_at} fingerprint {fingerprint[:32]}"
    if not re.match(r"^[A-Za-z0-9 :._+-]+$", note):
        raise ValueError(f"unsafe template note {note!r}")
    return (
        "BEGIN",
        DURABLE_COMMIT,
        f"COMMENT ON DATABASE {quoted} IS {quote_literal(note)}",
        f"ALTER DATABASE {quoted} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false",
        "COMMIT",
    )


def unmark_template(name: str) -> str:
    """``ALTER DATABASE`` so a template can be dropped."""
    return f"ALTER DATABASE {quote_identifier(name)} WITH IS_TEMPLATE false"


def set_note(name: str, note: str) -> str:
    """``COMMENT ON DATABASE`` with ``note``."""
    return f"COMMENT ON DATABASE {quote_identifier(name)} IS {quote_literal(note)}"


#: A template's note (:mod:`elefast._server.retention` rewrites its "used" part).
TEMPLATE_NOTE = ("SELECT coalesce(shobj_description(d.oid, 'pg_database'), '') FROM pg_database d "
                 "WHERE d.datname = :name")


# Ownership marks --------------------------------------------------------------

#: The comment on every database elefast creates for one process.
OWNED_MARK = "elefast database"
#: The comment on a database kept for inspection: never swept.
KEPT_MARK = "elefast kept"
#: Marks are committed durably even on a server tuned with ``synchronous_commit=off`` (the
#: throwaway servers are): a mark lost in a crash would leave an orphan nobody may sweep.
DURABLE_COMMIT = "SET synchronous_commit TO on"
#: For a change whose loss in a crash is harmless (renaming a database on its way out).
LAZY_COMMIT = "SET synchronous_commit TO off"
#: Each database's name, comment (its mark) and whether it is a template; bind ``:names``.
MARKS_OF = ("SELECT datname, shobj_description(oid, 'pg_database'), datistemplate FROM pg_database "
            "WHERE datname = ANY(:names)")
#: Databases carrying a mark that starts with ``:mark`` (bind it with a trailing ``%``).
LIST_MARKED = ("SELECT d.datname FROM pg_database d "
               "WHERE NOT d.datistemplate AND shobj_description(d.oid, 'pg_database') LIKE :mark ORDER BY 1")
#: Templates still carrying a process's ownership mark: what a builder killed between making a
#: template read-only and marking it ready left, before both went into one transaction.
LIST_MARKED_TEMPLATES = (
    "SELECT d.datname FROM pg_database d "
    "WHERE d.datistemplate AND shobj_description(d.oid, 'pg_database') LIKE :mark ORDER BY 1"
)


def owner_key(name: str) -> int:
    """The ownership lock's key for ``name`` (its own namespace: never a template build lock's)."""
    return advisory_key(f"owner:{name}")


def mark_owned(name: str, created_at: str) -> List[str]:
    """Statements marking ``name`` as a database some elefast process owns (run them in order)."""
    comment = quote_literal(f"{OWNED_MARK} created {created_at}")
    return [DURABLE_COMMIT, f"COMMENT ON DATABASE {quote_identifier(name)} IS {comment}"]


def mark_kept(name: str, kept_at: str) -> List[str]:
    """Statements marking ``name`` as kept for inspection (the sweeper leaves it alone)."""
    comment = quote_literal(f"{KEPT_MARK} {kept_at}")
    return [DURABLE_COMMIT, f"COMMENT ON DATABASE {quote_identifier(name)} IS {comment}"]
