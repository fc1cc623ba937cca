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
from typing import Optional, Tuple

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
    _pin(cls, first, base_name, base_qualname)
    module = sys.modules.get(cls.__module__)
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


def pinned(cls: type) -> Optional[int]:
    """The major version a matrix copy runs on, or None outside a matrix."""
    major = getattr(cls, _PINNED, None)
    return int(major) if major is not None else None


def _shown(asked: Tuple[int, ...]) -> str:
    return ", ".join(str(major) for major in asked)
