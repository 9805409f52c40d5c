"""``python -m mamlcourse``: see ``mamlcourse.cli``."""

import sys

from .cli import main

sys.exit(main())
