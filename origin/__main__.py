"""``python -m origin``: the same as ``edgecdn-origin``."""

import sys

from origin.cli import main

sys.exit(main())
