"""The version matrix for test classes: one copy of a class per PostgreSQL major version.

When versions are asked for (``postgres_versions`` on the class, or ``ELEFAST_POSTGRES_VERSIONS``),
a test class, as it is created, becomes its first version's copy (``UserTests_pg15`` in test ids)
and a copy per other version is added beside it in its module (``UserTests_pg18``), so every
runner (``unittest``, pytest, unittest-parallel, stestr) finds them. Each copy runs on the
throwaway server of its version (:mod:`elefast.provision.versions`); a version not on this machine
skips its copy, saying what was found and how to get more.
"""

from __future__ import annotations

import sys
import unittest
from typing import Any, Optional, Tuple

from elefast.errors import ConfigurationError
from elefast.provision import versions

__all__ = ["expand"]

_COPY = "_elefast_matrix_copy"
_PINNED = "_elefast_postgres_version"


def expand(cls: type, asked: Tuple[int, ...]) -> None:
    """Pin ``cls`` to the first of ``asked`` and add its copies for the others to its module."""
    if cls.__dict__.get(_COPY) or not asked or not unittest.defaultTestLoader.getTestCaseNames(cls):
        return  # a copy made here, no matrix, or a base class without tests (its subclasses expand)
    if getattr(cls, "database_url", None):
        raise ConfigurationError(
            f"{cls.__name__} sets database_url and asks for a version matrix ({_shown(asked)}): the matrix "
            f"runs each version on a throwaway server of its own. Remove one of the two.")
    first, *others = asked
    base_name, base_qualname = cls.__name__, cls.__qualname__
    module = sys.modules.get(cls.__module__)
    _pin(cls, first, base_name, base_qualname)
    if module is not None:
        _alias(module, cls.__qualname__, cls)  # pickle (unittest-parallel) finds it by its new name
    for major in others:
        copy = type(base_name, (cls,), {_COPY: True, "__module__": cls.__module__})
        _pin(copy, major, base_name, base_qualname)
        if module is not None:
            setattr(module, copy.__name__, copy)


def _pin(cls: type, major: int, name: str, qualname: str) -> None:
    setattr(cls, _PINNED, major)
    cls.__name__, cls.__qualname__ = f"{name}_pg{major}", f"{qualname}_pg{major}"
    reason = versions.missing_reason(major)
    if reason:
        unittest.skip(reason)(cls)
    else:  # its own verdict: a copy must not inherit the skip of a version missing here
        cls.__unittest_skip__ = False  # type: ignore[attr-defined]
        cls.__unittest_skip_why__ = ""  # type: ignore[attr-defined]


def _alias(module: Any, name: str, cls: type) -> None:
    """Let ``module.<name>`` find ``cls`` for pickle and ``loadTestsFromName``, without a second module
    attribute (loaders would run its tests twice): through the module's ``__getattr__`` (PEP 562)."""
    aliases = module.__dict__.setdefault("_elefast_matrix_aliases", {})
    aliases[name] = cls
    if "__getattr__" in module.__dict__ and getattr(module.__getattr__, "_elefast", False):
        return
    previous = module.__dict__.get("__getattr__")

    def __getattr__(attribute: str) -> Any:
        if attribute in aliases:
            return aliases[attribute]
        if previous is not None:
            return previous(attribute)
        raise AttributeError(f"module {module.__name__!r} has no attribute {attribute!r}")

    __getattr__._elefast = True  # type: ignore[attr-defined]
    module.__getattr__ = __getattr__


def pinned(cls: type) -> Optional[int]:
    """The major version a matrix copy runs on, or None outside a matrix."""
    major = getattr(cls, _PINNED, None)
    return int(major) if major is not None else None


def _shown(asked: Tuple[int, ...]) -> str:
    return ", ".join(str(major) for major in asked)
