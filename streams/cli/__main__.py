"""``python -m streams.cli``: the ``tide`` command (how the launcher and docker start a worker)."""

import sys

from streams.cli import main

sys.exit(main())
