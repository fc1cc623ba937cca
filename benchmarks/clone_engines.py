"""Clone engines with a dialect each (``create_engine`` per clone) vs sharing the first one's.

Runs ``workload.py elefast-database`` (N tests over the 20-table schema, database mode) as fresh
``unittest`` processes, alternating ``ELEFAST_SHARE_DIALECT=0`` (each clone's engine made by
``create_engine``: a new dialect that asks the server four questions on its first connection,
and an empty compiled-statement cache) and the default (engines share the first clone engine's
initialized dialect and statement cache). Two bodies: ``nothing`` (SELECT 1) and ``work``
(three inserts, a commit, three counts: statements a real test compiles). Per run: tests per
second from the start of the run to process exit, the client process's CPU per test, and the
median body time.

    python benchmarks/clone_engines.py [--url URL] [--tests 300] [--rounds 3]

Without ``--url`` it uses the throwaway local server (tmpfs, fsync off).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from typing import Dict, List, Optional

from database_mode_runs import run_suite, server_arguments

VARIANTS = (("create_engine per clone", "0"), ("shared dialect", "1"))


def run(url: str, tests: int, body: str, share: str) -> Dict[str, float]:
    """One workload process; its rate, CPU per test and median body time."""
    result = run_suite(url, tests, body, {"ELEFAST_SHARE_DIALECT": share})
    return {"rate": tests / (result["ended"] - result["run_start"]), "cpu_ms": result["cpu_s"] / tests * 1000,
            "body_ms": statistics.median(r["body"] for r in result["records"]) * 1000}


def main(argv: Optional[List[str]] = None) -> int:
    args, url, label = server_arguments(__doc__ or "", 300, argv)
    run(url, 5, "nothing", "1")  # builds the template once
    results: Dict[tuple, List[Dict[str, float]]] = {}
    for _ in range(args.rounds):
        for body in ("nothing", "work"):
            for name, share in VARIANTS:  # alternating, so both see the same machine
                results.setdefault((body, name), []).append(run(url, args.tests, body, share))

    print(f"# clone engines: a dialect each vs one shared; {args.tests} tests per run, database mode, "
          f"20-table template, {args.rounds} rounds (alternating), medians")
    print(f"{label}; Python {platform.python_version()}, {os.cpu_count()} CPUs\n")
    print("| body | engines | tests/s (run to exit) | client CPU ms/test | body ms (median) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for body in ("nothing", "work"):
        rows = {name: {k: statistics.median(r[k] for r in results[(body, name)]) for k in ("rate", "cpu_ms", "body_ms")}
                for name, _ in VARIANTS}
        for name, _ in VARIANTS:
            row = rows[name]
            print(f"| {body} | {name} | {row['rate']:.1f} | {row['cpu_ms']:.2f} | {row['body_ms']:.2f} |")
        old, new = rows[VARIANTS[0][0]], rows[VARIANTS[1][0]]
        print(f"| {body} | ratio shared / per clone | {new['rate'] / old['rate']:.2f} | "
              f"{new['cpu_ms'] / old['cpu_ms']:.2f} | {new['body_ms'] / old['body_ms']:.2f} |")
    print("\nThe body of a test on a shared engine finds the statements an earlier test compiled; on its own")
    print("engine it compiles them again. The server's work per test (clone, connect, drop) is the same in both.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
