"""``python -m elefast``: see :mod:`elefast._cli.main`."""

import sys

from elefast._cli.main import main

sys.exit(main())
