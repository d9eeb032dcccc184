"""``python -m cacheway.cli``: the ``cacheway`` command without the console script."""

import sys

from .main import main

sys.exit(main())
