"""``python -m cacheway``: the ``cacheway`` command without the console script (the
library itself never imports the CLI; only this entry point does)."""

import sys

from .cli.main import main

sys.exit(main())
