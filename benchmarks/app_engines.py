"""Transaction mode with the app's own engine vs plain transaction mode vs the bare rollback floor.

``python benchmarks/app_engines.py [--url URL] [--tests N] [--rounds R] [--body work|nothing]``

Each round runs the three suites one after the other, in separate processes, on the same server
and the same 20-table schema (``workload.py``):

- ``rollback``: the floor, plain SQLAlchemy: one connection per test, a transaction rolled back,
  a ``Session`` joined to it with savepoints;
- ``elefast-transaction``: ``isolation = "transaction"``, the body on ``self.session``;
- ``elefast-transaction-app``: the same, but the body runs on a session of the app's own engine
  (made at import time for a host that does not exist), named in ``app_engines``.

It prints the median time per test (setUp start to cleanup end) over all rounds, and each mode's
difference from plain transaction mode and from the floor.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import DEFAULT_URL, run_mode

MODES = ["rollback", "elefast-transaction", "elefast-transaction-app"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--tests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--body", default="work", choices=["work", "nothing"])
    args = parser.parse_args()
    totals = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            result = run_mode(mode, args.url, args.tests, args.body, None)
            if not result.get("ok"):
                print(f"{mode} failed: {result.get('errors')}", file=sys.stderr)
                return 1
            totals[mode].extend(record["total"] for record in result["records"][1:])  # the first builds things
    median = {mode: 1000 * statistics.median(values) for mode, values in totals.items()}
    print(f"{args.tests} tests per suite (body: {args.body}), {args.rounds} rounds, on {args.url}\n")
    print("| mode | per test median ms | vs plain transaction mode ms | vs the rollback floor ms |")
    print("| --- | ---: | ---: | ---: |")
    for mode in MODES:
        print(f"| {mode} | {median[mode]:.2f} | {median[mode] - median['elefast-transaction']:+.2f} | "
              f"{median[mode] - median['rollback']:+.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
