"""Run the whole test suite: ``python -m tests``.

The same as ``python -m unittest discover -s tests -t .``, plus one closing line
``N passed, N failed, N skipped`` counted from the run, for CI logs.
"""

import logging
import sys
import unittest
from pathlib import Path


def main() -> int:
    # IsolatedAsyncioTestCase runs each test's loop in debug mode, whose logger says "Executing
    # <Task ...> took 0.6 seconds" whenever a test body blocks its loop: this suite's tests block
    # on purpose (subprocesses, full servers). Errors of that logger still show.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    root = Path(__file__).resolve().parent.parent
    suite = unittest.defaultTestLoader.discover(str(root / "tests"), top_level_dir=str(root))
    verbosity = 2 if "-v" in sys.argv[1:] else 1
    result = unittest.TextTestRunner(verbosity=verbosity).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    print(f"{passed} passed, {failed} failed, {skipped} skipped", flush=True)
    return 0 if result.wasSuccessful() and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
