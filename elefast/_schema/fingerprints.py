"""What a shared template is named by: everything that shapes it, or nothing at all.

A template is reused by later runs and other processes only while its name says it is
certainly the schema asked for. The name hashes (see :func:`identity`):

- the migrator's type (module and qualified name);
- the migrator's own ``fingerprint()`` (the compiled DDL for MetaData, the scripts for
  Alembic, the file contents for SQL files);
- the code of every method a class outside elefast defines on the migrator's type (a
  subclass that overrides ``migrate()`` to add seed rows), with the plain values
  (numbers, strings and containers of them) those methods read from their defaults,
  closures and module globals, the code of the project's own functions they call (a
  ``seed_rows()`` helper, ``seeds.add()`` of a project module; not those of Python or of
  installed libraries), and the class's own plain attributes;
- the instance's own configuration: its attributes, other than those the elefast base
  class already fingerprints;
- the role the template's objects will belong to (added by the caller, with the server
  version and the encoding).

Anything elefast cannot reduce to plain values (an attribute holding an engine, a
method that is not Python code) makes the migrator *unsafe to share*: it gets a template
for this process only, and the reason is logged at INFO. A class outside elefast that
defines ``fingerprint()`` itself takes responsibility for its instance's configuration:
attributes that are not plain values are then left to its ``fingerprint()``.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import os
import site
import sysconfig
import types
from pathlib import PurePath
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from elefast.errors import ConfigurationError

__all__ = ["Unsafe", "callable_identity", "identity", "is_project_code", "own_fingerprint", "rebuild_requested"]


def rebuild_requested() -> bool:
    """``ELEFAST_REBUILD=1``: build every template fresh, for this process only (CI)."""
    return os.environ.get("ELEFAST_REBUILD", "").strip().lower() in ("1", "true", "yes", "on")


class Unsafe(Exception):
    """Why a migrator cannot be fingerprinted safely (its template is then for this process only)."""


def own_fingerprint(schema: Any) -> Optional[str]:
    """The migrator's ``fingerprint()`` as given, or None when it has none."""
    method = getattr(schema, "fingerprint", None)
    if not callable(method):
        return None
    value = method()
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigurationError(
            f"{type(schema).__name__}.fingerprint() must return a non-empty str (or None), not {value!r}."
        )
    return value


def identity(schema: Any) -> Tuple[Optional[str], str]:
    """(sha256 of everything that shapes ``schema``'s template, "") or (None, why not)."""
    try:
        own = own_fingerprint(schema)
    except Unsafe as reason:
        return None, f"{type(schema).__name__} cannot be fingerprinted safely: {reason}"
    if own is None:
        return None, f"{type(schema).__name__} has no fingerprint()"
    kind = type(schema)
    digest = hashlib.sha256(f"type {kind.__module__}.{kind.__qualname__}\n{own}\n".encode())
    try:
        for part in _overrides(kind):
            digest.update(part.encode() + b"\n")
        for part in _configuration(schema):
            digest.update(part.encode() + b"\n")
    except Unsafe as reason:
        return None, f"{kind.__name__} cannot be fingerprinted safely: {reason}"
    return digest.hexdigest(), ""


def callable_identity(function: Any, where: str) -> Optional[str]:
    """A hook function's identity (a factory's ``on_initialized``): its code and what it reads, as for
    a migrator's methods, and the contents of the files its text constants name (``open("schema.sql")``,
    ``SCHEMA = "schema.sql"``: beside the working directory or the function's own file). None (a
    template for this process only) for what is not a plain Python function."""
    if not isinstance(function, types.FunctionType):
        return None
    try:
        parts = [_function(function, where)]
    except Unsafe:
        return None
    base = os.path.dirname(function.__code__.co_filename)
    texts = set(_texts(function.__code__)) | set(_texts(function.__code__, names_of=function.__globals__))
    for name in sorted(texts):
        for candidate in (name, os.path.join(base, name)):
            if 0 < len(name) < 1024 and "\n" not in name and os.path.isfile(candidate):
                with open(candidate, "rb") as handle:
                    parts.append(f"file {name} {hashlib.sha256(handle.read()).hexdigest()}")
                break
    return "\n".join(parts)


def _texts(code: types.CodeType, names_of: Optional[Dict[str, Any]] = None) -> Iterator[str]:
    """The text constants of ``code`` (nested code too), or, with ``names_of``, the texts its globals hold."""
    if names_of is not None:
        for name in _names(code):
            value = names_of.get(name)
            if isinstance(value, str):
                yield value
        return
    for const in code.co_consts:
        if isinstance(const, str):
            yield const
        elif isinstance(const, types.CodeType):
            yield from _texts(const)


def _from_elefast(cls: type) -> bool:
    return cls is object or cls.__module__.split(".")[0] in ("elefast", "typing", "typing_extensions", "abc")


#: What Python itself puts in a class's namespace: not the class's code or configuration.
_BOOKKEEPING = frozenset((
    "__dict__", "__weakref__", "__module__", "__qualname__", "__doc__", "__annotations__", "__parameters__",
    "__orig_bases__", "__abstractmethods__", "_abc_impl", "__protocol_attrs__", "__non_callable_proto_members__",
    "__static_attributes__", "__firstlineno__", "__slots__",
))


def _overrides(kind: type) -> Iterator[str]:
    """The code and plain attributes of every class outside elefast in ``kind``'s MRO."""
    for cls in kind.__mro__:
        if _from_elefast(cls):
            continue
        for name, value in sorted(vars(cls).items()):
            if name.startswith("__dataclass") or name in _BOOKKEEPING:
                continue
            yield f"{cls.__qualname__}.{name} = {_value_or_code(value, f'{cls.__qualname__}.{name}')}"


def _value_or_code(value: Any, where: str) -> str:
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        return "property " + " ".join(_value_or_code(f, where) for f in (value.fget, value.fset) if f)
    if isinstance(value, types.FunctionType):
        return _function(value, where)
    try:
        return plain(value)
    except Unsafe:
        raise Unsafe(f"{where} is a {type(value).__name__}, not code or a plain value") from None


def _function(function: types.FunctionType, where: str, seen: Optional[Set[int]] = None) -> str:
    """A function's code with the plain values it reads (defaults, closure cells, module globals), and
    the code of the project's own functions it calls (a ``seed_rows()`` helper), however deep."""
    seen = set() if seen is None else seen
    seen.add(id(function.__code__))
    parts = [_code(function.__code__)]
    parts.append(plain(function.__defaults__))
    parts.append(plain(function.__kwdefaults__))
    for cell in function.__closure__ or ():
        try:
            content = cell.cell_contents
            if isinstance(content, types.FunctionType) and content is not function:  # a decorator's wrapped one
                parts.append(_callee(content, where, seen))
            elif isinstance(content, (type, types.ModuleType)):  # super()'s __class__, an imported name
                parts.append(f"{type(content).__name__} {getattr(content, '__qualname__', content.__name__)}")
            else:
                parts.append(plain(content))
        except ValueError:  # an empty cell
            parts.append("<empty>")
        except Unsafe:
            raise Unsafe(f"{where} closes over a value that is not plain") from None
    names = sorted(set(_names(function.__code__)))
    scope = function.__globals__
    for name in names:
        if name not in scope:
            continue
        value = scope[name]
        if (isinstance(value, types.ModuleType) and not _from_elefast_module(value.__name__)
                and is_project_code(getattr(value, "__file__", None))):
            # seeds.ROWS, seeds.add(connection): what the code reads from a module of the project
            scope_parts = [_global(f"{name}.{attr}", vars(value)[attr], where, seen)
                           for attr in names if attr in vars(value)]
            parts.extend(scope_parts)
        else:
            parts.append(_global(name, value, where, seen))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _global(name: str, value: Any, where: str, seen: Set[int]) -> str:
    """A global a function reads: a plain value, the project's own function, or just its name."""
    if isinstance(value, types.FunctionType):
        return f"{name}={_callee(value, where, seen)}"
    try:
        return f"{name}={plain(value)}"
    except Unsafe:
        return f"{name}: {type(value).__name__}"  # classes, engines, libraries: named in the code


def _callee(function: types.FunctionType, where: str, seen: Set[int]) -> str:
    """A function the migrator's code uses: its code if it is the project's (not a library's)."""
    if id(function.__code__) in seen:
        return f"recursion {function.__qualname__}"
    if not is_project_code(function.__code__.co_filename) or _from_elefast_module(function.__module__):
        return f"function {function.__module__}.{function.__qualname__}"
    return _function(function, where, seen)


def _from_elefast_module(module: Optional[str]) -> bool:
    return (module or "").split(".")[0] == "elefast"


@functools.cache
def _library_roots() -> Tuple[str, ...]:
    """Where the standard library and installed packages live: code there is not the project's."""
    paths = sysconfig.get_paths()
    roots = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    roots.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    return tuple(sorted(os.path.join(os.path.realpath(root), "") for root in roots))


def is_project_code(filename: Optional[str]) -> bool:
    """Whether ``filename`` is source of the project (not of Python or an installed library)."""
    if not filename or filename.startswith("<frozen"):
        return False
    return not os.path.realpath(filename).startswith(_library_roots())


def _code(code: types.CodeType) -> str:
    consts = [(_code(c) if isinstance(c, types.CodeType) else _const(c)) for c in code.co_consts]
    return f"{code.co_code.hex()}|{code.co_names}|{code.co_varnames}|{consts}"


def _const(value: Any) -> str:
    try:
        return plain(value)  # frozensets in a stable order, whatever the hash seed
    except Unsafe:
        return repr(value)


def _names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)


def _configuration(schema: Any) -> List[str]:
    """The instance's attributes beyond those its elefast base class fingerprints itself."""
    covered = set(getattr(type(schema), "_elefast_fingerprinted", ()))
    own_method = "fingerprint" in _outside_elefast_names(type(schema))
    parts = []
    for name, value in sorted(getattr(schema, "__dict__", {}).items()):
        if name in covered:
            continue
        try:
            parts.append(f"{name}={plain(value)}")
        except Unsafe:
            if not own_method:
                raise Unsafe(f"its attribute {name!r} is a {type(value).__name__}, not a plain value; "
                             f"give the class a fingerprint() that covers it") from None
    return parts


def _outside_elefast_names(kind: type) -> set:  # type: ignore[type-arg]
    return {name for cls in kind.__mro__ if not _from_elefast(cls) for name in vars(cls)}


def plain(value: Any) -> str:
    """A stable text for a plain value (None, numbers, text, paths, enums, containers of them)."""
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return repr(value)
    if isinstance(value, PurePath):
        return f"path {value}"
    if isinstance(value, enum.Enum):
        return f"enum {type(value).__qualname__}.{value.name}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}[{', '.join(plain(v) for v in value)}]"
    if isinstance(value, (set, frozenset)):
        return f"set[{', '.join(sorted(plain(v) for v in value))}]"
    if isinstance(value, dict):
        return "dict{" + ", ".join(sorted(f"{plain(k)}: {plain(v)}" for k, v in value.items())) + "}"
    raise Unsafe(type(value).__name__)
