"""``python -m probdyn``: the ``probdyn`` command."""

import sys

from probdyn.app.cli import main

sys.exit(main())
