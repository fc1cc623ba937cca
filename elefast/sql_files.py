"""Schemas kept as SQL: ``schema.sql``, a folder of numbered scripts, or a ``pg_dump`` file.

:class:`SQLFileMigrator` applies ``.sql`` files to the template in order, inside the one
transaction every migrator runs in. Each file is split into statements the way ``psql``
reads it (quotes, dollar quotes, comments), and the ``COPY ... FROM stdin`` blocks of a
plain-format ``pg_dump`` (schema and data) are loaded as data. ``psql`` meta-commands
cannot run over a connection: ``\\restrict`` / ``\\unrestrict`` (which recent ``pg_dump``
writes) are skipped, any other is refused with its file and line. The fingerprint is the
files' names and contents, so the template is rebuilt when a file changes.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple, Union

from sqlalchemy import Connection

from elefast.errors import ConfigurationError, MigrationError

__all__ = ["SQLFileMigrator", "statements"]

_COPY_FROM_STDIN = re.compile(r"^\s*COPY\s+(?P<target>.+?)\s+FROM\s+stdin\b", re.IGNORECASE | re.DOTALL)
_HARMLESS_META = ("\\restrict", "\\unrestrict")
_CREATE_DATABASE = re.compile(r"^\s*CREATE\s+DATABASE\b", re.IGNORECASE)
_CREATED_DUMP = (" A dump made with pg_dump --create (-C) creates its own database and connects to it: "
                 "make it without --create; elefast creates the database.")


class SQLFileMigrator:
    """Builds the schema from SQL files: one file, several, or folders applied in name order.

    Args:
        paths: ``.sql`` files and folders (a folder's ``*.sql`` files run in name order:
            ``001_tables.sql``, ``002_data.sql``, ...), applied in the order given.

    Works for both :class:`~elefast.sync.DatabaseServer` and
    :class:`~elefast.asyncio.AsyncDatabaseServer` (through ``run_sync``).
    """

    _elefast_fingerprinted = ("paths",)

    def __init__(self, *paths: Union[os.PathLike[str], str]) -> None:
        if not paths:
            raise ConfigurationError("SQLFileMigrator needs at least one .sql file or folder.")
        self.paths = [Path(path).resolve() for path in paths]
        self.files()  # a missing path fails here, when the test class is made

    def __repr__(self) -> str:
        return f"SQLFileMigrator({', '.join(repr(str(p)) for p in self.paths)})"

    def files(self) -> List[Path]:
        """The files to apply, in order."""
        found: List[Path] = []
        for path in self.paths:
            if path.is_dir():
                found.extend(sorted(p for p in path.iterdir() if p.suffix == ".sql" and p.is_file()))
            elif path.is_file():
                found.append(path)
            else:
                raise ConfigurationError(f"The SQL schema file {str(path)!r} does not exist.")
        if not found:
            raise ConfigurationError(f"No .sql files in {', '.join(str(p) for p in self.paths)}.")
        return found

    def fingerprint(self) -> str:
        """A digest of the files' names and contents."""
        digest = hashlib.sha256()
        for path in self.files():
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        return digest.hexdigest()

    def migrate(self, connection: Connection) -> None:
        """Apply every file, statement by statement, with the data of its ``COPY`` blocks."""
        for path in self.files():
            for line, statement, data in statements(path.read_text(encoding="utf-8"), str(path)):
                try:
                    if data is None:
                        connection.exec_driver_sql(statement)
                    else:
                        _copy_in(connection, statement, data)
                except Exception as error:
                    reason = str(getattr(error, "orig", error)).strip().splitlines()[0].rstrip(".")
                    hint = _CREATED_DUMP if _CREATE_DATABASE.match(_without_comments(statement)) else ""
                    raise MigrationError(f"{path} line {line} failed: {type(error).__name__}: {reason}.{hint}") \
                        from error
            connection.exec_driver_sql("RESET ALL")  # a dump's SET search_path = '' must not reach what runs next

    async def migrate_async(self, connection: Any) -> None:
        """The same from async code (via ``run_sync``)."""
        await connection.run_sync(self.migrate)


def statements(source: str, name: str = "<sql>") -> Iterator[Tuple[int, str, Optional[str]]]:
    """(line, statement, COPY data or None) for each statement of ``source``, as psql reads them."""
    lines = source.splitlines(keepends=True)
    index, buffer, start = 0, "", 0
    state = _Scanner()
    while index < len(lines):
        line = lines[index]
        index += 1
        between = not _without_comments(buffer).strip()  # no statement begun: only comments so far
        if state.quote is None and between and line.lstrip().startswith("\\"):
            command = line.strip().split()[0]
            if command in _HARMLESS_META:
                continue
            raise MigrationError(
                f"{name} line {index}: the psql meta-command {command} cannot run over a database "
                "connection. Remove it, or apply the file with psql in a migrator of your own."
                + (_CREATED_DUMP if command in ("\\connect", "\\c") else "")
            )
        if between and line.strip() and not line.lstrip().startswith("--"):
            start = index
        for statement in state.feed(line):
            buffer += statement
            text = buffer.strip()
            buffer = ""
            if not text or text == ";":
                continue
            if _COPY_FROM_STDIN.match(_without_comments(text)):
                data, index = _copy_data(lines, index, name)
                yield start, text, data
            else:
                yield start, text, None
            start = index
        buffer += state.take_rest()
    if buffer.strip() and _without_comments(buffer).strip():
        yield start, buffer.strip(), None


class _Scanner:
    """Splits text at semicolons outside quotes, dollar quotes and comments, across lines."""

    def __init__(self) -> None:
        self.rest = ""
        self.quote: Optional[str] = None  # "'", '"', a $tag$, "/*" or None
        self.depth = 0

    def take_rest(self) -> str:
        rest, self.rest = self.rest, ""
        return rest

    def feed(self, line: str) -> Iterator[str]:
        text = self.rest + line
        self.rest = ""
        position, begin = 0, 0
        while position < len(text):
            char = text[position]
            if self.quote is None:
                if char in ("'", '"'):
                    self.quote = char
                elif text.startswith("--", position):
                    break  # the rest of the line is a comment
                elif text.startswith("/*", position):
                    self.quote, self.depth = "/*", 1
                    position += 1
                elif char == "$":
                    tag = re.match(r"\$[A-Za-z_]*\$", text[position:])
                    if tag:
                        self.quote = tag.group(0)
                        position += len(self.quote) - 1
                elif char == ";":
                    yield text[begin:position + 1]
                    begin = position + 1
            elif self.quote == "/*":
                if text.startswith("/*", position):
                    self.depth, position = self.depth + 1, position + 1
                elif text.startswith("*/", position):
                    self.depth, position = self.depth - 1, position + 1
                    if self.depth == 0:
                        self.quote = None
            elif self.quote in ("'", '"'):
                if char == self.quote:
                    if text.startswith(self.quote * 2, position):
                        position += 1  # a doubled quote stands for itself
                    else:
                        self.quote = None
            elif text.startswith(self.quote, position):
                position += len(self.quote) - 1
                self.quote = None
            position += 1
        self.rest = text[begin:]


def _without_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))


def _copy_data(lines: List[str], index: int, name: str) -> Tuple[str, int]:
    """The data lines after a ``COPY ... FROM stdin;`` up to its ``\\.`` line; the index after it."""
    data: List[str] = []
    start = index
    while index < len(lines):
        line = lines[index]
        index += 1
        if line.rstrip("\r\n") == "\\.":
            return "".join(data), index
        data.append(line)
    raise MigrationError(f"{name} line {start}: COPY data has no end marker (a line with \\.).")


_NAME = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_TARGET = re.compile(rf"^(?:(?P<schema>{_NAME})\.)?(?P<table>{_NAME})\s*(?:\((?P<columns>[^)]*)\))?$")


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()


def _copy_target(statement: str) -> Tuple[Optional[str], str, Optional[List[str]]]:
    """(schema, table, columns) of ``COPY schema.table (a, b) FROM stdin``."""
    match = _COPY_FROM_STDIN.match(_without_comments(statement))
    target = _TARGET.match(match.group("target").strip()) if match else None
    if target is None:
        raise MigrationError(f"Cannot read the table of {statement.splitlines()[0]!r}.")
    columns = target.group("columns")
    return (_unquote(target.group("schema")) if target.group("schema") else None, _unquote(target.group("table")),
            [_unquote(c.strip()) for c in columns.split(",")] if columns else None)


def _copy_in(connection: Connection, statement: str, data: str) -> None:
    """Run a ``COPY ... FROM stdin`` with ``data``, over psycopg or asyncpg."""
    raw: Any = connection.connection.driver_connection
    if hasattr(raw, "cursor") and hasattr(raw, "pgconn"):  # psycopg 3
        with raw.cursor() as cursor, cursor.copy(statement.rstrip(";")) as copy:
            copy.write(data)
        return
    if hasattr(raw, "copy_to_table"):  # asyncpg, inside run_sync's greenlet
        from sqlalchemy.util import await_only

        schema, table, columns = _copy_target(statement)
        await_only(raw.copy_to_table(table, source=io.BytesIO(data.encode()), columns=columns,
                                     schema_name=schema, format="text"))
        return
    raise MigrationError(f"COPY ... FROM stdin needs psycopg or asyncpg, not {type(raw).__name__}.")
