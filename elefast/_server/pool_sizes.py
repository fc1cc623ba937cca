"""How many clones a pool keeps ready, and how many threads make them.

:func:`pool_size` and :func:`pool_workers` read the environment (smaller on a server with few
connections); :func:`depth` deepens a template's ready clones while they are slow to make.
"""

from __future__ import annotations

import math
import os
from typing import Optional

from elefast._engines.budget import is_lean

__all__ = ["depth", "max_depth", "pool_size", "pool_workers"]


def _setting(name: str, default: int, least: int = 0) -> int:
    """The whole number in environment variable ``name`` (at least ``least``), else ``default``."""
    try:
        return max(least, int(os.environ.get(name, default)))
    except ValueError:
        return default


#: Clones kept ready per template. Two keeps both cores busy on the machines we measured on
#: (one clone being made while the test runs, one waiting); override with ELEFAST_POOL_SIZE.
DEFAULT_POOL_SIZE = 2


def pool_workers() -> int:
    """Threads making clones (``ELEFAST_POOL_WORKERS``, default 2; 1 on a server with few connections).

    Measured on 2 cores, 20-table template, tmpfs, FILE_COPY: one thread makes a clone every
    23.5 ms, two every 15 ms, three every 14.4 ms (benchmarks/RESULTS.md).
    """
    return 1 if is_lean() else _setting("ELEFAST_POOL_WORKERS", 2, least=1)


def pool_size() -> int:
    """The configured pool size (``ELEFAST_POOL_SIZE``, default :data:`DEFAULT_POOL_SIZE`; at most
    1 on a server with few connections)."""
    size = _setting("ELEFAST_POOL_SIZE", DEFAULT_POOL_SIZE)
    return min(size, 1) if is_lean() else size


#: Clones kept ready for one template at most when they are slow to make (see :func:`depth`;
#: ``ELEFAST_POOL_MAX_DEPTH`` sets another; at most ``ELEFAST_POOL_SIZE`` keeps the pool that deep).
MAX_DEPTH = 6


def max_depth() -> int:
    """Clones kept ready per template at most when they are slow (``ELEFAST_POOL_MAX_DEPTH``, default 6)."""
    return _setting("ELEFAST_POOL_MAX_DEPTH", MAX_DEPTH)


#: Clones slower than this are kept deeper: one more ready per :data:`DEPTH_STEP_MS` beyond it (a
#: template whose clones take 55 ms is kept 4 deep, from 2). With a ~100 MB template and 50 ms tests
#: the wait for a clone had a p95 of 15 ms kept 2 deep, 0.6 ms deepened (benchmarks/slow_clones.py).
SLOW_CLONE_MS = 40.0
DEPTH_STEP_MS = 10.0


def depth(wanted: int, clone_ms: Optional[float], timed: int) -> int:
    """Clones of one template to keep ready: ``wanted``, or more while they are slow to make
    (``clone_ms``, a moving average of ``timed`` clones; see :data:`SLOW_CLONE_MS`; up to
    :func:`max_depth`). Not on a server with few connections, nor before three clones were timed
    (the first ones after a server's start are slow whatever the template)."""
    if clone_ms is None or clone_ms <= SLOW_CLONE_MS or wanted < 1 or is_lean() or timed < 3:
        return wanted
    return max(wanted, min(max_depth(), wanted + math.ceil((clone_ms - SLOW_CLONE_MS) / DEPTH_STEP_MS)))
