"""``python -m elefast``: see :mod:`elefast.cli`."""

import sys

from elefast.cli import main

sys.exit(main())
