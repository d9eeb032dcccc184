"""The ``cacheway`` command (``cacheway = "cacheway.cli:main"``), apart from the library:
nothing under :mod:`cacheway` outside this package imports it.

:mod:`.main` parses the command line and dispatches to :mod:`.run_cmd` (``demo``,
``bench``), :mod:`.check_cmd` (``check``) and :mod:`.journal_cmd` (``journal inspect``,
``journal replay``); the demo itself lives in :mod:`.demo`.
"""

from .main import main

__all__ = ["main"]
