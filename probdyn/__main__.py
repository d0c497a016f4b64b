"""``python -m probdyn``: the ``probdyn`` command."""

import sys

from probdyn.cli import main

sys.exit(main())
