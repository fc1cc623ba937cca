"""Every setting a user can get wrong without an error: ``ELEFAST_*`` variables and class attributes.

- :func:`check_environment`: once per process, a warning for an ``ELEFAST_*`` variable elefast
  does not know (``ELEFAST_GAURD=1``: "did you mean ELEFAST_GUARD?") and for a value it would
  read as something else (``ELEFAST_POOL_SIZE=two`` falls back to the default; ``ELEFAST_GUARD=2``
  reads as off). ``ELEFAST_LOG``'s value is checked where the logger reads it.
- :func:`near_miss`: the known name a misspelt one was meant to be (a small edit distance), for
  the test case mixins' class attributes (``isolaton = "transaction"``) and for variable names.
"""

from __future__ import annotations

import os
import warnings
from typing import Dict, Iterable, Mapping, Optional, Tuple

__all__ = ["ENVIRONMENT", "check_environment", "edit_distance", "near_miss", "problems"]

_SWITCH = ("1", "true", "yes", "on", "0", "false", "no", "off")

#: Each variable elefast reads, and what its value must be: "switch" (1/0, true/false, yes/no,
#: on/off), "int", "number", "text" (anything), or a tuple of the accepted words.
ENVIRONMENT: Dict[str, object] = {
    "ELEFAST_CACHE_DIR": "text",
    "ELEFAST_DATABASE_URL": "text",
    "ELEFAST_DATA_DIR": "text",
    "ELEFAST_DROP_AT_EXIT": ("here", "behind"),
    "ELEFAST_DROP_NAMES": "text",
    "ELEFAST_DROP_SWEEP_BEFORE": "text",
    "ELEFAST_DROP_URL": "text",
    "ELEFAST_FULL_WAIT": "number",
    "ELEFAST_GUARD": "switch",
    "ELEFAST_HOLD_URL": "text",
    "ELEFAST_HOST_PORT": "int",
    "ELEFAST_KEEP_FAILED": "switch",
    "ELEFAST_LOG": "text",
    "ELEFAST_POOL_MAX_DEPTH": "int",
    "ELEFAST_POOL_SIZE": "int",
    "ELEFAST_POOL_WORKERS": "int",
    "ELEFAST_POSTGRES_BINDIR": "text",
    "ELEFAST_POSTGRES_VERSIONS": "text",
    "ELEFAST_REBUILD": "switch",
    "ELEFAST_RUN_DIR": "text",
    "ELEFAST_SERVER": ("url", "local", "docker"),
    "ELEFAST_SHARE_DIALECT": ("0", "1"),
    "ELEFAST_TEMPLATE_BUDGET_MB": "number",
    "ELEFAST_TEMPLATE_DAYS": "number",
}

_CHECKED = False


def edit_distance(first: str, second: str) -> int:
    """The number of one-letter insertions, deletions, substitutions and swaps of two neighbours
    that turn ``first`` into ``second`` (optimal string alignment)."""
    rows = [list(range(len(second) + 1))]
    for i, a in enumerate(first, 1):
        row = [i] + [0] * len(second)
        for j, b in enumerate(second, 1):
            row[j] = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (a != b))
            if i > 1 and j > 1 and a == second[j - 2] and first[i - 2] == b:
                row[j] = min(row[j], rows[-2][j - 2] + 1)
        rows.append(row)
    return rows[-1][-1]


def near_miss(name: str, known: Iterable[str]) -> Optional[str]:
    """The one name of ``known`` that ``name`` is a likely misspelling of, else None.

    Likely: a different name within one edit (two for names of eight letters or more), case
    aside. Several equally near: the first in ``known``'s order."""
    lowered = name.lower()
    best: Optional[Tuple[int, str]] = None
    for candidate in known:
        if candidate == name:
            return None
        allowed = 2 if len(candidate) >= 8 else 1
        distance = edit_distance(lowered, candidate.lower())
        if distance <= allowed and (best is None or distance < best[0]):
            best = (distance, candidate)
    return best[1] if best else None


def _value_problem(name: str, value: str, kind: object) -> Optional[str]:
    value = value.strip()
    if not value or kind == "text":
        return None
    if kind == "switch":
        if value.lower() not in _SWITCH:
            return f"{name}={value!r} reads as off: use 1 or 0 (true/false, yes/no, on/off)"
        return None
    if kind in ("int", "number"):
        try:
            int(value) if kind == "int" else float(value)
        except ValueError:
            whole = "a whole number" if kind == "int" else "a number"
            return f"{name}={value!r} is not {whole}: elefast uses its default instead"
        return None
    if isinstance(kind, tuple) and value.lower() not in kind:
        return f"{name}={value!r} is not one of {', '.join(kind)}"
    return None


def problems(environ: Optional[Mapping[str, str]] = None) -> list[str]:
    """What is wrong with the ``ELEFAST_*`` variables in ``environ`` (default: this process's)."""
    environ = os.environ if environ is None else environ
    found = []
    for name in sorted(environ):
        if not name.startswith("ELEFAST_"):
            continue
        kind = ENVIRONMENT.get(name)
        if kind is None:
            meant = near_miss(name, ENVIRONMENT)
            hint = f": did you mean {meant}?" if meant else f" (it knows {', '.join(sorted(ENVIRONMENT))})"
            found.append(f"{name} is not a variable elefast reads{hint}")
            continue
        problem = _value_problem(name, environ[name], kind)
        if problem:
            found.append(problem)
    return found


def check_environment() -> None:
    """Warn once per process about each ``ELEFAST_*`` variable elefast would not read as meant."""
    global _CHECKED
    if _CHECKED:
        return
    _CHECKED = True
    for problem in problems():
        warnings.warn(f"elefast: {problem}", UserWarning, stacklevel=3)
