"""Run every reliability scenario and print the table (see the package docstring)."""

import argparse
import sys
import time

from tests.reliability import bad_input, faults, intruder
from tests.reliability.harness import Harness, Row, print_table

SCENARIOS = [
    faults.killed_mid_test,
    faults.killed_mid_async_create,
    faults.machines_sharing_a_server,
    faults.interrupted,
    faults.leaked_connections,
    faults.server_killed,
    faults.two_schemas_at_once,
    faults.migration_fails_halfway,
    faults.parallel_runners,
    faults.small_server,
    bad_input.security,
    intruder.other_user,
]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability", description=__doc__)
    parser.add_argument("--only", default="", help="run only the scenarios whose function name contains this")
    args = parser.parse_args()
    harness = Harness()
    rows = []
    started = time.monotonic()
    try:
        for scenario in SCENARIOS:
            if args.only and args.only not in scenario.__name__:
                continue
            began = time.monotonic()
            try:
                result = scenario(harness)
            except Exception as error:  # a broken scenario is a failure of its own, not a crash
                result = Row(scenario.__name__)
                result.fail(f"the scenario itself crashed: {type(error).__name__}: {error}")
            found = result if isinstance(result, list) else [result]
            rows.extend(found)
            print(f"{scenario.__name__}: {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
    finally:
        harness.close()
    print_table(rows)
    bad = [row for row in rows if row.failures or row.leftovers]
    print(f"\n{len(rows)} scenarios in {time.monotonic() - started:.0f} s: "
          f"{len(rows) - len(bad)} clean, {len(bad)} with failures or leftovers")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
