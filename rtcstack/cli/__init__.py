"""The `rtcstack` command line: ``rtcstack demo | serve | watch | token`` and their terminal views.

The library never imports this package; `rtcstack/__main__.py` (the console script and ``python -m rtcstack``) is
its one importer. Inside, imports flow one way: `_main` (the parser) -> a command (`_serve`, `_watch`, `_demo`)
-> `_common` and `_views` -> the library.
"""

from __future__ import annotations

from ._main import main

__all__ = ["main"]
